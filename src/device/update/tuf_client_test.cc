// The TUF client workflow against an in-memory repository published by RepositoryWriter, with
// every applicable attack from the TUF threat model staged by rewriting the served files.
#include "device/update/tuf_client.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"

namespace moat::device::update {
namespace {

namespace tuf = formats::tuf;
using crypto::KeyType;
using crypto::PrivateKey;
using tuf::Role;
using namespace std::chrono_literals;

const SystemTime kStart = *ParseRfc3339("2026-11-27T12:00:00Z");

PrivateKey NewKey(KeyType type = KeyType::kEd25519) { return *PrivateKey::Generate(type); }

// Signs `signed_json` as given: what a repository (or an attacker holding keys) could serve.
std::string Resign(const Json& signed_json, const std::vector<PrivateKey>& keys) {
  std::string canonical = *tuf::CanonicalJson(signed_json);
  Json sigs = Json::array();
  for (const auto& k : keys) {
    sigs.push_back({{"keyid", tuf::Key::FromPublicKey(k.public_key()).keyid()},
                    {"sig", HexEncode(*k.Sign(canonical))}});
  }
  return DumpJson(Json{{"signatures", sigs}, {"signed", signed_json}});
}

Json SignedOf(std::string_view file) { return (*ParseJson(file, "test"))["signed"]; }

// A static web server in memory. Honours the Fetcher contract unless `ignore_limits` is set
// (a hostile server that keeps sending).
struct FakeServer {
  std::map<std::string, std::string> files;
  std::vector<std::string> fetched;
  bool ignore_limits = false;

  Fetcher fetcher() {
    return [this](std::string_view path, size_t max_bytes) -> Result<std::string> {
      fetched.emplace_back(path);
      auto it = files.find(std::string(path));
      if (it == files.end()) return Fail(ErrorCode::kNotFound, "{}: 404", path);
      if (!ignore_limits && it->second.size() > max_bytes) {
        return Fail(ErrorCode::kLimitExceeded, "{}: more than {} bytes", path, max_bytes);
      }
      return it->second;
    };
  }
  size_t Count(std::string_view path) const {
    return std::count(fetched.begin(), fetched.end(), path);
  }
};

// Records the order of store operations (to check what is durable before what).
class RecordingStore final : public TrustedStore {
 public:
  explicit RecordingStore(TrustedStore& inner) : inner_(inner) {}
  Result<std::optional<std::string>> Load(Role role) override { return inner_.Load(role); }
  Result<void> Save(Role role, std::string_view bytes) override {
    log.push_back(fmt::format("save {}", tuf::RoleName(role)));
    return inner_.Save(role, bytes);
  }
  Result<void> Remove(Role role) override {
    log.push_back(fmt::format("remove {}", tuf::RoleName(role)));
    return inner_.Remove(role);
  }
  std::vector<std::string> log;

 private:
  TrustedStore& inner_;
};

class TufClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = tuf::RepositoryWriter::Create({{root_key}}, {{timestamp_key}}, {{snapshot_key}},
                                           {{targets_key}}, clock.Now());
    ASSERT_TRUE(w) << w.error().message();
    writer.emplace(std::move(*w));
    // The device is provisioned with root version 1.
    ASSERT_TRUE(store.Save(Role::kRoot, writer->files().at("1.root.json")));
    PublishTargets({{"app.img", "the app image"}, {"os.img", "the os image"}});
  }

  // Publishes `targets` (name -> content) and serves metadata and target files.
  void PublishTargets(const std::map<std::string, std::string>& targets) {
    std::map<std::string, tuf::TargetFile> described;
    for (const auto& [name, bytes] : targets) {
      described[name] = tuf::DescribeTarget(bytes, Json{{"kind", "app"}});
      server.files[tuf::TargetPath(name, described[name].sha256, true)] = bytes;
    }
    auto r = writer->SetTargets(described, clock.Now());
    ASSERT_TRUE(r) << r.error().message();
    Serve();
  }
  void Serve() {
    for (const auto& [path, bytes] : writer->files()) server.files[path] = bytes;
  }

  TufClient NewClient(TufClientOptions options = {}) {
    auto c = TufClient::Create(server.fetcher(), store, clock, options);
    EXPECT_TRUE(c) << c.error().message();
    return std::move(*c);
  }

