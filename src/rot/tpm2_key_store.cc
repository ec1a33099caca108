#include "rot/tpm2_key_store.h"

#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>
#include <unistd.h>

#include <cstring>
#include <mutex>

#include "core/encoding.h"
#include "core/file.h"
#include "formats/attestation.h"
#include "rot/private_dir.h"

namespace moat::rot {

using internal::CheckPrivate;

namespace {

constexpr size_t kMaxBlobBytes = 4096;
constexpr uint32_t kBootPcrs = 8;       // PCRs 0-7: the firmware's boot chain
constexpr std::string_view kAkFile = ".ak";  // not a label: labels never start with '.'

Error TssError(std::string_view what, TSS2_RC rc) {
  // TPM2_RC_RETRY/YIELDED/TESTING and TCTI I/O errors are transient; the rest are not.
  uint32_t base = rc & 0xFFFF;
  bool transient = (rc & 0xFF0000) == TSS2_TCTI_RC_LAYER || base == TPM2_RC_RETRY ||
                   base == TPM2_RC_YIELDED || base == TPM2_RC_TESTING;
  return Error(transient ? ErrorCode::kUnavailable : ErrorCode::kInternal,
               fmt::format("TPM: {} failed: {} (0x{:x})", what, Tss2_RC_Decode(rc), rc));
}

template <typename T>
struct EsysFree {
  void operator()(T* p) const { Esys_Free(p); }
};
template <typename T>
using EsysPtr = std::unique_ptr<T, EsysFree<T>>;

TPM2B_PUBLIC EccTemplate(TPMA_OBJECT attributes, bool restricted_sign, bool storage) {
  TPM2B_PUBLIC t{};
  t.publicArea.type = TPM2_ALG_ECC;
  t.publicArea.nameAlg = TPM2_ALG_SHA256;
  t.publicArea.objectAttributes = attributes;
  auto& ecc = t.publicArea.parameters.eccDetail;
  ecc.curveID = TPM2_ECC_NIST_P256;
  ecc.kdf.scheme = TPM2_ALG_NULL;
  if (storage) {
    ecc.symmetric.algorithm = TPM2_ALG_AES;
    ecc.symmetric.keyBits.aes = 128;
    ecc.symmetric.mode.aes = TPM2_ALG_CFB;
    ecc.scheme.scheme = TPM2_ALG_NULL;
  } else {
    ecc.symmetric.algorithm = TPM2_ALG_NULL;
    ecc.scheme.scheme = restricted_sign ? TPM2_ALG_ECDSA : TPM2_ALG_NULL;
    ecc.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
  }
  return t;
}

constexpr TPMA_OBJECT kCommonAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                          TPMA_OBJECT_SENSITIVEDATAORIGIN |
                                          TPMA_OBJECT_USERWITHAUTH;

TPM2B_PUBLIC SrkTemplate() {
  return EccTemplate(kCommonAttributes | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT |
                         TPMA_OBJECT_NODA,
                     false, true);
}
TPM2B_PUBLIC SigningKeyTemplate() {
  return EccTemplate(kCommonAttributes | TPMA_OBJECT_SIGN_ENCRYPT, false, false);
}
TPM2B_PUBLIC AttestationKeyTemplate() {
  return EccTemplate(kCommonAttributes | TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_RESTRICTED,
                     true, false);
}

Result<crypto::PublicKey> PublicKeyOf(const TPM2B_PUBLIC& pub) {
  const TPMT_PUBLIC& a = pub.publicArea;
  if (a.type != TPM2_ALG_ECC || a.parameters.eccDetail.curveID != TPM2_ECC_NIST_P256) {
    return Fail(ErrorCode::kInvalidArgument, "TPM key is not an ECC P-256 key");
  }
  const auto& x = a.unique.ecc.x;
  const auto& y = a.unique.ecc.y;
  if (x.size > 32 || y.size > 32) {
    return Fail(ErrorCode::kInvalidArgument, "TPM key: P-256 coordinate longer than 32 bytes");
  }
  std::vector<uint8_t> point(65, 0);
  point[0] = 0x04;
  std::memcpy(point.data() + 1 + (32 - x.size), x.buffer, x.size);
  std::memcpy(point.data() + 33 + (32 - y.size), y.buffer, y.size);
  return crypto::PublicKey::FromRaw(crypto::KeyType::kEcdsaP256, point);
}

template <typename T, TSS2_RC (*Marshal)(const T*, uint8_t*, size_t, size_t*)>
Result<std::vector<uint8_t>> MarshalTo(const T& value, std::string_view what) {
  std::vector<uint8_t> out(sizeof(T) + 16);
  size_t offset = 0;
  if (TSS2_RC rc = Marshal(&value, out.data(), out.size(), &offset); rc != TSS2_RC_SUCCESS) {
    return Fail(TssError(fmt::format("marshalling {}", what), rc));
  }
  out.resize(offset);
  return out;
}

template <typename T, TSS2_RC (*Unmarshal)(const uint8_t*, size_t, size_t*, T*)>
Result<T> UnmarshalFrom(std::span<const uint8_t> bytes, std::string_view what) {
  T value{};
  size_t offset = 0;
  if (TSS2_RC rc = Unmarshal(bytes.data(), bytes.size(), &offset, &value);
      rc != TSS2_RC_SUCCESS || offset != bytes.size()) {
    return Fail(ErrorCode::kInvalidArgument, "{} is not a valid TPM structure", what);
  }
  return value;
}

// ---- a minimal DER writer for the TSS2 PRIVATE KEY file ----

void DerLength(std::vector<uint8_t>& out, size_t len) {
  if (len < 0x80) {
    out.push_back(static_cast<uint8_t>(len));
  } else if (len < 0x100) {
    out.insert(out.end(), {0x81, static_cast<uint8_t>(len)});
  } else {
    out.insert(out.end(), {0x82, static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len)});
  }
}

void DerTlv(std::vector<uint8_t>& out, uint8_t tag, std::span<const uint8_t> value) {
  out.push_back(tag);
  DerLength(out, value.size());
  out.insert(out.end(), value.begin(), value.end());
}

// TPMKey ::= SEQUENCE { type OID 2.23.133.10.1.3 (loadable key), emptyAuth [0] EXPLICIT
// BOOLEAN, parent INTEGER, pubkey OCTET STRING, privkey OCTET STRING }
// (https://www.hansenpartnership.com/draft-bottomley-tpm2-keys.html)
std::string Tss2PrivateKeyPem(uint32_t parent, std::span<const uint8_t> pub,
                              std::span<const uint8_t> priv) {
  std::vector<uint8_t> body;
  static constexpr uint8_t kOid[] = {0x06, 0x06, 0x67, 0x81, 0x05, 0x0a, 0x01, 0x03};
  body.insert(body.end(), std::begin(kOid), std::end(kOid));
  static constexpr uint8_t kEmptyAuth[] = {0xa0, 0x03, 0x01, 0x01, 0xff};
  body.insert(body.end(), std::begin(kEmptyAuth), std::end(kEmptyAuth));
  std::vector<uint8_t> integer = {0x00, static_cast<uint8_t>(parent >> 24),
                                  static_cast<uint8_t>(parent >> 16),
                                  static_cast<uint8_t>(parent >> 8), static_cast<uint8_t>(parent)};
  while (integer.size() > 1 && integer[0] == 0 && (integer[1] & 0x80) == 0) {
    integer.erase(integer.begin());
  }
  DerTlv(body, 0x02, integer);
  DerTlv(body, 0x04, pub);
  DerTlv(body, 0x04, priv);
  std::vector<uint8_t> der;
  DerTlv(der, 0x30, body);
  std::string b64 = Base64Encode(der);
  std::string pem = "-----BEGIN TSS2 PRIVATE KEY-----\n";
  for (size_t i = 0; i < b64.size(); i += 64) pem += b64.substr(i, 64) + "\n";
  pem += "-----END TSS2 PRIVATE KEY-----\n";
  return pem;
}

bool AllBytesAre(const TPM2B_DIGEST& d, uint8_t b) {
  for (uint16_t i = 0; i < d.size; ++i) {
    if (d.buffer[i] != b) return false;
  }
  return true;
}

}  // namespace

