// Test helpers for the update agent's tests: signed app packages and a device group's TUF
// repository published the way the service publishes it (docs/formats/tuf.md; target names
// "<image-id>.imagepackage" with the contract's custom fields, plus image-signing-keys.json).
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/encoding.h"
#include "core/json.h"
#include "crypto/digest.h"
#include "crypto/key.h"
#include "device/update/update_agent.h"
#include "formats/image_package.h"
#include "formats/tuf.h"
#include "formats/update_bundle.h"

namespace moat::device::update::testing {

inline const formats::Guid kComponent =
    *formats::Guid::Parse("a60a27ff-8936-4a49-b73f-70861db03d43");

inline std::string Manifest(const formats::Guid& component, bool deferral = false) {
  return fmt::format(
      R"({{"SchemaVersion":1,"Name":"blink","ComponentId":"{}","EntryPoint":"/bin/app",)"
      R"("CmdArgs":[],"Capabilities":{{{}}},"ApplicationType":"Default"}})",
      component.ToString(), deferral ? R"("SoftwareUpdateDeferral":true)" : "");
}

// The content of bin/app in version `version`: tests check it to see which version is installed.
inline std::string AppContent(std::string_view version) {
  return fmt::format("app binary version {}", version);
}

inline std::string Package(const crypto::PrivateKey& key, std::string_view version,
                           const formats::Guid& component = kComponent, bool deferral = false,
                           size_t extra_bytes = 0) {
  formats::ImagePackageHeader h;
  h.component_id = component;
  h.image_id = *formats::Guid::Parse("db81a79a-7ec4-435d-9cac-b2bfe2f2e38b");
  h.version = std::string(version);
  h.name = "blink";
  h.created = *ParseRfc3339("2026-11-27T19:46:27Z");
  auto bytes = [](std::string_view s) { return std::vector<uint8_t>(s.begin(), s.end()); };
  std::vector<formats::FileTreeEntry> files = {
      {.kind = formats::FileTreeEntry::Kind::kDirectory, .path = "bin", .mode = 0755},
      {.kind = formats::FileTreeEntry::Kind::kFile,
       .path = "bin/app",
       .mode = 0755,
       .data = bytes(AppContent(version))},
      {.kind = formats::FileTreeEntry::Kind::kSymlink,
       .path = "bin/app.link",
       .mode = 0777,
       .link_target = "app"},
  };
  if (extra_bytes > 0) {
    std::vector<uint8_t> big(extra_bytes);
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
    files.push_back({.kind = formats::FileTreeEntry::Kind::kFile,
                     .path = "data.bin",
                     .mode = 0644,
                     .data = std::move(big)});
  }
  auto p = formats::BuildImagePackage(h, Manifest(component, deferral), files, key, 1);
  EXPECT_TRUE(p) << p.error().message();
  return p ? std::string(p->begin(), p->end()) : std::string();
}

inline std::string ImageIdOf(std::string_view package) {
  return HexEncode(crypto::Sha256(package));
}

// One device group's repository, as served at /device/v1/repo/<group>/.
struct TestRepo {
  static crypto::PrivateKey Key(crypto::KeyType t = crypto::KeyType::kEd25519) {
    return *crypto::PrivateKey::Generate(t);
  }
  explicit TestRepo(const Clock& clock) : clock_(clock) {
    auto w = formats::tuf::RepositoryWriter::Create({{root_key}}, {{timestamp_key}},
                                                    {{snapshot_key}}, {{targets_key}}, clock.Now());
    EXPECT_TRUE(w) << w.error().message();
    writer.emplace(std::move(*w));
    Serve();
  }

