#include "crypto/tpm_primitives.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <cstring>
#include <ctime>

#include "crypto/key.h"
#include "crypto/openssl_util.h"

namespace moat::crypto {
namespace {

using internal::BignumPtr;
using internal::EvpPkeyCtxPtr;
using internal::EvpPkeyPtr;
using internal::OpenSslError;

using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, internal::Deleter<EVP_CIPHER_CTX_free>>;
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, internal::Deleter<OSSL_PARAM_BLD_free>>;
using ParamPtr = std::unique_ptr<OSSL_PARAM, internal::Deleter<OSSL_PARAM_free>>;

Result<std::vector<uint8_t>> AesCfb(std::span<const uint8_t> key, std::span<const uint8_t> iv,
                                    std::span<const uint8_t> in, bool encrypt) {
  if (key.size() != 16 || iv.size() != 16) {
    return Fail(ErrorCode::kInvalidArgument, "AES-128-CFB needs a 16-byte key and IV");
  }
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return Fail(OpenSslError(ErrorCode::kInternal, "EVP_CIPHER_CTX_new"));
  if (EVP_CipherInit_ex(ctx.get(), EVP_aes_128_cfb128(), nullptr, key.data(), iv.data(),
                        encrypt ? 1 : 0) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "AES-128-CFB init"));
  }
  std::vector<uint8_t> out(in.size() + 16);
  int n = 0, tail = 0;
  if (EVP_CipherUpdate(ctx.get(), out.data(), &n, in.data(), static_cast<int>(in.size())) != 1 ||
      EVP_CipherFinal_ex(ctx.get(), out.data() + n, &tail) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "AES-128-CFB"));
  }
  out.resize(static_cast<size_t>(n + tail));
  return out;
}

std::vector<uint8_t> BnBytes(const BIGNUM* bn) {
  std::vector<uint8_t> out(static_cast<size_t>(BN_num_bytes(bn)));
  BN_bn2bin(bn, out.data());
  return out;
}

}  // namespace

Result<Sha256Digest> HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data) {
  Sha256Digest out{};
  unsigned int len = 0;
  static const uint8_t kEmpty = 0;
  if (HMAC(EVP_sha256(), key.empty() ? &kEmpty : key.data(), static_cast<int>(key.size()),
           data.empty() ? &kEmpty : data.data(), data.size(), out.data(), &len) == nullptr ||
      len != out.size()) {
    return Fail(OpenSslError(ErrorCode::kInternal, "HMAC-SHA256"));
  }
  return out;
}

Result<std::vector<uint8_t>> Aes128CfbEncrypt(std::span<const uint8_t> key,
                                              std::span<const uint8_t> iv,
                                              std::span<const uint8_t> plaintext) {
  return AesCfb(key, iv, plaintext, true);
}
Result<std::vector<uint8_t>> Aes128CfbDecrypt(std::span<const uint8_t> key,
                                              std::span<const uint8_t> iv,
                                              std::span<const uint8_t> ciphertext) {
  return AesCfb(key, iv, ciphertext, false);
}

namespace {
using internal::X509Ptr;

Result<X509Ptr> ParseDer(std::span<const uint8_t> der) {
  const unsigned char* p = der.data();
  X509Ptr x(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!x || p != der.data() + der.size()) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, "not a DER X.509 certificate"));
  }
  return x;
}

Result<RsaPublicNumbers> RsaOfX509(X509* x);
}  // namespace

Result<RsaPublicNumbers> RsaPublicKeyOf(const Certificate& certificate) {
  return RsaOfX509(certificate.native());
}

Result<RsaPublicNumbers> RsaPublicKeyOfCertificateDer(std::span<const uint8_t> der) {
  MOAT_ASSIGN_OR_RETURN(X509Ptr x, ParseDer(der));
  return RsaOfX509(x.get());
}

