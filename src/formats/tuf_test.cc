#include "formats/tuf.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/encoding.h"
#include "core/json.h"

namespace moat::formats::tuf {
namespace {

using crypto::KeyType;
using crypto::PrivateKey;

const SystemTime kNow = *ParseRfc3339("2026-11-27T12:00:00Z");

PrivateKey NewKey(KeyType type = KeyType::kEd25519) { return *PrivateKey::Generate(type); }

Json J(std::string_view text) { return *ParseJson(text, "test"); }

std::string Canon(std::string_view text) {
  auto c = CanonicalJson(J(text));
  EXPECT_TRUE(c) << c.error().message();
  return c ? *c : "";
}

// Re-signs a modified "signed" object with `keys`, bypassing the writer's own validation, so
// that tests can hand the parser what a hostile repository would.
std::string Resign(const Json& signed_json, const std::vector<PrivateKey>& keys) {
  std::string canonical = *CanonicalJson(signed_json);
  Json sigs = Json::array();
  for (const auto& k : keys) {
    sigs.push_back({{"keyid", Key::FromPublicKey(k.public_key()).keyid()},
                    {"sig", HexEncode(*k.Sign(canonical))}});
  }
  return DumpJson(Json{{"signatures", sigs}, {"signed", signed_json}});
}

// ---- canonical JSON ----

// Vectors from securesystemslib's tests of encode_canonical and the OLPC rules.
TEST(TufCanonicalJson, SecuresystemslibVectors) {
  EXPECT_EQ(Canon(R"("")"), R"("")");
  EXPECT_EQ(Canon("[1, 2, 3]"), "[1,2,3]");
  EXPECT_EQ(Canon("[]"), "[]");
  EXPECT_EQ(Canon("{}"), "{}");
  EXPECT_EQ(Canon(R"({"A": [99]})"), R"({"A":[99]})");
  EXPECT_EQ(Canon(R"({"x": 3, "y": 2})"), R"({"x":3,"y":2})");
  EXPECT_EQ(Canon(R"({"x": 3, "y": null})"), R"({"x":3,"y":null})");
  EXPECT_EQ(Canon(R"({"b": true, "a": false})"), R"({"a":false,"b":true})");
  EXPECT_EQ(Canon("-17"), "-17");
  EXPECT_EQ(Canon("18446744073709551615"), "18446744073709551615");
}

TEST(TufCanonicalJson, EscapesOnlyBackslashAndQuote) {
  // JSON "\\ \" \n \t \u00e9 /" decodes to: backslash, quote, newline, tab, e-acute, slash.
  EXPECT_EQ(Canon(R"(["\\ \" \n \t \u00e9 \/"])"), "[\"\\\\ \\\" \n \t \xc3\xa9 /\"]");
  // Keys are escaped the same way.
  EXPECT_EQ(Canon(R"({"a\"b": 1})"), R"({"a\"b":1})");
}

TEST(TufCanonicalJson, SortsKeysByUtf8Bytes) {
  EXPECT_EQ(Canon(R"({"b": 1, "a": 2, "B": 3, "\u00e9": 4, "aa": 5})"),
            "{\"B\":3,\"a\":2,\"aa\":5,\"b\":1,\"\xc3\xa9\":4}");
  EXPECT_EQ(Canon(R"({"z": {"y": 1, "x": [{"b": 1, "a": 2}]}})"),
            R"({"z":{"x":[{"a":2,"b":1}],"y":1}})");
}

TEST(TufCanonicalJson, RefusesFloats) {
  auto r = CanonicalJson(J("8.0"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "value: floating-point numbers cannot be canonical JSON");
  r = CanonicalJson(J(R"({"x": {"y": [1, 1.5]}})"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "['x']['y'][1]: floating-point numbers cannot be canonical JSON");
}

// ---- keys ----

// The key and keyid are python-tuf's test key (tests/repository_data), as written by
// securesystemslib with keyid_hash_algorithms; the ID is what securesystemslib computes.
TEST(TufKey, KeyIdOfKnownKey) {
  Json key = J(R"({"keyid_hash_algorithms": ["sha256", "sha512"], "keytype": "ed25519",
    "keyval": {"public": "edcd0a32a07dce33f7c7873aaffbff36d20ea30787574ead335eefd337e4dacd"},
    "scheme": "ed25519"})");
  EXPECT_EQ(*ComputeKeyId(key), "59a4df8af818e9ed7abe0764c0b47b4240952aa0d179b5b78346c470ac30278d");
  auto parsed = Key::FromJson(key, "k");
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->keyid(), "59a4df8af818e9ed7abe0764c0b47b4240952aa0d179b5b78346c470ac30278d");
  EXPECT_EQ(parsed->public_key().type(), KeyType::kEd25519);
  EXPECT_EQ(HexEncode(parsed->public_key().ToRaw()),
            "edcd0a32a07dce33f7c7873aaffbff36d20ea30787574ead335eefd337e4dacd");
}

TEST(TufKey, RoundTripsBothKeyTypes) {
  for (KeyType type : {KeyType::kEd25519, KeyType::kEcdsaP256}) {
    auto pk = NewKey(type).public_key();
    Key key = Key::FromPublicKey(pk);
    auto back = Key::FromJson(key.ToJson(), "k");
    ASSERT_TRUE(back) << back.error().message();
    EXPECT_EQ(back->keyid(), key.keyid());
    EXPECT_EQ(back->public_key(), pk);
    EXPECT_EQ(key.keyid(), *ComputeKeyId(key.ToJson()));
  }
  Json ec = Key::FromPublicKey(NewKey(KeyType::kEcdsaP256).public_key()).ToJson();
  EXPECT_EQ(ec["keytype"], "ecdsa-sha2-nistp256");
  EXPECT_EQ(ec["scheme"], "ecdsa-sha2-nistp256");
  EXPECT_TRUE(ec["keyval"]["public"].get<std::string>().starts_with("-----BEGIN PUBLIC KEY-----"));
  // Newer securesystemslib writes keytype "ecdsa": read as well.
  ec["keytype"] = "ecdsa";
  EXPECT_TRUE(Key::FromJson(ec, "k"));
}

TEST(TufKey, RefusesUnsupportedAndMalformedKeys) {
  auto err = [](std::string_view text) {
    auto k = Key::FromJson(J(text), "root.signed.keys['x']");
    return k ? std::string("accepted") : k.error().message();
  };
  EXPECT_EQ(err(R"({"keytype":"rsa","scheme":"rsassa-pss-sha256","keyval":{"public":"x"}})"),
            "root.signed.keys['x'].keytype: unsupported key type 'rsa' (Moat supports ed25519 "
            "and ecdsa-sha2-nistp256)");
  EXPECT_EQ(err(R"({"keytype":"ed25519","scheme":"ecdsa-sha2-nistp256","keyval":{"public":"00"}})"),
            "root.signed.keys['x'].scheme: expected 'ed25519' for an ed25519 key, got "
            "'ecdsa-sha2-nistp256'");
  EXPECT_EQ(err(R"({"keytype":"ed25519","scheme":"ed25519","keyval":{"public":"ABCD"}})"),
            "root.signed.keys['x'].keyval.public: an ed25519 key is 64 lowercase hex digits");
  EXPECT_EQ(err(R"({"keytype":"ed25519","scheme":"ed25519","keyval":{"public":"00"},"x":1})"),
            "root.signed.keys['x']: unknown field 'x'");
  EXPECT_EQ(err(R"({"keytype":"ed25519","scheme":"ed25519"})"),
            "root.signed.keys['x']: missing required field 'keyval'");
}

// ---- metadata round trips and the writer ----

struct Repo {
  PrivateKey root = NewKey(KeyType::kEcdsaP256);
  PrivateKey timestamp = NewKey();
  PrivateKey snapshot = NewKey();
  PrivateKey targets = NewKey(KeyType::kEcdsaP256);
  RepositoryWriter writer =
      *RepositoryWriter::Create({{root}}, {{timestamp}}, {{snapshot}}, {{targets}}, kNow);
};

TEST(TufWriter, PublishesParseableVerifiableMetadata) {
  Repo repo;
  std::map<std::string, TargetFile> files;
  files["app.img"] = DescribeTarget("hello", J(R"({"moat":{"kind":"app"}})"));
  auto set = repo.writer.SetTargets(files, kNow);
  ASSERT_TRUE(set) << set.error().message();
  const auto& f = repo.writer.files();
  for (const char* name : {"1.root.json", "root.json", "timestamp.json", "1.snapshot.json",
                           "2.snapshot.json", "1.targets.json", "2.targets.json"}) {
    EXPECT_TRUE(f.contains(name)) << name;
  }
  auto root = ParseRoot(f.at("1.root.json"));
  ASSERT_TRUE(root) << root.error().message();
  EXPECT_TRUE(VerifyRole(root->envelope, root->signed_, Role::kRoot, "root"));
  EXPECT_EQ(root->signed_, repo.writer.root());
  EXPECT_EQ(root->signed_.spec_version, kSpecVersion);
  EXPECT_EQ(root->signed_.expires, kNow + Seconds(365 * 86400));

  auto ts = ParseTimestamp(f.at("timestamp.json"));
  ASSERT_TRUE(ts) << ts.error().message();
  EXPECT_TRUE(VerifyRole(ts->envelope, root->signed_, Role::kTimestamp, "timestamp"));
  EXPECT_EQ(ts->signed_.version, 2);
  EXPECT_EQ(ts->signed_.snapshot, DescribeMetaFile(f.at("2.snapshot.json"), 2));

  auto snap = ParseSnapshot(f.at("2.snapshot.json"));
  ASSERT_TRUE(snap);
  EXPECT_TRUE(VerifyRole(snap->envelope, root->signed_, Role::kSnapshot, "snapshot"));
  EXPECT_EQ(snap->signed_.targets, DescribeMetaFile(f.at("2.targets.json"), 2));

  auto targets = ParseTargets(f.at("2.targets.json"));
  ASSERT_TRUE(targets);
  EXPECT_TRUE(VerifyRole(targets->envelope, root->signed_, Role::kTargets, "targets"));
  EXPECT_EQ(targets->signed_, repo.writer.targets());
  EXPECT_EQ(targets->signed_.targets.at("app.img").custom["moat"]["kind"], "app");
  // Signed by the snapshot key is not signed by the targets role.
  EXPECT_FALSE(VerifyRole(snap->envelope, root->signed_, Role::kTargets, "snapshot"));

  // The files are compact JSON with sorted keys; for targets (no control characters) that is
  // the canonical form. Roots with a PEM key escape its newlines, unlike canonical JSON.
  EXPECT_EQ(*CanonicalJson(J(f.at("2.targets.json"))), f.at("2.targets.json"));
  EXPECT_NE(f.at("1.root.json").find("-----\\n"), std::string::npos);
}

TEST(TufWriter, RootRotationIsSignedByOldAndNewKeys) {
  Repo repo;
  PrivateKey new_root_a = NewKey(), new_root_b = NewKey();
  auto rotated = repo.writer.RotateKeys(Role::kRoot, {{new_root_a, new_root_b}, 2}, kNow);
  ASSERT_TRUE(rotated) << rotated.error().message();
  auto v1 = ParseRoot(repo.writer.files().at("1.root.json"));
  auto v2 = ParseRoot(repo.writer.files().at("2.root.json"));
  ASSERT_TRUE(v1 && v2);
  EXPECT_EQ(v2->envelope.signatures.size(), 3u);
  EXPECT_TRUE(VerifyRole(v2->envelope, v1->signed_, Role::kRoot, "2.root.json"));
  EXPECT_TRUE(VerifyRole(v2->envelope, v2->signed_, Role::kRoot, "2.root.json"));
  // The old root key is gone from the new root (revoked).
  EXPECT_FALSE(v2->signed_.keys.contains(Key::FromPublicKey(repo.root.public_key()).keyid()));
  EXPECT_EQ(v2->signed_.root.threshold, 2);
}

TEST(TufWriter, RefusesThresholdItCannotMeet) {
  auto w =
      RepositoryWriter::Create({{NewKey()}, 2}, {{NewKey()}}, {{NewKey()}}, {{NewKey()}}, kNow);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().message(), "root role: threshold 2 cannot be met by 1 keys");
}

// The four current metadata files, as a service persists them.
std::map<std::string, std::string> CurrentFiles(const RepositoryWriter& w) {
  std::map<std::string, std::string> out;
  const auto& f = w.files();
  for (std::string path : {std::string("root.json"), std::string("timestamp.json"),
                           MetadataPath(Role::kSnapshot, w.snapshot().version, true),
                           MetadataPath(Role::kTargets, w.targets().version, true)}) {
    out[path] = f.at(path);
  }
  return out;
}

TEST(TufWriter, RestoresFromPersistedFilesAndContinuesTheVersionChain) {
  Repo repo;
  std::map<std::string, TargetFile> files;
  files["app.img"] = DescribeTarget("hello");
  ASSERT_TRUE(repo.writer.SetTargets(files, kNow));
  auto restored = RepositoryWriter::Restore({{repo.root}}, {{repo.timestamp}}, {{repo.snapshot}},
                                            {{repo.targets}}, CurrentFiles(repo.writer));
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(restored->root(), repo.writer.root());
  EXPECT_EQ(restored->targets(), repo.writer.targets());
  EXPECT_EQ(restored->snapshot(), repo.writer.snapshot());
  EXPECT_EQ(restored->timestamp(), repo.writer.timestamp());
  EXPECT_EQ(restored->files().at("1.root.json"), repo.writer.files().at("1.root.json"));

  // It goes on where the original left off: targets 3, snapshot 3, timestamp 3, then 4.
  files["os.img"] = DescribeTarget("os");
  ASSERT_TRUE(restored->SetTargets(files, kNow + Seconds(60)));
  ASSERT_TRUE(restored->RefreshTimestamp(kNow + Seconds(120)));
  const auto& f = restored->files();
  auto root = ParseRoot(f.at("1.root.json"));
  auto ts = ParseTimestamp(f.at("timestamp.json"));
  auto snap = ParseSnapshot(f.at("3.snapshot.json"));
  auto targets = ParseTargets(f.at("3.targets.json"));
  ASSERT_TRUE(root && ts && snap && targets);
  EXPECT_TRUE(VerifyRole(ts->envelope, root->signed_, Role::kTimestamp, "timestamp"));
  EXPECT_TRUE(VerifyRole(snap->envelope, root->signed_, Role::kSnapshot, "snapshot"));
  EXPECT_TRUE(VerifyRole(targets->envelope, root->signed_, Role::kTargets, "targets"));
  EXPECT_EQ(ts->signed_.version, 4);
  EXPECT_EQ(ts->signed_.expires, kNow + Seconds(120) + Seconds(86400));
  EXPECT_EQ(ts->signed_.snapshot, DescribeMetaFile(f.at("3.snapshot.json"), 3));
  EXPECT_EQ(targets->signed_.targets.size(), 2u);

  // A root rotation after a restore is signed by the restored root key and the new one.
  PrivateKey new_root = NewKey(KeyType::kEcdsaP256);
  ASSERT_TRUE(restored->RotateKeys(Role::kRoot, {{new_root}}, kNow));
  auto v2 = ParseRoot(restored->files().at("2.root.json"));
  ASSERT_TRUE(v2);
  EXPECT_TRUE(VerifyRole(v2->envelope, root->signed_, Role::kRoot, "2.root.json"));
  EXPECT_TRUE(VerifyRole(v2->envelope, v2->signed_, Role::kRoot, "2.root.json"));
}

TEST(TufWriter, RestoreRefusesWrongKeysAndInconsistentFiles) {
  Repo repo;
  const auto current = CurrentFiles(repo.writer);
  // Keys the root does not name for the role.
  auto wrong = RepositoryWriter::Restore({{repo.root}}, {{NewKey()}}, {{repo.snapshot}},
                                         {{repo.targets}}, current);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().message(),
            "restoring a repository: the timestamp role's signing keys are not the 1 key(s) with "
            "threshold 1 that root version 1 names");
  // A missing file.
  auto missing = current;
  missing.erase("1.snapshot.json");
  auto m = RepositoryWriter::Restore({{repo.root}}, {{repo.timestamp}}, {{repo.snapshot}},
                                     {{repo.targets}}, missing);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(), "restoring a repository: 1.snapshot.json is missing");
  // Targets replaced by validly signed other targets: the snapshot's hash no longer matches.
  auto swapped = current;
  Targets other = repo.writer.targets();
  other.targets["evil.img"] = DescribeTarget("evil");
  swapped["1.targets.json"] = *SignTargets(other, std::vector<PrivateKey>{repo.targets});
  auto s = RepositoryWriter::Restore({{repo.root}}, {{repo.timestamp}}, {{repo.snapshot}},
                                     {{repo.targets}}, swapped);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_EQ(s.error().message(),
            "restoring a repository: 1.targets.json does not match its length and hash in "
            "1.snapshot.json");
  // A timestamp signed by a key the root does not know.
  auto forged = current;
  forged["timestamp.json"] =
      *SignTimestamp(repo.writer.timestamp(), std::vector<PrivateKey>{NewKey()});
  auto f = RepositoryWriter::Restore({{repo.root}}, {{repo.timestamp}}, {{repo.snapshot}},
                                     {{repo.targets}}, forged);
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code(), ErrorCode::kVerificationFailed);
}

