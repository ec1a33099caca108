#include "crypto/x509.h"

#include <arpa/inet.h>
#include <openssl/asn1.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <initializer_list>

#include "core/encoding.h"
#include "crypto/openssl_util.h"
#include "crypto/random.h"

namespace moat::crypto {

using internal::Asn1BitStringPtr;
using internal::Asn1IntegerPtr;
using internal::Asn1OctetStringPtr;
using internal::AuthorityKeyIdPtr;
using internal::BasicConstraintsPtr;
using internal::BignumPtr;
using internal::BioPtr;
using internal::ExtendedKeyUsagePtr;
using internal::GeneralNamePtr;
using internal::GeneralNamesPtr;
using internal::OpenSslError;
using internal::Pkcs7Ptr;
using internal::X509AlgorPtr;
using internal::X509ExtensionStackPtr;
using internal::X509NamePtr;
using internal::X509Ptr;
using internal::X509ReqPtr;
using internal::X509StackPtr;
using internal::X509StoreCtxPtr;
using internal::X509StorePtr;

namespace {

// A Moat certificate is well under 2 KiB; these limits only stop absurd input before OpenSSL
// sees it.
constexpr size_t kMaxPemBytes = 64 * 1024;
constexpr size_t kMaxPemChainBytes = 256 * 1024;
constexpr size_t kMaxDerBytes = 64 * 1024;
constexpr size_t kMaxSanLength = 2048;
constexpr size_t kSerialBytes = 16;

// RFC 2253 order and escaping, but UTF-8 left readable instead of \XX-escaped.
constexpr unsigned long kNameFlags = XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB;

// ---- Time ----

time_t ToTimeT(SystemTime t) {
  return static_cast<time_t>(
      std::chrono::floor<std::chrono::seconds>(t).time_since_epoch().count());
}

// Certificates may say "99991231235959Z" (RFC 5280's "no well-defined expiration"), which is
// beyond what SystemTime holds (year 2262); such times read as SystemTime::max().
Result<SystemTime> FromAsn1Time(const ASN1_TIME* t, std::string_view what) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, fmt::format("{}: malformed time", what)));
  }
  using namespace std::chrono;
  const year_month_day ymd{year{tm.tm_year + 1900}, month{static_cast<unsigned>(tm.tm_mon + 1)},
                           day{static_cast<unsigned>(tm.tm_mday)}};
  if (!ymd.ok()) return Fail(ErrorCode::kInvalidArgument, "{}: malformed time", what);
  const sys_seconds secs =
      sys_days(ymd) + hours{tm.tm_hour} + minutes{tm.tm_min} + seconds{tm.tm_sec};
  constexpr sys_seconds kLatest = floor<seconds>(SystemTime::max());
  constexpr sys_seconds kEarliest = ceil<seconds>(SystemTime::min());
  if (secs >= kLatest) return SystemTime::max();
  if (secs <= kEarliest) return SystemTime::min();
  return SystemTime(secs);
}

// ---- PEM ----

std::string PemEncode(std::string_view label, std::span<const uint8_t> der) {
  const std::string b64 = Base64Encode(der);
  std::string out = fmt::format("-----BEGIN {}-----\n", label);
  for (size_t i = 0; i < b64.size(); i += 64) {
    out.append(b64, i, 64);
    out += '\n';
  }
  out += fmt::format("-----END {}-----\n", label);
  return out;
}

// Owns what PEM_read_bio allocates. The body is cleansed: a private key pasted where a
// certificate belongs must not linger in freed memory.
struct PemParts {
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  ~PemParts() {
    OPENSSL_free(name);
    OPENSSL_free(header);
    if (data != nullptr) OPENSSL_clear_free(data, static_cast<size_t>(std::max(len, 0L)));
  }
};

// Printable, bounded form of text taken from input, for error messages.
std::string Printable(std::string_view text, size_t max = 40) {
  std::string out;
  for (char c : text.substr(0, max)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (text.size() > max) out += "...";
  return out;
}

// Reads the PEM blocks of `pem` in order, stopping after `max_blocks` + 1 so callers can tell
// "too many" apart. Text between blocks is skipped (RFC 7468 explanatory text). Every block
// must carry one of `labels` (the first is the canonical one, named in errors).
Result<std::vector<std::vector<uint8_t>>> ReadPemBlocks(
    std::string_view pem, std::string_view what, std::initializer_list<std::string_view> labels,
    size_t max_blocks) {
  std::vector<std::vector<uint8_t>> blocks;
  if (pem.empty()) return blocks;
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Fail(OpenSslError(ErrorCode::kInternal, "BIO_new_mem_buf"));
  ERR_clear_error();
  while (blocks.size() <= max_blocks) {
    const size_t number = blocks.size() + 1;
    PemParts parts;
    if (PEM_read_bio(bio.get(), &parts.name, &parts.header, &parts.data, &parts.len) != 1) {
      const unsigned long err = ERR_peek_last_error();
      if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
        ERR_clear_error();  // no further "-----BEGIN" line: the normal end of input
        break;
      }
      return Fail(OpenSslError(ErrorCode::kInvalidArgument,
                               fmt::format("{}: malformed PEM block {}", what, number)));
    }
    // SECURITY: a block of another type (a private key, say) is refused before its contents
    // are copied anywhere; PemParts cleanses OpenSSL's buffer.
    const std::string_view label = parts.name != nullptr ? parts.name : "";
    if (std::find(labels.begin(), labels.end(), label) == labels.end()) {
      return Fail(ErrorCode::kInvalidArgument, "{}: PEM block {} is '{}', not '{}'", what, number,
                  Printable(label), *labels.begin());
    }
    if (parts.header != nullptr && parts.header[0] != '\0') {
      return Fail(ErrorCode::kInvalidArgument,
                  "{}: PEM block {} has headers (encrypted PEM is not supported)", what, number);
    }
    blocks.emplace_back(parts.data, parts.data + std::max(parts.len, 0L));
  }
  return blocks;
}

// The DER of the single PEM block in `pem`, whose label must be one of `labels`.
Result<std::vector<uint8_t>> ReadSinglePem(std::string_view pem, std::string_view what,
                                           std::initializer_list<std::string_view> labels) {
  if (pem.size() > kMaxPemBytes) {
    return Fail(ErrorCode::kLimitExceeded, "{}: PEM of {} bytes exceeds the limit of {} bytes",
                what, pem.size(), kMaxPemBytes);
  }
  MOAT_ASSIGN_OR_RETURN(std::vector<std::vector<uint8_t>> blocks,
                        ReadPemBlocks(pem, what, labels, 1));
  if (blocks.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "{}: no PEM '{}' block", what, *labels.begin());
  }
  if (blocks.size() > 1) {
    return Fail(ErrorCode::kInvalidArgument, "{}: expected exactly one PEM block, found more",
                what);
  }
  return std::move(blocks[0]);
}