Result<std::vector<std::vector<uint8_t>>> CertificatesDerFromPem(std::string_view pem) {
  internal::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Fail(OpenSslError(ErrorCode::kInternal, "BIO_new_mem_buf"));
  std::vector<std::vector<uint8_t>> out;
  while (true) {
    X509Ptr x(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!x) break;
    unsigned char* buf = nullptr;
    int n = i2d_X509(x.get(), &buf);
    if (n <= 0) return Fail(OpenSslError(ErrorCode::kInternal, "i2d_X509"));
    out.emplace_back(buf, buf + n);
    OPENSSL_free(buf);
  }
  ERR_clear_error();
  if (out.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "no PEM certificate found");
  }
  return out;
}

std::string CertificateDerToPem(std::span<const uint8_t> der) {
  auto x = ParseDer(der);
  if (!x) return {};
  internal::BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), x->get()) != 1) return {};
  return internal::BioToString(bio.get());
}

Result<CaCertificateInfo> InspectCaCertificateDer(std::span<const uint8_t> der) {
  MOAT_ASSIGN_OR_RETURN(X509Ptr x, ParseDer(der));
  if (X509_check_ca(x.get()) != 1) {
    return Fail(ErrorCode::kInvalidArgument, "the certificate is not a CA (basicConstraints)");
  }
  CaCertificateInfo info;
  internal::BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      X509_NAME_print_ex(bio.get(), X509_get_subject_name(x.get()), 0, XN_FLAG_RFC2253) < 0) {
    return Fail(OpenSslError(ErrorCode::kInternal, "printing the subject"));
  }
  info.subject = internal::BioToString(bio.get());
  auto digest = Sha256(der);
  static constexpr char kHex[] = "0123456789abcdef";
  for (uint8_t b : digest) {
    info.sha256_hex.push_back(kHex[b >> 4]);
    info.sha256_hex.push_back(kHex[b & 15]);
  }
  struct tm tm {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(x.get()), &tm) != 1) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, "the certificate's notAfter"));
  }
  info.not_after_unix = static_cast<int64_t>(timegm(&tm));
  return info;
}

Result<void> VerifyEkCertificateDer(std::span<const uint8_t> ek_certificate,
                                    std::span<const std::vector<uint8_t>> manufacturer_cas,
                                    SystemTime at) {
  if (manufacturer_cas.empty()) {
    return Fail(ErrorCode::kVerificationFailed,
                "EK certificate: no manufacturer CA is registered (moat manufacturer-ca add)");
  }
  MOAT_ASSIGN_OR_RETURN(X509Ptr leaf, ParseDer(ek_certificate));
  internal::X509StorePtr store(X509_STORE_new());
  if (!store) return Fail(OpenSslError(ErrorCode::kInternal, "X509_STORE_new"));
  for (const auto& der : manufacturer_cas) {
    MOAT_ASSIGN_OR_RETURN(X509Ptr ca, ParseDer(der));
    if (X509_STORE_add_cert(store.get(), ca.get()) != 1) {
      return Fail(OpenSslError(ErrorCode::kInternal, "X509_STORE_add_cert"));
    }
  }
  internal::X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), nullptr) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "X509_STORE_CTX_init"));
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_USE_CHECK_TIME);
  X509_VERIFY_PARAM_set_time(param, std::chrono::system_clock::to_time_t(at));
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return Fail(ErrorCode::kVerificationFailed,
                "EK certificate: {} (depth {}); is its manufacturer's CA registered?",
                X509_verify_cert_error_string(err), X509_STORE_CTX_get_error_depth(ctx.get()));
  }
  return Ok();
}

