// Fuzzes the hardware definition reader and board loading.
//
// The input is split at NUL bytes (which JSON text cannot contain) into files: part 0 is the root,
// and an import of "<n>.json" loads part n, so one input can describe a whole board with imports,
// diamonds and cycles. Every constant of a loaded board is then resolved, and a manifest that
// requests all of them is resolved against it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "formats/app_manifest.h"
#include "formats/hardware_definition.h"

namespace moat::formats {
namespace {

std::vector<std::string_view> SplitAtNul(std::string_view text) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t end = text.find('\0', start);
    if (end == std::string_view::npos) {
      parts.push_back(text.substr(start));
      return parts;
    }
    parts.push_back(text.substr(start, end - start));
    start = end + 1;
  }
}

void Exercise(const Board& board) {
  AppManifest manifest;
  manifest.name = "fuzz";
  manifest.entry_point = "/bin/app";
  size_t requested = 0;
  for (const auto& [file, def] : board.files()) {
    for (const HardwarePeripheral& p : def.peripherals) {
      auto resolved = board.Resolve(p.name);
      if (resolved) {
        (void)board.LinuxDeviceFor(resolved->type, resolved->app_manifest_value);
      }
      for (PeripheralKind kind : kAllPeripheralKinds) {
        if (p.type == PeripheralKindName(kind) && requested < 256) {
          PeripheralList(manifest.capabilities, kind).push_back(PeripheralRef{"$" + p.name});
          ++requested;
        }
      }
    }
  }
  auto grants = ResolvePeripheralGrants(manifest, board);
  auto resolved = ResolvePeripherals(manifest, board);
  // Both take the same decisions.
  if (grants.has_value() != resolved.has_value()) __builtin_trap();
  if (resolved) {
    for (PeripheralKind kind : kAllPeripheralKinds) {
      for (const PeripheralRef& ref : PeripheralList(resolved->capabilities, kind)) {
        if (ref.IsConstant() || !CheckPeripheralRef(kind, ref)) __builtin_trap();
      }
    }
  }
}

void FuzzOne(std::string_view text) {
  std::vector<std::string_view> parts = SplitAtNul(text);

  auto def = ParseHardwareDefinition(parts[0], "0.json");

  // With a loader that always fails, only a definition without imports can load.
  auto no_imports = [](std::string_view path) -> Result<std::string> {
    return Fail(ErrorCode::kNotFound, "no file '{}' while fuzzing", path);
  };
  auto alone = Board::Load(parts[0], "0.json", no_imports);
  if (alone && (!def || !def->imports.empty())) __builtin_trap();
  if (alone) Exercise(*alone);

  auto from_parts = [&parts](std::string_view path) -> Result<std::string> {
    for (size_t i = 0; i < parts.size(); ++i) {
      if (path == std::to_string(i) + ".json") return std::string(parts[i]);
    }
    return Fail(ErrorCode::kNotFound, "no file '{}' while fuzzing", path);
  };
  auto board = Board::Load(parts[0], "0.json", from_parts);
  if (board && !def) __builtin_trap();
  if (board) Exercise(*board);
}

}  // namespace
}  // namespace moat::formats

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moat::formats::FuzzOne(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