  // Refresh() must fail with `code` and a message containing `text`.
  static void ExpectRefreshFails(TufClient& client, ErrorCode code, std::string_view text) {
    auto r = client.Refresh();
    ASSERT_FALSE(r) << "expected: " << text;
    EXPECT_EQ(r.error().code(), code) << r.error().message();
    EXPECT_NE(r.error().message().find(text), std::string::npos) << r.error().message();
  }

  std::string Served(std::string_view path) { return server.files.at(std::string(path)); }
  std::string SnapshotPath() {
    return tuf::MetadataPath(Role::kSnapshot, writer->snapshot().version, true);
  }
  std::string TargetsPath() {
    return tuf::MetadataPath(Role::kTargets, writer->targets().version, true);
  }

  // Re-signs the chain above a modified targets file, as an attacker who holds the timestamp
  // and snapshot keys could (and the targets key, if given).
  void ServeChain(const std::string& targets_bytes, int64_t targets_version) {
    std::string targets_path = tuf::MetadataPath(Role::kTargets, targets_version, true);
    server.files[targets_path] = targets_bytes;
    Json snap = SignedOf(Served(SnapshotPath()));
    int64_t snap_version = snap["version"].get<int64_t>() + 100;
    snap["version"] = snap_version;
    snap["meta"]["targets.json"] = {
        {"version", targets_version},
        {"length", targets_bytes.size()},
        {"hashes", {{"sha256", HexEncode(crypto::Sha256(targets_bytes))}}}};
    std::string snap_bytes = Resign(snap, {snapshot_key});
    server.files[tuf::MetadataPath(Role::kSnapshot, snap_version, true)] = snap_bytes;
    Json ts = SignedOf(Served("timestamp.json"));
    ts["version"] = ts["version"].get<int64_t>() + 100;
    ts["meta"]["snapshot.json"] = {{"version", snap_version},
                                   {"length", snap_bytes.size()},
                                   {"hashes", {{"sha256", HexEncode(crypto::Sha256(snap_bytes))}}}};
    server.files["timestamp.json"] = Resign(ts, {timestamp_key});
  }

  FakeClock clock{kStart};
  PrivateKey root_key = NewKey(KeyType::kEcdsaP256);
  PrivateKey timestamp_key = NewKey();
  PrivateKey snapshot_key = NewKey();
  PrivateKey targets_key = NewKey(KeyType::kEcdsaP256);
  std::optional<tuf::RepositoryWriter> writer;
  FakeServer server;
  MemoryTrustedStore store;
};

// ---- the normal path ----

TEST_F(TufClientTest, RefreshesAndFetchesVerifiedTargets) {
  TufClient client = NewClient();
  ASSERT_TRUE(client.Refresh());
  auto app = client.FetchTarget("app.img");
  ASSERT_TRUE(app) << app.error().message();
  EXPECT_EQ(*app, "the app image");
  auto info = client.GetTargetInfo("os.img");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->length, 12);
  EXPECT_EQ(info->custom["kind"], "app");
  EXPECT_EQ(client.trusted_targets()->version, writer->targets().version);
  // Everything verified is now trusted and stored.
  for (Role role : {Role::kTimestamp, Role::kSnapshot, Role::kTargets}) {
    EXPECT_TRUE(store.Load(role)->has_value()) << tuf::RoleName(role);
  }
  // Consistent snapshot paths were used.
  EXPECT_EQ(server.Count("2.root.json"), 1u);
  EXPECT_EQ(server.Count(SnapshotPath()), 1u);
  EXPECT_EQ(server.Count(TargetsPath()), 1u);

  auto missing = client.GetTargetInfo("nope.img");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
}

TEST_F(TufClientTest, UnchangedRepositoryDownloadsOnlyTimestamp) {
  TufClient client = NewClient();
  ASSERT_TRUE(client.Refresh());
  server.fetched.clear();
  ASSERT_TRUE(client.Refresh());
  EXPECT_EQ(server.fetched, (std::vector<std::string>{"2.root.json", "timestamp.json"}));

  // A new timestamp for the same snapshot: still no snapshot or targets download.
  ASSERT_TRUE(writer->RefreshTimestamp(clock.Now()));
  Serve();
  server.fetched.clear();
  ASSERT_TRUE(client.Refresh());
  EXPECT_EQ(server.fetched, (std::vector<std::string>{"2.root.json", "timestamp.json"}));

  // New targets: both downloaded, the new target available.
  PublishTargets({{"app.img", "app v2"}});
  ASSERT_TRUE(client.Refresh());
  EXPECT_EQ(*client.FetchTarget("app.img"), "app v2");
  EXPECT_FALSE(client.GetTargetInfo("os.img"));
}

