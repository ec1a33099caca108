// Opens the key store a device's configuration names. moatd's config (docs/moatd.md) maps
//   "key_store": {"backend": "software" | "tpm2" | "pkcs11", ...}
// onto KeyStoreConfig; docs/rot.md lists every key.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "rot/key_store.h"
#include "rot/pkcs11_key_store.h"
#include "rot/software_key_store.h"
#include "rot/tpm2_key_store.h"

namespace moat::rot {

struct KeyStoreConfig {
  std::string backend = "software";
  // software: the key directory; tpm2: the directory of wrapped key blobs. Unused by pkcs11.
  std::filesystem::path path;
  Tpm2Options tpm2;      // `dir` is ignored: `path` is used
  Pkcs11Options pkcs11;  // module, token_label, pin_file | pin_env, label_prefix
};

// kInvalidArgument for an unknown backend or a missing path; otherwise what the backend's Open
// returns. `warning` is the software store's development warning (kSilent in tests only).
Result<std::unique_ptr<KeyStore>> OpenKeyStore(const KeyStoreConfig& config,
                                               WarningOutput warning = WarningOutput::kStderr);

}  // namespace moat::rot