// ---- the connection ----

struct Tpm2KeyStore::Context {
  std::mutex mu;
  TSS2_TCTI_CONTEXT* tcti = nullptr;
  ESYS_CONTEXT* esys = nullptr;
  ESYS_TR srk = ESYS_TR_NONE;
  std::vector<uint8_t> srk_name;  // TPM name of the SRK: changes when the TPM is cleared

  ~Context() {
    if (esys != nullptr) {
      if (srk != ESYS_TR_NONE) Esys_TR_Close(esys, &srk);
      Esys_Finalize(&esys);
    }
    if (tcti != nullptr) Tss2_TctiLdr_Finalize(&tcti);
  }

  // A transient object, flushed when this goes out of scope.
  struct Loaded {
    ESYS_CONTEXT* esys;
    ESYS_TR handle = ESYS_TR_NONE;
    ~Loaded() {
      if (handle != ESYS_TR_NONE) Esys_FlushContext(esys, handle);
    }
  };

  Result<std::unique_ptr<Loaded>> Load(std::span<const uint8_t> pub_bytes,
                                       std::span<const uint8_t> priv_bytes) {
    MOAT_ASSIGN_OR_RETURN(auto pub, (UnmarshalFrom<TPM2B_PUBLIC, Tss2_MU_TPM2B_PUBLIC_Unmarshal>(
                                        pub_bytes, "key public blob")));
    MOAT_ASSIGN_OR_RETURN(auto priv,
                          (UnmarshalFrom<TPM2B_PRIVATE, Tss2_MU_TPM2B_PRIVATE_Unmarshal>(
                              priv_bytes, "key private blob")));
    auto loaded = std::make_unique<Loaded>(Loaded{esys});
    if (TSS2_RC rc = Esys_Load(esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &priv,
                               &pub, &loaded->handle);
        rc != TSS2_RC_SUCCESS) {
      loaded->handle = ESYS_TR_NONE;
      // Integrity failures mean the blob was wrapped by another SRK (another TPM, or this one
      // after a clear): say so rather than just quoting the TPM.
      uint32_t base = rc & 0xBF;
      if ((rc & TPM2_RC_FMT1) != 0 && (base == TPM2_RC_INTEGRITY || base == TPM2_RC_KEY)) {
        return Fail(ErrorCode::kFailedPrecondition,
                    "TPM: the key blob does not belong to this TPM's storage key (was the TPM "
                    "cleared or replaced?): {}",
                    Tss2_RC_Decode(rc));
      }
      return Fail(TssError("Esys_Load", rc));
    }
    return loaded;
  }

  Result<std::vector<uint8_t>> Sign(ESYS_TR key, const crypto::Sha256Digest& digest) {
    TPM2B_DIGEST d{};
    d.size = static_cast<UINT16>(digest.size());
    std::memcpy(d.buffer, digest.data(), digest.size());
    TPMT_SIG_SCHEME scheme{};
    scheme.scheme = TPM2_ALG_ECDSA;
    scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
    TPMT_TK_HASHCHECK ticket{};
    ticket.tag = TPM2_ST_HASHCHECK;
    ticket.hierarchy = TPM2_RH_NULL;
    TPMT_SIGNATURE* raw = nullptr;
    if (TSS2_RC rc = Esys_Sign(esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &d,
                               &scheme, &ticket, &raw);
        rc != TSS2_RC_SUCCESS) {
      return Fail(TssError("Esys_Sign", rc));
    }
    EsysPtr<TPMT_SIGNATURE> sig(raw);
    return EcdsaDer(*sig);
  }

  static Result<std::vector<uint8_t>> EcdsaDer(const TPMT_SIGNATURE& sig) {
    if (sig.sigAlg != TPM2_ALG_ECDSA) {
      return Fail(ErrorCode::kInternal, "TPM: expected an ECDSA signature, got alg 0x{:x}",
                  sig.sigAlg);
    }
    const auto& r = sig.signature.ecdsa.signatureR;
    const auto& s = sig.signature.ecdsa.signatureS;
    return crypto::EcdsaSignatureFromRS(std::span<const uint8_t>(r.buffer, r.size),
                                        std::span<const uint8_t>(s.buffer, s.size));
  }