// ---- threshold verification ----

TEST(TufVerify, CountsDistinctKeysOnly) {
  PrivateKey a = NewKey(), b = NewKey(KeyType::kEcdsaP256), stranger = NewKey();
  Repo repo;
  auto rotated = repo.writer.RotateKeys(Role::kTargets, {{a, b}, 2}, kNow);
  ASSERT_TRUE(rotated) << rotated.error().message();
  const Root& root = repo.writer.root();
  Json signed_json = ToJson(repo.writer.targets());

  auto verify = [&](const std::vector<PrivateKey>& keys) {
    auto m = ParseTargets(Resign(signed_json, keys));
    EXPECT_TRUE(m) << m.error().message();
    return VerifyRole(m->envelope, root, Role::kTargets, "targets.json");
  };
  EXPECT_TRUE(verify({a, b}));
  EXPECT_TRUE(verify({stranger, b, a}));  // an unknown keyid is ignored
  auto one = verify({a});
  ASSERT_FALSE(one);
  EXPECT_EQ(one.error().code(), ErrorCode::kVerificationFailed);
  EXPECT_EQ(one.error().message(),
            "targets.json: 1 valid signature(s) from the targets role's keys, threshold is 2");
  // The same key twice counts once.
  EXPECT_FALSE(verify({a, a}));
  // A valid signature by a key of another role does not count.
  EXPECT_FALSE(verify({a, repo.snapshot}));

  // A bad signature under a right keyid does not count.
  auto m = ParseTargets(Resign(signed_json, {a, b}));
  ASSERT_TRUE(m);
  m->envelope.signatures[1].sig[5] ^= 1;
  EXPECT_FALSE(VerifyRole(m->envelope, root, Role::kTargets, "targets.json"));
  // Signatures cover the bytes as received: a change to the signed body breaks them.
  auto changed = ParseTargets(Resign(signed_json, {a, b}));
  changed->envelope.canonical_signed.back() = ' ';
  EXPECT_FALSE(VerifyRole(changed->envelope, root, Role::kTargets, "targets.json"));
}

