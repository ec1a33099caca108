#include "rot/pkcs11_key_store.h"

#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "core/file.h"
#include "rot/private_dir.h"

namespace moat::rot {
namespace {

// DER of the OID prime256v1 (1.2.840.10045.3.1.7): CKA_EC_PARAMS of a P-256 key.
constexpr uint8_t kP256Params[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

std::string_view RvName(CK_RV rv) {
  switch (rv) {
    case CKR_OK: return "CKR_OK";
    case CKR_PIN_INCORRECT: return "CKR_PIN_INCORRECT";
    case CKR_PIN_LOCKED: return "CKR_PIN_LOCKED";
    case CKR_TOKEN_NOT_PRESENT: return "CKR_TOKEN_NOT_PRESENT";
    case CKR_DEVICE_REMOVED: return "CKR_DEVICE_REMOVED";
    case CKR_DEVICE_ERROR: return "CKR_DEVICE_ERROR";
    case CKR_ATTRIBUTE_SENSITIVE: return "CKR_ATTRIBUTE_SENSITIVE";
    case CKR_ATTRIBUTE_TYPE_INVALID: return "CKR_ATTRIBUTE_TYPE_INVALID";
    case CKR_KEY_HANDLE_INVALID: return "CKR_KEY_HANDLE_INVALID";
    case CKR_MECHANISM_INVALID: return "CKR_MECHANISM_INVALID";
    case CKR_SESSION_HANDLE_INVALID: return "CKR_SESSION_HANDLE_INVALID";
    case CKR_USER_NOT_LOGGED_IN: return "CKR_USER_NOT_LOGGED_IN";
    case CKR_TEMPLATE_INCONSISTENT: return "CKR_TEMPLATE_INCONSISTENT";
    case CKR_GENERAL_ERROR: return "CKR_GENERAL_ERROR";
    default: return "CKR error";
  }
}

Error P11Error(std::string_view what, CK_RV rv) {
  ErrorCode code = ErrorCode::kInternal;
  if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_USER_NOT_LOGGED_IN) {
    code = ErrorCode::kUnauthenticated;
  } else if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_REMOVED || rv == CKR_DEVICE_ERROR ||
             rv == CKR_SESSION_HANDLE_INVALID) {
    code = ErrorCode::kUnavailable;
  }
  return Error(code, fmt::format("PKCS#11: {} failed: {} (0x{:x})", what, RvName(rv), rv));
}

// A module is initialised once per process and shared: C_Finalize by one user would end every
// other user's sessions.
struct Module {
  void* handle = nullptr;
  CK_FUNCTION_LIST* fl = nullptr;
  bool finalize = false;
  ~Module() {
    if (fl != nullptr && finalize) fl->C_Finalize(nullptr);
    if (handle != nullptr) ::dlclose(handle);
  }
};

std::mutex g_modules_mu;
std::map<std::string, std::weak_ptr<Module>>& Modules() {
  static auto* modules = new std::map<std::string, std::weak_ptr<Module>>();
  return *modules;
}

Result<std::shared_ptr<Module>> LoadModule(const std::string& path) {
  std::lock_guard lock(g_modules_mu);
  if (auto it = Modules().find(path); it != Modules().end()) {
    if (auto m = it->second.lock()) return m;
  }
  auto m = std::make_shared<Module>();
  m->handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (m->handle == nullptr) {
    const char* err = ::dlerror();
    return Fail(ErrorCode::kUnavailable, "PKCS#11: cannot load module {}: {}", path,
                err ? err : "dlopen failed");
  }
  auto get = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(m->handle, "C_GetFunctionList"));
  if (get == nullptr) {
    return Fail(ErrorCode::kUnavailable, "PKCS#11: {} has no C_GetFunctionList", path);
  }
  if (CK_RV rv = get(&m->fl); rv != CKR_OK || m->fl == nullptr) {
    m->fl = nullptr;
    return Fail(P11Error("C_GetFunctionList", rv));
  }
  CK_C_INITIALIZE_ARGS args{};
  args.flags = CKF_OS_LOCKING_OK;
  CK_RV rv = m->fl->C_Initialize(&args);
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    return Fail(P11Error("C_Initialize", rv));
  }
  m->finalize = rv == CKR_OK;  // someone else (another library) initialised it: leave it be
  Modules()[path] = m;
  return m;
}