  Result<std::map<uint32_t, crypto::Sha256Digest>> ReadPcrs(const std::vector<uint32_t>& pcrs) {
    std::map<uint32_t, crypto::Sha256Digest> out;
    // TPM2_PCR_Read answers at most 8 digests per call; ask for at most 8 at a time.
    for (size_t start = 0; start < pcrs.size(); start += 8) {
      TPML_PCR_SELECTION sel{};
      sel.count = 1;
      sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
      sel.pcrSelections[0].sizeofSelect = 3;
      for (size_t i = start; i < std::min(pcrs.size(), start + 8); ++i) {
        sel.pcrSelections[0].pcrSelect[pcrs[i] / 8] |= static_cast<uint8_t>(1u << (pcrs[i] % 8));
      }
      UINT32 counter = 0;
      TPML_PCR_SELECTION* sel_out_raw = nullptr;
      TPML_DIGEST* values_raw = nullptr;
      if (TSS2_RC rc = Esys_PCR_Read(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &sel,
                                     &counter, &sel_out_raw, &values_raw);
          rc != TSS2_RC_SUCCESS) {
        return Fail(TssError("Esys_PCR_Read", rc));
      }
      EsysPtr<TPML_PCR_SELECTION> sel_out(sel_out_raw);
      EsysPtr<TPML_DIGEST> values(values_raw);
      // The answer lists the selected PCRs in ascending order, one digest each.
      uint32_t next = 0;
      for (uint32_t pcr = 0; pcr <= kMaxRegister; ++pcr) {
        if (sel_out->count == 0 ||
            (sel_out->pcrSelections[0].pcrSelect[pcr / 8] & (1u << (pcr % 8))) == 0) {
          continue;
        }
        if (next >= values->count || values->digests[next].size != 32) {
          return Fail(ErrorCode::kInternal, "TPM: PCR_Read gave fewer digests than PCRs");
        }
        crypto::Sha256Digest d{};
        std::memcpy(d.data(), values->digests[next].buffer, 32);
        out[pcr] = d;
        ++next;
      }
    }
    for (uint32_t pcr : pcrs) {
      if (!out.contains(pcr)) {
        return Fail(ErrorCode::kFailedPrecondition,
                    "TPM: PCR {} of the SHA-256 bank is not allocated", pcr);
      }
    }
    return out;
  }
};

namespace {

Result<void> RecordSrkName(Tpm2KeyStore::Context& c) {
  TPM2B_NAME* name_raw = nullptr;
  if (TSS2_RC rc = Esys_TR_GetName(c.esys, c.srk, &name_raw); rc != TSS2_RC_SUCCESS) {
    return Fail(TssError("Esys_TR_GetName (SRK)", rc));
  }
  EsysPtr<TPM2B_NAME> name(name_raw);
  c.srk_name.assign(name->name, name->name + name->size);
  return Ok();
}

// True if `handle` is a persistent object in the TPM (asking first keeps ESAPI from logging
// an error for a handle that is simply not there yet).
Result<bool> PersistentExists(Tpm2KeyStore::Context& c, uint32_t handle) {
  TPMS_CAPABILITY_DATA* cap_raw = nullptr;
  if (TSS2_RC rc = Esys_GetCapability(c.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                      TPM2_CAP_HANDLES, handle, 1, nullptr, &cap_raw);
      rc != TSS2_RC_SUCCESS) {
    return Fail(TssError("Esys_GetCapability (handles)", rc));
  }
  EsysPtr<TPMS_CAPABILITY_DATA> cap(cap_raw);
  return cap->data.handles.count > 0 && cap->data.handles.handle[0] == handle;
}

Result<void> EnsureSrk(Tpm2KeyStore::Context& c, uint32_t handle) {
  MOAT_ASSIGN_OR_RETURN(bool exists, PersistentExists(c, handle));
  TSS2_RC rc = exists ? Esys_TR_FromTPMPublic(c.esys, handle, ESYS_TR_NONE, ESYS_TR_NONE,
                                              ESYS_TR_NONE, &c.srk)
                      : TPM2_RC_HANDLE;
  if (rc == TSS2_RC_SUCCESS) {
    TPM2B_PUBLIC* pub_raw = nullptr;
    if (rc = Esys_ReadPublic(c.esys, c.srk, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub_raw,
                             nullptr, nullptr);
        rc != TSS2_RC_SUCCESS) {
      return Fail(TssError("Esys_ReadPublic (SRK)", rc));
    }
    EsysPtr<TPM2B_PUBLIC> pub(pub_raw);
    TPMA_OBJECT want = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT | TPMA_OBJECT_FIXEDTPM;
    if (pub->publicArea.type != TPM2_ALG_ECC ||
        (pub->publicArea.objectAttributes & want) != want ||
        (pub->publicArea.objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT) != 0) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "TPM: persistent handle 0x{:08x} holds a key that is not an ECC storage key; "
                  "configure another key_store.srk_handle",
                  handle);
    }
    return RecordSrkName(c);
  }
  c.srk = ESYS_TR_NONE;
  // Not there: create the primary from the template and make it persistent.
  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_PUBLIC in_public = SrkTemplate();
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION creation_pcr{};
  ESYS_TR primary = ESYS_TR_NONE;
  if (rc = Esys_CreatePrimary(c.esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                              ESYS_TR_NONE, &sensitive, &in_public, &outside, &creation_pcr,
                              &primary, nullptr, nullptr, nullptr, nullptr);
      rc != TSS2_RC_SUCCESS) {
    return Fail(TssError("Esys_CreatePrimary (SRK)", rc));
  }
  rc = Esys_EvictControl(c.esys, ESYS_TR_RH_OWNER, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                         ESYS_TR_NONE, handle, &c.srk);
  Esys_FlushContext(c.esys, primary);
  if (rc != TSS2_RC_SUCCESS) {
    c.srk = ESYS_TR_NONE;
    return Fail(TssError(fmt::format("Esys_EvictControl (persisting the SRK at 0x{:08x})", handle),
                         rc));
  }
  return RecordSrkName(c);
}

}  // namespace