TEST_F(TufClientTest, NeedsProvisionedRootAndRefreshFirst) {
  MemoryTrustedStore empty;
  auto c = TufClient::Create(server.fetcher(), empty, clock);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code(), ErrorCode::kFailedPrecondition);

  TufClient client = NewClient();
  auto info = client.FetchTarget("app.img");
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), ErrorCode::kFailedPrecondition);
}

// ---- arbitrary software installation ----

TEST_F(TufClientTest, RefusesTimestampSignedByAnotherKey) {
  Json ts = SignedOf(Served("timestamp.json"));
  ts["version"] = 50;
  server.files["timestamp.json"] = Resign(ts, {NewKey()});
  TufClient client = NewClient();
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "timestamp.json: 0 valid signature(s) from the timestamp role's keys, "
                     "threshold is 1");
}

TEST_F(TufClientTest, RefusesTargetsSignedByAnotherKey) {
  Json targets = SignedOf(Served(TargetsPath()));
  targets["version"] = 40;
  targets["targets"]["evil.img"] = {{"length", 4},
                                    {"hashes", {{"sha256", HexEncode(crypto::Sha256("evil"))}}}};
  // Even with the timestamp and snapshot keys, a targets file needs the targets key.
  ServeChain(Resign(targets, {snapshot_key, timestamp_key}), 40);
  TufClient client = NewClient();
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "40.targets.json: 0 valid signature(s) from the targets role's keys");
}

TEST_F(TufClientTest, RefusesTargetWhoseBytesDifferFromMetadata) {
  TufClient client = NewClient();
  ASSERT_TRUE(client.Refresh());
  auto info = *client.GetTargetInfo("app.img");
  std::string path = tuf::TargetPath("app.img", info.sha256, true);
  server.files[path] = "the app imagX";  // same length, other bytes
  auto r = client.FetchTarget("app.img");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_EQ(r.error().message(),
            path + ": sha256 does not match the targets metadata (the file was replaced)");
  server.files[path] = "the app";
  r = client.FetchTarget("app.img");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(),
            path + ": 7 bytes, but targets metadata lists 13 (truncated or replaced)");
}

// ---- rollback ----

TEST_F(TufClientTest, RefusesOlderTimestamp) {
  std::string old_timestamp = Served("timestamp.json");
  TufClient client = NewClient();
  ASSERT_TRUE(client.Refresh());
  PublishTargets({{"app.img", "app v2"}});
  ASSERT_TRUE(client.Refresh());
  server.files["timestamp.json"] = old_timestamp;
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "timestamp.json: version 2 is older than the trusted version 3 (rollback "
                     "attack)");
}

TEST_F(TufClientTest, RollbackProtectionSurvivesRestart) {
  TempDir dir = *TempDir::Create("tuf-store");
  auto disk = *DirectoryTrustedStore::Create(dir.path() / "tuf");
  ASSERT_TRUE(disk->Save(Role::kRoot, writer->files().at("1.root.json")));
  std::string old_timestamp = Served("timestamp.json");
  PublishTargets({{"app.img", "app v2"}});
  {
    auto client = TufClient::Create(server.fetcher(), *disk, clock);
    ASSERT_TRUE(client);
    ASSERT_TRUE(client->Refresh());
  }
  // A fresh process (new store object over the same directory) still remembers version 3.
  auto reopened = *DirectoryTrustedStore::Create(dir.path() / "tuf");
  server.files["timestamp.json"] = old_timestamp;
  auto client = TufClient::Create(server.fetcher(), *reopened, clock);
  ASSERT_TRUE(client);
  ExpectRefreshFails(*client, ErrorCode::kVerificationFailed, "rollback attack");
  EXPECT_EQ(*ReadFile(reopened->PathOf(Role::kRoot), 1 << 20), writer->files().at("1.root.json"));
}