// ---- Reading names and extensions ----

Result<std::string> NameToString(const X509_NAME* name, std::string_view what) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) return Fail(OpenSslError(ErrorCode::kInternal, "BIO_new"));
  if (name == nullptr || X509_NAME_print_ex(bio.get(), name, 0, kNameFlags) < 0) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, fmt::format("{}: malformed name", what)));
  }
  return internal::BioToString(bio.get());
}

// The last (most specific) commonName, or "" if there is none.
Result<std::string> CommonNameOf(const X509_NAME* name, std::string_view what) {
  int index = -1;
  for (int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1); i >= 0;
       i = X509_NAME_get_index_by_NID(name, NID_commonName, i)) {
    index = i;
  }
  if (index < 0) return std::string();
  const X509_NAME_ENTRY* entry = X509_NAME_get_entry(name, index);
  const ASN1_STRING* data = entry != nullptr ? X509_NAME_ENTRY_get_data(entry) : nullptr;
  unsigned char* utf8 = nullptr;
  const int len = data != nullptr ? ASN1_STRING_to_UTF8(&utf8, data) : -1;
  if (len < 0) {
    return Fail(
        OpenSslError(ErrorCode::kInvalidArgument, fmt::format("{}: malformed common name", what)));
  }
  std::string out(reinterpret_cast<const char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

std::string Asn1StringText(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
}

struct SubjectAltNames {
  std::vector<std::string> uris;
  std::vector<std::string> dns;
  std::vector<std::string> ips;
};

Result<SubjectAltNames> ReadSans(const GENERAL_NAMES* names, std::string_view what) {
  SubjectAltNames out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    switch (name->type) {
      case GEN_URI:
        out.uris.push_back(Asn1StringText(name->d.uniformResourceIdentifier));
        break;
      case GEN_DNS:
        out.dns.push_back(Asn1StringText(name->d.dNSName));
        break;
      case GEN_IPADD: {
        const ASN1_OCTET_STRING* ip = name->d.iPAddress;
        const int len = ASN1_STRING_length(ip);
        char text[INET6_ADDRSTRLEN] = {};
        const int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : -1;
        if (family < 0 ||
            inet_ntop(family, ASN1_STRING_get0_data(ip), text, sizeof text) == nullptr) {
          return Fail(ErrorCode::kInvalidArgument,
                      "{}: subjectAltName IP address of {} bytes is malformed", what, len);
        }
        out.ips.emplace_back(text);
        break;
      }
      default:
        break;  // other name forms are not used by Moat
    }
  }
  return out;
}

// ---- Building names and extensions ----

bool HasControlCharacter(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

Result<void> AddNameEntry(X509_NAME* name, int nid, std::string_view value, std::string_view what,
                          std::string_view field) {
  if (value.empty() || HasControlCharacter(value)) {
    return Fail(ErrorCode::kInvalidArgument, "{}: {} must be non-empty text without controls", what,
                field);
  }
  // OpenSSL enforces the X.520 upper bounds (64 characters for CN and O) and UTF-8 validity.
  if (X509_NAME_add_entry_by_NID(name, nid, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(value.data()),
                                 static_cast<int>(value.size()), -1, 0) != 1) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument,
                             fmt::format("{}: {} '{}'", what, field, value.substr(0, 80))));
  }
  return Ok();
}

// RFC 3986 absolute URI: a scheme, ':' and printable ASCII without spaces.
bool IsAbsoluteUri(std::string_view uri) {
  const size_t colon = uri.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == uri.size()) return false;
  if (!std::isalpha(static_cast<unsigned char>(uri[0]))) return false;
  for (char c : uri.substr(0, colon)) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') {
      return false;
    }
  }
  return std::all_of(uri.begin(), uri.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// A host name of LDH labels, optionally starting with a "*." wildcard label.
bool IsDnsName(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  if (name.starts_with("*.")) name.remove_prefix(2);
  while (true) {
    const size_t dot = name.find('.');
    const std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
    }
    if (dot == std::string_view::npos) return true;
    name.remove_prefix(dot + 1);
  }
}

Result<void> PushIa5Name(GENERAL_NAMES* names, int type, std::string_view value) {
  internal::Asn1Ia5StringPtr text(ASN1_IA5STRING_new());
  GeneralNamePtr name(GENERAL_NAME_new());
  if (!text || !name ||
      ASN1_STRING_set(text.get(), value.data(), static_cast<int>(value.size())) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "building subjectAltName"));
  }
  GENERAL_NAME_set0_value(name.get(), type, text.release());
  if (sk_GENERAL_NAME_push(names, name.get()) <= 0) {
    return Fail(OpenSslError(ErrorCode::kInternal, "building subjectAltName"));
  }
  name.release();  // owned by `names` now
  return Ok();
}

// SECURITY: names are built as GENERAL_NAME objects, never through OpenSSL's config-string
// syntax ("URI:a,DNS:b"), so a comma or colon in a value cannot inject another name.
Result<GeneralNamesPtr> BuildSans(std::span<const std::string> uris,
                                  std::span<const std::string> dns,
                                  std::span<const std::string> ips, std::string_view what) {
  GeneralNamesPtr names(GENERAL_NAMES_new());
  if (!names) return Fail(OpenSslError(ErrorCode::kInternal, "GENERAL_NAMES_new"));
  for (const std::string& uri : uris) {
    if (uri.size() > kMaxSanLength || !IsAbsoluteUri(uri)) {
      return Fail(ErrorCode::kInvalidArgument, "{}: SAN URI '{}' is not an absolute URI", what,
                  Printable(uri));
    }
    MOAT_TRY(PushIa5Name(names.get(), GEN_URI, uri));
  }
  for (const std::string& host : dns) {
    if (!IsDnsName(host)) {
      return Fail(ErrorCode::kInvalidArgument, "{}: SAN DNS name '{}' is not a host name", what,
                  Printable(host));
    }
    MOAT_TRY(PushIa5Name(names.get(), GEN_DNS, host));
  }
  for (const std::string& ip : ips) {
    Asn1OctetStringPtr octets(a2i_IPADDRESS(ip.c_str()));
    if (!octets || ip.find('\0') != std::string::npos) {
      ERR_clear_error();
      return Fail(ErrorCode::kInvalidArgument, "{}: SAN IP address '{}' is not an IP literal", what,
                  Printable(ip));
    }
    GeneralNamePtr name(GENERAL_NAME_new());
    if (!name) return Fail(OpenSslError(ErrorCode::kInternal, "GENERAL_NAME_new"));
    GENERAL_NAME_set0_value(name.get(), GEN_IPADD, octets.release());
    if (sk_GENERAL_NAME_push(names.get(), name.get()) <= 0) {
      return Fail(OpenSslError(ErrorCode::kInternal, "building subjectAltName"));
    }
    name.release();
  }
  return names;
}