// CK_UTF8CHAR[32], space padded.
std::string PaddedLabel(const CK_UTF8CHAR* label, size_t n) {
  std::string s(reinterpret_cast<const char*>(label), n);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

Result<std::string> ReadPin(const Pkcs11Options& o) {
  if (!o.pin_file.empty()) {
    MOAT_TRY(internal::CheckPrivate(o.pin_file, false));
    MOAT_ASSIGN_OR_RETURN(std::string pin, ReadFile(o.pin_file, 256));
    if (auto nl = pin.find_first_of("\r\n"); nl != std::string::npos) pin.resize(nl);
    return pin;
  }
  const char* value = std::getenv(o.pin_env.c_str());
  if (value == nullptr) {
    return Fail(ErrorCode::kInvalidArgument,
                "PKCS#11: environment variable {} (key_store.pin_env) is not set", o.pin_env);
  }
  return std::string(value);
}

void Wipe(std::string& s) {
  volatile char* p = s.data();
  for (size_t i = 0; i < s.size(); ++i) p[i] = 0;
  s.clear();
}

}  // namespace

struct Pkcs11KeyStore::Session {
  std::mutex mu;
  std::shared_ptr<Module> module;
  CK_SESSION_HANDLE handle = CK_INVALID_HANDLE;

  ~Session() {
    // No C_Logout: login state belongs to the token, shared by every session of the process
    // (another store may still use it); closing the last session logs out.
    if (handle != CK_INVALID_HANDLE) module->fl->C_CloseSession(handle);
  }

  CK_FUNCTION_LIST* fl() const { return module->fl; }

  // The object of `cls` labelled `label`; kNotFound if none, kFailedPrecondition if several.
  Result<CK_OBJECT_HANDLE> Find(CK_OBJECT_CLASS cls, const std::string& label) {
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
    };
    if (CK_RV rv = fl()->C_FindObjectsInit(handle, tmpl, 2); rv != CKR_OK) {
      return Fail(P11Error("C_FindObjectsInit", rv));
    }
    CK_OBJECT_HANDLE found[2];
    CK_ULONG count = 0;
    CK_RV rv = fl()->C_FindObjects(handle, found, 2, &count);
    fl()->C_FindObjectsFinal(handle);
    if (rv != CKR_OK) return Fail(P11Error("C_FindObjects", rv));
    if (count == 0) return Fail(ErrorCode::kNotFound, "no key '{}' on the token", label);
    if (count > 1) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "the token holds several objects labelled '{}'; refusing to guess", label);
    }
    return found[0];
  }

  Result<crypto::PublicKey> PublicKeyOf(CK_OBJECT_HANDLE pub) {
    uint8_t point[128];
    CK_ATTRIBUTE attr = {CKA_EC_POINT, point, sizeof point};
    if (CK_RV rv = fl()->C_GetAttributeValue(handle, pub, &attr, 1); rv != CKR_OK) {
      return Fail(P11Error("C_GetAttributeValue(CKA_EC_POINT)", rv));
    }
    std::span<const uint8_t> p(point, attr.ulValueLen);
    // PKCS#11 says DER OCTET STRING around the point; some tokens give the raw point.
    if (p.size() == 67 && p[0] == 0x04 && p[1] == 0x41) p = p.subspan(2);
    return crypto::PublicKey::FromRaw(crypto::KeyType::kEcdsaP256, p);
  }

  Result<std::vector<uint8_t>> Sign(CK_OBJECT_HANDLE key, const crypto::Sha256Digest& digest) {
    CK_MECHANISM mech = {CKM_ECDSA, nullptr, 0};
    if (CK_RV rv = fl()->C_SignInit(handle, &mech, key); rv != CKR_OK) {
      return Fail(P11Error("C_SignInit(CKM_ECDSA)", rv));
    }
    uint8_t sig[132];
    CK_ULONG len = sizeof sig;
    if (CK_RV rv = fl()->C_Sign(handle, const_cast<uint8_t*>(digest.data()), digest.size(), sig,
                                &len);
        rv != CKR_OK) {
      return Fail(P11Error("C_Sign", rv));
    }
    if (len != 64) {
      return Fail(ErrorCode::kInternal, "PKCS#11: a P-256 signature of {} bytes, not 64", len);
    }
    return crypto::EcdsaSignatureFromRS(std::span<const uint8_t>(sig, 32),
                                        std::span<const uint8_t>(sig + 32, 32));
  }
};

