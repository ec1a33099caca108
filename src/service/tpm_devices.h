// TPM 2.0 devices on the service side (docs/service-api.md, "TPM devices"): the EK certificate
// checked against the registered manufacturer CAs, the EK-derived device ID, and the checks of
// a quote against the measurement log. Pure TPM structure work is formats/tpm2.h; no tpm2-tss.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "formats/attestation.h"
#include "formats/tpm2.h"
#include "store/database.h"

namespace moat::service {

struct TpmDeviceIdentity {
  std::string device_id;               // formats::EkDeviceId of the EK
  // TPM2B_PUBLIC: the TCG default RSA 2048 EK (template L-1) or ECC P-256 EK (L-2)
  std::vector<uint8_t> ek_tpm_public;
  formats::TpmPublic ek;
  std::vector<uint8_t> certificate;  // DER
};

// The DER certificates of every registered manufacturer CA.
Result<std::vector<std::vector<uint8_t>>> ManufacturerCas(store::Database& db);

// Verifies an EK certificate (PEM or DER) against the manufacturer CAs as of `now` and derives
// the device: kVerificationFailed if it does not chain, kInvalidArgument if it is neither an
// RSA 2048 nor an ECC P-256 EK certificate.
Result<TpmDeviceIdentity> TpmDeviceFromEkCertificate(store::Database& db, std::string_view pem,
                                                     SystemTime now);
Result<TpmDeviceIdentity> TpmDeviceFromEkCertificateDer(store::Database& db,
                                                        std::span<const uint8_t> der,
                                                        SystemTime now);

// The log, replayed, gives the quoted PCRs: every register the log extends must equal its
// quoted PCR (register formats::kMoatPcr is the quoted PCR above 7 — the device's `moat_pcr`),
// and the Moat PCR must be quoted. kVerificationFailed naming the first mismatch.
Result<void> CheckLogAgainstQuote(const formats::MeasurementLog& log,
                                  const formats::Tpm2Quote& quote);

}  // namespace moat::service
