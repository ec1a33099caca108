// When to restart an app that ended, and when its crashes amount to a crash loop. Pure: the
// caller passes the times (from its injected Clock), so the policy is tested without processes
// or sleeping.
//
// Backoff: every end of an app (a crash or a clean exit: Azure Sphere restarts apps that exit,
// and so does Moat) is followed by a delay before the restart: base, 2*base, 4*base, ... capped
// at max_delay. A run that lasted at least stable_after resets the sequence, so an app that
// crashes once a day restarts after `base` every time.
//
// Crash loop: `crash_loop_crashes` failures (crashes, non-zero exits, memory-limit kills, launch
// failures; not clean exits) within `crash_loop_window` make a crash loop. It is reported once
// per that many failures: the failure history is cleared when it is reported, so the next report
// needs another full set.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>

#include "core/error.h"

namespace moat::device::supervisor {

struct RestartPolicy {
  std::chrono::milliseconds base_delay{1000};
  std::chrono::milliseconds max_delay{5 * 60 * 1000};
  std::chrono::milliseconds stable_after{60 * 1000};
  uint32_t crash_loop_crashes = 5;
  std::chrono::milliseconds crash_loop_window{10 * 60 * 1000};

  // kInvalidArgument unless 0 < base_delay <= max_delay, crash_loop_crashes >= 1 and the
  // windows are positive.
  Result<void> Validate() const;
};

// The restart state of one app. Thread-compatible.
class RestartTracker {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  explicit RestartTracker(const RestartPolicy& policy) : policy_(policy) {}

  // The app was started (launched successfully) at `now`.
  void OnStarted(TimePoint now);

  struct Decision {
    std::chrono::milliseconds delay{0};  // restart at `now + delay`
    bool crash_loop = false;             // this failure completed a crash loop
  };
  // The app ended at `now` (or failed to launch). `failure`: counts towards a crash loop.
  Decision OnEnded(TimePoint now, bool failure);

  // Restarts in a row without a stable run in between.
  uint32_t consecutive_restarts() const { return consecutive_; }

 private:
  RestartPolicy policy_;
  std::optional<TimePoint> started_;
  uint32_t consecutive_ = 0;
  std::deque<TimePoint> failures_;  // within the window, oldest first
};

}  // namespace moat::device::supervisor
