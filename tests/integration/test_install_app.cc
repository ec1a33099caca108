// Installs an app into a moatd state directory the way the update agent does (AppStore::Install
// of a signed image package), for the shell tests: moatd then runs it at start. The image holds
// one static binary as /bin/test_app.
//
//   moat-test-install-app STATE_DIR BINARY NAME COMPONENT_ID VERSION CAPABILITIES_JSON [ARG...]
//
// CAPABILITIES_JSON is the manifest's "Capabilities" object; ARGs are its CmdArgs.
#include <algorithm>
#include <array>
#include <cstdio>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/file.h"
#include "core/json.h"
#include "crypto/key.h"
#include "crypto/random.h"
#include "device/update/app_store.h"
#include "formats/image_package.h"

using namespace moat;

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(
        stderr, "usage: %s STATE_DIR BINARY NAME COMPONENT_ID VERSION CAPABILITIES_JSON [ARG...]\n",
        argv[0]);
    return 2;
  }
  const std::filesystem::path state = argv[1];
  auto component = formats::Guid::Parse(argv[4]);
  auto binary = ReadFileBytes(argv[2], 64 << 20);
  auto capabilities = ParseJson(argv[6], "CAPABILITIES_JSON");
  if (!component || !binary || !capabilities || !capabilities->is_object()) {
    std::fprintf(stderr, "bad COMPONENT_ID, BINARY or CAPABILITIES_JSON\n");
    return 2;
  }
  Json args = Json::array();
  for (int i = 7; i < argc; ++i) args.push_back(argv[i]);
  Json manifest = {{"SchemaVersion", 1},
                   {"Name", argv[3]},
                   {"ComponentId", argv[4]},
                   {"EntryPoint", "/bin/test_app"},
                   {"CmdArgs", args},
                   {"Capabilities", *capabilities},
                   {"ApplicationType", "Default"}};
  formats::ImagePackageHeader h;
  h.component_id = *component;
  std::array<uint8_t, 16> id{};
  const std::vector<uint8_t> random = crypto::RandomBytes(id.size());
  std::copy(random.begin(), random.end(), id.begin());
  id[6] = static_cast<uint8_t>((id[6] & 0x0f) | 0x40);  // a version 4 UUID
  id[8] = static_cast<uint8_t>((id[8] & 0x3f) | 0x80);
  h.image_id = formats::Guid::FromBytes(id);
  h.version = argv[5];
  h.name = argv[3];
  h.created = SystemClock().Now();
  std::vector<formats::FileTreeEntry> files = {
      {.kind = formats::FileTreeEntry::Kind::kDirectory, .path = "bin", .mode = 0755},
      {.kind = formats::FileTreeEntry::Kind::kFile,
       .path = "bin/test_app",
       .mode = 0755,
       .data = *binary},
  };
  auto key = crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  if (!key) return 1;
  auto package = formats::BuildImagePackage(h, DumpJson(manifest), files, *key, 1);
  if (!package) {
    std::fprintf(stderr, "%s\n", package.error().message().c_str());
    return 1;
  }
  SystemClock clock;
  if (auto made = MakeDirectories(state / "apps", 0700); !made) {
    std::fprintf(stderr, "%s\n", made.error().message().c_str());
    return 1;
  }
  auto store = device::update::AppStore::Open(state / "apps", clock);
  if (!store) {
    std::fprintf(stderr, "%s\n", store.error().message().c_str());
    return 1;
  }
  const crypto::PublicKey pub = key->public_key();
  auto app = store->Install(*package, std::span(&pub, 1), {.component_id = *component});
  if (!app) {
    std::fprintf(stderr, "%s\n", app.error().message().c_str());
    return 1;
  }
  std::printf("installed %s %s (%s)\n", argv[3], argv[5], argv[4]);
  return 0;
}