TEST_F(TufClientTest, RefusesTimestampListingOlderSnapshot) {
  TufClient client = NewClient();
  PublishTargets({{"app.img", "app v2"}});
  ASSERT_TRUE(client.Refresh());
  // An attacker with the timestamp key points a newer timestamp at an older snapshot.
  Json ts = SignedOf(Served("timestamp.json"));
  ts["version"] = 90;
  ts["meta"]["snapshot.json"] = {{"version", 1}};
  server.files["timestamp.json"] = Resign(ts, {timestamp_key});
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "lists snapshot version 1, older than the trusted 3 (rollback attack)");
}

TEST_F(TufClientTest, RefusesSnapshotListingOlderTargets) {
  TufClient client = NewClient();
  PublishTargets({{"app.img", "app v2"}});
  ASSERT_TRUE(client.Refresh());
  // Timestamp and snapshot keys compromised: a newer snapshot lists targets version 1.
  ServeChain(server.files.at("1.targets.json"), 1);
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "lists targets.json version 1, older than the trusted 3 (rollback attack)");
}

TEST_F(TufClientTest, RefusesRootWithWrongVersion) {
  Json root = SignedOf(writer->files().at("1.root.json"));
  root["version"] = 3;  // served as 2.root.json
  server.files["2.root.json"] = Resign(root, {root_key});
  TufClient client = NewClient();
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "2.root.json: holds version 3, expected 2 (rollback attack or a misnamed "
                     "file)");
}

// ---- indefinite freeze ----

TEST_F(TufClientTest, RefusesExpiredTimestamp) {
  TufClient client = NewClient();
  ASSERT_TRUE(client.Refresh());
  clock.Advance(25h);  // the timestamp lives one day
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "timestamp.json: version 2 expired at 2026-11-28T12:00:00Z (freeze attack, "
                     "or the device clock is wrong)");
  // A fresh timestamp unfreezes the client.
  ASSERT_TRUE(writer->RefreshTimestamp(clock.Now()));
  Serve();
  EXPECT_TRUE(client.Refresh());
  // Eight days on, the snapshot (seven days) has expired too.
  clock.Advance(8 * 24h);
  ASSERT_TRUE(writer->RefreshTimestamp(clock.Now()));
  Serve();
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed, "snapshot.json: version 2 expired");
}

TEST_F(TufClientTest, RefusesExpiredRoot) {
  clock.Advance(366 * 24h);
  ASSERT_TRUE(writer->RefreshTimestamp(clock.Now()));
  Serve();
  TufClient client = NewClient();
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "root.json: version 1 expired at 2027-11-27T12:00:00Z (freeze attack");
}

// ---- endless data ----

TEST_F(TufClientTest, RefusesOversizedMetadata) {
  server.files["timestamp.json"] = Served("timestamp.json") + std::string(20 << 10, ' ');
  TufClient client = NewClient();
  ExpectRefreshFails(client, ErrorCode::kLimitExceeded, "timestamp.json: more than 16384 bytes");
  // A server that ignores the limit is caught by the client's own check.
  server.ignore_limits = true;
  ExpectRefreshFails(client, ErrorCode::kLimitExceeded,
                     "timestamp.json: more than 16384 bytes (endless data attack");
}

TEST_F(TufClientTest, RefusesTargetLongerThanListed) {
  TufClient client = NewClient();
  ASSERT_TRUE(client.Refresh());
  auto info = *client.GetTargetInfo("app.img");
  std::string path = tuf::TargetPath("app.img", info.sha256, true);
  server.files[path] = "the app image and then some more";
  server.ignore_limits = true;
  auto r = client.FetchTarget("app.img");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(r.error().message(),
            path + ": more than 13 bytes (endless data attack, or the file is too large)");
}

TEST_F(TufClientTest, RefusesSnapshotLongerThanTimestampLists) {
  std::string path = SnapshotPath();
  server.files[path] += "          ";
  server.ignore_limits = true;
  TufClient client = NewClient();
  ExpectRefreshFails(client, ErrorCode::kLimitExceeded, path + ": more than");
}

// ---- mix-and-match ----

