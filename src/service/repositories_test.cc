// Repositories against a real SQLite database (no HTTP): lazy creation for device groups from
// before schema version 6, timestamp housekeeping on a FakeClock, sealed keys, and refusal of a
// stored state that does not verify.
#include "service/repositories.h"

#include <gtest/gtest.h>

#include "core/file.h"
#include "service/schema.h"
#include "store/sqlite.h"

namespace moat::service {
namespace {

namespace tuf = formats::tuf;
using namespace std::chrono_literals;

class RepositoriesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tmp = TempDir::Create("moat-repositories");
    ASSERT_TRUE(tmp);
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    auto db = store::OpenSqlite({.path = tmp_->path() / "moat.db", .clock = &clock_}, Migrations());
    ASSERT_TRUE(db) << db.error().message();
    db_ = std::move(*db);
    auto pki = ServicePki::Create("Acme", {"localhost"}, {}, clock_);
    ASSERT_TRUE(pki);
    pki_ = std::make_unique<ServicePki>(std::move(*pki));
    repos_ = std::make_unique<Repositories>(*db_, *pki_);
    // A device group inserted the way versions before 6 did: without a repository.
    const int64_t now = store::UnixSeconds(clock_.Now());
    ASSERT_TRUE(db_->Transact([&](store::Session& s) -> Result<void> {
      MOAT_TRY(
          s.Execute("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', ?)", {now}));
      MOAT_TRY(s.Execute(
          "INSERT INTO products (id, tenant_id, name, description, created_at, created_by) "
          "VALUES ('p1', 't1', 'Thermo', '', ?, 'test')",
          {now}));
      MOAT_TRY(s.Execute(
          "INSERT INTO device_groups (id, product_id, name, description, os_feed, "
          "app_update_policy, created_at) VALUES ('g1', 'p1', 'Field Test', '', 'Retail', "
          "'update-all', ?)",
          {now}));
      return Ok();
    }));
  }

  tuf::Metadata<tuf::Root> Root(int version) {
    auto bytes = repos_->ReadFile("g1", tuf::RootPath(version));
    EXPECT_TRUE(bytes && *bytes);
    auto root = tuf::ParseRoot(**bytes);
    EXPECT_TRUE(root) << root.error().message();
    return *root;
  }

  tuf::Metadata<tuf::Timestamp> Timestamp() {
    auto bytes = repos_->ReadFile("g1", "timestamp.json");
    EXPECT_TRUE(bytes && *bytes);
    auto ts = tuf::ParseTimestamp(**bytes);
    EXPECT_TRUE(ts) << ts.error().message();
    return *ts;
  }

  FakeClock clock_{*ParseRfc3339("2026-11-27T12:00:00Z")};
  std::unique_ptr<TempDir> tmp_;
  std::unique_ptr<store::Database> db_;
  std::unique_ptr<ServicePki> pki_;
  std::unique_ptr<Repositories> repos_;
};

TEST_F(RepositoriesTest, HousekeepingCreatesMissingRepositoriesAndRefreshesTimestamps) {
  ASSERT_EQ(*repos_->ReadFile("g1", "1.root.json"), std::nullopt);
  auto first = repos_->Housekeep(clock_.Now());
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(*first, 0);  // created, nothing due yet
  const auto root = Root(1);
  EXPECT_TRUE(tuf::VerifyRole(root.envelope, root.signed_, tuf::Role::kRoot, "root"));
  auto ts = Timestamp();
  EXPECT_TRUE(tuf::VerifyRole(ts.envelope, root.signed_, tuf::Role::kTimestamp, "timestamp"));
  EXPECT_EQ(ts.signed_.version, 1);
  EXPECT_EQ(ts.signed_.expires, clock_.Now() + 24h);

  // Keys: one per role, root P-256 and the online ones Ed25519, all sealed (no PEM in the DB).
  auto keys = db_->Query("SELECT role, key_type, sealed_key FROM tuf_keys ORDER BY role");
  ASSERT_TRUE(keys);
  ASSERT_EQ(keys->size(), 4u);
  for (const auto& k : *keys) {
    EXPECT_EQ(*k.Text(1), *k.Text(0) == "root" ? "ecdsa-p256" : "ed25519") << *k.Text(0);
    auto sealed = *k.Blob(2);
    EXPECT_EQ(std::string(sealed.begin(), sealed.end()).find("PRIVATE KEY"), std::string::npos);
  }

  clock_.Advance(12h);  // exactly half left: due
  EXPECT_EQ(*repos_->Housekeep(clock_.Now()), 1);
  ts = Timestamp();
  EXPECT_EQ(ts.signed_.version, 2);
  EXPECT_EQ(ts.signed_.expires, clock_.Now() + 24h);
  EXPECT_TRUE(tuf::VerifyRole(ts.envelope, root.signed_, tuf::Role::kTimestamp, "timestamp"));
  clock_.Advance(1h);
  EXPECT_EQ(*repos_->Housekeep(clock_.Now()), 0);
  EXPECT_EQ(Timestamp().signed_.version, 2);
}

