// When moatd attests next: at about `renew_at` of its certificate's lifetime, spread by
// +-`jitter` of the lifetime so a fleet that booted together does not renew together; after a
// failure (offline, service busy), exponential backoff from retry_initial to retry_max, each
// delay drawn from [delay/2, delay] ("equal jitter"). Pure: the caller owns the clock.
#pragma once

#include "core/clock.h"
#include "core/random.h"
#include "device/agent/config.h"

namespace moat::device::agent {

class AttestationScheduler {
 public:
  AttestationScheduler(const AttestationSchedule& schedule, Random& random)
      : schedule_(schedule), random_(random) {}

  // After an attestation that yielded a certificate valid over [not_before, not_after).
  // Never earlier than `now` + 1 s, never later than not_after - retry_initial.
  SystemTime AfterSuccess(SystemTime now, SystemTime not_before, SystemTime not_after);
  // After a failed attempt; the Nth consecutive failure waits about initial * 2^(N-1).
  SystemTime AfterFailure(SystemTime now);

  int consecutive_failures() const { return failures_; }

 private:
  AttestationSchedule schedule_;
  Random& random_;
  int failures_ = 0;
};

}  // namespace moat::device::agent
