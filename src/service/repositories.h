// Device groups' update repositories: every device group is one TUF 1.0 repository
// (docs/formats/tuf.md, "The service's repositories"), kept in the database so that every replica
// serves the same bytes and a restart loses nothing.
//
// Keys: one key per role, threshold 1. The root key is ECDSA P-256; the timestamp, snapshot and
// targets keys are Ed25519 (the online keys the service signs with unattended). Every private key
// is sealed (AES-256-GCM) under the data directory's master key in tuf_keys, like tenant CA keys,
// bound to "tuf-key:<group id>:<keyid>" so a sealed key cannot be moved to another row. A rotated
// root key keeps its row with retired_at set.
//
// Changes are read, sign, commit: the current state is loaded in one transaction and restored
// into a formats::tuf::RepositoryWriter (which verifies every file and key before trusting it),
// the change is signed outside any transaction, and one transaction stores the new files and keys
// only if the repository's generation is still the one loaded; otherwise the whole change is
// redone (a bounded number of times). So two replicas publishing at once never interleave
// versions, and no transaction waits on signing.
//
// Thread-safety: every method may be called from many threads at once.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "formats/tuf.h"
#include "service/pki.h"
#include "store/database.h"

namespace moat::service {

class Repositories {
 public:
  using Expiry = formats::tuf::RepositoryExpiry;

  Repositories(store::Database& db, const ServicePki& pki, Expiry expiry = {});

  // A new repository (root, targets, snapshot and timestamp version 1, no targets), signed and
  // its keys sealed, not stored yet: Store() it in the transaction that creates the group.
  struct Prepared {
    struct SealedKey {
      std::string keyid;
      std::string role;  // "root", "timestamp", ...
      std::string key_type;
      std::vector<uint8_t> sealed;
    };
    std::string group_id;
    std::vector<SealedKey> keys;
    std::map<std::string, std::string> files;
    int64_t timestamp_expires = 0;  // unix seconds
  };
  Result<Prepared> Prepare(std::string_view group_id, SystemTime now) const;
  // Inserts `p` unless the group already has a repository (then nothing is written).
  static Result<void> Store(store::Session& s, const Prepared& p, int64_t now);

  // Creates the repository of `group_id` unless it has one (groups from before schema v6).
  // kNotFound if the group does not exist.
  Result<void> Ensure(std::string_view group_id, SystemTime now);

  // What a change adds besides what the writer itself publishes.
  struct Change {
    std::vector<std::pair<formats::tuf::Role, crypto::PrivateKey>> added_keys;
    std::vector<std::string> retired_keyids;
    // Target files the service writes itself (e.g. image-signing-keys.json), by repository path.
    std::map<std::string, std::string> extra_files;
  };
  // Applies `change` to the writer restored from the current state. May run more than once (a
  // concurrent change makes the first attempt stale), so it must only act on the writer.
  using Mutator = std::function<Result<Change>(formats::tuf::RepositoryWriter&)>;
  // Runs in the transaction that stores the change (e.g. records the deployment and the audit
  // entry), seeing the writer after the change; its failure rolls everything back.
  using InTransaction =
      std::function<Result<void>(store::Session&, const formats::tuf::RepositoryWriter&)>;
  // Creates the repository first if needed. kUnavailable if it kept changing under us.
  Result<void> Update(std::string_view group_id, SystemTime now, const Mutator& change,
                      const InTransaction& in_transaction = {});

  // One housekeeping pass: creates the repositories device groups lack, and re-signs the
  // timestamp of every repository whose timestamp has less than half its lifetime left. A failure
  // for one group is logged and the others go on. Returns how many timestamps were re-signed.
  Result<int> Housekeep(SystemTime now);

  // A published metadata file, or a target the service wrote itself, by repository path;
  // nullopt when there is none.
  Result<std::optional<std::string>> ReadFile(std::string_view group_id,
                                              std::string_view path) const;

  // Deletes a group's repository and deployments, in the transaction that deletes the group.
  static Result<void> DeleteForGroup(store::Session& s, std::string_view group_id);

  const Expiry& expiry() const { return expiry_; }

 private:
  struct Loaded;
  Result<std::optional<Loaded>> Load(std::string_view group_id) const;

  store::Database& db_;
  const ServicePki& pki_;
  Expiry expiry_;
};

}  // namespace moat::service