std::string EndorsementKey::DeviceId() const {
  if (name.size() != 34) return {};
  return HexEncode(std::span<const uint8_t>(name).subspan(2));
}

Tpm2KeyStore::~Tpm2KeyStore() = default;

Result<std::unique_ptr<Tpm2KeyStore>> Tpm2KeyStore::Open(const Tpm2Options& options) {
  if (options.moat_pcr > kMaxRegister || options.moat_pcr < kBootPcrs) {
    return Fail(ErrorCode::kInvalidArgument,
                "key_store.moat_pcr {} must be one of the TPM's PCRs 8..23 (0-7 hold the boot "
                "chain)",
                options.moat_pcr);
  }
  if ((options.srk_handle >> 24) != 0x81) {
    return Fail(ErrorCode::kInvalidArgument,
                "key_store.srk_handle 0x{:08x} is not a persistent handle (0x81xxxxxx)",
                options.srk_handle);
  }
  MOAT_TRY(internal::OpenPrivateDir(options.dir, {".pub", ".priv", ".pem"}));
  auto context = std::make_shared<Context>();
  if (TSS2_RC rc = Tss2_TctiLdr_Initialize(options.tcti.c_str(), &context->tcti);
      rc != TSS2_RC_SUCCESS) {
    context->tcti = nullptr;
    return Fail(ErrorCode::kUnavailable, "TPM: cannot connect through TCTI '{}': {}",
                options.tcti, Tss2_RC_Decode(rc));
  }
  if (TSS2_RC rc = Esys_Initialize(&context->esys, context->tcti, nullptr);
      rc != TSS2_RC_SUCCESS) {
    context->esys = nullptr;
    return Fail(TssError("Esys_Initialize", rc));
  }
  // A TPM fresh from power-on needs TPM2_Startup; one already started says so, which is fine.
  if (TSS2_RC rc = Esys_Startup(context->esys, TPM2_SU_CLEAR);
      rc != TSS2_RC_SUCCESS && (rc & 0xFFFF) != TPM2_RC_INITIALIZE) {
    return Fail(TssError("Esys_Startup", rc));
  }
  MOAT_TRY(EnsureSrk(*context, options.srk_handle));
  // Keys live in a subdirectory named after the SRK: blobs wrapped by another TPM (or by this
  // one before it was cleared) cannot load, so after a TPM reset the keys are simply absent and
  // the device gets a new identity.
  Tpm2Options effective = options;
  if (context->srk_name.size() != 34) {
    return Fail(ErrorCode::kInternal, "TPM: unexpected SRK name of {} bytes",
                context->srk_name.size());
  }
  effective.dir = options.dir / ("srk-" + HexEncode(std::span<const uint8_t>(
                                              context->srk_name).subspan(2, 8)));
  MOAT_TRY(internal::OpenPrivateDir(effective.dir, {".pub", ".priv", ".pem"}));
  return std::unique_ptr<Tpm2KeyStore>(new Tpm2KeyStore(effective, std::move(context)));
}

std::filesystem::path Tpm2KeyStore::KeyFile(std::string_view label) const {
  return options_.dir / (std::string(label) + ".pem");
}

uint32_t Tpm2KeyStore::TpmPcr(uint32_t reg) const {
  if (reg == formats::kMoatPcr) return options_.moat_pcr;
  if (reg == options_.moat_pcr) return formats::kMoatPcr;
  return reg;
}
uint32_t Tpm2KeyStore::RegisterOf(uint32_t tpm_pcr) const { return TpmPcr(tpm_pcr); }

namespace {

struct Blobs {
  std::vector<uint8_t> pub;
  std::vector<uint8_t> priv;
};

Result<Blobs> ReadBlobs(const std::filesystem::path& dir, std::string_view name) {
  std::filesystem::path pub = dir / (std::string(name) + ".pub");
  std::filesystem::path priv = dir / (std::string(name) + ".priv");
  if (::access(pub.c_str(), F_OK) != 0) {
    return Fail(ErrorCode::kNotFound, "key store {}: no key '{}'", dir.string(), name);
  }
  MOAT_TRY(CheckPrivate(pub, false));
  MOAT_TRY(CheckPrivate(priv, false));
  Blobs b;
  MOAT_ASSIGN_OR_RETURN(b.pub, ReadFileBytes(pub, kMaxBlobBytes));
  MOAT_ASSIGN_OR_RETURN(b.priv, ReadFileBytes(priv, kMaxBlobBytes));
  return b;
}

// Creates a key under the SRK and writes its blobs; kAlreadyExists if `name` exists.
Result<TPM2B_PUBLIC> CreateUnderSrk(Tpm2KeyStore::Context& c, const std::filesystem::path& dir,
                                    std::string_view name, const TPM2B_PUBLIC& tmpl,
                                    uint32_t srk_handle) {
  std::filesystem::path pub_path = dir / (std::string(name) + ".pub");
  if (::access(pub_path.c_str(), F_OK) == 0) {
    return Fail(ErrorCode::kAlreadyExists, "key store {}: key '{}' already exists", dir.string(),
                name);
  }
  TPM2B_SENSITIVE_CREATE sensitive{};
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION creation_pcr{};
  TPM2B_PRIVATE* priv_raw = nullptr;
  TPM2B_PUBLIC* pub_raw = nullptr;
  if (TSS2_RC rc = Esys_Create(c.esys, c.srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                               &sensitive, &tmpl, &outside, &creation_pcr, &priv_raw, &pub_raw,
                               nullptr, nullptr, nullptr);
      rc != TSS2_RC_SUCCESS) {
    return Fail(TssError("Esys_Create", rc));
  }
  EsysPtr<TPM2B_PRIVATE> priv(priv_raw);
  EsysPtr<TPM2B_PUBLIC> pub(pub_raw);
  MOAT_ASSIGN_OR_RETURN(auto pub_bytes,
                        (MarshalTo<TPM2B_PUBLIC, Tss2_MU_TPM2B_PUBLIC_Marshal>(*pub, "public")));
  MOAT_ASSIGN_OR_RETURN(auto priv_bytes, (MarshalTo<TPM2B_PRIVATE, Tss2_MU_TPM2B_PRIVATE_Marshal>(
                                             *priv, "private")));
  // The private blob and the PEM first, the public blob last: the .pub file is what marks the
  // key as present, and it is written exclusively so that racing creators cannot both win.
  AtomicWriteOptions o{.mode = 0600};
  MOAT_TRY(AtomicWriteFile(dir / (std::string(name) + ".priv"), priv_bytes, o));
  MOAT_TRY(AtomicWriteFile(dir / (std::string(name) + ".pem"),
                           Tss2PrivateKeyPem(srk_handle, pub_bytes, priv_bytes), o));
  auto written = AtomicWriteFile(pub_path, pub_bytes, {.mode = 0600, .exclusive = true});
  if (!written) {
    if (written.error().code() == ErrorCode::kAlreadyExists) {
      return Fail(ErrorCode::kAlreadyExists, "key store {}: key '{}' already exists",
                  dir.string(), name);
    }
    return Fail(written.error());
  }
  return *pub;
}

}  // namespace