Pkcs11KeyStore::~Pkcs11KeyStore() = default;

Result<std::unique_ptr<Pkcs11KeyStore>> Pkcs11KeyStore::Open(const Pkcs11Options& options) {
  if (options.module.empty() || options.token_label.empty()) {
    return Fail(ErrorCode::kInvalidArgument,
                "PKCS#11 key store: key_store.module and key_store.token are required");
  }
  if (options.pin_file.empty() == options.pin_env.empty()) {
    return Fail(ErrorCode::kInvalidArgument,
                "PKCS#11 key store: give exactly one of key_store.pin_file and "
                "key_store.pin_env (the PIN itself never goes into the configuration)");
  }
  auto session = std::make_shared<Session>();
  MOAT_ASSIGN_OR_RETURN(session->module, LoadModule(options.module));
  CK_FUNCTION_LIST* fl = session->fl();

  CK_ULONG count = 0;
  if (CK_RV rv = fl->C_GetSlotList(CK_TRUE, nullptr, &count); rv != CKR_OK) {
    return Fail(P11Error("C_GetSlotList", rv));
  }
  std::vector<CK_SLOT_ID> slots(count);
  if (CK_RV rv = fl->C_GetSlotList(CK_TRUE, slots.data(), &count); rv != CKR_OK) {
    return Fail(P11Error("C_GetSlotList", rv));
  }
  slots.resize(count);
  std::optional<CK_SLOT_ID> slot;
  for (CK_SLOT_ID s : slots) {
    CK_TOKEN_INFO info{};
    if (fl->C_GetTokenInfo(s, &info) != CKR_OK) continue;
    if (PaddedLabel(info.label, sizeof info.label) == options.token_label) {
      slot = s;
      break;
    }
  }
  if (!slot) {
    return Fail(ErrorCode::kUnavailable, "PKCS#11: no token labelled '{}' in {} ({} tokens)",
                options.token_label, options.module, slots.size());
  }
  if (CK_RV rv = fl->C_OpenSession(*slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr,
                                   &session->handle);
      rv != CKR_OK) {
    session->handle = CK_INVALID_HANDLE;
    return Fail(P11Error("C_OpenSession", rv));
  }
  MOAT_ASSIGN_OR_RETURN(std::string pin, ReadPin(options));
  CK_RV rv = fl->C_Login(session->handle, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(pin.data()),
                         pin.size());
  Wipe(pin);
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
    return Fail(P11Error(fmt::format("C_Login to token '{}'", options.token_label), rv));
  }
  return std::unique_ptr<Pkcs11KeyStore>(new Pkcs11KeyStore(options, std::move(session)));
}

Result<crypto::PublicKey> Pkcs11KeyStore::CreateKey(std::string_view label) {
  MOAT_TRY(ValidateKeyLabel(label));
  std::string name = options_.label_prefix + std::string(label);
  std::lock_guard lock(session_->mu);
  auto existing = session_->Find(CKO_PRIVATE_KEY, name);
  if (existing) {
    return Fail(ErrorCode::kAlreadyExists, "PKCS#11 token '{}': key '{}' already exists",
                options_.token_label, label);
  }
  if (existing.error().code() != ErrorCode::kNotFound) return Fail(existing.error());

  crypto::Sha256Digest id = crypto::Sha256(name);
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_ATTRIBUTE pub_tmpl[] = {
      {CKA_EC_PARAMS, const_cast<uint8_t*>(kP256Params), sizeof kP256Params},
      {CKA_TOKEN, &yes, sizeof yes},
      {CKA_VERIFY, &yes, sizeof yes},
      {CKA_LABEL, name.data(), name.size()},
      {CKA_ID, id.data(), id.size()},
  };
  CK_ATTRIBUTE priv_tmpl[] = {
      {CKA_TOKEN, &yes, sizeof yes},         {CKA_PRIVATE, &yes, sizeof yes},
      {CKA_SENSITIVE, &yes, sizeof yes},     {CKA_EXTRACTABLE, &no, sizeof no},
      {CKA_SIGN, &yes, sizeof yes},          {CKA_LABEL, name.data(), name.size()},
      {CKA_ID, id.data(), id.size()},
  };
  CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, nullptr, 0};
  CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
  if (CK_RV rv = session_->fl()->C_GenerateKeyPair(
          session_->handle, &mech, pub_tmpl, std::size(pub_tmpl), priv_tmpl, std::size(priv_tmpl),
          &pub, &priv);
      rv != CKR_OK) {
    return Fail(P11Error("C_GenerateKeyPair(EC P-256)", rv));
  }
  return session_->PublicKeyOf(pub);
}