// ---- malformed metadata: each is refused with a message naming the field ----

class TufMalformed : public ::testing::Test {
 protected:
  Repo repo;
  Json Signed(std::string_view file) {
    return J(repo.writer.files().at(std::string(file)))["signed"];
  }
};

TEST_F(TufMalformed, WrongType) {
  Json s = Signed("1.targets.json");
  s["_type"] = "snapshot";
  auto m = ParseTargets(Resign(s, {repo.targets}));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(), "targets.signed._type: expected 'targets', got 'snapshot'");
  // A timestamp handed in as a root.
  auto r = ParseRoot(repo.writer.files().at("timestamp.json"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "root.signed._type: expected 'root', got 'timestamp'");
}

TEST_F(TufMalformed, SpecVersion) {
  Json s = Signed("timestamp.json");
  s["spec_version"] = "2.0.0";
  auto m = ParseTimestamp(Resign(s, {repo.timestamp}));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(),
            "timestamp.signed.spec_version: spec version '2.0.0' is not supported (major version "
            "1 only)");
  s["spec_version"] = "1.0";
  EXPECT_TRUE(ParseTimestamp(Resign(s, {repo.timestamp})));
  s["spec_version"] = "1.0.x";
  EXPECT_FALSE(ParseTimestamp(Resign(s, {repo.timestamp})));
}