TEST_F(TufClientTest, RefusesSnapshotNotMatchingTimestampHash) {
  // A validly signed snapshot of the right version but other content (e.g. from another
  // moment, or another repository using the same keys).
  Json snap = SignedOf(Served(SnapshotPath()));
  snap["expires"] = "2030-01-01T00:00:00Z";
  std::string other = Resign(snap, {snapshot_key});
  ASSERT_EQ(other.size(), Served(SnapshotPath()).size());
  server.files[SnapshotPath()] = other;
  TufClient client = NewClient();
  ExpectRefreshFails(
      client, ErrorCode::kVerificationFailed,
      SnapshotPath() + ": sha256 does not match its parent metadata (mix-and-match attack)");
}

TEST_F(TufClientTest, RefusesTargetsOfAnotherVersion) {
  const std::string path = TargetsPath();
  const int64_t version = writer->targets().version;
  // Snapshot and timestamp that list their child by version only (no hash or length), so
  // only the version check can notice that N.targets.json holds another version.
  Json snap = SignedOf(Served(SnapshotPath()));
  snap["meta"]["targets.json"] = {{"version", version}};
  server.files[SnapshotPath()] = Resign(snap, {snapshot_key});
  Json ts = SignedOf(Served("timestamp.json"));
  ts["meta"]["snapshot.json"] = {{"version", snap["version"]}};
  server.files["timestamp.json"] = Resign(ts, {timestamp_key});
  server.files[path] = Served("1.targets.json");  // validly signed, version 1
  TufClient client = NewClient();
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     path + ": holds version 1, but snapshot.json lists 2 (mix-and-match attack)");
}

// ---- root rotation, thresholds, revocation, fast-forward recovery ----

TEST_F(TufClientTest, RotatesRootThroughSeveralVersions) {
  PrivateKey a = NewKey(), b = NewKey(KeyType::kEcdsaP256), c = NewKey(), d = NewKey();
  ASSERT_TRUE(writer->RotateKeys(Role::kRoot, {{a, b}, 2}, clock.Now()));
  ASSERT_TRUE(writer->RotateKeys(Role::kRoot, {{c, d}, 2}, clock.Now()));
  Serve();
  TufClient client = NewClient();
  auto r = client.Refresh();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(client.trusted_root().version, 3);
  EXPECT_EQ(client.trusted_root().root.threshold, 2);
  EXPECT_EQ(*store.Load(Role::kRoot), writer->files().at("3.root.json"));
  EXPECT_EQ(*client.FetchTarget("app.img"), "the app image");

  // The first root key was revoked by root 2: alone it can no longer sign a root.
  Json root4 = SignedOf(writer->files().at("1.root.json"));
  root4["version"] = 4;
  server.files["4.root.json"] = Resign(root4, {root_key});
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "4.root.json (signatures by the trusted root's keys): 0 valid signature(s) "
                     "from the root role's keys, threshold is 2");
}

TEST_F(TufClientTest, RootRotationNeedsThresholdOfNewKeys) {
  PrivateKey a = NewKey(), b = NewKey();
  ASSERT_TRUE(writer->RotateKeys(Role::kRoot, {{a, b}, 2}, clock.Now()));
  Serve();
  // Root 2 with only one of its two new keys' signatures (old key present).
  Json root2 = SignedOf(writer->files().at("2.root.json"));
  server.files["2.root.json"] = Resign(root2, {root_key, a});
  TufClient client = NewClient();
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "2.root.json (signatures by its own root keys): 1 valid signature(s) from "
                     "the root role's keys, threshold is 2");
  // And without the old root key's signature, the new keys alone cannot rotate.
  server.files["2.root.json"] = Resign(root2, {a, b});
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "2.root.json (signatures by the trusted root's keys): 0 valid signature(s)");
  EXPECT_EQ(client.trusted_root().version, 1);
}

TEST_F(TufClientTest, ThresholdTwoRootRefusesMissingSignature) {
  PrivateKey a = NewKey(), b = NewKey();
  ASSERT_TRUE(writer->RotateKeys(Role::kRoot, {{a, b}, 2}, clock.Now()));
  Serve();
  TufClient client = NewClient();
  ASSERT_TRUE(client.Refresh());
  // Root 3 signed by only one of the two trusted root keys (plus the new one).
  Json root3 = SignedOf(writer->files().at("2.root.json"));
  root3["version"] = 3;
  server.files["3.root.json"] = Resign(root3, {a});
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "3.root.json (signatures by the trusted root's keys): 1 valid signature(s) "
                     "from the root role's keys, threshold is 2");
  // Listing a's signature twice does not make two.
  Json env = *ParseJson(server.files["3.root.json"], "x");
  env["signatures"].push_back(env["signatures"][0]);
  server.files["3.root.json"] = DumpJson(env);
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed, "1 valid signature(s)");
}

