#include "device/supervisor/restart_policy.h"

#include <algorithm>

namespace moat::device::supervisor {

Result<void> RestartPolicy::Validate() const {
  if (base_delay.count() <= 0 || max_delay < base_delay) {
    return Fail(ErrorCode::kInvalidArgument,
                "restart policy: need 0 < base_delay ({} ms) <= max_delay ({} ms)",
                base_delay.count(), max_delay.count());
  }
  if (crash_loop_crashes == 0 || crash_loop_window.count() <= 0 || stable_after.count() <= 0) {
    return Fail(ErrorCode::kInvalidArgument,
                "restart policy: crash_loop_crashes, crash_loop_window and stable_after must be "
                "positive");
  }
  return Ok();
}

void RestartTracker::OnStarted(TimePoint now) { started_ = now; }

RestartTracker::Decision RestartTracker::OnEnded(TimePoint now, bool failure) {
  Decision d;
  // A launch failure has no start; a stable run forgives the earlier restarts.
  if (started_ && now - *started_ >= policy_.stable_after) consecutive_ = 0;
  started_.reset();

  // base * 2^consecutive, capped; the shift is bounded so it cannot overflow.
  auto delay = policy_.base_delay;
  for (uint32_t i = 0; i < consecutive_ && delay < policy_.max_delay; ++i) delay *= 2;
  d.delay = std::min(delay, policy_.max_delay);
  ++consecutive_;

  if (failure) {
    while (!failures_.empty() && now - failures_.front() >= policy_.crash_loop_window) {
      failures_.pop_front();
    }
    failures_.push_back(now);
    if (failures_.size() >= policy_.crash_loop_crashes) {
      d.crash_loop = true;
      failures_.clear();
    }
  }
  return d;
}

}  // namespace moat::device::supervisor
