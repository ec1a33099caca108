// The TUF 1.0 client workflow (specification section 5, "Detailed client workflow") for the
// update agent: root rotation, timestamp, snapshot and targets, then verified target downloads.
// Pure logic: the network comes in as a Fetcher, persistence as a TrustedStore, time as a
// Clock, so every attack in the threat model can be staged in a unit test.
//
// What it guarantees (docs/formats/tuf.md has the profile):
// - Arbitrary installation: every file is checked against a threshold of the keys the trusted
//   root authorises for its role; a target's bytes must match the length and SHA-256 that
//   verified targets metadata lists.
// - Rollback: root versions go up one at a time; timestamp, snapshot and targets versions never
//   decrease against what was trusted before, across restarts (the TrustedStore).
// - Indefinite freeze: metadata expired at the start of Refresh() (a fixed time) is refused.
// - Endless data: every fetch is bounded (metadata by its limit or by the length its parent
//   lists, targets by their length).
// - Mix-and-match: snapshot and targets must match the version/length/hash their parent lists.
// - Fast-forward recovery: when a new root changes the timestamp or snapshot keys, the trusted
//   timestamp and snapshot are deleted before the new root is saved.
//
// Not thread-safe: one TufClient per update agent. The Fetcher, TrustedStore and Clock are
// borrowed and must outlive the client.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "core/error.h"
#include "device/update/trusted_store.h"
#include "formats/tuf.h"

namespace moat::device::update {

// Fetches a repository file by its path relative to the repository base ("3.root.json",
// "timestamp.json", "7.snapshot.json", "targets/<sha256>.<name>"). Must fail with kNotFound
// when the file does not exist and with kLimitExceeded once more than `max_bytes` arrive
// (never buffering more); any other error aborts the refresh.
using Fetcher = std::function<Result<std::string>(std::string_view path, size_t max_bytes)>;

struct TufClientOptions {
  size_t max_root_bytes = 512 << 10;
  size_t max_timestamp_bytes = 16 << 10;
  size_t max_snapshot_bytes = 1 << 20;
  size_t max_targets_bytes = 1 << 20;
  // Root versions accepted in one Refresh(); the rest come at the next one.
  int max_root_rotations = 32;
  // Largest target FetchTarget() holds in memory.
  int64_t max_target_bytes = int64_t{1} << 30;
};

class TufClient {
 public:
  // Loads the trusted root from `store` (kFailedPrecondition if there is none: a device is
  // provisioned with root.json) and checks that it is signed by a threshold of its own root
  // keys. Its expiry is checked by Refresh(), after any rotation.
  static Result<TufClient> Create(Fetcher fetcher, TrustedStore& store, const Clock& clock,
                                  TufClientOptions options = {});

  // Runs the whole workflow once: root (5.3), timestamp (5.4), snapshot (5.5), targets (5.6).
  // Each newly verified file is saved to the store before the next step. Errors:
  // kVerificationFailed for a signature, version, hash or expiry check (the message names the
  // file and the attack it matches), kLimitExceeded for an oversized file, kInvalidArgument for
  // malformed metadata, and the Fetcher's or the store's errors as they are.
  Result<void> Refresh();

  // The targets metadata entry for `name`. kFailedPrecondition before a successful Refresh();
  // kNotFound if the verified targets metadata does not list `name`.
  Result<formats::tuf::TargetFile> GetTargetInfo(std::string_view name) const;

  // Downloads `name` from "targets/<sha256 hex>.<name>" (consistent snapshots) and returns its
  // bytes after checking them against the verified length and SHA-256.
  Result<std::string> FetchTarget(std::string_view name);

  const formats::tuf::Root& trusted_root() const { return root_; }
  // The verified targets metadata of the last successful Refresh(), or nullptr.
  const formats::tuf::Targets* trusted_targets() const {
    return refreshed_ && targets_ ? &targets_->signed_ : nullptr;
  }

 private:
  template <typename T>
  struct Trusted {
    T signed_;
    std::string bytes;
  };

  TufClient(Fetcher fetcher, TrustedStore& store, const Clock& clock, TufClientOptions options,
            formats::tuf::Root root)
      : fetcher_(std::move(fetcher)),
        store_(&store),
        clock_(&clock),
        options_(options),
        root_(std::move(root)) {}

  Result<void> UpdateRoot(SystemTime now);
  Result<void> LoadTrustedMetadata();
  Result<void> UpdateTimestamp(SystemTime now);
  Result<void> UpdateSnapshot(SystemTime now);
  Result<void> UpdateTargets(SystemTime now);
  // Fetches `path` bounded by `meta`'s length (or `limit`) and checks length and hash.
  Result<std::string> FetchMetaFile(std::string_view path, const formats::tuf::MetaFile& meta,
                                    size_t limit);

  Fetcher fetcher_;
  TrustedStore* store_;
  const Clock* clock_;
  TufClientOptions options_;
  formats::tuf::Root root_;
  std::optional<Trusted<formats::tuf::Timestamp>> timestamp_;
  std::optional<Trusted<formats::tuf::Snapshot>> snapshot_;
  std::optional<Trusted<formats::tuf::Targets>> targets_;
  bool refreshed_ = false;
};

}  // namespace moat::device::update