// Issue 5's "root rotation chain with a missing link": root 2 is withheld, root 3 is served. The
// client must not jump from 1 to 3; it stays at root 1, whose keys do not sign the new
// timestamp, and refuses.
TEST_F(TufClientTest, RootChainWithAMissingLinkIsRefused) {
  PrivateKey a = NewKey(), new_timestamp = NewKey();
  ASSERT_TRUE(writer->RotateKeys(Role::kRoot, {{a}, 1}, clock.Now()));
  ASSERT_TRUE(writer->RotateKeys(Role::kTimestamp, {{new_timestamp}, 1}, clock.Now()));
  Serve();
  server.files.erase("2.root.json");
  TufClient client = NewClient();
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "timestamp.json: 0 valid signature(s) from the timestamp role's keys");
  EXPECT_EQ(client.trusted_root().version, 1);
  EXPECT_EQ(server.Count("3.root.json"), 0u);
  // Offered in place of version 2, root 3 is refused: root 1's keys did not sign it.
  server.files["2.root.json"] = writer->files().at("3.root.json");
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "2.root.json (signatures by the trusted root's keys): 0 valid signature(s)");
  // With the link back, the chain verifies.
  server.files["2.root.json"] = writer->files().at("2.root.json");
  auto r = client.Refresh();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(client.trusted_root().version, 3);
}

// Threshold for a non-root role: targets needing 2 of 2 keys, signed by one.
TEST_F(TufClientTest, TargetsBelowThresholdAreRefused) {
  PrivateKey t1 = NewKey(), t2 = NewKey();
  ASSERT_TRUE(writer->RotateKeys(Role::kTargets, {{t1, t2}, 2}, clock.Now()));
  Serve();
  TufClient client = NewClient();
  ASSERT_TRUE(client.Refresh());
  Json targets = SignedOf(Served(TargetsPath()));
  targets["version"] = 50;
  ServeChain(Resign(targets, {t1}), 50);
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "50.targets.json: 1 valid signature(s) from the targets role's keys, "
                     "threshold is 2");
  ServeChain(Resign(targets, {t1, t1}), 50);
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed, "1 valid signature(s)");
  ServeChain(Resign(targets, {t2, t1}), 50);
  auto r = client.Refresh();
  ASSERT_TRUE(r) << r.error().message();
}

TEST_F(TufClientTest, MaxRootRotationsPerRefresh) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(writer->RotateKeys(Role::kRoot, {{NewKey()}, 1}, clock.Now()));
  }
  Serve();
  TufClientOptions options;
  options.max_root_rotations = 2;
  TufClient client = NewClient(options);
  // Two rotations per refresh: root 3 first, root 4 at the next refresh.
  auto r = client.Refresh();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(client.trusted_root().version, 3);
  r = client.Refresh();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(client.trusted_root().version, 4);
}

TEST_F(TufClientTest, RevokedTargetsKeyIsRefusedAfterRotation) {
  TufClient client = NewClient();
  ASSERT_TRUE(client.Refresh());
  PrivateKey new_targets = NewKey();
  ASSERT_TRUE(writer->RotateKeys(Role::kTargets, {{new_targets}, 1}, clock.Now()));
  Serve();
  ASSERT_TRUE(client.Refresh());
  // The old (revoked, maybe stolen) targets key signs new targets metadata.
  Json targets = SignedOf(Served(TargetsPath()));
  targets["version"] = 60;
  ServeChain(Resign(targets, {targets_key}), 60);
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed,
                     "60.targets.json: 0 valid signature(s) from the targets role's keys");
}