Result<crypto::PublicKey> Tpm2KeyStore::CreateKey(std::string_view label) {
  MOAT_TRY(ValidateKeyLabel(label));
  std::lock_guard lock(context_->mu);
  MOAT_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub, CreateUnderSrk(*context_, options_.dir, label,
                                                         SigningKeyTemplate(),
                                                         options_.srk_handle));
  return PublicKeyOf(pub);
}

Result<crypto::PublicKey> Tpm2KeyStore::GetPublicKey(std::string_view label) const {
  MOAT_TRY(ValidateKeyLabel(label));
  MOAT_ASSIGN_OR_RETURN(Blobs b, ReadBlobs(options_.dir, label));
  MOAT_ASSIGN_OR_RETURN(auto pub, (UnmarshalFrom<TPM2B_PUBLIC, Tss2_MU_TPM2B_PUBLIC_Unmarshal>(
                                      b.pub, label)));
  return PublicKeyOf(pub);
}

Result<std::vector<uint8_t>> Tpm2KeyStore::SignDigest(std::string_view label,
                                                      const crypto::Sha256Digest& digest) {
  MOAT_TRY(ValidateKeyLabel(label));
  MOAT_ASSIGN_OR_RETURN(Blobs b, ReadBlobs(options_.dir, label));
  std::lock_guard lock(context_->mu);
  MOAT_ASSIGN_OR_RETURN(auto loaded, context_->Load(b.pub, b.priv));
  return context_->Sign(loaded->handle, digest);
}

Result<crypto::PrivateKey> Tpm2KeyStore::TlsKey(std::string_view label) {
  MOAT_ASSIGN_OR_RETURN(crypto::PublicKey pub, GetPublicKey(label));
  MOAT_ASSIGN_OR_RETURN(Blobs b, ReadBlobs(options_.dir, label));
  // The signer owns the connection and the blobs: the key works as long as it lives, even
  // after the store is closed.
  std::shared_ptr<Context> context = context_;
  return crypto::PrivateKey::FromSigner(
      pub, [context, b = std::move(b)](
               const crypto::Sha256Digest& digest) -> Result<std::vector<uint8_t>> {
        std::lock_guard lock(context->mu);
        MOAT_ASSIGN_OR_RETURN(auto loaded, context->Load(b.pub, b.priv));
        return context->Sign(loaded->handle, digest);
      });
}

Result<void> Tpm2KeyStore::Extend(uint32_t pcr, const crypto::Sha256Digest& digest) {
  if (pcr > kMaxRegister) {
    return Fail(ErrorCode::kInvalidArgument, "register {} does not exist (0..{})", pcr,
                kMaxRegister);
  }
  TPML_DIGEST_VALUES values{};
  values.count = 1;
  values.digests[0].hashAlg = TPM2_ALG_SHA256;
  std::memcpy(values.digests[0].digest.sha256, digest.data(), digest.size());
  std::lock_guard lock(context_->mu);
  if (TSS2_RC rc = Esys_PCR_Extend(context_->esys, ESYS_TR_PCR0 + TpmPcr(pcr), ESYS_TR_PASSWORD,
                                   ESYS_TR_NONE, ESYS_TR_NONE, &values);
      rc != TSS2_RC_SUCCESS) {
    return Fail(TssError(fmt::format("Esys_PCR_Extend (PCR {})", TpmPcr(pcr)), rc));
  }
  return Ok();
}

Result<std::map<uint32_t, crypto::Sha256Digest>> Tpm2KeyStore::ReadRegisters() const {
  std::vector<uint32_t> all;
  for (uint32_t i = 0; i <= kMaxRegister; ++i) all.push_back(i);
  std::lock_guard lock(context_->mu);
  MOAT_ASSIGN_OR_RETURN(auto values, context_->ReadPcrs(all));
  std::map<uint32_t, crypto::Sha256Digest> out;
  for (const auto& [tpm_pcr, value] : values) {
    TPM2B_DIGEST d{};
    d.size = 32;
    std::memcpy(d.buffer, value.data(), 32);
    if (AllBytesAre(d, 0x00) || AllBytesAre(d, 0xff)) continue;
    out[RegisterOf(tpm_pcr)] = value;
  }
  return out;
}

Result<crypto::PublicKey> Tpm2KeyStore::EnsureAttestationKey() {
  std::lock_guard lock(context_->mu);
  auto existing = ReadBlobs(options_.dir, kAkFile);
  if (existing) {
    MOAT_ASSIGN_OR_RETURN(auto pub, (UnmarshalFrom<TPM2B_PUBLIC, Tss2_MU_TPM2B_PUBLIC_Unmarshal>(
                                        existing->pub, "attestation key")));
    return PublicKeyOf(pub);
  }
  if (existing.error().code() != ErrorCode::kNotFound) return Fail(existing.error());
  MOAT_ASSIGN_OR_RETURN(TPM2B_PUBLIC pub,
                        CreateUnderSrk(*context_, options_.dir, kAkFile,
                                       AttestationKeyTemplate(), options_.srk_handle));
  return PublicKeyOf(pub);
}

