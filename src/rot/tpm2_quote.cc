#include "rot/tpm2_quote.h"

#include <tss2/tss2_mu.h>

#include <cstring>

namespace moat::rot {

Result<void> VerifyTpm2Quote(const Tpm2Quote& q, std::span<const uint8_t> signing_input) {
  MOAT_ASSIGN_OR_RETURN(crypto::PublicKey ak, crypto::PublicKey::FromDer(q.ak_public));
  if (ak.type() != crypto::KeyType::kEcdsaP256) {
    return Fail(ErrorCode::kInvalidArgument, "quote: the AK is not a P-256 key");
  }
  // The TPM form of the AK: what credential activation names. It must be the same key.
  TPM2B_PUBLIC pub{};
  size_t offset = 0;
  if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(q.ak_tpm_public.data(), q.ak_tpm_public.size(), &offset,
                                     &pub) != TSS2_RC_SUCCESS ||
      offset != q.ak_tpm_public.size() || pub.publicArea.type != TPM2_ALG_ECC) {
    return Fail(ErrorCode::kInvalidArgument, "quote: ak_tpm_public is not an ECC TPM2B_PUBLIC");
  }
  TPMA_OBJECT want = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_FIXEDTPM |
                     TPMA_OBJECT_SENSITIVEDATAORIGIN;
  if ((pub.publicArea.objectAttributes & want) != want) {
    return Fail(ErrorCode::kVerificationFailed,
                "quote: the AK is not a restricted, fixedTPM, TPM-generated signing key");
  }
  std::vector<uint8_t> point(65, 0);
  point[0] = 0x04;
  const auto& x = pub.publicArea.unique.ecc.x;
  const auto& y = pub.publicArea.unique.ecc.y;
  if (x.size > 32 || y.size > 32) {
    return Fail(ErrorCode::kInvalidArgument, "quote: AK coordinate longer than 32 bytes");
  }
  std::memcpy(point.data() + 1 + (32 - x.size), x.buffer, x.size);
  std::memcpy(point.data() + 33 + (32 - y.size), y.buffer, y.size);
  MOAT_ASSIGN_OR_RETURN(crypto::PublicKey tpm_ak,
                        crypto::PublicKey::FromRaw(crypto::KeyType::kEcdsaP256, point));
  if (!(tpm_ak == ak)) {
    return Fail(ErrorCode::kVerificationFailed, "quote: ak_public and ak_tpm_public differ");
  }

  if (auto v = ak.Verify(q.attest, q.signature); !v) {
    return Fail(ErrorCode::kVerificationFailed, "quote: the AK signature does not match");
  }

  TPMS_ATTEST attest{};
  offset = 0;
  if (Tss2_MU_TPMS_ATTEST_Unmarshal(q.attest.data(), q.attest.size(), &offset, &attest) !=
          TSS2_RC_SUCCESS ||
      offset != q.attest.size()) {
    return Fail(ErrorCode::kInvalidArgument, "quote: attest is not a TPMS_ATTEST");
  }
  if (attest.magic != TPM2_GENERATED_VALUE || attest.type != TPM2_ST_ATTEST_QUOTE) {
    return Fail(ErrorCode::kVerificationFailed, "quote: not a TPM-generated quote");
  }
  crypto::Sha256Digest expected = crypto::Sha256(signing_input);
  if (attest.extraData.size != expected.size() ||
      std::memcmp(attest.extraData.buffer, expected.data(), expected.size()) != 0) {
    return Fail(ErrorCode::kVerificationFailed,
                "quote: qualifying data is not SHA-256 of this signing input (old nonce?)");
  }
  const TPML_PCR_SELECTION& sel = attest.attested.quote.pcrSelect;
  if (sel.count != 1 || sel.pcrSelections[0].hash != TPM2_ALG_SHA256) {
    return Fail(ErrorCode::kVerificationFailed, "quote: PCR selection is not one SHA-256 bank");
  }
  std::vector<uint32_t> selected;
  for (uint32_t pcr = 0; pcr < 8u * sel.pcrSelections[0].sizeofSelect; ++pcr) {
    if (sel.pcrSelections[0].pcrSelect[pcr / 8] & (1u << (pcr % 8))) selected.push_back(pcr);
  }
  if (selected != q.pcrs) {
    return Fail(ErrorCode::kVerificationFailed, "quote: quoted PCRs differ from 'pcrs'");
  }
  std::vector<uint8_t> concat;
  for (uint32_t pcr : q.pcrs) {
    auto it = q.pcr_values.find(pcr);
    if (it == q.pcr_values.end()) {
      return Fail(ErrorCode::kInvalidArgument, "quote: no value for quoted PCR {}", pcr);
    }
    concat.insert(concat.end(), it->second.begin(), it->second.end());
  }
  if (q.pcr_values.size() != q.pcrs.size()) {
    return Fail(ErrorCode::kInvalidArgument, "quote: pcr_values lists PCRs not quoted");
  }
  crypto::Sha256Digest digest = crypto::Sha256(concat);
  const TPM2B_DIGEST& quoted = attest.attested.quote.pcrDigest;
  if (quoted.size != digest.size() ||
      std::memcmp(quoted.buffer, digest.data(), digest.size()) != 0) {
    return Fail(ErrorCode::kVerificationFailed,
                "quote: PCR digest does not match pcr_values (changed since the quote?)");
  }
  return Ok();
}

}  // namespace moat::rot
