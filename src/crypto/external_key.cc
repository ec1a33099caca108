// Private keys whose secret lives outside the process: a signer callback (TPM, PKCS#11 token)
// or an OpenSSL 3 provider (tpm2-openssl). Also the r,s <-> DER conversions those devices need.
//
// FromSigner uses OpenSSL's EC_KEY_METHOD, deprecated in OpenSSL 3 but supported throughout
// 3.x (libp11's PKCS#11 engine is built the same way). The alternative, an in-process provider
// with its own key management and signature tables, is several hundred lines for the same
// effect. The deprecated declarations are confined to this file.
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/store.h>
#include <openssl/ui.h>

#include <cstdlib>
#include <map>
#include <mutex>

#include "core/file.h"
#include "crypto/key.h"
#include "crypto/openssl_util.h"

namespace moat::crypto {

using internal::EvpPkeyPtr;
using internal::OpenSslError;

namespace {

struct EcdsaSigDeleter {
  void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); }
};
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, EcdsaSigDeleter>;
struct EcKeyDeleter {
  void operator()(EC_KEY* k) const { EC_KEY_free(k); }
};
using EcKeyPtr = std::unique_ptr<EC_KEY, EcKeyDeleter>;

// ---- the signer-backed EC_KEY ----

struct SignerSlot {
  DigestSigner signer;
};

void FreeSlot(void* /*parent*/, void* ptr, CRYPTO_EX_DATA* /*ad*/, int /*idx*/, long /*argl*/,
              void* /*argp*/) {
  delete static_cast<SignerSlot*>(ptr);
}

int SlotIndex() {
  static const int index =
      EC_KEY_get_ex_new_index(0, nullptr, nullptr, nullptr, &FreeSlot);
  return index;
}

ECDSA_SIG* SignSig(const unsigned char* dgst, int dgst_len, const BIGNUM* /*kinv*/,
                   const BIGNUM* /*r*/, EC_KEY* eckey) {
  auto* slot = static_cast<SignerSlot*>(EC_KEY_get_ex_data(eckey, SlotIndex()));
  if (slot == nullptr || dgst_len != 32) {
    // TLS 1.3 with a P-256 key always hashes with SHA-256; anything else is refused.
    ERR_raise_data(ERR_LIB_EC, ERR_R_PASSED_INVALID_ARGUMENT,
                   "external P-256 key signs 32-byte SHA-256 digests only");
    return nullptr;
  }
  Sha256Digest digest{};
  std::copy(dgst, dgst + 32, digest.begin());
  Result<std::vector<uint8_t>> der;
  try {
    der = slot->signer(digest);
  } catch (...) {
    der = Fail(ErrorCode::kInternal, "external signer threw");
  }
  if (!der) {
    ERR_raise_data(ERR_LIB_EC, ERR_R_OPERATION_FAIL, "external signer: %s",
                   der.error().message().c_str());
    return nullptr;
  }
  const unsigned char* p = der->data();
  ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der->size()));
  if (sig == nullptr) {
    ERR_raise_data(ERR_LIB_EC, ERR_R_OPERATION_FAIL, "external signer gave no DER signature");
  }
  return sig;
}

int Sign(int /*type*/, const unsigned char* dgst, int dlen, unsigned char* sig,
         unsigned int* siglen, const BIGNUM* kinv, const BIGNUM* r, EC_KEY* eckey) {
  EcdsaSigPtr s(SignSig(dgst, dlen, kinv, r, eckey));
  if (!s) return 0;
  int len = i2d_ECDSA_SIG(s.get(), &sig);
  if (len <= 0) return 0;
  *siglen = static_cast<unsigned int>(len);
  return 1;
}

int SignSetup(EC_KEY* /*eckey*/, BN_CTX* /*ctx*/, BIGNUM** /*kinv*/, BIGNUM** /*r*/) {
  return 1;  // nothing to precompute: the signer does everything
}