Result<AttestationProof> Tpm2KeyStore::Attest(std::span<const uint8_t> signing_input) {
  AttestationProof proof;
  MOAT_ASSIGN_OR_RETURN(proof.signature, Sign(kIdentityKeyLabel, signing_input));
  MOAT_ASSIGN_OR_RETURN(crypto::PublicKey ak, EnsureAttestationKey());
  MOAT_ASSIGN_OR_RETURN(Blobs b, ReadBlobs(options_.dir, kAkFile));

  Tpm2Quote q;
  for (uint32_t i = 0; i < kBootPcrs; ++i) q.pcrs.push_back(i);
  q.pcrs.push_back(options_.moat_pcr);
  TPML_PCR_SELECTION sel{};
  sel.count = 1;
  sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
  sel.pcrSelections[0].sizeofSelect = 3;
  for (uint32_t pcr : q.pcrs) {
    sel.pcrSelections[0].pcrSelect[pcr / 8] |= static_cast<uint8_t>(1u << (pcr % 8));
  }
  crypto::Sha256Digest qualifying = crypto::Sha256(signing_input);
  TPM2B_DATA data{};
  data.size = static_cast<UINT16>(qualifying.size());
  std::memcpy(data.buffer, qualifying.data(), qualifying.size());
  TPMT_SIG_SCHEME scheme{};
  scheme.scheme = TPM2_ALG_NULL;  // the AK's own scheme: ECDSA with SHA-256

  std::lock_guard lock(context_->mu);
  MOAT_ASSIGN_OR_RETURN(auto loaded, context_->Load(b.pub, b.priv));
  TPM2B_ATTEST* quoted_raw = nullptr;
  TPMT_SIGNATURE* sig_raw = nullptr;
  if (TSS2_RC rc = Esys_Quote(context_->esys, loaded->handle, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                              ESYS_TR_NONE, &data, &scheme, &sel, &quoted_raw, &sig_raw);
      rc != TSS2_RC_SUCCESS) {
    return Fail(TssError("Esys_Quote", rc));
  }
  EsysPtr<TPM2B_ATTEST> quoted(quoted_raw);
  EsysPtr<TPMT_SIGNATURE> sig(sig_raw);
  q.attest.assign(quoted->attestationData, quoted->attestationData + quoted->size);
  MOAT_ASSIGN_OR_RETURN(q.signature, Context::EcdsaDer(*sig));
  MOAT_ASSIGN_OR_RETURN(q.pcr_values, context_->ReadPcrs(q.pcrs));
  q.ak_public = ak.ToDer();
  q.ak_tpm_public = std::move(b.pub);
  proof.tpm2_quote = std::move(q);
  return proof;
}

Result<formats::Tpm2Certify> Tpm2KeyStore::CertifyKey(std::string_view label,
                                                      std::span<const uint8_t> qualifying_data) {
  MOAT_TRY(ValidateKeyLabel(label));
  if (qualifying_data.size() > sizeof(TPM2B_DATA{}.buffer)) {
    return Fail(ErrorCode::kInvalidArgument, "certify: qualifying data is {} bytes (at most {})",
                qualifying_data.size(), sizeof(TPM2B_DATA{}.buffer));
  }
  MOAT_ASSIGN_OR_RETURN(Blobs key_blobs, ReadBlobs(options_.dir, label));
  MOAT_TRY(EnsureAttestationKey());
  MOAT_ASSIGN_OR_RETURN(Blobs ak_blobs, ReadBlobs(options_.dir, kAkFile));
  TPM2B_DATA data{};
  data.size = static_cast<UINT16>(qualifying_data.size());
  std::memcpy(data.buffer, qualifying_data.data(), qualifying_data.size());
  TPMT_SIG_SCHEME scheme{};
  scheme.scheme = TPM2_ALG_NULL;  // the AK's own scheme: ECDSA with SHA-256

  std::lock_guard lock(context_->mu);
  MOAT_ASSIGN_OR_RETURN(auto key, context_->Load(key_blobs.pub, key_blobs.priv));
  MOAT_ASSIGN_OR_RETURN(auto ak, context_->Load(ak_blobs.pub, ak_blobs.priv));
  TPM2B_ATTEST* certified_raw = nullptr;
  TPMT_SIGNATURE* sig_raw = nullptr;
  // Both objects have empty auth values: one password session each.
  if (TSS2_RC rc =
          Esys_Certify(context_->esys, key->handle, ak->handle, ESYS_TR_PASSWORD, ESYS_TR_PASSWORD,
                       ESYS_TR_NONE, &data, &scheme, &certified_raw, &sig_raw);
      rc != TSS2_RC_SUCCESS) {
    return Fail(TssError("Esys_Certify", rc));
  }
  EsysPtr<TPM2B_ATTEST> certified(certified_raw);
  EsysPtr<TPMT_SIGNATURE> sig(sig_raw);
  formats::Tpm2Certify out;
  out.attest.assign(certified->attestationData, certified->attestationData + certified->size);
  MOAT_ASSIGN_OR_RETURN(out.signature, Context::EcdsaDer(*sig));
  out.key_tpm_public = std::move(key_blobs.pub);
  return out;
}

