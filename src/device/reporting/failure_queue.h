// The device's persistent, bounded queue of failure events awaiting upload.
// Design, on-disk layout and crash guarantees: docs/failure-queue.md.
//
// Contract:
// - Push() returns only after the event is durable (file fsync'ed, renamed, directory
//   fsync'ed). A crash or power cut during Push leaves the queue as it was or with the event;
//   it never leaves a record that stops the queue from opening.
// - Open() never refuses to start over leftovers: temporary files of interrupted writes are
//   removed and unreadable records discarded (each with a logged warning, counted in
//   recovery()); a discarded event record is counted as a dropped event. Open fails only when
//   the directory itself is unusable (cannot be created, is not ours, is locked by another
//   process).
// - Bounded by FailureQueueOptions::max_events and ::max_bytes (the JSON size of the queued
//   events). When a Push would exceed a bound the OLDEST events are deleted and counted in one
//   "events_dropped" event (FailureKind::kEventsDropped), which is persisted, survives
//   restarts and is uploaded ahead of the other events.
// - NextBatch() hands out the oldest events with their event_id (the service's idempotency
//   key, so re-sending a batch whose response was lost is harmless); Acknowledge() deletes
//   exactly those events. Until then they stay queued, also across restarts.
// - Optional coalescing: an event identical to a queued one (see docs) is merged into it
//   (count and last_time) instead of taking a new slot, but only into events this process
//   pushed and has not yet handed out in a batch, so the service never holds a stale count
//   under the same event_id.
//
// Threading: every method is thread-safe (one internal mutex); NextBatch and Acknowledge may
// be called from an uploader thread while crash handlers Push. One FailureQueue per directory
// per system: Open takes an exclusive flock(2) on the directory and holds it until destroyed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "core/random.h"
#include "core/unique_fd.h"
#include "formats/failure_event.h"

namespace moat::device::reporting {

struct FailureQueueOptions {
  size_t max_events = 1000;            // queued events, not counting the events_dropped record
  size_t max_bytes = size_t{4} << 20;  // JSON bytes of the queued events (4 MiB)
  bool coalesce = true;                // merge identical repeated failures (see the header comment)
};

// What Open() found and repaired.
struct QueueRecovery {
  size_t temp_files_removed = 0;         // leftovers of writes interrupted by a crash
  size_t corrupt_records_discarded = 0;  // unreadable or invalid records, deleted
  size_t unknown_entries = 0;            // names the queue does not use; left alone
};

struct QueueStats {
  size_t events = 0;     // queued events, not counting events_dropped records
  size_t bytes = 0;      // their JSON size
  uint64_t dropped = 0;  // dropped events not yet acknowledged by the service
};

// Names the events of one NextBatch(). Opaque; valid only for the queue that issued it.
class BatchToken {
 private:
  friend class FailureQueue;
  uint64_t queue_instance_ = 0;
  std::vector<uint64_t> sequences_;
  std::string dropped_event_id_;  // the events_dropped record in the batch, if any
};

struct Batch {
  std::vector<formats::FailureEvent> events;  // oldest first
  BatchToken token;
};

class FailureQueue {
 public:
  // Opens (creating with mode 0700 if needed) the queue in `dir`. `clock` and `random` must
  // outlive the queue; they time-stamp and name the events_dropped record and name events
  // pushed without an event_id.
  static Result<std::unique_ptr<FailureQueue>> Open(const std::filesystem::path& dir,
                                                    const Clock& clock, Random& random,
                                                    FailureQueueOptions options = {});

  FailureQueue(const FailureQueue&) = delete;
  FailureQueue& operator=(const FailureQueue&) = delete;

  // Persists `event` and returns its event_id (a new UUID if it had none; the id of the queued
  // event it was merged into if it was coalesced). Fails with kInvalidArgument for an event
  // that would not parse back (formats/failure_event.h rules) or of kind kEventsDropped (the
  // queue makes those itself), kLimitExceeded if the event alone exceeds max_bytes, kIo if it
  // cannot be written. Times are stored with one-second precision.
  Result<std::string> Push(formats::FailureEvent event);

  // The oldest queued events, the events_dropped record first if there is one, at most
  // `max_events` (capped at formats::kMaxEventBatchEvents) whose batch JSON
  // (SerializeFailureEventBatch) is at most `max_bytes` (capped at kMaxEventBatchJsonBytes) —
  // except that the first event is always included, so a single large event cannot jam the
  // queue. Empty when nothing is queued or max_events is 0. Calling it again without
  // Acknowledge returns the same events again (plus newer ones if room allows).
  Result<Batch> NextBatch(size_t max_events, size_t max_bytes);

  // Deletes exactly the events of `token` (events pushed or dropped since stay as they are).
  // Safe to call twice. kInvalidArgument if the token is from another queue instance.
  Result<void> Acknowledge(const BatchToken& token);

  QueueStats Stats() const;
  const QueueRecovery& recovery() const { return recovery_; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  // What makes two failures "the same" for coalescing.
  struct CoalesceKey {
    formats::FailureKind kind;
    formats::EventType type;
    formats::EventClass event_class;
    formats::Guid component_id, image_id;
    int signal, exit_status, error_number;
    std::string stack_signature;
    bool operator==(const CoalesceKey&) const = default;
  };
  struct Entry {
    size_t bytes = 0;
    // Set only while the event may still be merged into (see the header comment).
    std::optional<CoalesceKey> coalesce_key;
  };

  FailureQueue(std::filesystem::path dir, UniqueFd dir_lock, const Clock& clock, Random& random,
               FailureQueueOptions options, uint64_t instance);

  Result<void> Recover();
  std::filesystem::path EventPath(uint64_t sequence) const;
  static CoalesceKey KeyOf(const formats::FailureEvent& event);
  Result<std::optional<std::string>> TryCoalesceLocked(const CoalesceKey& key,
                                                       const formats::FailureEvent& event);
  Result<void> RecordDroppedLocked(uint64_t count);
  Result<void> EnforceBoundsLocked();
  Result<void> RemoveEventLocked(uint64_t sequence);

  const std::filesystem::path dir_;
  const UniqueFd dir_lock_;
  const Clock& clock_;
  const FailureQueueOptions options_;
  const uint64_t instance_;
  QueueRecovery recovery_;

  mutable std::mutex mu_;
  Random& random_;                    // guarded by mu_ (Random is not thread-safe)
  std::map<uint64_t, Entry> events_;  // by sequence number: oldest first
  size_t bytes_ = 0;
  uint64_t next_sequence_ = 1;
  // events_dropped records: `open_dropped_` counts new drops; `sealed_dropped_` is the one
  // handed out for upload, frozen so that a re-sent batch never carries a different count
  // under the same event_id.
  std::optional<formats::FailureEvent> open_dropped_;
  std::optional<formats::FailureEvent> sealed_dropped_;
};

}  // namespace moat::device::reporting