namespace {
Result<RsaPublicNumbers> RsaOfX509(X509* x) {
  EVP_PKEY* key = X509_get0_pubkey(x);
  if (key == nullptr) return Fail(OpenSslError(ErrorCode::kInvalidArgument, "certificate key"));
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
    return Fail(ErrorCode::kInvalidArgument, "the certificate's key is not RSA");
  }
  BIGNUM* n = nullptr;
  BIGNUM* e = nullptr;
  if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n) != 1 ||
      EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e) != 1) {
    BN_free(n);
    BN_free(e);
    return Fail(OpenSslError(ErrorCode::kInternal, "reading the RSA key"));
  }
  BignumPtr np(n), ep(e);
  return RsaPublicNumbers{.modulus = BnBytes(n), .exponent = BnBytes(e)};
}
}  // namespace

Result<std::vector<uint8_t>> RsaOaepSha256Encrypt(const RsaPublicNumbers& key,
                                                  std::span<const uint8_t> label,
                                                  std::span<const uint8_t> plaintext) {
  if (key.modulus.empty() || key.modulus.size() > 1024 || key.exponent.empty() ||
      key.exponent.size() > 8) {
    return Fail(ErrorCode::kInvalidArgument, "RSA-OAEP: not a plausible RSA public key");
  }
  BignumPtr n(BN_bin2bn(key.modulus.data(), static_cast<int>(key.modulus.size()), nullptr));
  BignumPtr e(BN_bin2bn(key.exponent.data(), static_cast<int>(key.exponent.size()), nullptr));
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!n || !e || !bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "RSA key parameters"));
  }
  ParamPtr params(OSSL_PARAM_BLD_to_param(bld.get()));
  EvpPkeyCtxPtr from(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !from || EVP_PKEY_fromdata_init(from.get()) != 1 ||
      EVP_PKEY_fromdata(from.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, "building the RSA key"));
  }
  EvpPkeyPtr pkey(raw);
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new(pkey.get(), nullptr));
  if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "RSA-OAEP setup"));
  }
  if (!label.empty()) {
    // OpenSSL takes ownership of the label buffer.
    auto* copy = static_cast<unsigned char*>(OPENSSL_malloc(label.size()));
    if (copy == nullptr) return Fail(ErrorCode::kInternal, "RSA-OAEP: out of memory");
    std::memcpy(copy, label.data(), label.size());
    if (EVP_PKEY_CTX_set0_rsa_oaep_label(ctx.get(), copy, static_cast<int>(label.size())) != 1) {
      OPENSSL_free(copy);
      return Fail(OpenSslError(ErrorCode::kInternal, "RSA-OAEP label"));
    }
  }
  size_t len = 0;
  if (EVP_PKEY_encrypt(ctx.get(), nullptr, &len, plaintext.data(), plaintext.size()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "RSA-OAEP size"));
  }
  std::vector<uint8_t> out(len);
  if (EVP_PKEY_encrypt(ctx.get(), out.data(), &len, plaintext.data(), plaintext.size()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInvalidArgument, "RSA-OAEP encryption"));
  }
  out.resize(len);
  return out;
}

Result<std::vector<uint8_t>> EcP256PointOfCertificateDer(std::span<const uint8_t> der) {
  MOAT_ASSIGN_OR_RETURN(X509Ptr x, ParseDer(der));
  EVP_PKEY* key = X509_get0_pubkey(x.get());
  if (key == nullptr) return Fail(OpenSslError(ErrorCode::kInvalidArgument, "certificate key"));
  unsigned char* spki = nullptr;
  const int len = i2d_PUBKEY(key, &spki);
  if (len <= 0) return Fail(OpenSslError(ErrorCode::kInvalidArgument, "certificate key"));
  std::vector<uint8_t> spki_der(spki, spki + len);
  OPENSSL_free(spki);
  auto pub = PublicKey::FromDer(spki_der);
  if (!pub || pub->type() != KeyType::kEcdsaP256) {
    return Fail(ErrorCode::kInvalidArgument, "the certificate's key is not EC P-256");
  }
  return pub->ToRaw();
}

