// The issue-5 update bench (bench/README.md, "moat-update-bench"):
//   check    the cost of an update check when nothing changed: UpdateAgent::Check() against an
//            in-memory repository (TUF refresh with an unchanged timestamp, compare, state save,
//            status report body) — CPU and disk, no network.
//   install  AppStore::Install of a 64 MiB app image (read the file, verify the signature,
//            decompress, write and fsync the tree, switch) beside `sha256sum` of the same file.
//   --write-bundle PATH  also writes the repository as an offline bundle, for manual tests.
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>

#include "core/encoding.h"
#include "core/file.h"
#include "core/log.h"
#include "crypto/digest.h"
#include "crypto/random.h"
#include "device/update/update_agent.h"
#include "formats/tuf.h"
#include "formats/update_bundle.h"

namespace {

using namespace moat;
using namespace moat::device::update;
namespace tuf = formats::tuf;
using Clock_ = std::chrono::steady_clock;

const formats::Guid kComponent = *formats::Guid::Parse("a60a27ff-8936-4a49-b73f-70861db03d43");

std::string Package(const crypto::PrivateKey& key, std::string_view version, size_t data_bytes) {
  formats::ImagePackageHeader h;
  h.component_id = kComponent;
  h.image_id = *formats::Guid::Parse("db81a79a-7ec4-435d-9cac-b2bfe2f2e38b");
  h.version = std::string(version);
  h.name = "bench";
  h.created = *ParseRfc3339("2026-11-27T19:46:27Z");
  std::vector<uint8_t> data(data_bytes);
  crypto::OpenSslRandom().Fill(data);  // incompressible: the worst case for the payload
  std::vector<formats::FileTreeEntry> files = {
      {.kind = formats::FileTreeEntry::Kind::kDirectory, .path = "bin", .mode = 0755},
      {.kind = formats::FileTreeEntry::Kind::kFile,
       .path = "bin/app",
       .mode = 0755,
       .data = std::vector<uint8_t>{'x'}},
      {.kind = formats::FileTreeEntry::Kind::kFile,
       .path = "data.bin",
       .mode = 0644,
       .data = std::move(data)},
  };
  std::string manifest = fmt::format(
      R"({{"SchemaVersion":1,"Name":"bench","ComponentId":"{}","EntryPoint":"/bin/app",)"
      R"("CmdArgs":[],"Capabilities":{{}},"ApplicationType":"Default"}})",
      kComponent.ToString());
  auto p = formats::BuildImagePackage(h, manifest, files, key, 1);
  if (!p) {
    std::cerr << p.error().message() << "\n";
    std::exit(1);
  }
  return std::string(p->begin(), p->end());
}

struct Repo final : UpdateTransport {
  std::map<std::string, std::string> files;
  Result<std::optional<std::string>> DeviceGroup() override {
    return std::optional<std::string>("bench");
  }
  Result<std::string> Fetch(std::string_view, std::string_view path, size_t max) override {
    auto it = files.find(std::string(path));
    if (it == files.end()) return Fail(ErrorCode::kNotFound, "{}: 404", path);
    if (it->second.size() > max) return Fail(ErrorCode::kLimitExceeded, "too large");
    return it->second;
  }
  Result<void> PostStatus(std::string_view) override { return Ok(); }
};

double Secs(Clock_::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moat-update-bench: update check and install costs (issue 5)"};
  int checks = 200;
  size_t mib = 64;
  std::string bundle_out, dir_arg;
  app.add_option("--checks", checks, "Unchanged checks to time")->capture_default_str();
  app.add_option("--image-mib", mib, "Size of the image's data file")->capture_default_str();
  app.add_option("--dir", dir_arg, "Work directory (default: a temporary one under $TMPDIR)");
  app.add_option("--write-bundle", bundle_out, "Also write the repository as an offline bundle");
  CLI11_PARSE(app, argc, argv);
  log::Init("bench", log::Level::kWarn);

  auto tmp = TempDir::Create("update-bench");
  if (!tmp) return 1;
  const std::filesystem::path dir = dir_arg.empty() ? tmp->path() : std::filesystem::path(dir_arg);
  SystemClock clock;
  auto signer = *crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
  auto k = [] { return *crypto::PrivateKey::Generate(crypto::KeyType::kEd25519); };
  auto writer =
      *tuf::RepositoryWriter::Create({{*crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256)}},
                                     {{k()}}, {{k()}}, {{k()}}, clock.Now());
  Repo repo;
  std::cout << "building a " << mib << " MiB image package...\n";
  const std::string package = Package(signer, "1.0", mib << 20);
  const std::string keys = DumpJson(Json{
      {"keys", Json::array({Json{{"id", "k"}, {"public_key_pem", signer.public_key().ToPem()}}})}});
  const std::string name = HexEncode(crypto::Sha256(package)) + ".imagepackage";
  std::map<std::string, tuf::TargetFile> targets = {
      {"image-signing-keys.json", tuf::DescribeTarget(keys)},
      {name, tuf::DescribeTarget(package, Json{{"component_id", kComponent.ToString()},
                                               {"image_type", "Application"},
                                               {"version", "1.0"}})}};
  if (!writer.SetTargets(targets, clock.Now())) return 1;
  repo.files = writer.files();
  repo.files[tuf::TargetPath("image-signing-keys.json", crypto::Sha256(keys), true)] = keys;
  repo.files[tuf::TargetPath(name, crypto::Sha256(package), true)] = package;
  if (!bundle_out.empty()) {
    auto b = formats::SerializeUpdateBundle("bench", repo.files);
    if (!b || !AtomicWriteFile(bundle_out, *b)) return 1;
    std::cout << "bundle written to " << bundle_out << "\n";
  }

