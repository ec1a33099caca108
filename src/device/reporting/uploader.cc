#include "device/reporting/uploader.h"

#include <algorithm>
#include <utility>

namespace moat::device::reporting {

using std::chrono::milliseconds;

Uploader::Uploader(FailureQueue& queue, SendFn send, const Clock& clock, Random& random,
                   UploaderOptions options)
    : queue_(queue),
      send_(std::move(send)),
      clock_(clock),
      random_(random),
      options_(options),
      next_attempt_(clock.Monotonic()) {
  options_.initial_delay = std::max(options_.initial_delay, milliseconds(1));
  options_.max_delay = std::max(options_.max_delay, options_.initial_delay);
  options_.jitter = std::clamp(options_.jitter, 0.0, 1.0);
}

milliseconds Uploader::BaseDelay() const {
  // Doubling stops at the cap, so neither the count nor the delay can overflow.
  milliseconds delay = options_.initial_delay;
  for (uint32_t i = 1; i < failures_ && delay < options_.max_delay; ++i) delay *= 2;
  return std::min(delay, options_.max_delay);
}

void Uploader::OnFailure() {
  if (failures_ < UINT32_MAX) ++failures_;
  const milliseconds base = BaseDelay();
  const auto spread = static_cast<uint64_t>(static_cast<double>(base.count()) * options_.jitter);
  const milliseconds delay = base - milliseconds(random_.Uniform(spread + 1));
  next_attempt_ = clock_.Monotonic() + delay;
}

void Uploader::OnSuccess() {
  failures_ = 0;
  next_attempt_ = clock_.Monotonic();
}

Result<size_t> Uploader::UploadOnce() {
  Result<Batch> batch = queue_.NextBatch(options_.max_batch_events, options_.max_batch_bytes);
  if (!batch) {
    OnFailure();
    return Fail(batch.error().WithContext("failure upload: reading the queue"));
  }
  // Nothing to send says nothing about the service: the schedule stays as it is.
  if (batch->events.empty()) return size_t{0};
  if (auto r = send_(batch->events); !r) {
    OnFailure();
    return Fail(r.error().WithContext("failure upload: sending"));
  }
  // Sent but not acknowledged locally: the events are sent again later under the same
  // event_ids, which the service ignores, so backing off is all there is to do.
  if (auto r = queue_.Acknowledge(batch->token); !r) {
    OnFailure();
    return Fail(r.error().WithContext("failure upload: acknowledging"));
  }
  OnSuccess();
  return batch->events.size();
}

}  // namespace moat::device::reporting