Result<crypto::PublicKey> Pkcs11KeyStore::GetPublicKey(std::string_view label) const {
  MOAT_TRY(ValidateKeyLabel(label));
  std::lock_guard lock(session_->mu);
  MOAT_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE pub,
                        session_->Find(CKO_PUBLIC_KEY, options_.label_prefix + std::string(label)));
  return session_->PublicKeyOf(pub);
}

Result<std::vector<uint8_t>> Pkcs11KeyStore::SignDigest(std::string_view label,
                                                        const crypto::Sha256Digest& digest) {
  MOAT_TRY(ValidateKeyLabel(label));
  std::lock_guard lock(session_->mu);
  MOAT_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE key, session_->Find(CKO_PRIVATE_KEY,
                                                             options_.label_prefix +
                                                                 std::string(label)));
  return session_->Sign(key, digest);
}

Result<crypto::PrivateKey> Pkcs11KeyStore::TlsKey(std::string_view label) {
  MOAT_ASSIGN_OR_RETURN(crypto::PublicKey pub, GetPublicKey(label));
  std::shared_ptr<Session> session = session_;
  std::string name = options_.label_prefix + std::string(label);
  return crypto::PrivateKey::FromSigner(
      pub, [session, name](const crypto::Sha256Digest& digest) -> Result<std::vector<uint8_t>> {
        std::lock_guard lock(session->mu);
        MOAT_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE key, session->Find(CKO_PRIVATE_KEY, name));
        return session->Sign(key, digest);
      });
}

Result<std::vector<uint8_t>> Pkcs11KeyStore::TryExportPrivateKey(std::string_view label) {
  MOAT_TRY(ValidateKeyLabel(label));
  std::lock_guard lock(session_->mu);
  MOAT_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE key, session_->Find(CKO_PRIVATE_KEY,
                                                             options_.label_prefix +
                                                                 std::string(label)));
  uint8_t value[128];
  CK_ATTRIBUTE attr = {CKA_VALUE, value, sizeof value};
  CK_RV rv = session_->fl()->C_GetAttributeValue(session_->handle, key, &attr, 1);
  if (rv == CKR_OK && attr.ulValueLen != CK_UNAVAILABLE_INFORMATION) {
    std::vector<uint8_t> out(value, value + attr.ulValueLen);
    std::memset(value, 0, sizeof value);
    return out;
  }
  return Fail(ErrorCode::kPermissionDenied, "PKCS#11: the token refuses to reveal key '{}': {}",
              label, RvName(rv == CKR_OK ? CKR_ATTRIBUTE_SENSITIVE : rv));
}

Result<void> Pkcs11KeyStore::Extend(uint32_t pcr, const crypto::Sha256Digest& digest) {
  return registers_.Extend(pcr, digest);
}

Result<std::map<uint32_t, crypto::Sha256Digest>> Pkcs11KeyStore::ReadRegisters() const {
  return registers_.values();
}

Result<AttestationProof> Pkcs11KeyStore::Attest(std::span<const uint8_t> signing_input) {
  AttestationProof proof;
  MOAT_ASSIGN_OR_RETURN(proof.signature, Sign(kIdentityKeyLabel, signing_input));
  return proof;
}

}  // namespace moat::rot
