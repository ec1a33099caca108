// Test helpers shared by the supervisor's tests: the compat manifests (beside the repository, in
// shared/compat) and the test boards (tests/data/hardware).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/file.h"
#include "formats/app_manifest.h"
#include "formats/hardware_definition.h"

namespace moat::device::supervisor::testing {

inline const std::filesystem::path kHardwareDir =
    std::filesystem::path(MOAT_SOURCE_DIR) / "tests" / "data" / "hardware";
inline const std::filesystem::path kCompatDir =
    std::filesystem::path(MOAT_SOURCE_DIR) / ".." / "shared" / "compat" / "azure-sphere-manifests";

inline std::string ReadTestFile(const std::filesystem::path& path) {
  auto text = ReadFile(path, 1 << 20);
  EXPECT_TRUE(text) << text.error().message();
  return text ? *text : std::string();
}

inline formats::Board LoadBoard(std::string_view name) {
  auto loader = [](std::string_view import_path) -> Result<std::string> {
    return ReadFile(kHardwareDir / import_path, 1 << 20);
  };
  auto board = formats::Board::Load(ReadTestFile(kHardwareDir / name), name, loader);
  EXPECT_TRUE(board) << board.error().message();
  if (!board) std::abort();  // every caller needs the board
  return std::move(*board);
}

struct CompatManifest {
  std::string file;
  formats::AppManifest manifest;
};

// Every compat manifest, sorted by file name. Fails the test when the directory is missing: a
// compatibility check must never pass by finding nothing.
inline std::vector<CompatManifest> CompatManifests() {
  std::vector<CompatManifest> out;
  EXPECT_TRUE(std::filesystem::is_directory(kCompatDir)) << "missing compat data: " << kCompatDir;
  if (!std::filesystem::is_directory(kCompatDir)) return out;
  for (const auto& entry : std::filesystem::directory_iterator(kCompatDir)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".json") continue;
    auto m = formats::ParseAppManifest(ReadTestFile(entry.path()));
    EXPECT_TRUE(m) << entry.path() << ": " << m.error().message();
    if (m) out.push_back({entry.path().filename().string(), *m});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.file < b.file; });
  return out;
}

inline formats::AppManifest Compat(std::string_view short_name) {
  std::string file = fmt::format("{}_app_manifest.json", short_name);
  for (CompatManifest& c : CompatManifests()) {
    if (c.file == file) return std::move(c.manifest);
  }
  ADD_FAILURE() << "no compat manifest " << file;
  std::abort();
}

}  // namespace moat::device::supervisor::testing