Result<void> AddExtension(X509* x509, int nid, void* value, bool critical) {
  if (X509_add1_ext_i2d(x509, nid, value, critical ? 1 : 0, X509V3_ADD_DEFAULT) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal,
                             fmt::format("adding the {} extension", OBJ_nid2sn(nid))));
  }
  return Ok();
}

// SHA-1 of the subjectPublicKey bits: RFC 5280 4.2.1.2 method 1, what `openssl` does too.
Result<Asn1OctetStringPtr> KeyIdentifierOf(const X509* x509) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  Asn1OctetStringPtr id(ASN1_OCTET_STRING_new());
  if (!id || X509_pubkey_digest(x509, EVP_sha1(), md, &len) != 1 ||
      ASN1_OCTET_STRING_set(id.get(), md, static_cast<int>(len)) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "computing the key identifier"));
  }
  return id;
}

bool IsCaKind(CertificateProfile::Kind kind) {
  return kind == CertificateProfile::Kind::kRootCa ||
         kind == CertificateProfile::Kind::kIntermediateCa;
}

Result<void> ValidateProfile(const CertificateProfile& profile) {
  if (profile.common_name.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "certificate profile: common name is required");
  }
  if (profile.not_after <= profile.not_before) {
    return Fail(ErrorCode::kInvalidArgument,
                "certificate profile '{}': not_after ({}) must be later than not_before ({})",
                profile.common_name, FormatRfc3339(profile.not_after),
                FormatRfc3339(profile.not_before));
  }
  if (profile.path_length.has_value()) {
    if (!IsCaKind(profile.kind)) {
      return Fail(ErrorCode::kInvalidArgument,
                  "certificate profile '{}': path_length is only for CA certificates",
                  profile.common_name);
    }
    if (*profile.path_length < 0) {
      return Fail(ErrorCode::kInvalidArgument,
                  "certificate profile '{}': path_length {} is negative", profile.common_name,
                  *profile.path_length);
    }
  }
  return Ok();
}

Result<X509NamePtr> BuildSubject(const CertificateProfile& profile, std::string_view what) {
  X509NamePtr name(X509_NAME_new());
  if (!name) return Fail(OpenSslError(ErrorCode::kInternal, "X509_NAME_new"));
  if (!profile.organization.empty()) {
    MOAT_TRY(
        AddNameEntry(name.get(), NID_organizationName, profile.organization, what, "organization"));
  }
  MOAT_TRY(AddNameEntry(name.get(), NID_commonName, profile.common_name, what, "common name"));
  return name;
}

Result<void> SetRandomSerial(X509* x509) {
  std::vector<uint8_t> bytes;
  do {
    bytes = RandomBytes(kSerialBytes);
    bytes[0] &= 0x7f;  // RFC 5280: positive; at most 20 octets
  } while (std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; }));
  BignumPtr bn(BN_bin2bn(bytes.data(), static_cast<int>(bytes.size()), nullptr));
  Asn1IntegerPtr serial(bn ? BN_to_ASN1_INTEGER(bn.get(), nullptr) : nullptr);
  if (!serial || X509_set_serialNumber(x509, serial.get()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "setting the serial number"));
  }
  return Ok();
}

Result<void> AddProfileExtensions(X509* x509, const CertificateProfile& profile, X509* issuer,
                                  std::string_view what) {
  using Kind = CertificateProfile::Kind;
  const bool ca = IsCaKind(profile.kind);

  BasicConstraintsPtr bc(BASIC_CONSTRAINTS_new());
  if (!bc) return Fail(OpenSslError(ErrorCode::kInternal, "BASIC_CONSTRAINTS_new"));
  bc->ca = ca ? 0xff : 0;
  if (profile.path_length.has_value()) {
    bc->pathlen = ASN1_INTEGER_new();
    if (bc->pathlen == nullptr || ASN1_INTEGER_set(bc->pathlen, *profile.path_length) != 1) {
      return Fail(OpenSslError(ErrorCode::kInternal, "setting pathlen"));
    }
  }
  MOAT_TRY(AddExtension(x509, NID_basic_constraints, bc.get(), /*critical=*/true));

  Asn1BitStringPtr usage(ASN1_BIT_STRING_new());
  if (!usage) return Fail(OpenSslError(ErrorCode::kInternal, "ASN1_BIT_STRING_new"));
  // Bit numbers from RFC 5280 4.2.1.3.
  constexpr int kDigitalSignature = 0, kKeyCertSign = 5, kCrlSign = 6;
  const std::vector<int> bits =
      ca ? std::vector<int>{kKeyCertSign, kCrlSign} : std::vector<int>{kDigitalSignature};
  for (int bit : bits) {
    if (ASN1_BIT_STRING_set_bit(usage.get(), bit, 1) != 1) {
      return Fail(OpenSslError(ErrorCode::kInternal, "setting keyUsage"));
    }
  }
  MOAT_TRY(AddExtension(x509, NID_key_usage, usage.get(), /*critical=*/true));

  if (!ca) {
    ExtendedKeyUsagePtr eku(sk_ASN1_OBJECT_new_null());
    if (!eku) return Fail(OpenSslError(ErrorCode::kInternal, "building extendedKeyUsage"));
    if (profile.kind == Kind::kDeviceUpdate) {
      // A dynamically allocated object: on success the stack owns it (EXTENDED_KEY_USAGE_free).
      ASN1_OBJECT* oid = OBJ_txt2obj(kMoatDeviceUpdateOid, /*no_name=*/1);
      if (oid == nullptr || sk_ASN1_OBJECT_push(eku.get(), oid) <= 0) {
        ASN1_OBJECT_free(oid);
        return Fail(OpenSslError(ErrorCode::kInternal, "building extendedKeyUsage"));
      }
    } else {
      const int purpose = profile.kind == Kind::kClient   ? NID_client_auth
                          : profile.kind == Kind::kServer ? NID_server_auth
                                                          : NID_code_sign;
      // OBJ_nid2obj returns a static object, which EXTENDED_KEY_USAGE_free leaves alone.
      if (sk_ASN1_OBJECT_push(eku.get(), OBJ_nid2obj(purpose)) <= 0) {
        return Fail(OpenSslError(ErrorCode::kInternal, "building extendedKeyUsage"));
      }
    }
    MOAT_TRY(AddExtension(x509, NID_ext_key_usage, eku.get(), /*critical=*/false));
  }

  if (!profile.san_uris.empty() || !profile.san_dns.empty() || !profile.san_ips.empty()) {
    MOAT_ASSIGN_OR_RETURN(GeneralNamesPtr sans,
                          BuildSans(profile.san_uris, profile.san_dns, profile.san_ips, what));
    MOAT_TRY(AddExtension(x509, NID_subject_alt_name, sans.get(), /*critical=*/false));
  }

  MOAT_ASSIGN_OR_RETURN(Asn1OctetStringPtr ski, KeyIdentifierOf(x509));
  MOAT_TRY(AddExtension(x509, NID_subject_key_identifier, ski.get(), /*critical=*/false));

  if (issuer != nullptr) {
    // The issuer's own subjectKeyIdentifier when it has one, so AKI matches SKI whatever
    // method the issuer's maker used; otherwise the same hash we use for ours.
    AuthorityKeyIdPtr aki(AUTHORITY_KEYID_new());
    if (!aki) return Fail(OpenSslError(ErrorCode::kInternal, "AUTHORITY_KEYID_new"));
    const ASN1_OCTET_STRING* issuer_ski = X509_get0_subject_key_id(issuer);
    if (issuer_ski != nullptr) {
      aki->keyid = ASN1_OCTET_STRING_dup(issuer_ski);
      if (aki->keyid == nullptr) return Fail(OpenSslError(ErrorCode::kInternal, "copying AKI"));
    } else {
      MOAT_ASSIGN_OR_RETURN(Asn1OctetStringPtr id, KeyIdentifierOf(issuer));
      aki->keyid = id.release();
    }
    MOAT_TRY(AddExtension(x509, NID_authority_key_identifier, aki.get(), /*critical=*/false));
  }
  return Ok();
}