namespace {

// The TCG EK Credential Profile's default RSA 2048 EK (template L-1): what a manufacturer's EK
// certificate at 0x01c00002 certifies. The policy is PolicySecret(TPM_RH_ENDORSEMENT).
TPM2B_PUBLIC EkTemplateRsa2048() {
  static constexpr uint8_t kPolicy[] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8,
                                        0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
                                        0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64,
                                        0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};
  TPM2B_PUBLIC t{};
  t.publicArea.type = TPM2_ALG_RSA;
  t.publicArea.nameAlg = TPM2_ALG_SHA256;
  t.publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                  TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
                                  TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
  t.publicArea.authPolicy.size = sizeof kPolicy;
  std::memcpy(t.publicArea.authPolicy.buffer, kPolicy, sizeof kPolicy);
  auto& rsa = t.publicArea.parameters.rsaDetail;
  rsa.symmetric.algorithm = TPM2_ALG_AES;
  rsa.symmetric.keyBits.aes = 128;
  rsa.symmetric.mode.aes = TPM2_ALG_CFB;
  rsa.scheme.scheme = TPM2_ALG_NULL;
  rsa.keyBits = 2048;
  rsa.exponent = 0;
  t.publicArea.unique.rsa.size = 256;  // zeros
  return t;
}

// The TCG default ECC P-256 EK (template L-2): what an EK certificate at 0x01c0000a certifies.
// As L-1 but ECC: NIST P-256, no scheme, no KDF, x and y 32 zero bytes each.
TPM2B_PUBLIC EkTemplateEccP256() {
  TPM2B_PUBLIC rsa = EkTemplateRsa2048();
  TPM2B_PUBLIC t{};
  t.publicArea.type = TPM2_ALG_ECC;
  t.publicArea.nameAlg = TPM2_ALG_SHA256;
  t.publicArea.objectAttributes = rsa.publicArea.objectAttributes;
  t.publicArea.authPolicy = rsa.publicArea.authPolicy;
  auto& ecc = t.publicArea.parameters.eccDetail;
  ecc.symmetric.algorithm = TPM2_ALG_AES;
  ecc.symmetric.keyBits.aes = 128;
  ecc.symmetric.mode.aes = TPM2_ALG_CFB;
  ecc.scheme.scheme = TPM2_ALG_NULL;
  ecc.curveID = TPM2_ECC_NIST_P256;
  ecc.kdf.scheme = TPM2_ALG_NULL;
  t.publicArea.unique.ecc.x.size = 32;  // zeros
  t.publicArea.unique.ecc.y.size = 32;
  return t;
}

// The EK: the persistent one at `handle` if there is one, else the default EK recreated from
// its template (deterministic: the same key every time, until the TPM is reset): ECC P-256
// (L-2) when the certificate is configured at the ECC P-256 index, else RSA 2048 (L-1).
struct EkRef {
  ESYS_CONTEXT* esys;
  ESYS_TR handle = ESYS_TR_NONE;
  bool transient = false;
  ~EkRef() {
    if (handle == ESYS_TR_NONE) return;
    if (transient) {
      Esys_FlushContext(esys, handle);
    } else {
      Esys_TR_Close(esys, &handle);
    }
  }
};

Result<std::unique_ptr<EkRef>> OpenEk(Tpm2KeyStore::Context& c, uint32_t handle,
                                      uint32_t certificate_nv_index) {
  auto ek = std::make_unique<EkRef>(EkRef{c.esys});
  MOAT_ASSIGN_OR_RETURN(bool exists, PersistentExists(c, handle));
  if (exists) {
    if (TSS2_RC rc = Esys_TR_FromTPMPublic(c.esys, handle, ESYS_TR_NONE, ESYS_TR_NONE,
                                           ESYS_TR_NONE, &ek->handle);
        rc != TSS2_RC_SUCCESS) {
      ek->handle = ESYS_TR_NONE;
      return Fail(TssError(fmt::format("reading the EK at 0x{:08x}", handle), rc));
    }
    return ek;
  }
  TPM2B_SENSITIVE_CREATE sensitive{};
  const bool ecc = certificate_nv_index == kEccP256EkCertificateNvIndex;
  TPM2B_PUBLIC in_public = ecc ? EkTemplateEccP256() : EkTemplateRsa2048();
  TPM2B_DATA outside{};
  TPML_PCR_SELECTION creation_pcr{};
  if (TSS2_RC rc = Esys_CreatePrimary(c.esys, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD,
                                      ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &in_public,
                                      &outside, &creation_pcr, &ek->handle, nullptr, nullptr,
                                      nullptr, nullptr);
      rc != TSS2_RC_SUCCESS) {
    ek->handle = ESYS_TR_NONE;
    return Fail(ErrorCode::kNotFound,
                "TPM: no EK at persistent handle 0x{:08x}, and creating the default {} EK "
                "failed: {}",
                handle, ecc ? "ECC P-256" : "RSA 2048", Tss2_RC_Decode(rc));
  }
  ek->transient = true;
  return ek;
}

}  // namespace

Result<std::vector<uint8_t>> Tpm2KeyStore::AttestationKeyPublicArea() {
  MOAT_TRY(EnsureAttestationKey());
  MOAT_ASSIGN_OR_RETURN(Blobs b, ReadBlobs(options_.dir, kAkFile));
  return std::move(b.pub);
}

Result<std::vector<uint8_t>> Tpm2KeyStore::AttestationKeyName() {
  MOAT_TRY(EnsureAttestationKey());
  MOAT_ASSIGN_OR_RETURN(Blobs b, ReadBlobs(options_.dir, kAkFile));
  std::lock_guard lock(context_->mu);
  MOAT_ASSIGN_OR_RETURN(auto loaded, context_->Load(b.pub, b.priv));
  TPM2B_NAME* name_raw = nullptr;
  if (TSS2_RC rc = Esys_TR_GetName(context_->esys, loaded->handle, &name_raw);
      rc != TSS2_RC_SUCCESS) {
    return Fail(TssError("Esys_TR_GetName (AK)", rc));
  }
  EsysPtr<TPM2B_NAME> name(name_raw);
  return std::vector<uint8_t>(name->name, name->name + name->size);
}