TEST_F(TufMalformed, Expires) {
  Json s = Signed("timestamp.json");
  s["expires"] = "2030-01-01T00:00:00+01:00";
  auto m = ParseTimestamp(Resign(s, {repo.timestamp}));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(),
            "timestamp.signed.expires: expected an RFC 3339 UTC time 'YYYY-MM-DDTHH:MM:SSZ', got "
            "'2030-01-01T00:00:00+01:00'");
  s["expires"] = "2030-01-01T00:00:00.5Z";
  EXPECT_FALSE(ParseTimestamp(Resign(s, {repo.timestamp})));
}

TEST_F(TufMalformed, TargetHashes) {
  Json s = Signed("1.targets.json");
  s["targets"]["app.img"] = {{"length", 5}, {"hashes", {{"sha256", "abc"}}}};
  auto m = ParseTargets(Resign(s, {repo.targets}));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(),
            "targets.signed.targets['app.img'].hashes.sha256: a sha256 hash is 64 lowercase hex "
            "digits, got 'abc'");
  s["targets"]["app.img"]["hashes"] = {{"sha512", std::string(128, 'a')}};
  m = ParseTargets(Resign(s, {repo.targets}));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(),
            "targets.signed.targets['app.img'].hashes['sha512']: unsupported hash algorithm "
            "(Moat uses sha256 only)");
  s["targets"]["app.img"] = {{"length", -1}, {"hashes", {{"sha256", std::string(64, 'a')}}}};
  m = ParseTargets(Resign(s, {repo.targets}));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(),
            "targets.signed.targets['app.img'].length: -1 is out of range 0..9007199254740991");
}