TEST_F(TufClientTest, FastForwardRecoveryAfterTimestampKeyRotation) {
  TufClient client = NewClient();
  ASSERT_TRUE(client.Refresh());
  // The attacker holds the timestamp key and fast-forwards the device to version 1000.
  Json ts = SignedOf(Served("timestamp.json"));
  ts["version"] = 1000;
  server.files["timestamp.json"] = Resign(ts, {timestamp_key});
  ASSERT_TRUE(client.Refresh());
  // The repository republishes at a normal version: a rollback as far as the device knows.
  ASSERT_TRUE(writer->RefreshTimestamp(clock.Now()));
  Serve();
  ExpectRefreshFails(client, ErrorCode::kVerificationFailed, "older than the trusted version 1000");
  // Recovery: rotate the timestamp key. The new root makes the device forget version 1000:
  // the trusted timestamp and snapshot are deleted before the new root is saved, so a power
  // cut in between cannot leave the new root with the fast-forwarded timestamp.
  ASSERT_TRUE(writer->RotateKeys(Role::kTimestamp, {{NewKey()}, 1}, clock.Now()));
  Serve();
  RecordingStore recording(store);
  auto recovering = TufClient::Create(server.fetcher(), recording, clock);
  ASSERT_TRUE(recovering);
  auto r = recovering->Refresh();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(recording.log,
            (std::vector<std::string>{"remove timestamp", "remove snapshot", "save root",
                                      "save timestamp", "save snapshot", "save targets"}));
  auto stored = tuf::ParseTimestamp(**store.Load(Role::kTimestamp));
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->signed_.version, writer->timestamp().version);
  EXPECT_LT(writer->timestamp().version, 1000);
}

TEST_F(TufClientTest, SameTimestampVersionIsNoUpdate) {
  TufClient client = NewClient();
  ASSERT_TRUE(client.Refresh());
  // Same version, different bytes (a re-signed copy): kept as is, no error.
  Json ts = SignedOf(Served("timestamp.json"));
  ts["meta"]["snapshot.json"]["version"] = 99;
  server.files["timestamp.json"] = Resign(ts, {timestamp_key});
  auto before = *store.Load(Role::kTimestamp);
  ASSERT_TRUE(client.Refresh());
  EXPECT_EQ(*store.Load(Role::kTimestamp), before);
}

// ---- wrong type and malformed metadata ----

TEST_F(TufClientTest, RefusesWrongType) {
  server.files["timestamp.json"] = Served(SnapshotPath());
  TufClient client = NewClient();
  ExpectRefreshFails(client, ErrorCode::kInvalidArgument,
                     "timestamp.json: timestamp.signed._type: expected 'timestamp', got "
                     "'snapshot'");
}

TEST_F(TufClientTest, RefusesMalformedMetadata) {
  TufClient client = NewClient();
  server.files["timestamp.json"] = "{\"signatures\": [], \"signed\": ";
  ExpectRefreshFails(client, ErrorCode::kInvalidArgument,
                     "timestamp.json: timestamp: invalid JSON");
  server.files["timestamp.json"] = "[1,2,3]";
  ExpectRefreshFails(client, ErrorCode::kInvalidArgument,
                     "timestamp.json: timestamp: expected object, got array");
  server.files.erase("timestamp.json");
  ExpectRefreshFails(client, ErrorCode::kNotFound, "fetching timestamp.json");
}

TEST_F(TufClientTest, CorruptTrustedMetadataIsIgnored) {
  TufClient client = NewClient();
  ASSERT_TRUE(client.Refresh());
  ASSERT_TRUE(store.Save(Role::kSnapshot, "garbage"));
  ASSERT_TRUE(store.Save(Role::kTargets, "{}"));
  EXPECT_TRUE(client.Refresh());
  EXPECT_EQ(*client.FetchTarget("os.img"), "the os image");
}

TEST(DirectoryTrustedStore, SavesLoadsAndRemoves) {
  TempDir dir = *TempDir::Create("tuf-store");
  auto store = *DirectoryTrustedStore::Create(dir.path() / "a" / "b");
  EXPECT_FALSE(store->Load(Role::kTimestamp)->has_value());
  ASSERT_TRUE(store->Save(Role::kTimestamp, "v1"));
  ASSERT_TRUE(store->Save(Role::kTimestamp, "v2"));
  EXPECT_EQ(**store->Load(Role::kTimestamp), "v2");
  EXPECT_EQ(store->PathOf(Role::kTimestamp), dir.path() / "a" / "b" / "timestamp.json");
  ASSERT_TRUE(store->Remove(Role::kTimestamp));
  ASSERT_TRUE(store->Remove(Role::kTimestamp));
  EXPECT_FALSE(store->Load(Role::kTimestamp)->has_value());
}

}  // namespace
}  // namespace moat::device::update
