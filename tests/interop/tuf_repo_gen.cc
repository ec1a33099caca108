// Writes a TUF repository produced by Moat's RepositoryWriter to a directory, for clients that
// are not Moat's (tuf_js_test.sh runs tuf-js against it). Layout under OUT:
//   repo/                 what a static web server serves: N.root.json, timestamp.json,
//                         N.snapshot.json, N.targets.json, targets/<sha256>.<name>
//   trusted/root.json     root version 1, the client's provisioned trust anchor
//   expected/<name>       each target's content, to compare downloads with
// The repository goes through a root rotation (1 -> 2, to a threshold-2 root of an Ed25519 and
// a P-256 key) so that a client must follow rotation and verify both key types.
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "core/clock.h"
#include "core/file.h"
#include "formats/tuf.h"

namespace {

using moat::Result;
using moat::crypto::KeyType;
using moat::crypto::PrivateKey;
namespace tuf = moat::formats::tuf;

Result<void> Write(const std::filesystem::path& path, std::string_view bytes) {
  MOAT_TRY(moat::MakeDirectories(path.parent_path()));
  return moat::AtomicWriteFile(path, bytes);
}

Result<void> Generate(const std::filesystem::path& out) {
  auto key = [](KeyType type) { return PrivateKey::Generate(type); };
  MOAT_ASSIGN_OR_RETURN(auto root1, key(KeyType::kEcdsaP256));
  MOAT_ASSIGN_OR_RETURN(auto root2a, key(KeyType::kEd25519));
  MOAT_ASSIGN_OR_RETURN(auto root2b, key(KeyType::kEcdsaP256));
  MOAT_ASSIGN_OR_RETURN(auto timestamp, key(KeyType::kEd25519));
  MOAT_ASSIGN_OR_RETURN(auto snapshot, key(KeyType::kEd25519));
  MOAT_ASSIGN_OR_RETURN(auto targets, key(KeyType::kEcdsaP256));
  moat::SystemClock clock;

  MOAT_ASSIGN_OR_RETURN(auto writer,
                        tuf::RepositoryWriter::Create({{root1}}, {{timestamp}}, {{snapshot}},
                                                      {{targets}}, clock.Now()));
  MOAT_TRY(Write(out / "trusted" / "root.json", writer.files().at("1.root.json")));
  MOAT_TRY(writer.RotateKeys(tuf::Role::kRoot, {{root2a, root2b}, 2}, clock.Now()));

  const std::map<std::string, std::string> contents = {
      {"app.img", "Moat app image\n"},
      {"os-1.2.3.img", std::string(100000, 'x')},
      {"tampered.img", "original content\n"},
  };
  std::map<std::string, tuf::TargetFile> files;
  for (const auto& [name, bytes] : contents) {
    // The custom object carries what canonical JSON implementations get wrong: escapes, raw
    // control characters, non-ASCII keys and values (sorting by UTF-8 bytes), large integers.
    moat::Json custom = {{"moat", {{"name", name}}},
                         {"note", "quote \" backslash \\ newline \n tab \t caf\u00e9 \U0001F600"},
                         {"\u00e9t\u00e9", 1},
                         {"Zeta", -9007199254740991},
                         {"alpha", {true, false, nullptr, 0}}};
    files[name] = tuf::DescribeTarget(bytes, std::move(custom));
    MOAT_TRY(Write(out / "repo" / tuf::TargetPath(name, files[name].sha256, true), bytes));
    MOAT_TRY(Write(out / "expected" / name, bytes));
  }
  MOAT_TRY(writer.SetTargets(files, clock.Now()));
  for (const auto& [path, bytes] : writer.files()) MOAT_TRY(Write(out / "repo" / path, bytes));
  return moat::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  auto r = Generate(argv[1]);
  if (!r) {
    std::fprintf(stderr, "tuf_repo_gen: %s\n", r.error().message().c_str());
    return 1;
  }
  return 0;
}
