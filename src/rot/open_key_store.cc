#include "rot/open_key_store.h"

namespace moat::rot {

Result<std::unique_ptr<KeyStore>> OpenKeyStore(const KeyStoreConfig& config,
                                               WarningOutput warning) {
  if (config.backend == "pkcs11") {
    MOAT_ASSIGN_OR_RETURN(auto store, Pkcs11KeyStore::Open(config.pkcs11));
    return std::unique_ptr<KeyStore>(std::move(store));
  }
  if (config.backend != "software" && config.backend != "tpm2") {
    return Fail(ErrorCode::kInvalidArgument,
                "key_store.backend '{}' is not one of software, tpm2, pkcs11",
                config.backend.substr(0, 32));
  }
  if (config.path.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "key_store.path is required for the {} backend",
                config.backend);
  }
  if (config.backend == "software") {
    MOAT_ASSIGN_OR_RETURN(auto store, SoftwareKeyStore::Open(config.path, warning));
    return std::unique_ptr<KeyStore>(std::move(store));
  }
  Tpm2Options options = config.tpm2;
  options.dir = config.path;
  MOAT_ASSIGN_OR_RETURN(auto store, Tpm2KeyStore::Open(options));
  return std::unique_ptr<KeyStore>(std::move(store));
}

}  // namespace moat::rot