Result<std::vector<uint8_t>> Tpm2KeyStore::ActivateCredential(
    std::span<const uint8_t> credential_blob, std::span<const uint8_t> encrypted_secret) {
  MOAT_ASSIGN_OR_RETURN(auto blob, (UnmarshalFrom<TPM2B_ID_OBJECT, Tss2_MU_TPM2B_ID_OBJECT_Unmarshal>(
                                       credential_blob, "credential blob")));
  MOAT_ASSIGN_OR_RETURN(auto secret,
                        (UnmarshalFrom<TPM2B_ENCRYPTED_SECRET,
                                       Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal>(
                            encrypted_secret, "encrypted secret")));
  MOAT_TRY(EnsureAttestationKey());
  MOAT_ASSIGN_OR_RETURN(Blobs b, ReadBlobs(options_.dir, kAkFile));
  std::lock_guard lock(context_->mu);
  ESYS_CONTEXT* esys = context_->esys;
  MOAT_ASSIGN_OR_RETURN(auto ak, context_->Load(b.pub, b.priv));
  MOAT_ASSIGN_OR_RETURN(auto ek_ref,
                        OpenEk(*context_, options_.ek_handle, options_.ek_certificate_nv_index));
  ESYS_TR ek = ek_ref->handle;
  // The EK's authPolicy is PolicySecret(TPM_RH_ENDORSEMENT): satisfy it in a policy session.
  TPMT_SYM_DEF symmetric{};
  symmetric.algorithm = TPM2_ALG_NULL;
  ESYS_TR session = ESYS_TR_NONE;
  TSS2_RC rc = Esys_StartAuthSession(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                     ESYS_TR_NONE, nullptr, TPM2_SE_POLICY, &symmetric,
                                     TPM2_ALG_SHA256, &session);
  if (rc != TSS2_RC_SUCCESS) return Fail(TssError("Esys_StartAuthSession (policy)", rc));
  TPM2B_NONCE nonce_tpm{};
  TPM2B_DIGEST cp_hash{};
  TPM2B_NONCE policy_ref{};
  rc = Esys_PolicySecret(esys, ESYS_TR_RH_ENDORSEMENT, session, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                         ESYS_TR_NONE, &nonce_tpm, &cp_hash, &policy_ref, 0, nullptr, nullptr);
  TPM2B_DIGEST* cert_info_raw = nullptr;
  if (rc == TSS2_RC_SUCCESS) {
    rc = Esys_ActivateCredential(esys, ak->handle, ek, ESYS_TR_PASSWORD, session, ESYS_TR_NONE,
                                 &blob, &secret, &cert_info_raw);
  }
  Esys_FlushContext(esys, session);  // harmless if the TPM already ended it
  if (rc != TSS2_RC_SUCCESS) {
    if ((rc & 0xFF0000) == TSS2_TCTI_RC_LAYER) return Fail(TssError("ActivateCredential", rc));
    return Fail(ErrorCode::kVerificationFailed,
                "TPM: credential activation refused (not made for this TPM's EK and AK?): {}",
                Tss2_RC_Decode(rc));
  }
  EsysPtr<TPM2B_DIGEST> cert_info(cert_info_raw);
  return std::vector<uint8_t>(cert_info->buffer, cert_info->buffer + cert_info->size);
}

Result<EndorsementKey> Tpm2KeyStore::GetEndorsementKey() const {
  std::lock_guard lock(context_->mu);
  ESYS_CONTEXT* esys = context_->esys;
  EndorsementKey ek;
  TPM2B_PUBLIC* pub_raw = nullptr;
  TPM2B_NAME* name_raw = nullptr;
  TSS2_RC rc;
  {
    MOAT_ASSIGN_OR_RETURN(auto ek_ref,
                          OpenEk(*context_, options_.ek_handle, options_.ek_certificate_nv_index));
    rc = Esys_ReadPublic(esys, ek_ref->handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                         &pub_raw, &name_raw, nullptr);
  }
  if (rc != TSS2_RC_SUCCESS) return Fail(TssError("Esys_ReadPublic (EK)", rc));
  EsysPtr<TPM2B_PUBLIC> pub(pub_raw);
  EsysPtr<TPM2B_NAME> name(name_raw);
  MOAT_ASSIGN_OR_RETURN(ek.tpm_public,
                        (MarshalTo<TPM2B_PUBLIC, Tss2_MU_TPM2B_PUBLIC_Marshal>(*pub, "EK public")));
  ek.name.assign(name->name, name->name + name->size);

  // The certificate, if the manufacturer (or swtpm_setup --create-ek-cert) stored one.
  ESYS_TR nv = ESYS_TR_NONE;
  if (Esys_TR_FromTPMPublic(esys, options_.ek_certificate_nv_index, ESYS_TR_NONE, ESYS_TR_NONE,
                            ESYS_TR_NONE, &nv) != TSS2_RC_SUCCESS) {
    return ek;
  }
  TPM2B_NV_PUBLIC* nv_pub_raw = nullptr;
  if (rc = Esys_NV_ReadPublic(esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nv_pub_raw,
                              nullptr);
      rc != TSS2_RC_SUCCESS) {
    Esys_TR_Close(esys, &nv);
    return Fail(TssError("Esys_NV_ReadPublic (EK certificate)", rc));
  }
  EsysPtr<TPM2B_NV_PUBLIC> nv_pub(nv_pub_raw);
  ESYS_TR auth = (nv_pub->nvPublic.attributes & TPMA_NV_AUTHREAD) != 0 ? nv : ESYS_TR_RH_OWNER;
  uint16_t size = nv_pub->nvPublic.dataSize;
  constexpr uint16_t kChunk = 512;  // below every TPM's TPM2_PT_NV_BUFFER_MAX
  for (uint16_t offset = 0; offset < size;) {
    uint16_t n = std::min<uint16_t>(kChunk, static_cast<uint16_t>(size - offset));
    TPM2B_MAX_NV_BUFFER* data_raw = nullptr;
    if (rc = Esys_NV_Read(esys, auth, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, n,
                          offset, &data_raw);
        rc != TSS2_RC_SUCCESS) {
      Esys_TR_Close(esys, &nv);
      return Fail(TssError("Esys_NV_Read (EK certificate)", rc));
    }
    EsysPtr<TPM2B_MAX_NV_BUFFER> data(data_raw);
    ek.certificate.insert(ek.certificate.end(), data->buffer, data->buffer + data->size);
    offset = static_cast<uint16_t>(offset + n);
  }
  Esys_TR_Close(esys, &nv);
  return ek;
}

}  // namespace moat::rot
