#include "device/agent/schedule.h"

#include <algorithm>

namespace moat::device::agent {

using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::seconds;

SystemTime AttestationScheduler::AfterSuccess(SystemTime now, SystemTime not_before,
                                              SystemTime not_after) {
  failures_ = 0;
  const auto lifetime = duration_cast<milliseconds>(not_after - not_before);
  if (lifetime <= milliseconds(0)) return now + schedule_.retry_initial;
  const auto base = milliseconds(static_cast<int64_t>(lifetime.count() * schedule_.renew_at));
  const auto spread = static_cast<int64_t>(lifetime.count() * schedule_.jitter);
  // Uniform in [-spread, +spread].
  const int64_t offset =
      spread > 0
          ? static_cast<int64_t>(random_.Uniform(static_cast<uint64_t>(2 * spread + 1))) - spread
          : 0;
  SystemTime at = not_before + base + milliseconds(offset);
  const SystemTime latest = not_after - schedule_.retry_initial;
  return std::clamp(at, now + seconds(1), std::max(latest, now + seconds(1)));
}

SystemTime AttestationScheduler::AfterFailure(SystemTime now) {
  ++failures_;
  auto delay = duration_cast<milliseconds>(schedule_.retry_initial);
  const auto cap = duration_cast<milliseconds>(schedule_.retry_max);
  for (int i = 1; i < failures_ && delay < cap; ++i) delay *= 2;
  delay = std::min(delay, cap);
  const int64_t half = delay.count() / 2;
  const int64_t drawn =
      half + static_cast<int64_t>(random_.Uniform(static_cast<uint64_t>(delay.count() - half + 1)));
  return now + milliseconds(drawn);
}

}  // namespace moat::device::agent
