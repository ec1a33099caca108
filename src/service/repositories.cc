#include "service/repositories.h"

#include "core/log.h"

namespace moat::service {

namespace tuf = formats::tuf;

namespace {

constexpr int kMaxUpdateAttempts = 8;

std::string SealContext(std::string_view group_id, std::string_view keyid) {
  return fmt::format("tuf-key:{}:{}", group_id, keyid);
}

Result<tuf::Role> ParseRole(std::string_view name) {
  for (tuf::Role r :
       {tuf::Role::kRoot, tuf::Role::kTimestamp, tuf::Role::kSnapshot, tuf::Role::kTargets}) {
    if (tuf::RoleName(r) == name) return r;
  }
  return Fail(ErrorCode::kInternal, "tuf_keys: unknown role '{}'", name);
}

std::vector<uint8_t> Bytes(std::string_view s) { return {s.begin(), s.end()}; }

Result<void> PutFile(store::Session& s, std::string_view group_id, const std::string& path,
                     std::string_view content, int64_t now) {
  std::vector<store::Value> values;
  values.reserve(4);
  values.emplace_back(std::string(group_id));
  values.emplace_back(path);
  values.emplace_back(Bytes(content));
  values.emplace_back(now);
  MOAT_TRY(
      s.Execute("INSERT INTO tuf_files (device_group_id, path, content, created_at) VALUES "
                "(?, ?, ?, ?) ON CONFLICT (device_group_id, path) DO UPDATE SET content = "
                "excluded.content, created_at = excluded.created_at",
                values));
  return Ok();
}

Result<void> PutKey(store::Session& s, std::string_view group_id, std::string_view keyid,
                    std::string_view role, std::string_view key_type,
                    const std::vector<uint8_t>& sealed, int64_t now) {
  std::vector<store::Value> values;
  values.reserve(6);
  values.emplace_back(std::string(group_id));
  values.emplace_back(std::string(keyid));
  values.emplace_back(std::string(role));
  values.emplace_back(std::string(key_type));
  values.emplace_back(sealed);
  values.emplace_back(now);
  MOAT_TRY(
      s.Execute("INSERT INTO tuf_keys (device_group_id, key_id, role, key_type, sealed_key, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                values));
  return Ok();
}

int64_t TimestampExpires(const tuf::RepositoryWriter& w) {
  return store::UnixSeconds(w.timestamp().expires);
}

}  // namespace

struct Repositories::Loaded {
  tuf::RepositoryWriter writer;
  int64_t generation = 0;
  std::map<std::string, std::string> files;  // as loaded
};

Repositories::Repositories(store::Database& db, const ServicePki& pki, Expiry expiry)
    : db_(db), pki_(pki), expiry_(expiry) {}

Result<Repositories::Prepared> Repositories::Prepare(std::string_view group_id,
                                                     SystemTime now) const {
  using crypto::KeyType;
  MOAT_ASSIGN_OR_RETURN(auto root, crypto::PrivateKey::Generate(KeyType::kEcdsaP256));
  MOAT_ASSIGN_OR_RETURN(auto timestamp, crypto::PrivateKey::Generate(KeyType::kEd25519));
  MOAT_ASSIGN_OR_RETURN(auto snapshot, crypto::PrivateKey::Generate(KeyType::kEd25519));
  MOAT_ASSIGN_OR_RETURN(auto targets, crypto::PrivateKey::Generate(KeyType::kEd25519));
  MOAT_ASSIGN_OR_RETURN(
      auto writer, tuf::RepositoryWriter::Create({{root}}, {{timestamp}}, {{snapshot}}, {{targets}},
                                                 now, expiry_));
  Prepared p;
  p.group_id = std::string(group_id);
  for (const auto& [role, key] :
       {std::pair{tuf::Role::kRoot, &root}, std::pair{tuf::Role::kTimestamp, &timestamp},
        std::pair{tuf::Role::kSnapshot, &snapshot}, std::pair{tuf::Role::kTargets, &targets}}) {
    const std::string keyid = tuf::Key::FromPublicKey(key->public_key()).keyid();
    MOAT_ASSIGN_OR_RETURN(auto sealed, pki_.SealKey(*key, SealContext(group_id, keyid)));
    p.keys.push_back({keyid, std::string(tuf::RoleName(role)),
                      std::string(crypto::KeyTypeName(key->type())), std::move(sealed)});
  }
  p.files = writer.files();
  p.timestamp_expires = TimestampExpires(writer);
  return p;
}

Result<void> Repositories::Store(store::Session& s, const Prepared& p, int64_t now) {
  MOAT_ASSIGN_OR_RETURN(
      int64_t n,
      s.Execute("INSERT INTO tuf_repositories (device_group_id, generation, root_version, "
                "targets_version, snapshot_version, timestamp_version, timestamp_expires, "
                "created_at, updated_at) VALUES (?, 1, 1, 1, 1, 1, ?, ?, ?) "
                "ON CONFLICT (device_group_id) DO NOTHING",
                {p.group_id, p.timestamp_expires, now, now}));
  if (n == 0) return Ok();  // another request created it first
  for (const auto& k : p.keys) {
    MOAT_TRY(PutKey(s, p.group_id, k.keyid, k.role, k.key_type, k.sealed, now));
  }
  for (const auto& [path, content] : p.files) MOAT_TRY(PutFile(s, p.group_id, path, content, now));
  return Ok();
}

Result<void> Repositories::Ensure(std::string_view group_id, SystemTime now) {
  const std::string id(group_id);
  MOAT_ASSIGN_OR_RETURN(
      auto exists, db_.Query("SELECT 1 FROM tuf_repositories WHERE device_group_id = ?", {id}));
  if (!exists.empty()) return Ok();
  MOAT_ASSIGN_OR_RETURN(Prepared p, Prepare(group_id, now));
  return db_.Transact([&](store::Session& s) -> Result<void> {
    MOAT_ASSIGN_OR_RETURN(auto group, s.Query("SELECT 1 FROM device_groups WHERE id = ?", {id}));
    if (group.empty()) return Fail(ErrorCode::kNotFound, "no device group {}", id);
    return Store(s, p, store::UnixSeconds(now));
  });
}

Result<std::optional<Repositories::Loaded>> Repositories::Load(std::string_view group_id) const {
  const std::string id(group_id);
  std::optional<int64_t> generation;
  std::map<std::string, std::string> files;
  std::vector<std::tuple<std::string, std::string, std::vector<uint8_t>>> sealed_keys;
  // One transaction, so the files, keys and generation are one consistent state.
  MOAT_TRY(db_.Transact([&](store::Session& s) -> Result<void> {
    generation.reset();
    files.clear();
    sealed_keys.clear();
    MOAT_ASSIGN_OR_RETURN(auto rows, s.Query("SELECT generation, targets_version, "
                                             "snapshot_version FROM tuf_repositories WHERE "
                                             "device_group_id = ?",
                                             {id}));
    if (rows.empty()) return Ok();
    MOAT_ASSIGN_OR_RETURN(generation, rows[0].Int(0));
    MOAT_ASSIGN_OR_RETURN(int64_t targets_version, rows[0].Int(1));
    MOAT_ASSIGN_OR_RETURN(int64_t snapshot_version, rows[0].Int(2));
    MOAT_ASSIGN_OR_RETURN(
        auto file_rows,
        s.Query("SELECT path, content FROM tuf_files WHERE device_group_id = ? AND path IN "
                "(?, ?, ?, ?)",
                {id, std::string("root.json"), std::string("timestamp.json"),
                 tuf::MetadataPath(tuf::Role::kSnapshot, snapshot_version, true),
                 tuf::MetadataPath(tuf::Role::kTargets, targets_version, true)}));
    for (const auto& r : file_rows) {
      MOAT_ASSIGN_OR_RETURN(std::string path, r.Text(0));
      MOAT_ASSIGN_OR_RETURN(auto content, r.Blob(1));
      files[path] = std::string(content.begin(), content.end());
    }
    MOAT_ASSIGN_OR_RETURN(auto key_rows,
                          s.Query("SELECT key_id, role, sealed_key FROM tuf_keys WHERE "
                                  "device_group_id = ? AND retired_at IS NULL ORDER BY key_id",
                                  {id}));
    for (const auto& r : key_rows) {
      MOAT_ASSIGN_OR_RETURN(std::string keyid, r.Text(0));
      MOAT_ASSIGN_OR_RETURN(std::string role, r.Text(1));
      MOAT_ASSIGN_OR_RETURN(auto sealed, r.Blob(2));
      sealed_keys.emplace_back(std::move(keyid), std::move(role), std::move(sealed));
    }
    return Ok();
  }));
  if (!generation) return std::optional<Loaded>();
  std::map<tuf::Role, tuf::RoleSigners> signers;
  for (const auto& [keyid, role_name, sealed] : sealed_keys) {
    MOAT_ASSIGN_OR_RETURN(tuf::Role role, ParseRole(role_name));
    MOAT_ASSIGN_OR_RETURN(auto key, pki_.UnsealKey(sealed, SealContext(group_id, keyid)));
    signers[role].keys.push_back(std::move(key));
  }
  auto writer = tuf::RepositoryWriter::Restore(
      std::move(signers[tuf::Role::kRoot]), std::move(signers[tuf::Role::kTimestamp]),
      std::move(signers[tuf::Role::kSnapshot]), std::move(signers[tuf::Role::kTargets]), files,
      expiry_);
  if (!writer) {
    return Fail(writer.error().WithContext(
        fmt::format("the stored repository of device group {} does not check out", id)));
  }
  return std::optional<Loaded>(Loaded{std::move(*writer), *generation, std::move(files)});
}

Result<void> Repositories::Update(std::string_view group_id, SystemTime now, const Mutator& change,
                                  const InTransaction& in_transaction) {
  const std::string id(group_id);
  const int64_t t = store::UnixSeconds(now);
  MOAT_TRY(Ensure(group_id, now));
  for (int attempt = 0; attempt < kMaxUpdateAttempts; ++attempt) {
    MOAT_ASSIGN_OR_RETURN(std::optional<Loaded> loaded, Load(group_id));
    if (!loaded) return Fail(ErrorCode::kNotFound, "no device group {}", id);
    tuf::RepositoryWriter& w = loaded->writer;
    MOAT_ASSIGN_OR_RETURN(Change ch, change(w));
    // What is new or different: only those files are written.
    std::vector<std::pair<std::string, const std::string*>> changed;
    for (const auto& [path, content] : w.files()) {
      auto it = loaded->files.find(path);
      if (it == loaded->files.end() || it->second != content) changed.emplace_back(path, &content);
    }
    for (const auto& [path, content] : ch.extra_files) changed.emplace_back(path, &content);
    std::vector<Prepared::SealedKey> added;
    for (const auto& [role, key] : ch.added_keys) {
      const std::string keyid = tuf::Key::FromPublicKey(key.public_key()).keyid();
      MOAT_ASSIGN_OR_RETURN(auto sealed, pki_.SealKey(key, SealContext(group_id, keyid)));
      added.push_back({keyid, std::string(tuf::RoleName(role)),
                       std::string(crypto::KeyTypeName(key.type())), std::move(sealed)});
    }
    bool stale = false;
    MOAT_TRY(db_.Transact([&](store::Session& s) -> Result<void> {
      stale = false;
      std::vector<store::Value> values;
      values.reserve(8);
      values.emplace_back(w.root().version);
      values.emplace_back(w.targets().version);
      values.emplace_back(w.snapshot().version);
      values.emplace_back(w.timestamp().version);
      values.emplace_back(TimestampExpires(w));
      values.emplace_back(t);
      values.emplace_back(id);
      values.emplace_back(loaded->generation);
      MOAT_ASSIGN_OR_RETURN(
          int64_t n,
          s.Execute("UPDATE tuf_repositories SET generation = generation + 1, root_version = ?, "
                    "targets_version = ?, snapshot_version = ?, timestamp_version = ?, "
                    "timestamp_expires = ?, updated_at = ? WHERE device_group_id = ? AND "
                    "generation = ?",
                    values));
      if (n == 0) {
        stale = true;
        return Ok();
      }
      for (const auto& [path, content] : changed) MOAT_TRY(PutFile(s, id, path, *content, t));
      for (const auto& k : added) MOAT_TRY(PutKey(s, id, k.keyid, k.role, k.key_type, k.sealed, t));
      for (const auto& keyid : ch.retired_keyids) {
        MOAT_TRY(
            s.Execute("UPDATE tuf_keys SET retired_at = ? WHERE device_group_id = ? AND key_id = ?",
                      {t, id, keyid}));
      }
      if (in_transaction) MOAT_TRY(in_transaction(s, w));
      return Ok();
    }));
    if (!stale) return Ok();
  }
  return Fail(ErrorCode::kUnavailable,
              "the repository of device group {} kept changing while this change was signed; "
              "try again",
              id);
}

Result<int> Repositories::Housekeep(SystemTime now) {
  MOAT_ASSIGN_OR_RETURN(auto missing,
                        db_.Query("SELECT g.id FROM device_groups g LEFT JOIN tuf_repositories r "
                                  "ON r.device_group_id = g.id WHERE r.device_group_id IS NULL"));
  for (const auto& row : missing) {
    MOAT_ASSIGN_OR_RETURN(std::string id, row.Text(0));
    if (auto r = Ensure(id, now); !r) {
      log::Error("creating the repository of device group {}: {}", id, r.error().message());
    }
  }
  // Due: less than half the timestamp's lifetime left.
  const int64_t due_before = store::UnixSeconds(now + expiry_.timestamp / 2);
  MOAT_ASSIGN_OR_RETURN(auto due, db_.Query("SELECT device_group_id FROM tuf_repositories WHERE "
                                            "timestamp_expires <= ? ORDER BY device_group_id",
                                            {due_before}));
  int refreshed = 0;
  for (const auto& row : due) {
    MOAT_ASSIGN_OR_RETURN(std::string id, row.Text(0));
    auto r = Update(id, now, [&](tuf::RepositoryWriter& w) -> Result<Change> {
      // Another replica may have refreshed it since the query.
      if (store::UnixSeconds(w.timestamp().expires) > due_before) return Change{};
      MOAT_TRY(w.RefreshTimestamp(now));
      return Change{};
    });
    if (!r) {
      log::Error("re-signing the timestamp of device group {}: {}", id, r.error().message());
      continue;
    }
    ++refreshed;
  }
  return refreshed;
}

Result<std::optional<std::string>> Repositories::ReadFile(std::string_view group_id,
                                                          std::string_view path) const {
  MOAT_ASSIGN_OR_RETURN(
      auto rows, db_.Query("SELECT content FROM tuf_files WHERE device_group_id = ? AND path = ?",
                           {std::string(group_id), std::string(path)}));
  if (rows.empty()) return std::optional<std::string>();
  MOAT_ASSIGN_OR_RETURN(auto content, rows[0].Blob(0));
  return std::optional<std::string>(std::string(content.begin(), content.end()));
}

Result<void> Repositories::DeleteForGroup(store::Session& s, std::string_view group_id) {
  const std::string id(group_id);
  for (std::string_view table :
       {"deployment_images", "deployments", "tuf_files", "tuf_keys", "tuf_repositories"}) {
    MOAT_TRY(s.Execute(fmt::format("DELETE FROM {} WHERE device_group_id = ?", table), {id}));
  }
  return Ok();
}

}  // namespace moat::service
