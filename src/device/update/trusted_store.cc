#include "device/update/trusted_store.h"

#include <fmt/format.h>

#include <cerrno>
#include <system_error>

#include "core/file.h"
#include "device/update/crash_point.h"

namespace moat::device::update {

using formats::tuf::Role;
using formats::tuf::RoleName;

Result<std::unique_ptr<DirectoryTrustedStore>> DirectoryTrustedStore::Create(
    std::filesystem::path dir, size_t max_bytes) {
  MOAT_TRY(MakeDirectories(dir, 0700));
  return std::unique_ptr<DirectoryTrustedStore>(
      new DirectoryTrustedStore(std::move(dir), max_bytes));
}

std::filesystem::path DirectoryTrustedStore::PathOf(Role role) const {
  return dir_ / fmt::format("{}.json", RoleName(role));
}

Result<std::optional<std::string>> DirectoryTrustedStore::Load(Role role) {
  auto bytes = ReadFile(PathOf(role), max_bytes_);
  if (!bytes) {
    if (bytes.error().code() == ErrorCode::kNotFound) return std::optional<std::string>();
    return Fail(bytes.error());
  }
  return std::optional<std::string>(std::move(*bytes));
}

Result<void> DirectoryTrustedStore::Save(Role role, std::string_view bytes) {
  CrashPoint("trusted-save-before");
  MOAT_TRY(AtomicWriteFile(PathOf(role), bytes, {.mode = 0600}));
  CrashPoint("trusted-save-after");
  return Ok();
}

Result<void> DirectoryTrustedStore::Remove(Role role) {
  std::filesystem::path path = PathOf(role);
  std::error_code ec;
  std::filesystem::remove(path, ec);
  if (ec) return Fail(ErrnoError("unlink", path, ec.value()));
  // The removal must be durable before newer metadata is accepted (fast-forward recovery).
  return SyncDirectory(dir_);
}

Result<std::optional<std::string>> MemoryTrustedStore::Load(Role role) {
  auto it = files_.find(role);
  if (it == files_.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

Result<void> MemoryTrustedStore::Save(Role role, std::string_view bytes) {
  files_[role] = std::string(bytes);
  return Ok();
}

Result<void> MemoryTrustedStore::Remove(Role role) {
  files_.erase(role);
  return Ok();
}

}  // namespace moat::device::update
