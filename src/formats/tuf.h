// The Update Framework (TUF 1.0) metadata as Moat uses it: canonical JSON, keys and key IDs,
// the four top-level roles, the signed envelope, threshold verification, and a pure repository
// writer. The profile (what is and is not supported, paths, limits) is docs/formats/tuf.md.
//
// Shared by the service that publishes update repositories and the device that verifies them
// (src/device/update runs the client workflow on top of this file). No I/O here.
//
// Contracts:
// - Parsers take untrusted bytes, enforce MetadataLimits, reject unknown fields, and name the
//   offending field in every error ("targets.signed.targets['app.img'].hashes.sha256: ...").
//   A parsed document is NOT verified: check it with VerifyRole() before trusting anything in
//   it. Signatures cover the canonical JSON of the "signed" object as received
//   (Envelope::canonical_signed), never a re-serialisation of the parsed struct.
// - Threshold verification counts distinct public keys: a signature counts if its keyid is
//   one of the role's keyids and it verifies under that key; repeated keyids and two keyids
//   naming the same public key count once; unknown keyids and bad signatures are ignored.
// - Delegations are not supported: targets metadata with a "delegations" member is refused
//   with "delegations are not supported", and snapshot metadata may list only targets.json.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "core/json.h"
#include "crypto/digest.h"
#include "crypto/key.h"

namespace moat::formats::tuf {

// The spec_version Moat writes. Readers accept any "1.<minor>[.<patch>]".
inline constexpr std::string_view kSpecVersion = "1.0.31";

// ---- Canonical JSON (OLPC / securesystemslib) ----
//
// Keys sorted by their UTF-8 bytes, no whitespace, strings escaped only for '\' and '"' (all
// other bytes, newlines included, are written as they are), integers only. kInvalidArgument
// for a floating-point number or a binary value, naming its path.
Result<std::string> CanonicalJson(const Json& value);

// ---- Keys ----

// A TUF public key. Two key types are supported:
//   {"keytype":"ed25519","scheme":"ed25519","keyval":{"public":"<64 lowercase hex>"}}
//   {"keytype":"ecdsa-sha2-nistp256","scheme":"ecdsa-sha2-nistp256",
//    "keyval":{"public":"<PEM SubjectPublicKeyInfo>"}}
// (keytype "ecdsa", which newer securesystemslib writes, is read as well). An optional
// "keyid_hash_algorithms" array written by older tools is kept, because it is part of the
// key ID. The key ID is the lowercase hex SHA-256 of the canonical JSON of the key object.
class Key {
 public:
  // The TUF form of a Moat public key (the form FromJson reads back).
  static Key FromPublicKey(const crypto::PublicKey& key);
  // Reads a key object; `path` names it in errors.
  static Result<Key> FromJson(const Json& json, std::string_view path);

  const std::string& keyid() const { return keyid_; }
  const crypto::PublicKey& public_key() const { return public_key_; }
  // The key object exactly as read or written.
  const Json& ToJson() const { return json_; }

  bool operator==(const Key& other) const { return json_ == other.json_; }

 private:
  Key(Json json, std::string keyid, crypto::PublicKey public_key)
      : json_(std::move(json)), keyid_(std::move(keyid)), public_key_(std::move(public_key)) {}
  Json json_;
  std::string keyid_;
  crypto::PublicKey public_key_;
};

// The key ID of a key object: hex SHA-256 of its canonical JSON.
Result<std::string> ComputeKeyId(const Json& key_object);

// ---- Metadata ----

enum class Role { kRoot, kTimestamp, kSnapshot, kTargets };
// "root", "timestamp", "snapshot", "targets" (also the "_type" value and the file stem).
std::string_view RoleName(Role role);

struct MetadataLimits {
  size_t max_bytes = 1 << 20;          // one metadata file
  size_t max_depth = 16;               // JSON nesting (custom included)
  size_t max_keys = 64;                // root.keys
  size_t max_role_keys = 16;           // keyids of one role
  size_t max_signatures = 64;          // signatures on one file
  size_t max_targets = 10'000;         // targets.targets
  size_t max_custom_bytes = 16 << 10;  // canonical size of one target's "custom"
};

// A role's authorised keys and how many of them must sign.
struct RoleKeys {
  std::vector<std::string> keyids;  // distinct, each present in Root::keys
  int64_t threshold = 1;            // 1 <= threshold <= keyids.size()

  bool operator==(const RoleKeys&) const = default;
};

// Fields every role has. `version` is 1..kMaxVersion; `expires` has whole seconds.
inline constexpr int64_t kMaxVersion = 2147483647;
struct Common {
  std::string spec_version = std::string(kSpecVersion);
  int64_t version = 1;
  SystemTime expires;

