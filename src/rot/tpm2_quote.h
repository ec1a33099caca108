// Moved: the verification of a Tpm2Quote is pure TPM structure work that the service needs
// without tpm2-tss, so it lives in formats/tpm2.h. This header keeps rot's callers compiling.
#pragma once

#include "formats/tpm2.h"

namespace moat::rot {
using formats::VerifyTpm2Quote;
}  // namespace moat::rot