// Builds, signs and re-parses a certificate. `issuer` is null for a self-signed one.
// The subjectPublicKeyInfo of `x`, set from the key's algorithm and encoded public key.
// X509_set_pubkey would do the same, but OpenSSL 3.0 implements it by encoding the key and
// decoding it back, and the decoder setup alone was 7% of the service's CPU per attestation
// (bench/moat-service-load). The issued certificate is re-parsed afterwards and its key compared.
Result<void> SetSubjectPublicKey(X509* x, const PublicKey& key) {
  ASN1_OBJECT* algorithm = nullptr;
  int parameter_type = V_ASN1_UNDEF;
  void* parameter = nullptr;
  switch (key.type()) {
    case KeyType::kEcdsaP256:
      algorithm = OBJ_nid2obj(NID_X9_62_id_ecPublicKey);
      parameter_type = V_ASN1_OBJECT;
      parameter = OBJ_nid2obj(NID_X9_62_prime256v1);
      break;
    case KeyType::kEd25519:
      algorithm = OBJ_nid2obj(NID_ED25519);
      break;
  }
  if (algorithm == nullptr) return Fail(ErrorCode::kInternal, "subject key: unknown algorithm");
  size_t length = 0;
  if (EVP_PKEY_get_octet_string_param(key.native(), OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0, &length) !=
          1 ||
      length == 0 || length > 1024) {
    return Fail(OpenSslError(ErrorCode::kInternal, "subject key: encoded public key"));
  }
  auto* encoded = static_cast<unsigned char*>(OPENSSL_malloc(length));
  if (encoded == nullptr) return Fail(ErrorCode::kInternal, "subject key: out of memory");
  if (EVP_PKEY_get_octet_string_param(key.native(), OSSL_PKEY_PARAM_PUB_KEY, encoded, length,
                                      &length) != 1) {
    OPENSSL_free(encoded);
    return Fail(OpenSslError(ErrorCode::kInternal, "subject key: encoded public key"));
  }
  X509_PUBKEY* spki = X509_get_X509_PUBKEY(x);
  // Takes `encoded` (and the static OIDs) on success.
  if (spki == nullptr || X509_PUBKEY_set0_param(spki, algorithm, parameter_type, parameter, encoded,
                                                static_cast<int>(length)) != 1) {
    OPENSSL_free(encoded);
    return Fail(OpenSslError(ErrorCode::kInternal, "subject key: X509_PUBKEY_set0_param"));
  }
  return Ok();
}

Result<Certificate> MakeCertificate(const CertificateProfile& profile, const PublicKey& subject_key,
                                    const Certificate* issuer, const PrivateKey& signing_key) {
  MOAT_TRY(ValidateProfile(profile));
  const std::string what = fmt::format("certificate profile '{}'", profile.common_name);
  X509Ptr x509(X509_new());
  if (!x509 || X509_set_version(x509.get(), X509_VERSION_3) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "X509_new"));
  }
  MOAT_TRY(SetRandomSerial(x509.get()));
  MOAT_ASSIGN_OR_RETURN(X509NamePtr subject, BuildSubject(profile, what));
  const X509_NAME* issuer_name =
      issuer != nullptr ? X509_get_subject_name(issuer->native()) : subject.get();
  if (X509_set_subject_name(x509.get(), subject.get()) != 1 ||
      X509_set_issuer_name(x509.get(), issuer_name) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "setting names"));
  }
  // ASN1_TIME_set picks UTCTime for 1950-2049 and GeneralizedTime otherwise (RFC 5280 4.1.2.5).
  if (ASN1_TIME_set(X509_getm_notBefore(x509.get()), ToTimeT(profile.not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(x509.get()), ToTimeT(profile.not_after)) == nullptr) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, fmt::format("{}: validity", what)));
  }
  MOAT_TRY(SetSubjectPublicKey(x509.get(), subject_key));
  MOAT_TRY(AddProfileExtensions(x509.get(), profile, issuer != nullptr ? issuer->native() : nullptr,
                                what));
  // Ed25519 takes no separate digest.
  const EVP_MD* md = signing_key.type() == KeyType::kEcdsaP256 ? EVP_sha256() : nullptr;
  if (X509_sign(x509.get(), signing_key.native(), md) <= 0) {
    return Fail(OpenSslError(ErrorCode::kInternal, fmt::format("{}: signing", what)));
  }
  unsigned char* der = nullptr;
  const int len = i2d_X509(x509.get(), &der);
  if (len <= 0) return Fail(OpenSslError(ErrorCode::kInternal, "i2d_X509"));
  std::vector<uint8_t> bytes(der, der + len);
  OPENSSL_free(der);
  // Re-parsing gives exactly what a relying party will see, through the same checks.
  MOAT_ASSIGN_OR_RETURN(Certificate issued, Certificate::FromDer(bytes));
  if (!(issued.public_key() == subject_key)) {
    return Fail(ErrorCode::kInternal, "{}: the issued certificate does not hold the subject key",
                what);
  }
  return issued;
}

}  // namespace

std::string_view ExtendedKeyUsageName(ExtendedKeyUsage usage) {
  switch (usage) {
    case ExtendedKeyUsage::kClientAuth:
      return "clientAuth";
    case ExtendedKeyUsage::kServerAuth:
      return "serverAuth";
    case ExtendedKeyUsage::kCodeSigning:
      return "codeSigning";
    case ExtendedKeyUsage::kMoatDeviceUpdate:
      return "moatDeviceUpdate";
  }
  return "unknown";
}

// ---- Certificate ----

