#include "device/update/tuf_client.h"

#include <fmt/format.h>

#include <set>
#include <utility>

#include "crypto/digest.h"
#include "crypto/random.h"

namespace moat::device::update {

namespace tuf = formats::tuf;
using tuf::Role;

namespace {

bool Expired(SystemTime expires, SystemTime now) { return expires <= now; }

Result<void> CheckFresh(SystemTime expires, SystemTime now, std::string_view what,
                        int64_t version) {
  // SECURITY: the freeze check uses the time Refresh() started, so a slow or stalled download
  // cannot stretch a file's validity.
  if (Expired(expires, now)) {
    return Fail(ErrorCode::kVerificationFailed,
                "{}: version {} expired at {} (freeze attack, or the device clock is wrong)", what,
                version, FormatRfc3339(expires));
  }
  return Ok();
}

// Fetches and bounds a file; the Fetcher is asked to stop at `max_bytes`, and we check again.
Result<std::string> FetchBounded(const Fetcher& fetcher, std::string_view path, size_t max_bytes) {
  auto bytes = fetcher(path, max_bytes);
  if (!bytes) return Fail(bytes.error().WithContext(fmt::format("fetching {}", path)));
  if (bytes->size() > max_bytes) {
    return Fail(ErrorCode::kLimitExceeded,
                "{}: more than {} bytes (endless data attack, or the file is too large)", path,
                max_bytes);
  }
  return std::move(*bytes);
}

std::set<std::string> KeyIdSet(const tuf::RoleKeys& role) {
  return {role.keyids.begin(), role.keyids.end()};
}

bool MatchesMeta(std::string_view bytes, int64_t version, const tuf::MetaFile& meta) {
  if (version != meta.version) return false;
  if (meta.length && static_cast<int64_t>(bytes.size()) != *meta.length) return false;
  if (meta.sha256 && crypto::Sha256(bytes) != *meta.sha256) return false;
  return true;
}

template <typename T>
Result<T> WithFileContext(Result<T> r, std::string_view path) {
  if (!r) return Fail(r.error().WithContext(path));
  return r;
}

}  // namespace

Result<TufClient> TufClient::Create(Fetcher fetcher, TrustedStore& store, const Clock& clock,
                                    TufClientOptions options) {
  MOAT_ASSIGN_OR_RETURN(auto bytes, store.Load(Role::kRoot));
  if (!bytes) {
    return Fail(ErrorCode::kFailedPrecondition,
                "no trusted root.json: the device must be provisioned with one");
  }
  MOAT_ASSIGN_OR_RETURN(auto root, WithFileContext(tuf::ParseRoot(*bytes), "trusted root.json"));
  MOAT_TRY(tuf::VerifyRole(root.envelope, root.signed_, Role::kRoot, "trusted root.json"));
  return TufClient(std::move(fetcher), store, clock, options, std::move(root.signed_));
}

Result<void> TufClient::Refresh() {
  refreshed_ = false;
  // 5.1: one fixed time for every expiry check of this cycle.
  const SystemTime now = clock_->Now();
  MOAT_TRY(UpdateRoot(now));
  MOAT_TRY(LoadTrustedMetadata());
  MOAT_TRY(UpdateTimestamp(now));
  MOAT_TRY(UpdateSnapshot(now));
  MOAT_TRY(UpdateTargets(now));
  refreshed_ = true;
  return Ok();
}

// 5.3: walk root versions N+1, N+2, ... until one is absent.
Result<void> TufClient::UpdateRoot(SystemTime now) {
  for (int i = 0; i < options_.max_root_rotations; ++i) {
    const int64_t next = root_.version + 1;
    const std::string path = tuf::RootPath(next);
    auto bytes = fetcher_(path, options_.max_root_bytes);
    if (!bytes) {
      if (bytes.error().code() == ErrorCode::kNotFound) break;  // no newer root: done
      return Fail(bytes.error().WithContext(fmt::format("fetching {}", path)));
    }
    if (bytes->size() > options_.max_root_bytes) {
      return Fail(ErrorCode::kLimitExceeded, "{}: more than {} bytes", path,
                  options_.max_root_bytes);
    }
    MOAT_ASSIGN_OR_RETURN(auto parsed, WithFileContext(tuf::ParseRoot(*bytes), path));
    // SECURITY: a new root needs a threshold of the keys the trusted root authorises for
    // "root" AND a threshold of its own root keys (5.3.4, 5.3.5), so a rotation can neither be
    // forged by new keys alone nor leave the new keys unable to sign.
    MOAT_TRY(tuf::VerifyRole(parsed.envelope, root_, Role::kRoot,
                             fmt::format("{} (signatures by the trusted root's keys)", path)));
    MOAT_TRY(tuf::VerifyRole(parsed.envelope, parsed.signed_, Role::kRoot,
                             fmt::format("{} (signatures by its own root keys)", path)));
    if (parsed.signed_.version != next) {
      return Fail(ErrorCode::kVerificationFailed,
                  "{}: holds version {}, expected {} (rollback attack or a misnamed file)", path,
                  parsed.signed_.version, next);
    }
    // 5.3.11, fast-forward recovery: a rotation of the timestamp or snapshot keys invalidates
    // the versions an attacker holding the old keys may have pushed us to. Deleted before the
    // new root is saved, so a power cut in between cannot keep them.
    if (KeyIdSet(root_.timestamp) != KeyIdSet(parsed.signed_.timestamp) ||
        KeyIdSet(root_.snapshot) != KeyIdSet(parsed.signed_.snapshot)) {
      MOAT_TRY(store_->Remove(Role::kTimestamp));
      MOAT_TRY(store_->Remove(Role::kSnapshot));
      timestamp_.reset();
      snapshot_.reset();
    }
    MOAT_TRY(store_->Save(Role::kRoot, *bytes));
    root_ = std::move(parsed.signed_);
  }
  // 5.3.10: only the final root must be unexpired (an old one on the way may have expired).
  return CheckFresh(root_.expires, now, "root.json", root_.version);
}

// Stored metadata is re-verified under the current root. A file that fails (corrupted, or
// signed by keys the root no longer trusts) is ignored as if absent: that only drops rollback
// protection an attacker who can write the store could drop anyway by deleting the file.
Result<void> TufClient::LoadTrustedMetadata() {
  timestamp_.reset();
  snapshot_.reset();
  targets_.reset();
  MOAT_ASSIGN_OR_RETURN(auto ts_bytes, store_->Load(Role::kTimestamp));
  if (ts_bytes) {
    auto m = tuf::ParseTimestamp(*ts_bytes);
    if (m && tuf::VerifyRole(m->envelope, root_, Role::kTimestamp, "trusted timestamp.json")) {
      timestamp_ = Trusted<tuf::Timestamp>{std::move(m->signed_), std::move(*ts_bytes)};
    }
  }
  MOAT_ASSIGN_OR_RETURN(auto snap_bytes, store_->Load(Role::kSnapshot));
  if (snap_bytes) {
    auto m = tuf::ParseSnapshot(*snap_bytes);
    if (m && tuf::VerifyRole(m->envelope, root_, Role::kSnapshot, "trusted snapshot.json")) {
      snapshot_ = Trusted<tuf::Snapshot>{std::move(m->signed_), std::move(*snap_bytes)};
    }
  }
  MOAT_ASSIGN_OR_RETURN(auto targets_bytes, store_->Load(Role::kTargets));
  if (targets_bytes) {
    auto m = tuf::ParseTargets(*targets_bytes);
    if (m && tuf::VerifyRole(m->envelope, root_, Role::kTargets, "trusted targets.json")) {
      targets_ = Trusted<tuf::Targets>{std::move(m->signed_), std::move(*targets_bytes)};
    }
  }
  return Ok();
}

// 5.4
Result<void> TufClient::UpdateTimestamp(SystemTime now) {
  const std::string path = "timestamp.json";
  MOAT_ASSIGN_OR_RETURN(std::string bytes,
                        FetchBounded(fetcher_, path, options_.max_timestamp_bytes));
  MOAT_ASSIGN_OR_RETURN(auto parsed, WithFileContext(tuf::ParseTimestamp(bytes), path));
  MOAT_TRY(tuf::VerifyRole(parsed.envelope, root_, Role::kTimestamp, path));
  const tuf::Timestamp& fresh = parsed.signed_;
  if (timestamp_) {
    const tuf::Timestamp& old = timestamp_->signed_;
    if (fresh.version < old.version) {
      return Fail(ErrorCode::kVerificationFailed,
                  "{}: version {} is older than the trusted version {} (rollback attack)", path,
                  fresh.version, old.version);
    }
    if (fresh.version == old.version) {
      // The same version again: nothing new. Keep what we trust (the spec's "no update").
      return CheckFresh(old.expires, now, path, old.version);
    }
    if (fresh.snapshot.version < old.snapshot.version) {
      return Fail(ErrorCode::kVerificationFailed,
                  "{}: lists snapshot version {}, older than the trusted {} (rollback attack)",
                  path, fresh.snapshot.version, old.snapshot.version);
    }
  }
  MOAT_TRY(CheckFresh(fresh.expires, now, path, fresh.version));
  MOAT_TRY(store_->Save(Role::kTimestamp, bytes));
  timestamp_ = Trusted<tuf::Timestamp>{std::move(parsed.signed_), std::move(bytes)};
  return Ok();
}

Result<std::string> TufClient::FetchMetaFile(std::string_view path, const tuf::MetaFile& meta,
                                             size_t limit) {
  size_t max_bytes = limit;
  if (meta.length) {
    if (static_cast<uint64_t>(*meta.length) > limit) {
      return Fail(ErrorCode::kLimitExceeded, "{}: listed length {} exceeds the limit of {}", path,
                  *meta.length, limit);
    }
    max_bytes = static_cast<size_t>(*meta.length);
  }
  MOAT_ASSIGN_OR_RETURN(std::string bytes, FetchBounded(fetcher_, path, max_bytes));
  if (meta.length && static_cast<int64_t>(bytes.size()) != *meta.length) {
    return Fail(ErrorCode::kVerificationFailed,
                "{}: {} bytes, but its parent metadata lists {} (mix-and-match attack?)", path,
                bytes.size(), *meta.length);
  }
  if (meta.sha256) {
    auto digest = crypto::Sha256(bytes);
    if (!crypto::ConstantTimeEquals(digest, *meta.sha256)) {
      return Fail(ErrorCode::kVerificationFailed,
                  "{}: sha256 does not match its parent metadata (mix-and-match attack)", path);
    }
  }
  return bytes;
}

// 5.5
Result<void> TufClient::UpdateSnapshot(SystemTime now) {
  const tuf::MetaFile& meta = timestamp_->signed_.snapshot;
  const std::string path =
      tuf::MetadataPath(Role::kSnapshot, meta.version, root_.consistent_snapshot);
  // The snapshot we already trust is the one the timestamp names: nothing to download.
  if (snapshot_ && MatchesMeta(snapshot_->bytes, snapshot_->signed_.version, meta)) {
    return CheckFresh(snapshot_->signed_.expires, now, path, snapshot_->signed_.version);
  }
  MOAT_ASSIGN_OR_RETURN(std::string bytes, FetchMetaFile(path, meta, options_.max_snapshot_bytes));
  MOAT_ASSIGN_OR_RETURN(auto parsed, WithFileContext(tuf::ParseSnapshot(bytes), path));
  MOAT_TRY(tuf::VerifyRole(parsed.envelope, root_, Role::kSnapshot, path));
  const tuf::Snapshot& fresh = parsed.signed_;
  if (fresh.version != meta.version) {
    return Fail(ErrorCode::kVerificationFailed,
                "{}: holds version {}, but timestamp.json lists {} (mix-and-match attack)", path,
                fresh.version, meta.version);
  }
  if (snapshot_) {
    const tuf::Snapshot& old = snapshot_->signed_;
    if (fresh.version < old.version) {
      return Fail(ErrorCode::kVerificationFailed,
                  "{}: version {} is older than the trusted version {} (rollback attack)", path,
                  fresh.version, old.version);
    }
    // 5.5.5: every file the trusted snapshot listed must still be listed, at no lower
    // version. Moat's snapshot lists exactly targets.json (the parser enforces it).
    if (fresh.targets.version < old.targets.version) {
      return Fail(ErrorCode::kVerificationFailed,
                  "{}: lists targets.json version {}, older than the trusted {} (rollback attack)",
                  path, fresh.targets.version, old.targets.version);
    }
  }
  MOAT_TRY(CheckFresh(fresh.expires, now, path, fresh.version));
  MOAT_TRY(store_->Save(Role::kSnapshot, bytes));
  snapshot_ = Trusted<tuf::Snapshot>{std::move(parsed.signed_), std::move(bytes)};
  return Ok();
}

// 5.6
Result<void> TufClient::UpdateTargets(SystemTime now) {
  const tuf::MetaFile& meta = snapshot_->signed_.targets;
  const std::string path =
      tuf::MetadataPath(Role::kTargets, meta.version, root_.consistent_snapshot);
  if (targets_ && MatchesMeta(targets_->bytes, targets_->signed_.version, meta)) {
    return CheckFresh(targets_->signed_.expires, now, path, targets_->signed_.version);
  }
  MOAT_ASSIGN_OR_RETURN(std::string bytes, FetchMetaFile(path, meta, options_.max_targets_bytes));
  MOAT_ASSIGN_OR_RETURN(auto parsed, WithFileContext(tuf::ParseTargets(bytes), path));
  MOAT_TRY(tuf::VerifyRole(parsed.envelope, root_, Role::kTargets, path));
  const tuf::Targets& fresh = parsed.signed_;
  if (fresh.version != meta.version) {
    return Fail(ErrorCode::kVerificationFailed,
                "{}: holds version {}, but snapshot.json lists {} (mix-and-match attack)", path,
                fresh.version, meta.version);
  }
  if (targets_ && fresh.version < targets_->signed_.version) {
    return Fail(ErrorCode::kVerificationFailed,
                "{}: version {} is older than the trusted version {} (rollback attack)", path,
                fresh.version, targets_->signed_.version);
  }
  MOAT_TRY(CheckFresh(fresh.expires, now, path, fresh.version));
  MOAT_TRY(store_->Save(Role::kTargets, bytes));
  targets_ = Trusted<tuf::Targets>{std::move(parsed.signed_), std::move(bytes)};
  return Ok();
}

Result<tuf::TargetFile> TufClient::GetTargetInfo(std::string_view name) const {
  if (!refreshed_ || !targets_) {
    return Fail(ErrorCode::kFailedPrecondition,
                "no verified targets metadata: Refresh() must succeed first");
  }
  MOAT_TRY(tuf::ValidateTargetName(name));
  auto it = targets_->signed_.targets.find(std::string(name));
  if (it == targets_->signed_.targets.end()) {
    return Fail(ErrorCode::kNotFound, "targets.json version {} lists no target '{}'",
                targets_->signed_.version, name);
  }
  return it->second;
}

Result<std::string> TufClient::FetchTarget(std::string_view name) {
  MOAT_ASSIGN_OR_RETURN(tuf::TargetFile info, GetTargetInfo(name));
  const std::string path = tuf::TargetPath(name, info.sha256, root_.consistent_snapshot);
  if (info.length > options_.max_target_bytes) {
    return Fail(ErrorCode::kLimitExceeded, "{}: {} bytes exceed the limit of {}", path, info.length,
                options_.max_target_bytes);
  }
  // SECURITY: bounded by the verified length, so a mirror cannot feed endless data.
  MOAT_ASSIGN_OR_RETURN(std::string bytes,
                        FetchBounded(fetcher_, path, static_cast<size_t>(info.length)));
  if (static_cast<int64_t>(bytes.size()) != info.length) {
    return Fail(ErrorCode::kVerificationFailed,
                "{}: {} bytes, but targets metadata lists {} (truncated or replaced)", path,
                bytes.size(), info.length);
  }
  if (!crypto::ConstantTimeEquals(crypto::Sha256(bytes), info.sha256)) {
    return Fail(ErrorCode::kVerificationFailed,
                "{}: sha256 does not match the targets metadata (the file was replaced)", path);
  }
  return bytes;
}

}  // namespace moat::device::update
