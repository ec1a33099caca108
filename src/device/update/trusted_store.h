// Where a device keeps the TUF metadata it trusts between update cycles.
//
// The store holds one file per top-level role, exactly as downloaded and verified. It is
// trusted in the sense that only TufClient writes it after verification; TufClient still
// re-verifies what it loads (a corrupted file is treated as absent, never as trusted).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "formats/tuf.h"

namespace moat::device::update {

class TrustedStore {
 public:
  virtual ~TrustedStore() = default;
  // The stored bytes of `role`'s metadata, or nullopt if there are none.
  virtual Result<std::optional<std::string>> Load(formats::tuf::Role role) = 0;
  // Replaces `role`'s metadata. Must be atomic: after a crash the store holds the old bytes or
  // the new ones.
  virtual Result<void> Save(formats::tuf::Role role, std::string_view bytes) = 0;
  // Deletes `role`'s metadata; succeeds if there was none. Must be durable once it returns.
  virtual Result<void> Remove(formats::tuf::Role role) = 0;
};

// Files "root.json", "timestamp.json", "snapshot.json", "targets.json" in one directory,
// written with AtomicWriteFile (temporary file, fsync, rename, fsync of the directory), so a
// power cut leaves each file old or new. Loads are bounded by `max_bytes`. Not thread-safe;
// one process owns the directory.
class DirectoryTrustedStore final : public TrustedStore {
 public:
  // Creates the directory (mode 0700) if needed.
  static Result<std::unique_ptr<DirectoryTrustedStore>> Create(std::filesystem::path dir,
                                                               size_t max_bytes = 1 << 20);

  Result<std::optional<std::string>> Load(formats::tuf::Role role) override;
  Result<void> Save(formats::tuf::Role role, std::string_view bytes) override;
  Result<void> Remove(formats::tuf::Role role) override;

  std::filesystem::path PathOf(formats::tuf::Role role) const;

 private:
  DirectoryTrustedStore(std::filesystem::path dir, size_t max_bytes)
      : dir_(std::move(dir)), max_bytes_(max_bytes) {}
  std::filesystem::path dir_;
  size_t max_bytes_;
};

// In memory, for tests and for tools that verify a repository once.
class MemoryTrustedStore final : public TrustedStore {
 public:
  Result<std::optional<std::string>> Load(formats::tuf::Role role) override;
  Result<void> Save(formats::tuf::Role role, std::string_view bytes) override;
  Result<void> Remove(formats::tuf::Role role) override;

 private:
  std::map<formats::tuf::Role, std::string> files_;
};

}  // namespace moat::device::update
