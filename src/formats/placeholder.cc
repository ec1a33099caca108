namespace moat::formats {}