// Everything is read once, when parsed, so the accessors cannot fail.
struct Certificate::State {
  State(X509Ptr x, std::vector<uint8_t> d, PublicKey k)
      : x509(std::move(x)), der(std::move(d)), key(std::move(k)) {}
  X509Ptr x509;
  std::vector<uint8_t> der;
  PublicKey key;
  std::string subject;
  std::string issuer;
  std::string common_name;
  std::string serial_hex;
  SystemTime not_before;
  SystemTime not_after;
  SubjectAltNames sans;
  bool is_ca = false;
  bool has_eku = false;
  uint32_t eku_flags = 0;
};

Result<Certificate> Certificate::FromDer(std::span<const uint8_t> der) {
  if (der.empty()) return Fail(ErrorCode::kInvalidArgument, "certificate: empty DER");
  if (der.size() > kMaxDerBytes) {
    return Fail(ErrorCode::kLimitExceeded, "certificate: DER of {} bytes exceeds the limit of {}",
                der.size(), kMaxDerBytes);
  }
  const unsigned char* p = der.data();
  X509Ptr x509(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!x509) return Fail(OpenSslError(ErrorCode::kInvalidArgument, "certificate: invalid DER"));
  if (p != der.data() + der.size()) {
    return Fail(ErrorCode::kInvalidArgument, "certificate: {} trailing bytes after the DER",
                static_cast<size_t>(der.data() + der.size() - p));
  }
  return FromParsed(x509.release(), std::vector<uint8_t>(der.begin(), der.end()));
}

Result<Certificate> Certificate::FromNative(X509* x) {
  if (x == nullptr) return Fail(ErrorCode::kInvalidArgument, "certificate: none");
  // The DER OpenSSL kept from decoding (i2d of an unmodified object re-emits it, no decode).
  unsigned char* der = nullptr;
  const int len = i2d_X509(x, &der);
  if (len <= 0 || der == nullptr) {
    return Fail(OpenSslError(ErrorCode::kInternal, "certificate: encoding"));
  }
  std::vector<uint8_t> bytes(der, der + len);
  OPENSSL_free(der);
  if (bytes.size() > kMaxDerBytes) {
    return Fail(ErrorCode::kLimitExceeded, "certificate: DER of {} bytes exceeds the limit of {}",
                bytes.size(), kMaxDerBytes);
  }
  if (X509_up_ref(x) != 1) return Fail(OpenSslError(ErrorCode::kInternal, "X509_up_ref"));
  return FromParsed(x, std::move(bytes));
}

Result<Certificate> Certificate::FromParsed(X509* owned, std::vector<uint8_t> der) {
  X509Ptr x509(owned);
  X509* x = x509.get();
  // Decodes and caches the extensions; fails on malformed or duplicated ones.
  if (X509_check_purpose(x, -1, 0) != 1 || (X509_get_extension_flags(x) & EXFLAG_INVALID) != 0) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument,
                             "certificate: malformed or duplicate extensions"));
  }
  MOAT_ASSIGN_OR_RETURN(std::string subject,
                        NameToString(X509_get_subject_name(x), "certificate subject"));
  const std::string what = fmt::format("certificate '{}'", subject);
  EVP_PKEY* native_key = X509_get0_pubkey(x);
  if (native_key == nullptr) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, what + ": unreadable public key"));
  }
  auto key = PublicKey::FromNative(native_key);
  if (!key) return Fail(key.error().WithContext(what));

  auto state = std::make_shared<State>(std::move(x509), std::move(der), std::move(*key));
  state->subject = std::move(subject);
  MOAT_ASSIGN_OR_RETURN(state->issuer, NameToString(X509_get_issuer_name(x), what + " issuer"));
  MOAT_ASSIGN_OR_RETURN(state->common_name, CommonNameOf(X509_get_subject_name(x), what));
  MOAT_ASSIGN_OR_RETURN(state->not_before, FromAsn1Time(X509_get0_notBefore(x), what));
  MOAT_ASSIGN_OR_RETURN(state->not_after, FromAsn1Time(X509_get0_notAfter(x), what));

  const ASN1_INTEGER* serial = X509_get0_serialNumber(x);
  state->serial_hex = HexEncode(std::span<const uint8_t>(
      ASN1_STRING_get0_data(serial), static_cast<size_t>(ASN1_STRING_length(serial))));
  if (state->serial_hex.empty()) state->serial_hex = "00";
  if (ASN1_STRING_type(serial) == V_ASN1_NEG_INTEGER) state->serial_hex.insert(0, "-");

  int critical = 0;
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, &critical, nullptr)));
  if (names) {
    MOAT_ASSIGN_OR_RETURN(state->sans, ReadSans(names.get(), what));
  } else if (critical != -1) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, what + ": malformed subjectAltName"));
  }

  const uint32_t flags = X509_get_extension_flags(x);
  state->is_ca = (flags & EXFLAG_BCONS) != 0 && (flags & EXFLAG_CA) != 0;
  state->has_eku = (flags & EXFLAG_XKUSAGE) != 0;
  state->eku_flags = X509_get_extended_key_usage(x);
  return Certificate(std::move(state));
}

Result<Certificate> Certificate::FromPem(std::string_view pem) {
  MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> der,
                        ReadSinglePem(pem, "certificate", {"CERTIFICATE"}));
  return FromDer(der);
}

Result<std::vector<Certificate>> Certificate::ParsePemChain(std::string_view pem,
                                                            size_t max_certs) {
  if (max_certs == 0) {
    return Fail(ErrorCode::kInvalidArgument, "certificate chain: max_certs must be positive");
  }
  if (pem.size() > kMaxPemChainBytes) {
    return Fail(ErrorCode::kLimitExceeded,
                "certificate chain: PEM of {} bytes exceeds the limit of {} bytes", pem.size(),
                kMaxPemChainBytes);
  }
  MOAT_ASSIGN_OR_RETURN(std::vector<std::vector<uint8_t>> blocks,
                        ReadPemBlocks(pem, "certificate chain", {"CERTIFICATE"}, max_certs));
  if (blocks.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "certificate chain: no PEM 'CERTIFICATE' block");
  }
  if (blocks.size() > max_certs) {
    return Fail(ErrorCode::kLimitExceeded, "certificate chain: more than {} certificates",
                max_certs);
  }
  std::vector<Certificate> out;
  out.reserve(blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    auto cert = FromDer(blocks[i]);
    if (!cert)
      return Fail(cert.error().WithContext(fmt::format("certificate chain: block {}", i + 1)));
    out.push_back(std::move(*cert));
  }
  return out;
}

