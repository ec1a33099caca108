#include "formats/tpm2.h"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "core/encoding.h"
#include "crypto/key.h"
#include "crypto/tpm_primitives.h"
#include "formats/byte_io.h"
#include "formats/json_reader.h"

namespace moat::formats {
namespace {

constexpr uint16_t kTpmAlgNull = 0x0010;
constexpr uint16_t kTpmAlgAes = 0x0006;
constexpr uint16_t kTpmAlgCfb = 0x0043;
constexpr uint16_t kTpmEccNistP256 = 0x0003;
constexpr uint32_t kTpmGeneratedValue = 0xff544347;
constexpr uint16_t kTpmStAttestCertify = 0x8017;
constexpr uint16_t kTpmStAttestQuote = 0x8018;
constexpr size_t kMaxTpmBlob = 4096;

Result<std::vector<uint8_t>> ReadTpm2b(ByteReader& r, std::string_view what, size_t max) {
  MOAT_ASSIGN_OR_RETURN(uint16_t size, r.ReadBigEndian<uint16_t>(what));
  if (size > max)
    return Fail(ErrorCode::kInvalidArgument, "{} is {} bytes (at most {})", what, size, max);
  MOAT_ASSIGN_OR_RETURN(auto bytes, r.ReadBytes(size, what));
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

// TPMT_SYM_DEF_OBJECT.
Result<void> ReadSymmetric(ByteReader& r, TpmPublic& key) {
  MOAT_ASSIGN_OR_RETURN(key.symmetric, r.ReadBigEndian<uint16_t>("the symmetric algorithm"));
  if (key.symmetric != kTpmAlgNull) {
    MOAT_ASSIGN_OR_RETURN(key.symmetric_bits, r.ReadBigEndian<uint16_t>("the symmetric key size"));
    MOAT_ASSIGN_OR_RETURN(uint16_t mode, r.ReadBigEndian<uint16_t>("the symmetric mode"));
    if (mode != kTpmAlgCfb) {
      return Fail(ErrorCode::kInvalidArgument, "TPM public area: symmetric mode {:#06x} is not CFB",
                  mode);
    }
  }
  return Ok();
}

// TPMT_RSA_SCHEME / TPMT_ECC_SCHEME / TPMT_KDF_SCHEME: an algorithm, then a hash unless NULL.
Result<void> ReadScheme(ByteReader& r, std::string_view what) {
  MOAT_ASSIGN_OR_RETURN(uint16_t scheme, r.ReadBigEndian<uint16_t>(what));
  if (scheme == 0x001a) {
    return Fail(ErrorCode::kInvalidArgument, "TPM public area: ECDAA keys are not supported");
  }
  if (scheme != kTpmAlgNull) MOAT_TRY(r.ReadBigEndian<uint16_t>(what));
  return Ok();
}

std::vector<uint8_t> PadTo32(const std::vector<uint8_t>& v) {
  std::vector<uint8_t> out(32 - std::min<size_t>(32, v.size()), 0);
  out.insert(out.end(), v.begin(), v.end());
  return out;
}

std::string B64(std::span<const uint8_t> bytes) {
  return Base64Encode(bytes, Base64Alphabet::kUrl, Base64Padding::kWithout);
}

}  // namespace

Result<TpmPublic> ParseTpm2bPublic(std::span<const uint8_t> bytes) {
  ByteReader outer(bytes, "TPM2B_PUBLIC");
  MOAT_ASSIGN_OR_RETURN(uint16_t size, outer.ReadBigEndian<uint16_t>("the size"));
  if (size != outer.remaining()) {
    return Fail(ErrorCode::kInvalidArgument, "TPM2B_PUBLIC: size {} but {} bytes follow", size,
                outer.remaining());
  }
  TpmPublic key;
  key.marshalled.assign(bytes.begin() + 2, bytes.end());
  ByteReader r(key.marshalled, "TPMT_PUBLIC");
  MOAT_ASSIGN_OR_RETURN(key.type, r.ReadBigEndian<uint16_t>("the type"));
  MOAT_ASSIGN_OR_RETURN(key.name_alg, r.ReadBigEndian<uint16_t>("the name algorithm"));
  if (key.name_alg != kTpmAlgSha256) {
    return Fail(ErrorCode::kInvalidArgument,
                "TPM public area: name algorithm {:#06x} is not SHA-256", key.name_alg);
  }
  MOAT_ASSIGN_OR_RETURN(key.attributes, r.ReadBigEndian<uint32_t>("the attributes"));
  MOAT_TRY(ReadTpm2b(r, "the auth policy", 64));
  MOAT_TRY(ReadSymmetric(r, key));
  if (key.type == kTpmAlgRsa) {
    MOAT_TRY(ReadScheme(r, "the RSA scheme"));
    MOAT_ASSIGN_OR_RETURN(uint16_t bits, r.ReadBigEndian<uint16_t>("the RSA key size"));
    MOAT_ASSIGN_OR_RETURN(key.rsa_exponent, r.ReadBigEndian<uint32_t>("the RSA exponent"));
    if (key.rsa_exponent == 0) key.rsa_exponent = 65537;
    MOAT_ASSIGN_OR_RETURN(key.rsa_modulus, ReadTpm2b(r, "the RSA modulus", 512));
    if (key.rsa_modulus.size() * 8 != bits) {
      return Fail(ErrorCode::kInvalidArgument, "TPM public area: RSA modulus is not {} bits", bits);
    }
  } else if (key.type == kTpmAlgEcc) {
    MOAT_TRY(ReadScheme(r, "the ECC scheme"));
    MOAT_ASSIGN_OR_RETURN(uint16_t curve, r.ReadBigEndian<uint16_t>("the curve"));
    if (curve != kTpmEccNistP256) {
      return Fail(ErrorCode::kInvalidArgument, "TPM public area: curve {:#06x} is not P-256",
                  curve);
    }
    MOAT_TRY(ReadScheme(r, "the KDF scheme"));
    MOAT_ASSIGN_OR_RETURN(auto x, ReadTpm2b(r, "the ECC x coordinate", 32));
    MOAT_ASSIGN_OR_RETURN(auto y, ReadTpm2b(r, "the ECC y coordinate", 32));
    key.ecc_x = PadTo32(x);
    key.ecc_y = PadTo32(y);
  } else {
    return Fail(ErrorCode::kInvalidArgument, "TPM public area: key type {:#06x} is not RSA or ECC",
                key.type);
  }
  if (r.remaining() != 0) {
    return Fail(ErrorCode::kInvalidArgument, "TPMT_PUBLIC: {} trailing bytes", r.remaining());
  }
  return key;
}

std::vector<uint8_t> TpmName(const TpmPublic& key) {
  std::vector<uint8_t> name;
  PutU16(name, key.name_alg);
  auto digest = crypto::Sha256(key.marshalled);
  name.insert(name.end(), digest.begin(), digest.end());
  return name;
}

std::string EkDeviceId(const TpmPublic& ek) { return HexEncode(crypto::Sha256(ek.marshalled)); }

namespace {
// PolicySecret(TPM_RH_ENDORSEMENT), the authPolicy of the TCG default EKs (L-1, L-2).
constexpr uint8_t kEkPolicy[32] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc,
                                   0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52,
                                   0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};
}  // namespace

std::vector<uint8_t> DefaultRsaEkTpm2bPublic(std::span<const uint8_t> modulus) {
  std::vector<uint8_t> t;
  PutU16(t, kTpmAlgRsa);
  PutU16(t, kTpmAlgSha256);
  // fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt
  PutU32(t, 0x000300b2);
  PutU16(t, sizeof(kEkPolicy));
  t.insert(t.end(), std::begin(kEkPolicy), std::end(kEkPolicy));
  PutU16(t, kTpmAlgAes);
  PutU16(t, 128);
  PutU16(t, kTpmAlgCfb);
  PutU16(t, kTpmAlgNull);  // scheme
  PutU16(t, static_cast<uint16_t>(modulus.size() * 8));
  PutU32(t, 0);  // exponent: default
  PutU16(t, static_cast<uint16_t>(modulus.size()));
  t.insert(t.end(), modulus.begin(), modulus.end());
  std::vector<uint8_t> out;
  PutU16(out, static_cast<uint16_t>(t.size()));
  out.insert(out.end(), t.begin(), t.end());
  return out;
}

std::vector<uint8_t> DefaultEccEkTpm2bPublic(std::span<const uint8_t> x,
                                             std::span<const uint8_t> y) {
  std::vector<uint8_t> t;
  PutU16(t, kTpmAlgEcc);
  PutU16(t, kTpmAlgSha256);
  PutU32(t, 0x000300b2);  // as L-1
  PutU16(t, sizeof(kEkPolicy));
  t.insert(t.end(), std::begin(kEkPolicy), std::end(kEkPolicy));
  PutU16(t, kTpmAlgAes);
  PutU16(t, 128);
  PutU16(t, kTpmAlgCfb);
  PutU16(t, kTpmAlgNull);  // scheme
  PutU16(t, kTpmEccNistP256);
  PutU16(t, kTpmAlgNull);  // KDF
  PutU16(t, static_cast<uint16_t>(x.size()));
  t.insert(t.end(), x.begin(), x.end());
  PutU16(t, static_cast<uint16_t>(y.size()));
  t.insert(t.end(), y.begin(), y.end());
  std::vector<uint8_t> out;
  PutU16(out, static_cast<uint16_t>(t.size()));
  out.insert(out.end(), t.begin(), t.end());
  return out;
}

Result<std::vector<uint8_t>> EccPoint(const TpmPublic& key) {
  if (key.type != kTpmAlgEcc || key.ecc_x.size() != 32 || key.ecc_y.size() != 32) {
    return Fail(ErrorCode::kInvalidArgument, "not an ECC P-256 TPM key");
  }
  std::vector<uint8_t> point{0x04};
  point.insert(point.end(), key.ecc_x.begin(), key.ecc_x.end());
  point.insert(point.end(), key.ecc_y.begin(), key.ecc_y.end());
  return point;
}

Json ToJson(const Tpm2Quote& q) {
  Json values = Json::object();
  for (const auto& [pcr, v] : q.pcr_values) values[std::to_string(pcr)] = HexEncode(v);
  Json j = {{"attest", B64(q.attest)},
            {"signature", B64(q.signature)},
            {"pcrs", q.pcrs},
            {"pcr_values", values},
            {"ak_public", B64(q.ak_public)},
            {"ak_tpm_public", B64(q.ak_tpm_public)}};
  if (!q.activated_secret.empty()) j["activated_secret"] = B64(q.activated_secret);
  if (q.certify) {
    j["certify"] = {{"key_tpm_public", B64(q.certify->key_tpm_public)},
                    {"attest", B64(q.certify->attest)},
                    {"signature", B64(q.certify->signature)}};
  }
  return j;
}

namespace {

// A member holding unpadded base64url of 1..kMaxTpmBlob bytes; an absent optional one leaves
// `out` empty.
Result<void> ReadBlob(ObjectReader& r, std::string_view path, std::string_view key,
                      std::vector<uint8_t>& out, bool required) {
  MOAT_ASSIGN_OR_RETURN(std::string text, required ? r.RequiredString(key, kMaxTpmBlob * 2)
                                                   : r.OptionalString(key, kMaxTpmBlob * 2));
  if (text.empty() && !required) return Ok();
  auto bytes = Base64Decode(text, Base64Alphabet::kUrl, Base64Padding::kWithout);
  if (!bytes || bytes->empty() || bytes->size() > kMaxTpmBlob) {
    return Fail(ErrorCode::kInvalidArgument, "{}.{}: not unpadded base64url of 1..{} bytes", path,
                key, kMaxTpmBlob);
  }
  out = std::move(*bytes);
  return Ok();
}

Result<Tpm2Certify> Tpm2CertifyFromJson(const Json& json, std::string_view path) {
  ObjectReader r(json, path);
  MOAT_TRY(r.status());
  Tpm2Certify c;
  MOAT_TRY(ReadBlob(r, path, "key_tpm_public", c.key_tpm_public, true));
  MOAT_TRY(ReadBlob(r, path, "attest", c.attest, true));
  MOAT_TRY(ReadBlob(r, path, "signature", c.signature, true));
  MOAT_TRY(r.NoOtherFields());
  return c;
}

}  // namespace

Result<Tpm2Quote> Tpm2QuoteFromJson(const Json& json, std::string_view path) {
  ObjectReader r(json, path);
  MOAT_TRY(r.status());
  Tpm2Quote q;
  MOAT_TRY(ReadBlob(r, path, "attest", q.attest, true));
  MOAT_TRY(ReadBlob(r, path, "signature", q.signature, true));
  MOAT_TRY(ReadBlob(r, path, "ak_public", q.ak_public, true));
  MOAT_TRY(ReadBlob(r, path, "ak_tpm_public", q.ak_tpm_public, true));
  MOAT_TRY(ReadBlob(r, path, "activated_secret", q.activated_secret, false));
  if (json.contains("certify")) {
    r.MarkSeen("certify");
    MOAT_ASSIGN_OR_RETURN(q.certify,
                          Tpm2CertifyFromJson(json["certify"], JsonPathJoin(path, "certify")));
  }
  if (!json.contains("pcrs") || !json["pcrs"].is_array() || json["pcrs"].size() > 24) {
    return Fail(ErrorCode::kInvalidArgument, "{}.pcrs: required, an array of at most 24 PCRs",
                path);
  }
  r.MarkSeen("pcrs");
  for (const auto& p : json["pcrs"]) {
    if (!p.is_number_unsigned() || p.get<uint64_t>() > 23 ||
        (!q.pcrs.empty() && p.get<uint32_t>() <= q.pcrs.back())) {
      return Fail(ErrorCode::kInvalidArgument, "{}.pcrs: PCR numbers 0..23, ascending", path);
    }
    q.pcrs.push_back(p.get<uint32_t>());
  }
  if (!json.contains("pcr_values") || !json["pcr_values"].is_object() ||
      json["pcr_values"].size() > 24) {
    return Fail(ErrorCode::kInvalidArgument, "{}.pcr_values: required, an object", path);
  }
  r.MarkSeen("pcr_values");
  for (const auto& [k, v] : json["pcr_values"].items()) {
    uint32_t pcr = 0;
    auto [end, ec] = std::from_chars(k.data(), k.data() + k.size(), pcr);
    Result<std::vector<uint8_t>> bytes =
        v.is_string() ? HexDecode(v.get<std::string>())
                      : Result<std::vector<uint8_t>>(Fail(ErrorCode::kInvalidArgument, "not hex"));
    if (ec != std::errc() || end != k.data() + k.size() || pcr > 23 || !bytes ||
        bytes->size() != 32) {
      return Fail(ErrorCode::kInvalidArgument,
                  "{}.pcr_values: keys are PCR numbers, values 64 hex digits", path);
    }
    std::copy(bytes->begin(), bytes->end(), q.pcr_values[pcr].begin());
  }
  MOAT_TRY(r.NoOtherFields());
  return q;
}

namespace {

// The TPMS_ATTEST header every attestation structure shares: magic, type, qualified signer,
// extra data, clock info, firmware version.
struct AttestHeader {
  std::vector<uint8_t> qualified_signer, extra_data;
  uint64_t clock = 0;
  uint32_t reset_count = 0, restart_count = 0;
};

Result<AttestHeader> ReadAttestHeader(ByteReader& r, uint16_t want_type, std::string_view what) {
  AttestHeader h;
  MOAT_ASSIGN_OR_RETURN(uint32_t magic, r.ReadBigEndian<uint32_t>("the magic"));
  MOAT_ASSIGN_OR_RETURN(uint16_t type, r.ReadBigEndian<uint16_t>("the type"));
  if (magic != kTpmGeneratedValue || type != want_type) {
    return Fail(ErrorCode::kVerificationFailed, "{}: not a TPM-generated {}", what, what);
  }
  MOAT_ASSIGN_OR_RETURN(h.qualified_signer, ReadTpm2b(r, "the qualified signer", 68));
  MOAT_ASSIGN_OR_RETURN(h.extra_data, ReadTpm2b(r, "the extra data", 64));
  MOAT_ASSIGN_OR_RETURN(h.clock, r.ReadBigEndian<uint64_t>("the clock"));
  MOAT_ASSIGN_OR_RETURN(h.reset_count, r.ReadBigEndian<uint32_t>("the reset count"));
  MOAT_ASSIGN_OR_RETURN(h.restart_count, r.ReadBigEndian<uint32_t>("the restart count"));
  MOAT_TRY(r.ReadBigEndian<uint8_t>("the safe flag"));
  MOAT_TRY(r.ReadBigEndian<uint64_t>("the firmware version"));
  return h;
}

}  // namespace

Result<TpmQuoteInfo> ParseQuoteAttest(std::span<const uint8_t> attest) {
  ByteReader r(attest, "TPMS_ATTEST");
  TpmQuoteInfo info;
  MOAT_ASSIGN_OR_RETURN(AttestHeader h, ReadAttestHeader(r, kTpmStAttestQuote, "quote"));
  info.qualified_signer = std::move(h.qualified_signer);
  info.extra_data = std::move(h.extra_data);
  info.clock = h.clock;
  info.reset_count = h.reset_count;
  info.restart_count = h.restart_count;
  MOAT_ASSIGN_OR_RETURN(uint32_t banks, r.ReadBigEndian<uint32_t>("the PCR selection count"));
  if (banks != 1) {
    return Fail(ErrorCode::kVerificationFailed, "quote: PCR selection is not one SHA-256 bank");
  }
  MOAT_ASSIGN_OR_RETURN(uint16_t hash, r.ReadBigEndian<uint16_t>("the PCR bank"));
  MOAT_ASSIGN_OR_RETURN(uint8_t select_size, r.ReadBigEndian<uint8_t>("the selection size"));
  if (hash != kTpmAlgSha256 || select_size > 4) {
    return Fail(ErrorCode::kVerificationFailed, "quote: PCR selection is not one SHA-256 bank");
  }
  MOAT_ASSIGN_OR_RETURN(auto select, r.ReadBytes(select_size, "the PCR selection"));
  for (uint32_t pcr = 0; pcr < 8u * select_size; ++pcr) {
    if (select[pcr / 8] & (1u << (pcr % 8))) info.pcrs.push_back(pcr);
  }
  MOAT_ASSIGN_OR_RETURN(info.pcr_digest, ReadTpm2b(r, "the PCR digest", 64));
  if (r.remaining() != 0) {
    return Fail(ErrorCode::kInvalidArgument, "TPMS_ATTEST: {} trailing bytes", r.remaining());
  }
  return info;
}

Result<void> VerifyTpm2Quote(const Tpm2Quote& q, std::span<const uint8_t> signing_input) {
  MOAT_ASSIGN_OR_RETURN(crypto::PublicKey ak, crypto::PublicKey::FromDer(q.ak_public));
  if (ak.type() != crypto::KeyType::kEcdsaP256) {
    return Fail(ErrorCode::kInvalidArgument, "quote: the AK is not a P-256 key");
  }
  auto pub = ParseTpm2bPublic(q.ak_tpm_public);
  if (!pub) return Fail(pub.error().WithContext("quote: ak_tpm_public"));
  const uint32_t want = kTpmaRestricted | kTpmaSign | kTpmaFixedTpm | kTpmaSensitiveDataOrigin;
  if (pub->type != kTpmAlgEcc || (pub->attributes & want) != want ||
      (pub->attributes & kTpmaDecrypt) != 0) {
    return Fail(ErrorCode::kVerificationFailed,
                "quote: the AK is not a restricted, fixedTPM, TPM-generated signing key");
  }
  MOAT_ASSIGN_OR_RETURN(auto point, EccPoint(*pub));
  MOAT_ASSIGN_OR_RETURN(crypto::PublicKey tpm_ak,
                        crypto::PublicKey::FromRaw(crypto::KeyType::kEcdsaP256, point));
  if (!(tpm_ak == ak)) {
    return Fail(ErrorCode::kVerificationFailed, "quote: ak_public and ak_tpm_public differ");
  }
  if (auto v = ak.Verify(q.attest, q.signature); !v) {
    return Fail(ErrorCode::kVerificationFailed, "quote: the AK signature does not match");
  }
  MOAT_ASSIGN_OR_RETURN(TpmQuoteInfo info, ParseQuoteAttest(q.attest));
  // (qualified_signer is the AK's qualified name, which hashes in its parents: not comparable
  // with the AK's name without the SRK's. The signature already names the AK.)
  const crypto::Sha256Digest expected = crypto::Sha256(signing_input);
  if (!std::ranges::equal(info.extra_data, expected)) {
    return Fail(ErrorCode::kVerificationFailed,
                "quote: qualifying data is not SHA-256 of this signing input (old nonce?)");
  }
  if (info.pcrs != q.pcrs) {
    return Fail(ErrorCode::kVerificationFailed, "quote: quoted PCRs differ from 'pcrs'");
  }
  if (q.pcr_values.size() != q.pcrs.size()) {
    return Fail(ErrorCode::kInvalidArgument, "quote: pcr_values and pcrs list different PCRs");
  }
  std::vector<uint8_t> concat;
  for (uint32_t pcr : q.pcrs) {
    auto it = q.pcr_values.find(pcr);
    if (it == q.pcr_values.end()) {
      return Fail(ErrorCode::kInvalidArgument, "quote: no value for quoted PCR {}", pcr);
    }
    concat.insert(concat.end(), it->second.begin(), it->second.end());
  }
  if (!std::ranges::equal(info.pcr_digest, crypto::Sha256(concat))) {
    return Fail(ErrorCode::kVerificationFailed,
                "quote: PCR digest does not match pcr_values (changed since the quote?)");
  }
  return Ok();
}

Result<TpmCertifyInfo> ParseCertifyAttest(std::span<const uint8_t> attest) {
  ByteReader r(attest, "TPMS_ATTEST");
  MOAT_ASSIGN_OR_RETURN(AttestHeader h,
                        ReadAttestHeader(r, kTpmStAttestCertify, "certify structure"));
  TpmCertifyInfo info;
  info.qualified_signer = std::move(h.qualified_signer);
  info.extra_data = std::move(h.extra_data);
  MOAT_ASSIGN_OR_RETURN(info.name, ReadTpm2b(r, "the certified name", 68));
  MOAT_ASSIGN_OR_RETURN(info.qualified_name, ReadTpm2b(r, "the certified qualified name", 68));
  if (r.remaining() != 0) {
    return Fail(ErrorCode::kInvalidArgument, "TPMS_ATTEST: {} trailing bytes", r.remaining());
  }
  return info;
}

std::vector<uint8_t> CertifyQualifyingData(std::span<const uint8_t> nonce) {
  static constexpr std::string_view kLabel = "moat-certify";
  std::vector<uint8_t> input(nonce.begin(), nonce.end());
  input.insert(input.end(), kLabel.begin(), kLabel.end());
  const crypto::Sha256Digest digest = crypto::Sha256(input);
  return std::vector<uint8_t>(digest.begin(), digest.end());
}

Result<void> VerifyTpm2Certify(const Tpm2Certify& c, const crypto::PublicKey& ak,
                               std::span<const uint8_t> nonce,
                               const crypto::PublicKey& expected_key) {
  // SECURITY: verify the AK's signature first, then parse only the signed bytes.
  if (auto v = ak.Verify(c.attest, c.signature); !v) {
    return Fail(ErrorCode::kVerificationFailed,
                "certify: the signature is not the attestation key's (another TPM?)");
  }
  MOAT_ASSIGN_OR_RETURN(TpmCertifyInfo info, ParseCertifyAttest(c.attest));
  if (!std::ranges::equal(info.extra_data, CertifyQualifyingData(nonce))) {
    return Fail(ErrorCode::kVerificationFailed,
                "certify: qualifying data is not bound to this challenge's nonce (old nonce?)");
  }
  auto key = ParseTpm2bPublic(c.key_tpm_public);
  if (!key) return Fail(key.error().WithContext("certify: key_tpm_public"));
  // The name hashes the whole public area (attributes included), so the attributes checked
  // below are the certified key's.
  if (!std::ranges::equal(info.name, TpmName(*key))) {
    return Fail(ErrorCode::kVerificationFailed,
                "certify: the certified key is not the one key_tpm_public describes (names "
                "differ)");
  }
  // SECURITY: fixedTPM and fixedParent: the key cannot be duplicated out of the TPM;
  // sensitiveDataOrigin: the TPM generated it (an imported or loaded-from-outside key has
  // existed outside the TPM, and the TPM clears fixedTPM for both). An unrestricted signing key
  // only: a TLS key signs digests the TPM did not make.
  const uint32_t want = kTpmaFixedTpm | kTpmaFixedParent | kTpmaSensitiveDataOrigin | kTpmaSign;
  if ((key->attributes & want) != want) {
    return Fail(ErrorCode::kVerificationFailed,
                "certify: the certified key is not a TPM-generated, non-duplicable signing key "
                "(attributes {:#010x} lack fixedTPM, fixedParent, sensitiveDataOrigin or sign)",
                key->attributes);
  }
  if ((key->attributes & (kTpmaDecrypt | kTpmaRestricted)) != 0) {
    return Fail(ErrorCode::kVerificationFailed,
                "certify: the certified key is a decryption or restricted key (attributes "
                "{:#010x}), not a TLS signing key",
                key->attributes);
  }
  auto point = EccPoint(*key);
  if (!point) {
    return Fail(ErrorCode::kVerificationFailed, "certify: the certified key is not ECC P-256");
  }
  MOAT_ASSIGN_OR_RETURN(crypto::PublicKey certified,
                        crypto::PublicKey::FromRaw(crypto::KeyType::kEcdsaP256, *point));
  if (!(certified == expected_key)) {
    return Fail(ErrorCode::kVerificationFailed,
                "certify: the certified TPM key is not the key the certificate request names");
  }
  return Ok();
}

Result<std::vector<uint8_t>> KdfaSha256(std::span<const uint8_t> key, std::string_view label,
                                        std::span<const uint8_t> context_u,
                                        std::span<const uint8_t> context_v, uint32_t bits) {
  std::vector<uint8_t> out;
  const size_t bytes = (bits + 7) / 8;
  for (uint32_t counter = 1; out.size() < bytes; ++counter) {
    std::vector<uint8_t> in;
    PutU32(in, counter);
    in.insert(in.end(), label.begin(), label.end());
    in.push_back(0);
    in.insert(in.end(), context_u.begin(), context_u.end());
    in.insert(in.end(), context_v.begin(), context_v.end());
    PutU32(in, bits);
    MOAT_ASSIGN_OR_RETURN(auto block, crypto::HmacSha256(key, in));
    out.insert(out.end(), block.begin(), block.end());
  }
  out.resize(bytes);
  return out;
}

std::vector<uint8_t> KdfeSha256(std::span<const uint8_t> z, std::string_view label,
                                std::span<const uint8_t> party_u, std::span<const uint8_t> party_v,
                                uint32_t bits) {
  std::vector<uint8_t> out;
  const size_t bytes = (bits + 7) / 8;
  for (uint32_t counter = 1; out.size() < bytes; ++counter) {
    std::vector<uint8_t> in;
    PutU32(in, counter);
    in.insert(in.end(), z.begin(), z.end());
    in.insert(in.end(), label.begin(), label.end());
    in.push_back(0);
    in.insert(in.end(), party_u.begin(), party_u.end());
    in.insert(in.end(), party_v.begin(), party_v.end());
    const crypto::Sha256Digest block = crypto::Sha256(in);
    out.insert(out.end(), block.begin(), block.end());
  }
  out.resize(bytes);
  return out;
}

Result<MadeCredential> MakeCredential(const TpmPublic& ek, std::span<const uint8_t> ak_name,
                                      std::span<const uint8_t> secret,
                                      std::span<const uint8_t> random) {
  if ((ek.type != kTpmAlgRsa && ek.type != kTpmAlgEcc) ||
      (ek.attributes & (kTpmaRestricted | kTpmaDecrypt)) != (kTpmaRestricted | kTpmaDecrypt) ||
      ek.symmetric != kTpmAlgAes || ek.symmetric_bits != 128) {
    return Fail(ErrorCode::kInvalidArgument,
                "MakeCredential: the EK is not an RSA or ECC restricted decryption key with "
                "AES-128-CFB");
  }
  if (secret.empty() || secret.size() > 32 || random.size() != 32) {
    return Fail(ErrorCode::kInvalidArgument,
                "MakeCredential: the secret is 1..32 bytes and the seed 32");
  }
  MadeCredential out;
  std::vector<uint8_t> seed;
  if (ek.type == kTpmAlgRsa) {
    // The seed, for the EK only: RSA-OAEP with the label "IDENTITY" and its NUL.
    static constexpr uint8_t kIdentity[] = {'I', 'D', 'E', 'N', 'T', 'I', 'T', 'Y', 0};
    std::vector<uint8_t> exponent;
    PutU32(exponent, ek.rsa_exponent);
    MOAT_ASSIGN_OR_RETURN(auto wrapped_seed, crypto::RsaOaepSha256Encrypt(
                                                 {.modulus = ek.rsa_modulus, .exponent = exponent},
                                                 kIdentity, random));
    seed.assign(random.begin(), random.end());
    PutU16(out.encrypted_secret, static_cast<uint16_t>(wrapped_seed.size()));
    out.encrypted_secret.insert(out.encrypted_secret.end(), wrapped_seed.begin(),
                                wrapped_seed.end());
  } else {
    // The seed, shared with the EK only: ECDH between an ephemeral key and the EK, then
    // KDFe(Z, "IDENTITY", ephemeral x, EK x) (Part 1 §C.6.4); the ephemeral point, a
    // TPMS_ECC_POINT, is the encrypted secret.
    MOAT_ASSIGN_OR_RETURN(crypto::EcdhP256Shared shared,
                          crypto::EcdhP256(random, ek.ecc_x, ek.ecc_y));
    seed = KdfeSha256(shared.z, "IDENTITY", shared.ephemeral_x, ek.ecc_x, 256);
    std::vector<uint8_t> point;
    PutU16(point, 32);
    point.insert(point.end(), shared.ephemeral_x.begin(), shared.ephemeral_x.end());
    PutU16(point, 32);
    point.insert(point.end(), shared.ephemeral_y.begin(), shared.ephemeral_y.end());
    PutU16(out.encrypted_secret, static_cast<uint16_t>(point.size()));
    out.encrypted_secret.insert(out.encrypted_secret.end(), point.begin(), point.end());
  }

  // encIdentity = AES-128-CFB(KDFa(seed, "STORAGE", name, 128), IV 0, TPM2B_DIGEST(secret)).
  MOAT_ASSIGN_OR_RETURN(auto sym_key, KdfaSha256(seed, "STORAGE", ak_name, {}, 128));
  std::vector<uint8_t> plain;
  PutU16(plain, static_cast<uint16_t>(secret.size()));
  plain.insert(plain.end(), secret.begin(), secret.end());
  const std::vector<uint8_t> iv(16, 0);
  MOAT_ASSIGN_OR_RETURN(auto enc_identity, crypto::Aes128CfbEncrypt(sym_key, iv, plain));
  // outerHMAC = HMAC(KDFa(seed, "INTEGRITY", 256), encIdentity || name).
  MOAT_ASSIGN_OR_RETURN(auto hmac_key, KdfaSha256(seed, "INTEGRITY", {}, {}, 256));
  std::vector<uint8_t> mac_input = enc_identity;
  mac_input.insert(mac_input.end(), ak_name.begin(), ak_name.end());
  MOAT_ASSIGN_OR_RETURN(auto mac, crypto::HmacSha256(hmac_key, mac_input));
  std::vector<uint8_t> id_object;
  PutU16(id_object, static_cast<uint16_t>(mac.size()));
  id_object.insert(id_object.end(), mac.begin(), mac.end());
  id_object.insert(id_object.end(), enc_identity.begin(), enc_identity.end());
  PutU16(out.credential_blob, static_cast<uint16_t>(id_object.size()));
  out.credential_blob.insert(out.credential_blob.end(), id_object.begin(), id_object.end());
  return out;
}

}  // namespace moat::formats
