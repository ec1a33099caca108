#include "crypto/openssl_util.h"

#include <openssl/err.h>
#include <openssl/objects.h>

#include "crypto/x509.h"

namespace moat::crypto::internal {

std::string OpenSslErrors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

Error OpenSslError(ErrorCode code, std::string_view what) {
  return Error(code, fmt::format("{}: {}", what, OpenSslErrors()));
}

std::string BioToString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  if (len <= 0 || data == nullptr) return {};
  return std::string(data, static_cast<size_t>(len));
}

}  // namespace moat::crypto::internal

namespace moat::crypto::internal {

bool CertificateHasUsage(X509* cert, int usage) {
  const uint32_t flags = X509_get_extension_flags(cert);
  if ((flags & EXFLAG_INVALID) != 0 || (flags & EXFLAG_XKUSAGE) == 0) return false;
  switch (static_cast<ExtendedKeyUsage>(usage)) {
    case ExtendedKeyUsage::kClientAuth:
      return (X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT) != 0;
    case ExtendedKeyUsage::kServerAuth:
      return (X509_get_extended_key_usage(cert) & XKU_SSL_SERVER) != 0;
    case ExtendedKeyUsage::kCodeSigning:
      return (X509_get_extended_key_usage(cert) & XKU_CODE_SIGN) != 0;
    case ExtendedKeyUsage::kMoatDeviceUpdate:
      break;
  }
  // OpenSSL has no flag for a private OID: look through the extension itself.
  ExtendedKeyUsagePtr eku(static_cast<EXTENDED_KEY_USAGE*>(
      X509_get_ext_d2i(cert, NID_ext_key_usage, nullptr, nullptr)));
  if (!eku) {
    ERR_clear_error();
    return false;
  }
  ASN1_OBJECT* wanted = OBJ_txt2obj(kMoatDeviceUpdateOid, /*no_name=*/1);
  if (wanted == nullptr) {
    ERR_clear_error();
    return false;
  }
  bool found = false;
  for (int i = 0; i < sk_ASN1_OBJECT_num(eku.get()); ++i) {
    if (OBJ_cmp(sk_ASN1_OBJECT_value(eku.get(), i), wanted) == 0) found = true;
  }
  ASN1_OBJECT_free(wanted);
  return found;
}

}  // namespace moat::crypto::internal
