// Fuzzes the app manifest reader: any input must be rejected cleanly or accepted, and every
// accepted manifest must survive a ToJson round trip unchanged.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/json.h"
#include "formats/app_manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using moat::formats::ManifestLimits;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto manifest = moat::formats::ParseAppManifest(text);
  if (!manifest) return 0;

  for (const std::string& entry : manifest->capabilities.allowed_connections) {
    (void)moat::formats::ClassifyAllowedConnection(entry);
  }

  // ToJson writes fields the input may have left out (CmdArgs, ApplicationType), so the
  // serialised form can be slightly longer than the input: allow for that when re-reading.
  std::string dumped = moat::DumpJson(moat::formats::ToJson(*manifest));
  ManifestLimits relaxed;
  relaxed.max_bytes = std::max(relaxed.max_bytes, dumped.size());
  auto again = moat::formats::ParseAppManifest(dumped, relaxed);
  if (!again || !(*again == *manifest)) __builtin_trap();
  if (moat::DumpJson(moat::formats::ToJson(*again)) != dumped) __builtin_trap();
  return 0;
}
