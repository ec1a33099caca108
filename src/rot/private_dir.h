// Helpers shared by the key stores: their directories and key files must be private.
#pragma once

#include <filesystem>

#include "core/error.h"

namespace moat::rot::internal {

// SECURITY: the directory and every key file must be private to the owner, and the owner
// must be us; otherwise another user could read or plant the device identity.
// kPermissionDenied naming the path, its mode and the fix.
Result<void> CheckPrivate(const std::filesystem::path& path, bool is_dir);

// Creates `dir` with mode 0700 if missing, then CheckPrivate on it and on every file in it
// whose name ends in one of `extensions` (".key", ".priv", ...).
Result<void> OpenPrivateDir(const std::filesystem::path& dir,
                            std::initializer_list<std::string_view> extensions);

}  // namespace moat::rot::internal