const EC_KEY_METHOD* SignerMethod() {
  static EC_KEY_METHOD* method = [] {
    EC_KEY_METHOD* m = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
    if (m != nullptr) EC_KEY_METHOD_set_sign(m, &Sign, &SignSetup, &SignSig);
    return m;
  }();
  return method;
}

// ---- providers ----

struct LoadedProvider {
  OSSL_PROVIDER* provider = nullptr;
  std::vector<std::pair<std::string, std::string>> environment;
};

std::mutex g_providers_mu;
std::map<std::string, LoadedProvider>& Providers() {
  static auto* providers = new std::map<std::string, LoadedProvider>();
  return *providers;
}

Result<void> EnsureProvider(const ProviderKeySpec& spec) {
  std::lock_guard lock(g_providers_mu);
  auto& providers = Providers();
  if (auto it = providers.find(spec.provider); it != providers.end()) {
    if (it->second.environment != spec.environment) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "OpenSSL provider '{}' is already loaded in this process with other settings "
                  "(a provider reads its environment once, when it loads)",
                  spec.provider);
    }
    return Ok();
  }
  for (const auto& [name, value] : spec.environment) {
    if (::setenv(name.c_str(), value.c_str(), 1) != 0) {
      return Fail(ErrnoError("setenv", name, errno));
    }
  }
  // Loading any provider explicitly stops OpenSSL from loading "default" implicitly; the
  // rest of Moat needs it, so make sure it is there first.
  if (OSSL_PROVIDER_load(nullptr, "default") == nullptr) {
    return Fail(OpenSslError(ErrorCode::kInternal, "loading OpenSSL's default provider"));
  }
  OSSL_PROVIDER* p = OSSL_PROVIDER_load(nullptr, spec.provider.c_str());
  if (p == nullptr) {
    return Fail(OpenSslError(ErrorCode::kUnavailable,
                             "loading OpenSSL provider '" + spec.provider + "'"));
  }
  providers.emplace(spec.provider, LoadedProvider{p, spec.environment});
  return Ok();
}

struct StoreCtxDeleter {
  void operator()(OSSL_STORE_CTX* c) const { OSSL_STORE_close(c); }
};
struct StoreInfoDeleter {
  void operator()(OSSL_STORE_INFO* i) const { OSSL_STORE_INFO_free(i); }
};

}  // namespace

Result<std::vector<uint8_t>> EcdsaSignatureFromRS(std::span<const uint8_t> r,
                                                  std::span<const uint8_t> s) {
  if (r.empty() || s.empty() || r.size() > 66 || s.size() > 66) {
    return Fail(ErrorCode::kInvalidArgument, "ECDSA r ({} bytes) or s ({} bytes) is malformed",
                r.size(), s.size());
  }
  EcdsaSigPtr sig(ECDSA_SIG_new());
  BIGNUM* rb = BN_bin2bn(r.data(), static_cast<int>(r.size()), nullptr);
  BIGNUM* sb = BN_bin2bn(s.data(), static_cast<int>(s.size()), nullptr);
  if (!sig || rb == nullptr || sb == nullptr || ECDSA_SIG_set0(sig.get(), rb, sb) != 1) {
    BN_free(rb);
    BN_free(sb);
    return Fail(OpenSslError(ErrorCode::kInternal, "ECDSA_SIG_set0"));
  }
  int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return Fail(OpenSslError(ErrorCode::kInternal, "i2d_ECDSA_SIG"));
  std::vector<uint8_t> out(static_cast<size_t>(len));
  unsigned char* p = out.data();
  if (i2d_ECDSA_SIG(sig.get(), &p) != len) {
    return Fail(OpenSslError(ErrorCode::kInternal, "i2d_ECDSA_SIG"));
  }
  return out;
}

Result<std::vector<uint8_t>> EcdsaSignatureToRS(std::span<const uint8_t> der, size_t half) {
  const unsigned char* p = der.data();
  EcdsaSigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig || p != der.data() + der.size()) {
    ERR_clear_error();
    return Fail(ErrorCode::kInvalidArgument, "not a DER ECDSA signature");
  }
  std::vector<uint8_t> out(2 * half);
  if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), out.data(), static_cast<int>(half)) < 0 ||
      BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), out.data() + half, static_cast<int>(half)) < 0) {
    ERR_clear_error();
    return Fail(ErrorCode::kInvalidArgument, "ECDSA r or s longer than {} bytes", half);
  }
  return out;
}