  bool operator==(const Common&) const = default;
};

struct Root : Common {
  bool consistent_snapshot = true;
  std::map<std::string, Key> keys;  // by keyid; every keyid equals its key's computed ID
  RoleKeys root, timestamp, snapshot, targets;

  const RoleKeys& role(Role r) const;
  RoleKeys& role(Role r);
  bool operator==(const Root&) const = default;
};

// Hashes and lengths are limited to what Moat writes: "sha256" is the only hash algorithm.
// Lengths and versions stay below 2^53 so that JavaScript clients read them exactly.
inline constexpr int64_t kMaxLength = (int64_t{1} << 53) - 1;

// A metadata file as described by timestamp ("snapshot.json") and snapshot ("targets.json").
struct MetaFile {
  int64_t version = 1;
  std::optional<int64_t> length;
  std::optional<crypto::Sha256Digest> sha256;

  bool operator==(const MetaFile&) const = default;
};

struct Timestamp : Common {
  MetaFile snapshot;  // meta["snapshot.json"], the only entry
  bool operator==(const Timestamp&) const = default;
};

struct Snapshot : Common {
  MetaFile targets;  // meta["targets.json"], the only entry (no delegated roles)
  bool operator==(const Snapshot&) const = default;
};

// A target file. Names are 1..255 bytes of [A-Za-z0-9._+~-], not starting with '.': a flat
// namespace, so that a name can never climb out of the targets/ directory.
struct TargetFile {
  int64_t length = 0;
  crypto::Sha256Digest sha256{};
  Json custom;  // a JSON object, or null when absent; integers only (canonical JSON)

  bool operator==(const TargetFile&) const = default;
};

struct Targets : Common {
  std::map<std::string, TargetFile> targets;
  bool operator==(const Targets&) const = default;
};

// kInvalidArgument unless `name` is a valid target name (see TargetFile).
Result<void> ValidateTargetName(std::string_view name);

// ---- The signed envelope ----

struct Signature {
  std::string keyid;         // 64 lowercase hex
  std::vector<uint8_t> sig;  // hex in JSON; Ed25519 raw, ECDSA DER

  bool operator==(const Signature&) const = default;
};

struct Envelope {
  std::string canonical_signed;  // what the signatures cover
  std::vector<Signature> signatures;
};

// A parsed, not yet verified, metadata file.
template <typename T>
struct Metadata {
  T signed_;
  Envelope envelope;
};

// Parse one metadata file: {"signatures":[...],"signed":{...}}. `_type` must match the role;
// spec_version must be 1.x; expires "YYYY-MM-DDTHH:MM:SSZ". Errors start with the role name
// ("timestamp.signed.version: ...").
Result<Metadata<Root>> ParseRoot(std::string_view bytes, const MetadataLimits& limits = {});
Result<Metadata<Timestamp>> ParseTimestamp(std::string_view bytes,
                                           const MetadataLimits& limits = {});
Result<Metadata<Snapshot>> ParseSnapshot(std::string_view bytes, const MetadataLimits& limits = {});
Result<Metadata<Targets>> ParseTargets(std::string_view bytes, const MetadataLimits& limits = {});

// Checks that `envelope` carries valid signatures from at least role.threshold distinct keys
// among `authority`'s keys for `role`. kVerificationFailed "<what>: <n> valid signature(s)
// from the <role> role's keys, threshold is <t>" otherwise.
Result<void> VerifyRole(const Envelope& envelope, const Root& authority, Role role,
                        std::string_view what);

// ---- Writing ----

Json ToJson(const Root& root);
Json ToJson(const Timestamp& timestamp);
Json ToJson(const Snapshot& snapshot);
Json ToJson(const Targets& targets);

// Signs canonical JSON of `signed_json` with each key and returns the metadata file bytes
// (compact JSON with sorted keys; not canonical JSON, which would leave control characters
// such as a PEM key's newlines unescaped and so is not always valid JSON). Validates the document
// first by parsing it back (so the writer can never publish what a reader refuses). Keys sign in
// the order given.
Result<std::string> SignRoot(const Root& root, std::span<const crypto::PrivateKey> keys);
Result<std::string> SignTimestamp(const Timestamp& timestamp,
                                  std::span<const crypto::PrivateKey> keys);
Result<std::string> SignSnapshot(const Snapshot& snapshot,
                                 std::span<const crypto::PrivateKey> keys);
Result<std::string> SignTargets(const Targets& targets, std::span<const crypto::PrivateKey> keys);

// Describes bytes as a MetaFile (version given, length and sha256 computed) or a TargetFile.
MetaFile DescribeMetaFile(std::string_view bytes, int64_t version);
TargetFile DescribeTarget(std::string_view bytes, Json custom = nullptr);

// Repository paths, relative to the repository's base URL (docs/formats/tuf.md):
//   "<version>.root.json", "timestamp.json", "<version>.snapshot.json",
//   "<version>.targets.json", and targets at "targets/<sha256 hex>.<name>".
// Without consistent snapshots: "snapshot.json", "targets.json", "targets/<name>".
std::string RootPath(int64_t version);
std::string MetadataPath(Role role, int64_t version, bool consistent_snapshot);
std::string TargetPath(std::string_view name, const crypto::Sha256Digest& sha256,
                       bool consistent_snapshot);

// Lifetimes of the metadata a RepositoryWriter signs.
struct RepositoryExpiry {
  Seconds root{Seconds(365 * 86400)};
  Seconds targets{Seconds(90 * 86400)};
  Seconds snapshot{Seconds(7 * 86400)};
  Seconds timestamp{Seconds(86400)};
};

// The private keys of one role and how many of them must sign.
struct RoleSigners {
  std::vector<crypto::PrivateKey> keys;
  int64_t threshold = 1;
};

// A repository in memory: its private keys and every file a static web server would serve.
// Pure: it never reads the clock or touches a disk; the caller persists files() and the keys.
// Not thread-safe. Holds private keys: meant for the publishing service and for tests.
class RepositoryWriter {
 public:
  using Expiry = RepositoryExpiry;

