// Uploads the failure queue in batches on a retry schedule: exponential backoff with jitter
// after failures, straight on after a success. Pure logic: `send` does the network I/O
// (moatd wires in the HTTPS client) and the caller decides when to sleep, using
// NextAttemptAt().
//
// Schedule: after the n-th consecutive failure the next attempt is due
//   base(n) = min(max_delay, initial_delay * 2^(n-1))
// minus a random share of up to `jitter` * base(n), i.e. somewhere in
// [(1 - jitter) * base(n), base(n)] after the failure, so that devices cut off by one outage
// spread their retries instead of returning together, and no delay exceeds max_delay. A success
// resets the schedule: the next attempt is due at once (more events may be waiting).
//
// Threading: not thread-safe; one uploader thread owns it. It holds no queue lock while
// `send` runs, so Push is never blocked by the network.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "core/clock.h"
#include "core/error.h"
#include "core/random.h"
#include "device/reporting/failure_queue.h"
#include "formats/failure_event.h"

namespace moat::device::reporting {

struct UploaderOptions {
  std::chrono::milliseconds initial_delay = std::chrono::seconds(30);
  std::chrono::milliseconds max_delay = std::chrono::hours(1);
  double jitter = 0.5;                         // 0..1: share of the delay taken off at random
  size_t max_batch_events = 100;               // per request
  size_t max_batch_bytes = size_t{256} << 10;  // per request body
};

// Sends one batch; returns an error if the service did not confirm it (then it is re-sent
// later, with the same event_ids).
using SendFn = std::function<Result<void>(std::span<const formats::FailureEvent>)>;

class Uploader {
 public:
  // `queue`, `clock` and `random` must outlive the uploader. Options out of range (negative
  // delays, max < initial, jitter outside 0..1) are clamped.
  Uploader(FailureQueue& queue, SendFn send, const Clock& clock, Random& random,
           UploaderOptions options = {});

  // When the next attempt is due, on clock.Monotonic(). Initially now.
  std::chrono::steady_clock::time_point NextAttemptAt() const { return next_attempt_; }
  bool Due() const { return clock_.Monotonic() >= next_attempt_; }

  // One attempt, due or not: takes the oldest batch, sends it and acknowledges it. Returns how
  // many events were uploaded (0, without calling `send` or changing the schedule, if the
  // queue is empty). Any failure
  // (reading the queue, sending, acknowledging) backs off and is returned.
  Result<size_t> UploadOnce();

  // The schedule, for callers that drive it themselves.
  void OnSuccess();
  void OnFailure();
  uint32_t consecutive_failures() const { return failures_; }

 private:
  std::chrono::milliseconds BaseDelay() const;

  FailureQueue& queue_;
  SendFn send_;
  const Clock& clock_;
  Random& random_;
  UploaderOptions options_;
  uint32_t failures_ = 0;
  std::chrono::steady_clock::time_point next_attempt_;
};

}  // namespace moat::device::reporting