std::string Certificate::ToPem() const { return PemEncode("CERTIFICATE", state_->der); }
std::vector<uint8_t> Certificate::ToDer() const { return state_->der; }
std::string Certificate::SubjectCommonName() const { return state_->common_name; }
std::string Certificate::Subject() const { return state_->subject; }
std::string Certificate::Issuer() const { return state_->issuer; }
std::string Certificate::SerialHex() const { return state_->serial_hex; }
SystemTime Certificate::NotBefore() const { return state_->not_before; }
SystemTime Certificate::NotAfter() const { return state_->not_after; }
PublicKey Certificate::public_key() const { return state_->key; }
std::vector<std::string> Certificate::SanUris() const { return state_->sans.uris; }
std::vector<std::string> Certificate::SanDnsNames() const { return state_->sans.dns; }
std::vector<std::string> Certificate::SanIpAddresses() const { return state_->sans.ips; }
bool Certificate::IsCa() const { return state_->is_ca; }

bool Certificate::HasExtendedKeyUsage(ExtendedKeyUsage usage) const {
  if (!state_->has_eku) return false;
  switch (usage) {
    case ExtendedKeyUsage::kClientAuth:
      return (state_->eku_flags & XKU_SSL_CLIENT) != 0;
    case ExtendedKeyUsage::kServerAuth:
      return (state_->eku_flags & XKU_SSL_SERVER) != 0;
    case ExtendedKeyUsage::kCodeSigning:
      return (state_->eku_flags & XKU_CODE_SIGN) != 0;
    case ExtendedKeyUsage::kMoatDeviceUpdate:
      return internal::CertificateHasUsage(state_->x509.get(), static_cast<int>(usage));
  }
  return false;
}

Sha256Digest Certificate::Fingerprint() const { return Sha256(state_->der); }

bool Certificate::operator==(const Certificate& other) const {
  return state_->der == other.state_->der;
}

X509* Certificate::native() const { return state_->x509.get(); }

// ---- CertificateRequest ----

struct CertificateRequest::State {
  State(X509ReqPtr r, std::vector<uint8_t> d, PublicKey k)
      : req(std::move(r)), der(std::move(d)), key(std::move(k)) {}
  X509ReqPtr req;
  std::vector<uint8_t> der;
  PublicKey key;
  std::string common_name;
  std::vector<std::string> san_uris;
};

Result<CertificateRequest> CertificateRequest::FromDer(std::span<const uint8_t> der) {
  constexpr std::string_view kWhat = "certificate request";
  if (der.empty()) return Fail(ErrorCode::kInvalidArgument, "{}: empty DER", kWhat);
  if (der.size() > kMaxDerBytes) {
    return Fail(ErrorCode::kLimitExceeded, "{}: DER of {} bytes exceeds the limit of {}", kWhat,
                der.size(), kMaxDerBytes);
  }
  const unsigned char* p = der.data();
  X509ReqPtr req(d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size())));
  if (!req) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, "certificate request: invalid DER"));
  }
  if (p != der.data() + der.size()) {
    return Fail(ErrorCode::kInvalidArgument, "{}: {} trailing bytes after the DER", kWhat,
                static_cast<size_t>(der.data() + der.size() - p));
  }
  if (X509_REQ_get_version(req.get()) != X509_REQ_VERSION_1) {
    return Fail(ErrorCode::kInvalidArgument, "{}: unsupported version {}", kWhat,
                X509_REQ_get_version(req.get()) + 1);
  }
  EVP_PKEY* native_key = X509_REQ_get0_pubkey(req.get());
  if (native_key == nullptr) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, "certificate request: unreadable key"));
  }
  auto key = PublicKey::FromNative(native_key);
  if (!key) return Fail(key.error().WithContext(kWhat));
  MOAT_ASSIGN_OR_RETURN(std::string common_name,
                        CommonNameOf(X509_REQ_get_subject_name(req.get()), kWhat));

  // X509_REQ_get_extensions returns null both for "none" (older 3.0 releases) and for a
  // malformed extension request; the attribute's presence tells them apart.
  X509ExtensionStackPtr extensions(X509_REQ_get_extensions(req.get()));
  const bool has_request = X509_REQ_get_attr_by_NID(req.get(), NID_ext_req, -1) >= 0 ||
                           X509_REQ_get_attr_by_NID(req.get(), NID_ms_ext_req, -1) >= 0;
  if (!extensions && has_request) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument,
                             "certificate request: malformed extension request"));
  }
  SubjectAltNames sans;
  if (extensions) {
    int critical = 0;
    GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(
        X509V3_get_d2i(extensions.get(), NID_subject_alt_name, &critical, nullptr)));
    if (names) {
      MOAT_ASSIGN_OR_RETURN(sans, ReadSans(names.get(), kWhat));
    } else if (critical != -1) {
      return Fail(OpenSslError(ErrorCode::kInvalidArgument,
                               "certificate request: malformed or duplicate subjectAltName"));
    }
  }
  ERR_clear_error();

  auto state = std::make_shared<State>(std::move(req), std::vector<uint8_t>(der.begin(), der.end()),
                                       std::move(*key));
  state->common_name = std::move(common_name);
  state->san_uris = std::move(sans.uris);
  return CertificateRequest(std::move(state));
}

Result<CertificateRequest> CertificateRequest::FromPem(std::string_view pem) {
  MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> der,
                        ReadSinglePem(pem, "certificate request",
                                      {"CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"}));
  return FromDer(der);
}

Result<CertificateRequest> CertificateRequest::Create(const PrivateKey& key,
                                                      std::string_view common_name,
                                                      std::span<const std::string> san_uris) {
  return Create(
      key.public_key(), [&key](std::span<const uint8_t> message) { return key.Sign(message); },
      common_name, san_uris);
}

