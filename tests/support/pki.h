// Test helpers for certificates: the openssl-made test PKI on disk (tests/pki/make-test-pki.sh,
// run by ctest as the test_pki fixture), and a PKI made in process with Moat's own crypto.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/key.h"
#include "crypto/x509.h"

namespace moat::test_support {

// <build dir>/test-pki/<name>.
std::filesystem::path TestPkiFile(std::string_view name);
// The file's text; a missing file is a test failure (with a hint) and gives "".
std::string ReadTestPki(std::string_view name);

struct Issued {
  crypto::PrivateKey key;
  crypto::Certificate cert;
};

crypto::PrivateKey NewKey();  // P-256
// Valid from an hour ago for a day.
crypto::CertificateProfile Profile(crypto::CertificateProfile::Kind kind, std::string cn);
Issued Root(std::string cn);
Issued Issue(const Issued& issuer, const crypto::CertificateProfile& profile);
Issued Client(const Issued& issuer, std::string cn, std::vector<std::string> uris = {});

}  // namespace moat::test_support
