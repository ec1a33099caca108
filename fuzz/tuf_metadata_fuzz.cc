// Fuzzes the TUF metadata parsers (root, timestamp, snapshot, targets) on the same input. Any
// input must be rejected cleanly or accepted, and for every accepted file the parsed struct
// must serialise back to exactly the canonical JSON its signatures cover: nothing is dropped,
// defaulted or spelt differently between what is verified and what is used.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "formats/tuf.h"

namespace {

namespace tuf = moat::formats::tuf;

template <typename T>
void CheckRoundTrip(const moat::Result<tuf::Metadata<T>>& m) {
  if (!m) return;
  auto again = tuf::CanonicalJson(tuf::ToJson(m->signed_));
  if (!again || *again != m->envelope.canonical_signed) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto root = tuf::ParseRoot(text);
  CheckRoundTrip(root);
  if (root) {
    // Exercise threshold verification on whatever signatures came along.
    for (tuf::Role role :
         {tuf::Role::kRoot, tuf::Role::kTimestamp, tuf::Role::kSnapshot, tuf::Role::kTargets}) {
      (void)tuf::VerifyRole(root->envelope, root->signed_, role, "fuzz");
    }
  }
  CheckRoundTrip(tuf::ParseTimestamp(text));
  CheckRoundTrip(tuf::ParseSnapshot(text));
  CheckRoundTrip(tuf::ParseTargets(text));
  return 0;
}
