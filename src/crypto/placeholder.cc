namespace moat::crypto {}