namespace {
using EcGroupPtr = std::unique_ptr<EC_GROUP, internal::Deleter<EC_GROUP_free>>;
using EcPointPtr = std::unique_ptr<EC_POINT, internal::Deleter<EC_POINT_free>>;
using BnCtxPtr = std::unique_ptr<BN_CTX, internal::Deleter<BN_CTX_free>>;

std::vector<uint8_t> Bn32(const BIGNUM* bn) {
  std::vector<uint8_t> out(32);
  BN_bn2binpad(bn, out.data(), 32);
  return out;
}
}  // namespace

Result<EcdhP256Shared> EcdhP256(std::span<const uint8_t> private_scalar,
                                std::span<const uint8_t> peer_x, std::span<const uint8_t> peer_y) {
  if (private_scalar.size() != 32 || peer_x.empty() || peer_x.size() > 32 || peer_y.empty() ||
      peer_y.size() > 32) {
    return Fail(ErrorCode::kInvalidArgument,
                "ECDH P-256: a 32-byte scalar and coordinates of at most 32 bytes");
  }
  EcGroupPtr group(EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1));
  BnCtxPtr ctx(BN_CTX_new());
  BignumPtr d(BN_bin2bn(private_scalar.data(), 32, nullptr));
  BignumPtr px(BN_bin2bn(peer_x.data(), static_cast<int>(peer_x.size()), nullptr));
  BignumPtr py(BN_bin2bn(peer_y.data(), static_cast<int>(peer_y.size()), nullptr));
  if (!group || !ctx || !d || !px || !py) {
    return Fail(OpenSslError(ErrorCode::kInternal, "ECDH P-256 setup"));
  }
  const BIGNUM* order = EC_GROUP_get0_order(group.get());
  if (BN_is_zero(d.get()) || BN_cmp(d.get(), order) >= 0) {
    return Fail(ErrorCode::kInvalidArgument, "ECDH P-256: the private scalar is out of range");
  }
  EcPointPtr peer(EC_POINT_new(group.get()));
  EcPointPtr ephemeral(EC_POINT_new(group.get()));
  EcPointPtr shared(EC_POINT_new(group.get()));
  if (!peer || !ephemeral || !shared) return Fail(OpenSslError(ErrorCode::kInternal, "EC_POINT"));
  // SECURITY: a point off the curve (or at infinity) would leak the scalar (invalid-curve attack)
  // or give a predictable secret.
  if (EC_POINT_set_affine_coordinates(group.get(), peer.get(), px.get(), py.get(), ctx.get()) !=
          1 ||
      EC_POINT_is_on_curve(group.get(), peer.get(), ctx.get()) != 1 ||
      EC_POINT_is_at_infinity(group.get(), peer.get())) {
    ERR_clear_error();
    return Fail(ErrorCode::kInvalidArgument, "ECDH P-256: the peer's point is not on the curve");
  }
  if (EC_POINT_mul(group.get(), ephemeral.get(), d.get(), nullptr, nullptr, ctx.get()) != 1 ||
      EC_POINT_mul(group.get(), shared.get(), nullptr, peer.get(), d.get(), ctx.get()) != 1 ||
      EC_POINT_is_at_infinity(group.get(), shared.get())) {
    return Fail(OpenSslError(ErrorCode::kInternal, "ECDH P-256 multiplication"));
  }
  BignumPtr ex(BN_new()), ey(BN_new()), zx(BN_new());
  if (!ex || !ey || !zx ||
      EC_POINT_get_affine_coordinates(group.get(), ephemeral.get(), ex.get(), ey.get(),
                                      ctx.get()) != 1 ||
      EC_POINT_get_affine_coordinates(group.get(), shared.get(), zx.get(), nullptr, ctx.get()) !=
          1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "ECDH P-256 coordinates"));
  }
  EcdhP256Shared out{
      .ephemeral_x = Bn32(ex.get()), .ephemeral_y = Bn32(ey.get()), .z = Bn32(zx.get())};
  return out;
}

}  // namespace moat::crypto