TEST_F(RepositoriesTest, AStoredStateThatDoesNotVerifyIsNotSignedOver) {
  ASSERT_TRUE(repos_->Ensure("g1", clock_.Now()));
  // Someone with database access swaps the targets for validly shaped, unsigned ones.
  auto targets = *repos_->ReadFile("g1", "1.targets.json");
  std::string forged = *targets;
  forged.replace(forged.find("\"targets\":{}"), 12, "\"targets\":{ }");
  ASSERT_TRUE(db_->Transact([&](store::Session& s) -> Result<void> {
    MOAT_TRY(s.Execute("UPDATE tuf_files SET content = ? WHERE path = '1.targets.json'",
                       {std::vector<uint8_t>(forged.begin(), forged.end())}));
    return Ok();
  }));
  auto r = repos_->Update("g1", clock_.Now(),
                          [](tuf::RepositoryWriter& w) -> Result<Repositories::Change> {
                            MOAT_TRY(w.RefreshTimestamp(std::chrono::system_clock::now()));
                            return Repositories::Change{};
                          });
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("does not check out"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(Timestamp().signed_.version, 1);  // nothing was published
}

TEST_F(RepositoriesTest, UpdatesContinueTheChainAndRecordKeyChanges) {
  ASSERT_TRUE(repos_->Ensure("g1", clock_.Now()));
  const auto v1 = Root(1);
  std::string new_keyid;
  auto rotated = repos_->Update(
      "g1", clock_.Now(), [&](tuf::RepositoryWriter& w) -> Result<Repositories::Change> {
        MOAT_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::Generate(crypto::KeyType::kEd25519));
        new_keyid = tuf::Key::FromPublicKey(key.public_key()).keyid();
        Repositories::Change ch;
        ch.retired_keyids = w.root().root.keyids;
        MOAT_TRY(w.RotateKeys(tuf::Role::kRoot, {{key}}, clock_.Now()));
        ch.added_keys.emplace_back(tuf::Role::kRoot, std::move(key));
        return ch;
      });
  ASSERT_TRUE(rotated) << rotated.error().message();
  const auto v2 = Root(2);
  EXPECT_TRUE(tuf::VerifyRole(v2.envelope, v1.signed_, tuf::Role::kRoot, "2.root.json"));
  EXPECT_TRUE(tuf::VerifyRole(v2.envelope, v2.signed_, tuf::Role::kRoot, "2.root.json"));
  // The next change restores from the rotated state (the new key signs, the old is retired).
  std::map<std::string, tuf::TargetFile> targets;
  targets["a.imagepackage"] = tuf::DescribeTarget("a");
  auto published = repos_->Update("g1", clock_.Now(),
                                  [&](tuf::RepositoryWriter& w) -> Result<Repositories::Change> {
                                    MOAT_TRY(w.SetTargets(targets, clock_.Now()));
                                    return Repositories::Change{};
                                  });
  ASSERT_TRUE(published) << published.error().message();
  auto row = db_->QueryOne(
      "SELECT root_version, targets_version, generation FROM tuf_repositories WHERE "
      "device_group_id = 'g1'");
  ASSERT_TRUE(row);
  EXPECT_EQ(*row->Int(0), 2);
  EXPECT_EQ(*row->Int(1), 3);  // 1, the rotation's 2, the deployment's 3
  EXPECT_EQ(*row->Int(2), 3);
  auto retired = db_->Query("SELECT key_id FROM tuf_keys WHERE retired_at IS NOT NULL");
  ASSERT_TRUE(retired);
  ASSERT_EQ(retired->size(), 1u);
  EXPECT_EQ(*(*retired)[0].Text(0), v1.signed_.root.keyids.front());
}

}  // namespace
}  // namespace moat::service