TEST_F(TufMalformed, TargetNames) {
  Json s = Signed("1.targets.json");
  Json file = {{"length", 1}, {"hashes", {{"sha256", std::string(64, 'a')}}}};
  for (const char* bad : {"../etc/passwd", "a/b", ".hidden", ""}) {
    s["targets"] = {{bad, file}};
    auto m = ParseTargets(Resign(s, {repo.targets}));
    EXPECT_FALSE(m) << bad;
    if (!m) {
      EXPECT_TRUE(m.error().message().starts_with("targets.signed.targets['")) << bad;
    }
  }
}

TEST_F(TufMalformed, DelegationsAreNotSupported) {
  Json s = Signed("1.targets.json");
  s["delegations"] = {{"keys", Json::object()}, {"roles", Json::array()}};
  auto m = ParseTargets(Resign(s, {repo.targets}));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(), "targets.signed.delegations: delegations are not supported");

  Json snap = Signed("1.snapshot.json");
  snap["meta"]["role1.json"] = {{"version", 1}};
  auto sm = ParseSnapshot(Resign(snap, {repo.snapshot}));
  ASSERT_FALSE(sm);
  EXPECT_EQ(sm.error().message(),
            "snapshot.signed.meta['role1.json']: unexpected entry (delegations are not "
            "supported: only targets.json is listed)");
}

