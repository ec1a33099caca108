// Verification of a Tpm2Quote (key_store.h) against the signing input it was made for: the
// device-independent half of TPM attestation, for the service (issue 8, item 2) and tests.
// Needs only tss2-mu (to parse TPM structures) and crypto, not a TPM.
#pragma once

#include <span>

#include "core/error.h"
#include "rot/key_store.h"

namespace moat::rot {

// Checks that the AK signed `quote.attest`; that `ak_public` and `ak_tpm_public` are the same
// key and the latter is a restricted, fixedTPM signing key; that the attest structure is a
// TPM-generated quote whose qualifying data is SHA-256(signing_input), whose PCR selection is
// exactly `quote.pcrs` (SHA-256 bank) and whose PCR digest matches `quote.pcr_values`.
// kVerificationFailed naming the first check that fails; kInvalidArgument for malformed input.
// Not checked here: that the AK belongs to a genuine TPM (credential activation against the
// EK certificate) and that the PCR values are the expected ones (the log and the policy).
Result<void> VerifyTpm2Quote(const Tpm2Quote& quote, std::span<const uint8_t> signing_input);

}  // namespace moat::rot