Result<PrivateKey> PrivateKey::FromSigner(const PublicKey& public_key, DigestSigner signer) {
  if (public_key.type() != KeyType::kEcdsaP256 || !signer) {
    return Fail(ErrorCode::kInvalidArgument, "an external signer needs a P-256 public key");
  }
  std::vector<uint8_t> point = public_key.ToRaw();
  EcKeyPtr ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  const EC_KEY_METHOD* method = SignerMethod();
  if (!ec || method == nullptr || SlotIndex() < 0 ||
      EC_KEY_oct2key(ec.get(), point.data(), point.size(), nullptr) != 1 ||
      EC_KEY_set_method(ec.get(), method) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "building an external P-256 key"));
  }
  auto* slot = new SignerSlot{std::move(signer)};
  if (EC_KEY_set_ex_data(ec.get(), SlotIndex(), slot) != 1) {
    delete slot;
    return Fail(OpenSslError(ErrorCode::kInternal, "EC_KEY_set_ex_data"));
  }
  EvpPkeyPtr pkey(EVP_PKEY_new());
  if (!pkey || EVP_PKEY_assign_EC_KEY(pkey.get(), ec.get()) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "EVP_PKEY_assign_EC_KEY"));
  }
  ec.release();  // owned by pkey now
  return FromNativeOwned(std::shared_ptr<EVP_PKEY>(pkey.release(), EVP_PKEY_free),
                         KeyType::kEcdsaP256);
}

Result<PrivateKey> PrivateKey::FromProvider(const ProviderKeySpec& spec) {
  if (spec.provider.empty() || spec.uri.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "a provider key needs a provider name and a URI");
  }
  MOAT_TRY(EnsureProvider(spec));
  std::string propq = "?provider=" + spec.provider;
  std::unique_ptr<OSSL_STORE_CTX, StoreCtxDeleter> store(OSSL_STORE_open_ex(
      spec.uri.c_str(), nullptr, propq.c_str(), UI_null(), nullptr, nullptr, nullptr, nullptr));
  if (!store) {
    return Fail(OpenSslError(ErrorCode::kNotFound, "opening '" + spec.uri + "' through provider " +
                                                       spec.provider));
  }
  if (OSSL_STORE_expect(store.get(), OSSL_STORE_INFO_PKEY) != 1) {
    return Fail(OpenSslError(ErrorCode::kInternal, "OSSL_STORE_expect"));
  }
  while (OSSL_STORE_eof(store.get()) != 1) {
    std::unique_ptr<OSSL_STORE_INFO, StoreInfoDeleter> info(OSSL_STORE_load(store.get()));
    if (!info) {
      if (OSSL_STORE_error(store.get()) == 1) break;
      continue;
    }
    if (OSSL_STORE_INFO_get_type(info.get()) != OSSL_STORE_INFO_PKEY) continue;
    EVP_PKEY* key = OSSL_STORE_INFO_get1_PKEY(info.get());
    if (key == nullptr) return Fail(OpenSslError(ErrorCode::kInternal, "OSSL_STORE_INFO"));
    EvpPkeyPtr owned(key);
    if (!EVP_PKEY_is_a(key, "EC")) {
      return Fail(ErrorCode::kInvalidArgument, "'{}' is not an EC key", spec.uri);
    }
    MOAT_ASSIGN_OR_RETURN(PrivateKey out,
                          FromNativeOwned(std::shared_ptr<EVP_PKEY>(owned.release(), EVP_PKEY_free),
                                          KeyType::kEcdsaP256));
    out.property_query_ = propq;
    return out;
  }
  return Fail(OpenSslError(ErrorCode::kNotFound, "'" + spec.uri + "' holds no private key that "
                                                     "provider " + spec.provider + " can load"));
}

}  // namespace moat::crypto