Result<CertificateRequest> CertificateRequest::Create(const PublicKey& key,
                                                      const MessageSigner& sign,
                                                      std::string_view common_name,
                                                      std::span<const std::string> san_uris) {
  constexpr std::string_view kWhat = "certificate request";
  X509ReqPtr req(X509_REQ_new());
  X509NamePtr subject(X509_NAME_new());
  if (!req || !subject || X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "X509_REQ_new"));
  }
  MOAT_TRY(AddNameEntry(subject.get(), NID_commonName, common_name, kWhat, "common name"));
  if (X509_REQ_set_subject_name(req.get(), subject.get()) != 1 ||
      X509_REQ_set_pubkey(req.get(), key.native()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "building the certificate request"));
  }
  if (!san_uris.empty()) {
    MOAT_ASSIGN_OR_RETURN(GeneralNamesPtr sans, BuildSans(san_uris, {}, {}, kWhat));
    STACK_OF(X509_EXTENSION)* raw = nullptr;
    const int added =
        X509V3_add1_i2d(&raw, NID_subject_alt_name, sans.get(), 0, X509V3_ADD_DEFAULT);
    X509ExtensionStackPtr extensions(raw);
    if (added != 1 || X509_REQ_add_extensions(req.get(), extensions.get()) != 1) {
      return Fail(OpenSslError(ErrorCode::kInternal, "adding the extension request"));
    }
  }

  // Sign the CertificationRequestInfo ourselves, so the key can live outside this process.
  const int tbs_len = i2d_re_X509_REQ_tbs(req.get(), nullptr);
  if (tbs_len <= 0) return Fail(OpenSslError(ErrorCode::kInternal, "i2d_re_X509_REQ_tbs"));
  std::vector<uint8_t> tbs(static_cast<size_t>(tbs_len));
  unsigned char* out = tbs.data();
  if (i2d_re_X509_REQ_tbs(req.get(), &out) != tbs_len) {
    return Fail(OpenSslError(ErrorCode::kInternal, "i2d_re_X509_REQ_tbs"));
  }
  auto signature = sign(tbs);
  if (!signature) return Fail(signature.error().WithContext("certificate request: signing"));

  const int algorithm = key.type() == KeyType::kEcdsaP256 ? NID_ecdsa_with_SHA256 : NID_ED25519;
  X509AlgorPtr algor(X509_ALGOR_new());
  Asn1BitStringPtr bits(ASN1_BIT_STRING_new());
  if (!algor || !bits ||
      X509_ALGOR_set0(algor.get(), OBJ_nid2obj(algorithm), V_ASN1_UNDEF, nullptr) != 1 ||
      X509_REQ_set1_signature_algo(req.get(), algor.get()) != 1 ||
      ASN1_BIT_STRING_set(bits.get(), signature->data(), static_cast<int>(signature->size())) !=
          1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "setting the request signature"));
  }
  // A signature is whole bytes: say "0 unused bits" rather than let OpenSSL trim trailing zeros.
  bits->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
  bits->flags |= ASN1_STRING_FLAG_BITS_LEFT;
  X509_REQ_set0_signature(req.get(), bits.release());

  unsigned char* der = nullptr;
  const int len = i2d_X509_REQ(req.get(), &der);
  if (len <= 0) return Fail(OpenSslError(ErrorCode::kInternal, "i2d_X509_REQ"));
  std::vector<uint8_t> bytes(der, der + len);
  OPENSSL_free(der);
  MOAT_ASSIGN_OR_RETURN(CertificateRequest request, FromDer(bytes));
  if (!request.VerifySignature()) {
    return Fail(ErrorCode::kVerificationFailed,
                "certificate request: the signer did not sign with the given public key");
  }
  return request;
}

std::string CertificateRequest::ToPem() const {
  return PemEncode("CERTIFICATE REQUEST", state_->der);
}
std::vector<uint8_t> CertificateRequest::ToDer() const { return state_->der; }
PublicKey CertificateRequest::public_key() const { return state_->key; }
std::string CertificateRequest::SubjectCommonName() const { return state_->common_name; }
std::vector<std::string> CertificateRequest::SanUris() const { return state_->san_uris; }
X509_REQ* CertificateRequest::native() const { return state_->req.get(); }

Result<void> CertificateRequest::VerifySignature() const {
  // 1 is a valid signature; 0 a mismatch; -1 a malformed signature or unknown algorithm.
  if (X509_REQ_verify(state_->req.get(), state_->key.native()) != 1) {
    ERR_clear_error();
    return Fail(ErrorCode::kVerificationFailed,
                "certificate request '{}': signature does not verify with its public key",
                state_->common_name);
  }
  return Ok();
}

// ---- Issuing ----

Result<Certificate> SelfSignCertificate(const CertificateProfile& profile, const PrivateKey& key) {
  return MakeCertificate(profile, key.public_key(), nullptr, key);
}

Result<Certificate> IssueCertificate(const CertificateProfile& profile,
                                     const PublicKey& subject_key, const Certificate& issuer,
                                     const PrivateKey& issuer_key) {
  if (!issuer.IsCa()) {
    return Fail(ErrorCode::kInvalidArgument, "issuer '{}' is not a CA certificate",
                issuer.Subject());
  }
  if ((X509_get_key_usage(issuer.native()) & KU_KEY_CERT_SIGN) == 0) {
    return Fail(ErrorCode::kInvalidArgument, "issuer '{}' may not sign certificates (keyUsage)",
                issuer.Subject());
  }
  if (IsCaKind(profile.kind) && X509_get_pathlen(issuer.native()) == 0) {
    return Fail(ErrorCode::kInvalidArgument,
                "issuer '{}' has pathlen 0 and cannot issue CA certificates", issuer.Subject());
  }
  if (!(issuer.public_key() == issuer_key.public_key())) {
    return Fail(ErrorCode::kInvalidArgument,
                "the issuer key does not belong to the issuer certificate '{}'", issuer.Subject());
  }
  return MakeCertificate(profile, subject_key, &issuer, issuer_key);
}

// ---- Chain verification ----

Result<void> VerifyCertificateChain(const Certificate& leaf,
                                    std::span<const Certificate> intermediates,
                                    std::span<const Certificate> roots, SystemTime at,
                                    std::optional<ExtendedKeyUsage> purpose) {
  if (roots.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "certificate chain: no trusted roots given");
  }
  X509StorePtr store(X509_STORE_new());
  if (!store) return Fail(OpenSslError(ErrorCode::kInternal, "X509_STORE_new"));
  for (const Certificate& root : roots) {
    if (X509_STORE_add_cert(store.get(), root.native()) != 1) {
      return Fail(OpenSslError(ErrorCode::kInternal, "X509_STORE_add_cert"));
    }
  }
  X509StackPtr untrusted(sk_X509_new_null());
  if (!untrusted) return Fail(OpenSslError(ErrorCode::kInternal, "sk_X509_new_null"));
  for (const Certificate& cert : intermediates) {
    if (X509_up_ref(cert.native()) != 1) {
      return Fail(OpenSslError(ErrorCode::kInternal, "X509_up_ref"));
    }
    if (sk_X509_push(untrusted.get(), cert.native()) <= 0) {
      X509_free(cert.native());
      return Fail(OpenSslError(ErrorCode::kInternal, "sk_X509_push"));
    }
  }
  // Declared after the store and the stack, so it is freed before them.
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), leaf.native(), untrusted.get()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "X509_STORE_CTX_init"));
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  // set_time also sets X509_V_FLAG_USE_CHECK_TIME: the caller's clock, never the system's.
  X509_VERIFY_PARAM_set_time(param, ToTimeT(at));
  if (X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT | X509_V_FLAG_USE_CHECK_TIME) !=
      1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "X509_VERIFY_PARAM_set_flags"));
  }
  // OpenSSL 3.0 has no code-signing purpose; that one is checked below instead.
  if (purpose == ExtendedKeyUsage::kClientAuth || purpose == ExtendedKeyUsage::kServerAuth) {
    const int id = purpose == ExtendedKeyUsage::kClientAuth ? X509_PURPOSE_SSL_CLIENT
                                                            : X509_PURPOSE_SSL_SERVER;
    if (X509_STORE_CTX_set_purpose(ctx.get(), id) != 1) {
      return Fail(OpenSslError(ErrorCode::kInternal, "X509_STORE_CTX_set_purpose"));
    }
  }
  const int rc = X509_verify_cert(ctx.get());
  if (rc != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    if (err == X509_V_OK) {
      return Fail(OpenSslError(ErrorCode::kInternal, "certificate chain: X509_verify_cert"));
    }
    ERR_clear_error();
    const X509* bad = X509_STORE_CTX_get_current_cert(ctx.get());
    std::string who = "unknown certificate";
    if (bad != nullptr) {
      auto name = NameToString(X509_get_subject_name(bad), "certificate");
      if (name) who = std::move(*name);
    }
    return Fail(ErrorCode::kVerificationFailed, "certificate chain: {} (depth {}, {})",
                X509_verify_cert_error_string(err), X509_STORE_CTX_get_error_depth(ctx.get()), who);
  }
  if (purpose.has_value()) {
    // SECURITY: RFC 5280 reads a leaf without extendedKeyUsage as fit for anything; Moat
    // requires the usage to be stated.
    if (!leaf.HasExtendedKeyUsage(*purpose)) {
      return Fail(ErrorCode::kVerificationFailed,
                  "certificate chain: leaf has no extendedKeyUsage {} (depth 0, {})",
                  ExtendedKeyUsageName(*purpose), leaf.Subject());
    }
    if (*purpose == ExtendedKeyUsage::kCodeSigning) {
      // What OpenSSL's purpose check does for CAs: a CA that states EKUs must allow this one.
      STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx.get());
      for (int i = 1; i < sk_X509_num(chain); ++i) {
        X509* ca = sk_X509_value(chain, i);
        if ((X509_get_extension_flags(ca) & EXFLAG_XKUSAGE) != 0 &&
            (X509_get_extended_key_usage(ca) & (XKU_CODE_SIGN | XKU_ANYEKU)) == 0) {
          auto name = NameToString(X509_get_subject_name(ca), "certificate");
          return Fail(ErrorCode::kVerificationFailed,
                      "certificate chain: CA does not allow codeSigning (depth {}, {})", i,
                      name ? *name : "unknown certificate");
        }
      }
    }
  }
  return Ok();
}

