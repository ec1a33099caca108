#include "service/tpm_devices.h"

#include "core/encoding.h"
#include "crypto/tpm_primitives.h"

namespace moat::service {

Result<std::vector<std::vector<uint8_t>>> ManufacturerCas(store::Database& db) {
  MOAT_ASSIGN_OR_RETURN(auto rows, db.Query("SELECT certificate FROM manufacturer_cas"));
  std::vector<std::vector<uint8_t>> out;
  for (const auto& r : rows) {
    MOAT_ASSIGN_OR_RETURN(auto der, r.Blob(0));
    out.push_back(std::move(der));
  }
  return out;
}

Result<TpmDeviceIdentity> TpmDeviceFromEkCertificateDer(store::Database& db,
                                                        std::span<const uint8_t> der,
                                                        SystemTime now) {
  MOAT_ASSIGN_OR_RETURN(auto cas, ManufacturerCas(db));
  MOAT_TRY(crypto::VerifyEkCertificateDer(der, cas, now));
  TpmDeviceIdentity out;
  if (auto rsa = crypto::RsaPublicKeyOfCertificateDer(der)) {
    if (rsa->modulus.size() != 256) {
      return Fail(ErrorCode::kInvalidArgument,
                  "not an RSA 2048 or ECC P-256 endorsement key certificate (RSA {} bits)",
                  rsa->modulus.size() * 8);
    }
    out.ek_tpm_public = formats::DefaultRsaEkTpm2bPublic(rsa->modulus);
  } else if (auto point = crypto::EcP256PointOfCertificateDer(der)) {
    out.ek_tpm_public = formats::DefaultEccEkTpm2bPublic(std::span(*point).subspan(1, 32),
                                                         std::span(*point).subspan(33, 32));
  } else {
    return Fail(ErrorCode::kInvalidArgument,
                "not an RSA 2048 or ECC P-256 endorsement key certificate");
  }
  MOAT_ASSIGN_OR_RETURN(out.ek, formats::ParseTpm2bPublic(out.ek_tpm_public));
  out.device_id = formats::EkDeviceId(out.ek);
  out.certificate.assign(der.begin(), der.end());
  return out;
}

Result<TpmDeviceIdentity> TpmDeviceFromEkCertificate(store::Database& db, std::string_view pem,
                                                     SystemTime now) {
  MOAT_ASSIGN_OR_RETURN(auto ders, crypto::CertificatesDerFromPem(pem));
  if (ders.size() != 1) {
    return Fail(ErrorCode::kInvalidArgument, "expected one certificate, found {}", ders.size());
  }
  return TpmDeviceFromEkCertificateDer(db, ders.front(), now);
}

Result<void> CheckLogAgainstQuote(const formats::MeasurementLog& log,
                                  const formats::Tpm2Quote& quote) {
  std::optional<uint32_t> moat_pcr;
  for (uint32_t pcr : quote.pcrs) {
    if (pcr < 8) continue;
    if (moat_pcr) {
      return Fail(ErrorCode::kVerificationFailed,
                  "quote: more than one PCR above 7 (which is the Moat PCR?)");
    }
    moat_pcr = pcr;
  }
  if (!moat_pcr) return Fail(ErrorCode::kVerificationFailed, "quote: the Moat PCR is not quoted");
  const auto replayed = formats::ReplayMeasurementLog(log);
  if (!replayed.contains(formats::kMoatPcr)) {
    return Fail(ErrorCode::kVerificationFailed, "the log measures nothing into the Moat PCR");
  }
  for (const auto& [reg, value] : replayed) {
    const uint32_t pcr = reg == formats::kMoatPcr ? *moat_pcr : reg;
    if (reg != formats::kMoatPcr && reg == *moat_pcr) {
      return Fail(ErrorCode::kVerificationFailed,
                  "the log extends register {}, which is the device's Moat PCR", reg);
    }
    auto it = quote.pcr_values.find(pcr);
    if (it == quote.pcr_values.end()) {
      return Fail(ErrorCode::kVerificationFailed, "the log extends PCR {}, which is not quoted",
                  pcr);
    }
    if (it->second != value) {
      return Fail(ErrorCode::kVerificationFailed,
                  "the log does not replay to quoted PCR {} (log {}, TPM {})", pcr,
                  HexEncode(value).substr(0, 16), HexEncode(it->second).substr(0, 16));
    }
  }
  return Ok();
}

}  // namespace moat::service