TEST_F(TufMalformed, SnapshotMustListTargets) {
  Json snap = Signed("1.snapshot.json");
  snap["meta"] = Json::object();
  auto m = ParseSnapshot(Resign(snap, {repo.snapshot}));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(), "snapshot.signed.meta: missing required entry 'targets.json'");
  Json ts = Signed("timestamp.json");
  ts["meta"]["snapshot.json"]["hashes"] = Json::object();
  auto t = ParseTimestamp(Resign(ts, {repo.timestamp}));
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().message(),
            "timestamp.signed.meta['snapshot.json'].hashes: missing required field 'sha256'");
}

TEST_F(TufMalformed, FloatsInCustom) {
  Json s = Signed("1.targets.json");
  s["targets"]["a"] = {{"length", 1}, {"hashes", {{"sha256", std::string(64, 'a')}}}};
  std::string bytes = Resign(s, {repo.targets});
  // Splice a float into the signed body (our signer refuses to write one).
  bytes.replace(bytes.find("\"length\":1"), 10, "\"length\":1,\"custom\":{\"x\":1.5}");
  auto m = ParseTargets(bytes);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(),
            "targets.signed: ['targets']['a']['custom']['x']: floating-point numbers cannot be "
            "canonical JSON");
}

TEST_F(TufMalformed, RootKeyIdMustMatchKey) {
  Json s = Signed("1.root.json");
  std::string id = s["roles"]["targets"]["keyids"][0];
  std::string fake(64, 'b');
  s["keys"][fake] = s["keys"][id];
  s["roles"]["targets"]["keyids"][0] = fake;
  auto m = ParseRoot(Resign(s, {repo.root}));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(),
            fmt::format("root.signed.keys['{}']: keyid does not match the key (its keyid is {})",
                        fake, id));
}