  // 1. Install time of the image from a file vs sha256sum of that file.
  const auto package_path = dir / "image.imagepackage";
  if (!AtomicWriteFile(package_path, package)) return 1;
  std::vector<crypto::PublicKey> trusted = {signer.public_key()};
  double install_s = 0;
  {
    auto store = AppStore::Open(dir / "install-apps", clock);
    if (!store) return 1;
    const auto t0 = Clock_::now();
    auto bytes = ReadFileBytes(package_path, size_t{1} << 30);
    if (!bytes) return 1;
    auto r = store->Install(*bytes, trusted, {.component_id = kComponent});
    install_s = Secs(Clock_::now() - t0);
    if (!r) {
      std::cerr << r.error().message() << "\n";
      return 1;
    }
  }
  const auto t1 = Clock_::now();
  const std::string cmd = fmt::format("sha256sum {} >/dev/null", package_path.string());
  if (std::system(cmd.c_str()) != 0) return 1;
  const double sha_s = Secs(Clock_::now() - t1);
  std::cout << fmt::format(
      "install {} MiB image (read + verify + unpack + fsync + switch): {:.3f} s\n"
      "sha256sum of the same file:                                 {:.3f} s\n"
      "ratio install / sha256sum:                                  {:.1f}x\n",
      package.size() >> 20, install_s, sha_s, install_s / sha_s);

  // 2. Unchanged checks.
  auto store = AppStore::Open(dir / "check-apps", clock);
  if (!store) return 1;
  auto agent = UpdateAgent::Open(dir / "check-state", *store, &repo, {}, clock, {});
  if (!agent) return 1;
  auto first = (*agent)->Check(false);
  if (first.result != "ok") {
    std::cerr << first.detail << "\n";
    return 1;
  }
  const auto t2 = Clock_::now();
  for (int i = 0; i < checks; ++i) {
    auto o = (*agent)->Check(false);
    if (o.result != "none") {
      std::cerr << o.result << ": " << o.detail << "\n";
      return 1;
    }
  }
  const double per_check = Secs(Clock_::now() - t2) / checks;
  std::cout << fmt::format(
      "unchanged update check (in-memory repository, no network): {:.3f} ms per check "
      "({} checks)\n",
      per_check * 1000, checks);
  return 0;
}