// ---- Device identity ----

Result<Certificate> SelfCertifiedDeviceCertificate(const PrivateKey& identity_key,
                                                   SystemTime not_before, SystemTime not_after,
                                                   std::string_view device_id) {
  if (identity_key.type() != KeyType::kEcdsaP256) {
    return Fail(ErrorCode::kInvalidArgument, "a device identity key must be ECDSA P-256");
  }
  const PublicKey pub = identity_key.public_key();
  const std::string id = device_id.empty() ? pub.FingerprintHex() : std::string(device_id);
  CertificateProfile profile{.kind = CertificateProfile::Kind::kClient,
                             .common_name = id,
                             .not_before = not_before,
                             .not_after = not_after,
                             .san_uris = {DeviceSanUri(id)}};
  return SelfSignCertificate(profile, identity_key);
}

bool IsSelfCertifiedDeviceCertificate(const Certificate& cert) {
  X509* x = cert.native();
  // Cheapest test first: a CA-issued certificate (every request of a certified device) stops
  // here, before any key is encoded or hashed.
  if (X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) != 0) return false;
  if (cert.IsCa() || cert.public_key().type() != KeyType::kEcdsaP256) return false;
  if (!cert.HasExtendedKeyUsage(ExtendedKeyUsage::kClientAuth)) return false;
  if (cert.SanUris().size() != 1 || !cert.SanDnsNames().empty() || !cert.SanIpAddresses().empty()) {
    return false;
  }
  if (!DeviceIdFromCertificate(cert)) return false;
  // Signed by its own key (OpenSSL skips that check for a self-signed leaf).
  EVP_PKEY* key = X509_get0_pubkey(x);
  if (key == nullptr || X509_verify(x, key) != 1) {
    ERR_clear_error();
    return false;
  }
  return true;
}

std::string DeviceSanUri(std::string_view device_id_hex) {
  return fmt::format("{}{}", kDeviceSanPrefix, device_id_hex);
}

Result<std::string> DeviceIdFromCertificate(const Certificate& cert) {
  const auto is_device_uri = [](std::string_view uri) {
    if (uri.size() < kDeviceSanPrefix.size()) return false;
    for (size_t i = 0; i < kDeviceSanPrefix.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(uri[i])) != kDeviceSanPrefix[i]) return false;
    }
    return true;
  };
  std::optional<std::string> found;
  for (const std::string& uri : cert.SanUris()) {
    if (!is_device_uri(uri)) continue;
    // SECURITY: two device names in one certificate would let it speak for two devices.
    if (found.has_value()) {
      return Fail(ErrorCode::kInvalidArgument,
                  "certificate '{}' names more than one device in its subjectAltName",
                  cert.Subject());
    }
    found = uri;
  }
  if (!found.has_value()) {
    return Fail(ErrorCode::kNotFound, "certificate '{}' has no {} subjectAltName", cert.Subject(),
                kDeviceSanPrefix);
  }
  const std::string_view uri = *found;
  const std::string_view id = uri.substr(kDeviceSanPrefix.size());
  const bool lowercase_hex = std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
  if (!uri.starts_with(kDeviceSanPrefix) || id.size() != 64 || !lowercase_hex) {
    return Fail(ErrorCode::kInvalidArgument,
                "certificate '{}': '{}' is not {} followed by 64 lowercase hex digits",
                cert.Subject(), Printable(uri, 100), kDeviceSanPrefix);
  }
  return std::string(id);
}

// ---- PKCS#7 ----

Result<std::vector<uint8_t>> CertificatesToPkcs7Der(std::span<const Certificate> certs) {
  if (certs.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "PKCS#7 bundle: no certificates given");
  }
  // SignedData with no signers and detached (absent) data content: RFC 2315's "degenerate"
  // certificates-only form.
  Pkcs7Ptr p7(PKCS7_new());
  if (!p7 || PKCS7_set_type(p7.get(), NID_pkcs7_signed) != 1 ||
      PKCS7_content_new(p7.get(), NID_pkcs7_data) != 1 || PKCS7_set_detached(p7.get(), 1) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "PKCS#7 bundle"));
  }
  for (const Certificate& cert : certs) {
    if (PKCS7_add_certificate(p7.get(), cert.native()) != 1) {  // takes its own reference
      return Fail(OpenSslError(ErrorCode::kInternal, "PKCS7_add_certificate"));
    }
  }
  unsigned char* der = nullptr;
  const int len = i2d_PKCS7(p7.get(), &der);
  if (len <= 0) return Fail(OpenSslError(ErrorCode::kInternal, "i2d_PKCS7"));
  std::vector<uint8_t> out(der, der + len);
  OPENSSL_free(der);
  return out;
}

}  // namespace moat::crypto