  // Root version 1 with consistent snapshots, signed by the root keys; empty targets,
  // snapshot and timestamp at version 1. Each role needs 1..16 keys and a threshold it can
  // meet.
  static Result<RepositoryWriter> Create(RoleSigners root, RoleSigners timestamp,
                                         RoleSigners snapshot, RoleSigners targets, SystemTime now,
                                         Expiry expiry = {});

  // A writer for a repository persisted earlier: the role keys it signs with now, and its
  // published files (path -> bytes, as files() gave them). `files` must hold "root.json",
  // "timestamp.json" and the snapshot and targets versions that timestamp names
  // ("<n>.snapshot.json", "<m>.targets.json"); other files may be given and are kept as they
  // are. Everything is checked before it is trusted: the root must verify with its own root
  // role, the other three with their roles in that root, the versions, lengths and hashes must
  // chain (timestamp -> snapshot -> targets), and each role's signers must be exactly the keys
  // (and threshold) the root names for it. kInvalidArgument or kVerificationFailed naming the
  // file otherwise. Restore performs no signing: files() is `files` (plus "<v>.root.json" for
  // the current root when absent) until the next change.
  static Result<RepositoryWriter> Restore(RoleSigners root, RoleSigners timestamp,
                                          RoleSigners snapshot, RoleSigners targets,
                                          std::map<std::string, std::string> files,
                                          Expiry expiry = {});

  // Replaces `role`'s keys and threshold in a new root version N+1. For a root rotation the
  // new root is signed by the old root keys and the new ones (a client needs a threshold of
  // each); otherwise by the current root keys. Then republishes timestamp, snapshot and
  // targets with the new keys (all at new versions).
  Result<void> RotateKeys(Role role, RoleSigners signers, SystemTime now);

  // Publishes a new targets version (the previous targets are replaced), then a new
  // snapshot and timestamp.
  Result<void> SetTargets(std::map<std::string, TargetFile> targets, SystemTime now);

  // A new timestamp (same snapshot), e.g. before the current one expires.
  Result<void> RefreshTimestamp(SystemTime now);

  const Root& root() const { return root_; }
  const Timestamp& timestamp() const { return timestamp_; }
  const Snapshot& snapshot() const { return snapshot_; }
  const Targets& targets() const { return targets_; }
  // Path (see TargetPath/MetadataPath) -> bytes: every root version, every snapshot and
  // targets version published, timestamp.json and root.json (a copy of the newest root for
  // clients that bootstrap from it). Target files themselves are the caller's to store.
  const std::map<std::string, std::string>& files() const { return files_; }

 private:
  RepositoryWriter() = default;
  Result<void> PublishRoot(std::span<const crypto::PrivateKey> signers);
  Result<void> PublishTargetsChain(SystemTime now);
  Result<void> PublishTimestamp(SystemTime now);

  Expiry expiry_;
  std::map<Role, RoleSigners> signers_;
  Root root_;
  Timestamp timestamp_;
  Snapshot snapshot_;
  Targets targets_;
  std::map<std::string, std::string> files_;
};

}  // namespace moat::formats::tuf