  // Publishes these packages (plus image-signing-keys.json naming `signing_keys`).
  void Publish(const std::vector<std::string>& packages,
               const std::vector<crypto::PublicKey>& signing_keys) {
    std::map<std::string, formats::tuf::TargetFile> targets;
    Json keys = Json::array();
    for (size_t i = 0; i < signing_keys.size(); ++i) {
      keys.push_back({{"id", fmt::format("key-{}", i)},
                      {"name", "test key"},
                      {"public_key_pem", signing_keys[i].ToPem()}});
    }
    std::string key_file = DumpJson(Json{{"keys", keys}});
    targets["image-signing-keys.json"] = formats::tuf::DescribeTarget(key_file);
    AddTarget("image-signing-keys.json", key_file);
    for (const auto& p : packages) {
      auto info = formats::InspectUnverifiedImagePackage(
          std::span(reinterpret_cast<const uint8_t*>(p.data()), p.size()));
      EXPECT_TRUE(info);
      std::string name = ImageIdOf(p) + ".imagepackage";
      targets[name] = formats::tuf::DescribeTarget(
          p, Json{{"component_id", info->header.component_id.ToString()},
                  {"image_type", "Application"},
                  {"version", info->header.version},
                  {"package_image_id", info->header.image_id.ToString()},
                  {"name", info->header.name}});
      AddTarget(name, p);
    }
    auto r = writer->SetTargets(targets, clock_.Now());
    EXPECT_TRUE(r) << r.error().message();
    Serve();
  }
  void AddTarget(const std::string& name, const std::string& bytes) {
    target_files[formats::tuf::TargetPath(name, crypto::Sha256(bytes), true)] = bytes;
  }
  void Serve() {
    for (const auto& [path, bytes] : writer->files()) files[path] = bytes;
    for (const auto& [path, bytes] : target_files) files[path] = bytes;
  }
  // Every file the repository has published, as a bundle.
  std::string Bundle(std::string_view group) const {
    std::map<std::string, std::string> all = files;
    for (const auto& [path, bytes] : writer->files()) all[path] = bytes;
    for (const auto& [path, bytes] : target_files) all[path] = bytes;
    auto b = formats::SerializeUpdateBundle(group, all);
    EXPECT_TRUE(b) << b.error().message();
    return b ? std::string(b->begin(), b->end()) : std::string();
  }

  const Clock& clock_;
  crypto::PrivateKey root_key = Key(crypto::KeyType::kEcdsaP256);
  crypto::PrivateKey timestamp_key = Key();
  crypto::PrivateKey snapshot_key = Key();
  crypto::PrivateKey targets_key = Key();
  std::optional<formats::tuf::RepositoryWriter> writer;
  std::map<std::string, std::string> target_files;
  std::map<std::string, std::string> files;  // what the server serves
};

// The service, for the agent: serves repositories by group and records status reports.
class FakeTransport final : public UpdateTransport {
 public:
  Result<std::optional<std::string>> DeviceGroup() override {
    if (offline) return Fail(ErrorCode::kUnavailable, "service unreachable");
    return group;
  }
  Result<std::string> Fetch(std::string_view g, std::string_view path, size_t max_bytes) override {
    if (offline) return Fail(ErrorCode::kUnavailable, "service unreachable");
    fetched.push_back(fmt::format("{}/{}", g, path));
    auto repo = repos.find(std::string(g));
    if (repo == repos.end()) return Fail(ErrorCode::kPermissionDenied, "403 forbidden");
    auto it = repo->second->files.find(std::string(path));
    if (it == repo->second->files.end()) return Fail(ErrorCode::kNotFound, "{}: 404", path);
    if (it->second.size() > max_bytes) {
      return Fail(ErrorCode::kLimitExceeded, "{}: more than {} bytes", path, max_bytes);
    }
    return it->second;
  }
  Result<void> PostStatus(std::string_view body) override {
    if (offline) return Fail(ErrorCode::kUnavailable, "service unreachable");
    statuses.push_back(*ParseJson(body, "status"));
    return Ok();
  }

  std::optional<std::string> group;
  std::map<std::string, TestRepo*> repos;
  std::vector<std::string> fetched;
  std::vector<Json> statuses;
  bool offline = false;
};

}  // namespace moat::device::update::testing
