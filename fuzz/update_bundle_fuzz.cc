// Fuzzes the offline update bundle container (`moatctl update apply BUNDLE` reads it from a file
// an operator carried to the device). Any input must be rejected cleanly or accepted, and every
// accepted bundle must survive a write and a second read unchanged (entries may come in any
// order; the writer sorts them), so what the device verifies is what the bundle held.
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>

#include "formats/update_bundle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bundle = moat::formats::ParseUpdateBundle(std::span<const uint8_t>(data, size));
  if (!bundle) return 0;
  std::map<std::string, std::string> files;
  for (const auto& [path, bytes] : bundle->files) {
    if (!moat::formats::ValidateBundlePath(path)) __builtin_trap();
    files.emplace(path, std::string(bytes));
  }
  auto again = moat::formats::SerializeUpdateBundle(bundle->group_id, files);
  if (!again) __builtin_trap();
  auto reread = moat::formats::ParseUpdateBundle(*again);
  if (!reread || reread->group_id != bundle->group_id ||
      reread->files.size() != bundle->files.size()) {
    __builtin_trap();
  }
  for (const auto& [path, bytes] : reread->files) {
    if (files.at(path) != bytes) __builtin_trap();
  }
  return 0;
}