TEST_F(TufMalformed, RootRoles) {
  Json s = Signed("1.root.json");
  s["roles"]["mirror"] = s["roles"]["root"];
  auto m = ParseRoot(Resign(s, {repo.root}));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(), "root.signed.roles: unknown field 'mirror'");
  s = Signed("1.root.json");
  s["roles"]["snapshot"]["threshold"] = 2;
  m = ParseRoot(Resign(s, {repo.root}));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(),
            "root.signed.roles.snapshot.threshold: 2 exceeds the number of keys (1), so the role "
            "could never sign");
  s = Signed("1.root.json");
  s["roles"].erase("timestamp");
  m = ParseRoot(Resign(s, {repo.root}));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(), "root.signed.roles: missing required field 'timestamp'");
}

TEST_F(TufMalformed, Envelope) {
  auto err = [](std::string_view bytes) {
    auto m = ParseTimestamp(bytes);
    return m ? std::string("accepted") : m.error().message();
  };
  EXPECT_EQ(err("[]"), "timestamp: expected object, got array");
  EXPECT_EQ(err(R"({"signed":{}})"), "timestamp: missing required field 'signatures'");
  EXPECT_EQ(err(R"({"signatures":[{"keyid":"AB","sig":"00"}],"signed":{}})"),
            "timestamp.signatures[0].keyid: a keyid is 64 lowercase hex digits, got 'AB'");
  EXPECT_EQ(err(R"({"signatures":[],"signed":{},"extra":1})"), "timestamp: unknown field 'extra'");
  EXPECT_EQ(err(R"({"signatures":[],"signed":{"_type":"timestamp"}})"),
            "timestamp.signed: missing required field 'spec_version'");
  EXPECT_TRUE(err("{").starts_with("timestamp: invalid JSON"));
  // Duplicate keys are refused by the JSON reader (parsers disagree on which one wins).
  EXPECT_EQ(err(R"({"signatures":[],"signatures":[]})"),
            "timestamp: invalid JSON: duplicate key 'signatures'");
}

TEST_F(TufMalformed, Limits) {
  MetadataLimits limits;
  limits.max_bytes = 100;
  auto m = ParseRoot(repo.writer.files().at("1.root.json"), limits);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code(), ErrorCode::kLimitExceeded);
  limits = {};
  limits.max_signatures = 0;
  m = ParseRoot(repo.writer.files().at("1.root.json"), limits);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().message(), "root.signatures: 1 signatures exceed the limit of 0");
  limits = {};
  limits.max_custom_bytes = 4;
  Json s = Signed("1.targets.json");
  s["targets"]["a"] = {{"length", 1},
                       {"hashes", {{"sha256", std::string(64, 'a')}}},
                       {"custom", {{"k", "long value"}}}};
  auto t = ParseTargets(Resign(s, {repo.targets}), limits);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().message(),
            "targets.signed.targets['a'].custom: 18 bytes exceed the limit of 4");
}

TEST(TufPaths, Layout) {
  crypto::Sha256Digest d{};
  d[0] = 0xab;
  EXPECT_EQ(RootPath(3), "3.root.json");
  EXPECT_EQ(MetadataPath(Role::kTimestamp, 9, true), "timestamp.json");
  EXPECT_EQ(MetadataPath(Role::kSnapshot, 9, true), "9.snapshot.json");
  EXPECT_EQ(MetadataPath(Role::kTargets, 9, false), "targets.json");
  EXPECT_EQ(TargetPath("app.img", d, true), "targets/ab" + std::string(62, '0') + ".app.img");
  EXPECT_EQ(TargetPath("app.img", d, false), "targets/app.img");
}

}  // namespace
}  // namespace moat::formats::tuf
