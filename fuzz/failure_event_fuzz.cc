// Fuzzes the failure event readers. Whatever parses must survive ToJson -> parse unchanged
// (a mismatch traps), and the description and stack signature must not crash on it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/json.h"
#include "formats/failure_event.h"

namespace {

using moat::formats::FailureEvent;

void CheckEvent(const FailureEvent& event) {
  std::string text = moat::DumpJson(moat::formats::ToJson(event));
  auto again = moat::formats::ParseFailureEvent(text);
  if (!again || !(*again == event)) __builtin_trap();
  (void)moat::formats::AzureSphereDescription(event);
  if (moat::formats::StackSignature(event).size() != 64) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  if (auto event = moat::formats::ParseFailureEvent(text)) CheckEvent(*event);

  if (auto batch = moat::formats::ParseFailureEventBatch(text)) {
    for (const FailureEvent& event : *batch) CheckEvent(event);
    std::string serialized = moat::formats::SerializeFailureEventBatch(*batch);
    // Re-serializing adds defaulted fields, so a batch just under the size limit may come back
    // just over it; the per-event checks above cover that case.
    if (serialized.size() <= moat::formats::kMaxEventBatchJsonBytes) {
      auto again = moat::formats::ParseFailureEventBatch(serialized);
      if (!again || *again != *batch) __builtin_trap();
    }
  }
  return 0;
}
