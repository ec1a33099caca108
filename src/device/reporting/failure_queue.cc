#include "device/reporting/failure_queue.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <limits>
#include <string_view>
#include <system_error>

#include "core/file.h"
#include "core/json.h"
#include "core/log.h"

namespace moat::device::reporting {
namespace {

using formats::FailureEvent;
using formats::FailureKind;

// One file per event, named by a 20-digit zero-padded sequence number so that names sort like
// numbers. Each file is written whole by AtomicWriteFile, so a reader sees it complete or not
// at all; there is no record framing of our own to parse (ParseFailureEvent, already fuzzed,
// is the only parser of these bytes).
constexpr size_t kSequenceDigits = 20;
constexpr std::string_view kEventSuffix = ".json";
constexpr std::string_view kOpenDroppedName = "dropped.json";
constexpr std::string_view kSealedDroppedName = "dropped-sealed.json";
// AtomicWriteFile's temporary files are ".<target name>.tmp-<hex>".
constexpr std::string_view kTempMarker = ".tmp-";
// {"events":[ ... ]} around the comma-separated events.
constexpr size_t kBatchOverheadBytes = std::string_view(R"({"events":[]})").size();

// SECURITY: events carry addresses and stack layouts (useful to an attacker defeating ASLR),
// so the directory and files are readable by their owner (root) only.
constexpr mode_t kDirMode = 0700;
constexpr mode_t kFileMode = 0600;

std::optional<uint64_t> ParseEventFileName(std::string_view name) {
  if (name.size() != kSequenceDigits + kEventSuffix.size() || !name.ends_with(kEventSuffix)) {
    return std::nullopt;
  }
  std::string_view digits = name.substr(0, kSequenceDigits);
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return value;
}

SystemTime FloorToSeconds(SystemTime t) { return std::chrono::floor<Seconds>(t); }

uint32_t SaturatingAdd(uint32_t a, uint64_t b) {
  uint64_t sum = static_cast<uint64_t>(a) + b;
  return static_cast<uint32_t>(std::min<uint64_t>(sum, std::numeric_limits<uint32_t>::max()));
}

Result<void> Unlink(const std::filesystem::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Fail(ErrnoError("unlink", path, errno));
  }
  return Ok();
}

// Reads and validates one stored event.
Result<FailureEvent> ReadEventFile(const std::filesystem::path& path, size_t* bytes = nullptr) {
  MOAT_ASSIGN_OR_RETURN(std::string text, ReadFile(path, formats::kMaxEventJsonBytes));
  if (bytes != nullptr) *bytes = text.size();
  Result<FailureEvent> event = formats::ParseFailureEvent(text);
  if (!event) return Fail(event.error().WithContext(path.string()));
  return event;
}

// The directory must be a real directory owned by us: anyone else who could write into it
// could plant records or symlinks that root would then follow.
Result<UniqueFd> OpenAndLockDirectory(const std::filesystem::path& dir) {
  MOAT_TRY(MakeDirectories(dir, kDirMode));
  MOAT_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Fail(ErrnoError("fstat", dir, errno));
  if (st.st_uid != ::geteuid()) {
    return Fail(ErrorCode::kPermissionDenied,
                "failure queue {}: owned by uid {}, not by this process (uid {})", dir.string(),
                st.st_uid, ::geteuid());
  }
  if ((st.st_mode & 07777) != kDirMode) {
    log::Warn("failure queue {}: mode {:o} tightened to {:o}", dir.string(), st.st_mode & 07777,
              kDirMode);
    if (::fchmod(fd.get(), kDirMode) != 0) return Fail(ErrnoError("fchmod", dir, errno));
  }
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Fail(ErrorCode::kUnavailable, "failure queue {}: in use by another process",
                  dir.string());
    }
    return Fail(ErrnoError("flock", dir, errno));
  }
  return fd;
}

}  // namespace

FailureQueue::FailureQueue(std::filesystem::path dir, UniqueFd dir_lock, const Clock& clock,
                           Random& random, FailureQueueOptions options, uint64_t instance)
    : dir_(std::move(dir)),
      dir_lock_(std::move(dir_lock)),
      clock_(clock),
      options_(options),
      instance_(instance),
      random_(random) {}

Result<std::unique_ptr<FailureQueue>> FailureQueue::Open(const std::filesystem::path& dir,
                                                         const Clock& clock, Random& random,
                                                         FailureQueueOptions options) {
  if (options.max_events == 0 || options.max_bytes == 0) {
    return Fail(ErrorCode::kInvalidArgument,
                "failure queue {}: max_events ({}) and max_bytes ({}) must be positive",
                dir.string(), options.max_events, options.max_bytes);
  }
  MOAT_ASSIGN_OR_RETURN(UniqueFd lock, OpenAndLockDirectory(dir));
  std::unique_ptr<FailureQueue> queue(
      new FailureQueue(dir, std::move(lock), clock, random, options, random.NextU64() | 1));
  MOAT_TRY(queue->Recover());
  return queue;
}

std::filesystem::path FailureQueue::EventPath(uint64_t sequence) const {
  return dir_ / fmt::format("{:0{}}{}", sequence, kSequenceDigits, kEventSuffix);
}

// Startup never refuses over leftovers (a device that cannot report failures is worse than one
// that lost a few): each problem is repaired, logged and counted. Only errors about the
// directory itself (listing it) are returned.
Result<void> FailureQueue::Recover() {
  std::lock_guard lock(mu_);
  std::error_code ec;
  std::filesystem::directory_iterator it(dir_, ec);
  if (ec) return Fail(ErrorCode::kIo, "list {}: {}", dir_.string(), ec.message());

  bool removed_any = false;
  uint64_t lost_events = 0;
  auto discard = [&](const std::filesystem::path& path, const Error& why) {
    log::Warn("failure queue: discarding unreadable record {}: {}", path.string(), why);
    ++recovery_.corrupt_records_discarded;
    if (auto r = Unlink(path); !r) {
      log::Warn("failure queue: {}", r.error());
    } else {
      removed_any = true;
    }
  };

  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::filesystem::path path = it->path();
    const std::string name = path.filename().string();
    std::error_code type_ec;
    const bool regular = it->symlink_status(type_ec).type() == std::filesystem::file_type::regular;

    if (regular && name.starts_with('.') && name.find(kTempMarker) != std::string::npos) {
      log::Warn("failure queue: removing {} left by an interrupted write", path.string());
      ++recovery_.temp_files_removed;
      if (auto r = Unlink(path); !r) {
        log::Warn("failure queue: {}", r.error());
      } else {
        removed_any = true;
      }
      continue;
    }
    std::optional<uint64_t> sequence = ParseEventFileName(name);
    const bool dropped_record = name == kOpenDroppedName || name == kSealedDroppedName;
    if (!regular || (!sequence && !dropped_record)) {
      log::Warn("failure queue: ignoring unexpected entry {}", path.string());
      ++recovery_.unknown_entries;
      continue;
    }

    // Never reuse a number seen on disk, even one about to be discarded (its unlink may fail).
    if (sequence) next_sequence_ = std::max(next_sequence_, *sequence + 1);
    size_t bytes = 0;
    Result<FailureEvent> event = ReadEventFile(path, &bytes);
    if (event && (event->kind == FailureKind::kEventsDropped) != dropped_record) {
      event = Fail(ErrorCode::kInvalidArgument, "{}: kind {} does not belong in this file",
                   path.string(), formats::FailureKindName(event->kind));
    }
    if (!event) {
      discard(path, event.error());
      // A lost event record is a dropped event; a lost events_dropped record loses a count we
      // cannot know, which the warning above reports.
      if (sequence) ++lost_events;
      continue;
    }
    if (sequence) {
      events_.emplace(*sequence, Entry{.bytes = bytes});
      bytes_ += bytes;
    } else if (name == kOpenDroppedName) {
      open_dropped_ = std::move(*event);
    } else {
      sealed_dropped_ = std::move(*event);
    }
  }
  if (ec) return Fail(ErrorCode::kIo, "list {}: {}", dir_.string(), ec.message());

  if (lost_events > 0) {
    if (auto r = RecordDroppedLocked(lost_events); !r) {
      log::Warn("failure queue: cannot record {} discarded events: {}", lost_events, r.error());
    }
  }
  // The bounds may have been lowered since the queue was written, or a crash may have come
  // between writing an event and dropping the oldest one.
  if (auto r = EnforceBoundsLocked(); !r) {
    log::Warn("failure queue: cannot enforce bounds at startup: {}", r.error());
  }
  if (removed_any) {
    if (auto r = SyncDirectory(dir_); !r) log::Warn("failure queue: {}", r.error());
  }
  return Ok();
}

FailureQueue::CoalesceKey FailureQueue::KeyOf(const FailureEvent& e) {
  return CoalesceKey{.kind = e.kind,
                     .type = e.type,
                     .event_class = e.event_class,
                     .component_id = e.component_id,
                     .image_id = e.image_id,
                     .signal = e.signal,
                     .exit_status = e.exit_status,
                     .error_number = e.error_number,
                     .stack_signature = e.stack.empty() ? "" : formats::StackSignature(e)};
}

Result<std::string> FailureQueue::Push(FailureEvent event) {
  if (event.kind == FailureKind::kEventsDropped) {
    return Fail(ErrorCode::kInvalidArgument,
                "failure queue: events_dropped events are made by the queue, not pushed");
  }
  std::lock_guard lock(mu_);
  if (event.event_id.empty()) event.event_id = random_.NewUuid();
  const std::string json = DumpJson(formats::ToJson(event));
  // Storing only what parses back means a record can fail to load only through corruption,
  // never because the caller handed us an invalid event.
  Result<FailureEvent> parsed = formats::ParseFailureEvent(json);
  if (!parsed) return Fail(parsed.error().WithContext("failure queue: refusing an invalid event"));
  const FailureEvent& stored = *parsed;
  if (json.size() > options_.max_bytes) {
    return Fail(ErrorCode::kLimitExceeded,
                "failure queue: event {} is {} bytes, more than the queue's limit of {} bytes",
                stored.event_id, json.size(), options_.max_bytes);
  }

  std::optional<CoalesceKey> key;
  if (options_.coalesce) {
    key = KeyOf(stored);
    MOAT_ASSIGN_OR_RETURN(std::optional<std::string> merged_into, TryCoalesceLocked(*key, stored));
    if (merged_into) {
      // The merged record grew by a few bytes (count, last_time).
      if (auto r = EnforceBoundsLocked(); !r) {
        log::Warn("failure queue: cannot drop the oldest events: {}", r.error());
      }
      return *merged_into;
    }
  }

  const uint64_t sequence = next_sequence_++;
  MOAT_TRY(AtomicWriteFile(EventPath(sequence), json,
                           AtomicWriteOptions{.mode = kFileMode, .exclusive = true}));
  events_.emplace(sequence, Entry{.bytes = json.size(), .coalesce_key = std::move(key)});
  bytes_ += json.size();

  // The event is durable now; failing to trim the oldest leaves the queue one over its bound
  // until the next Push or Open trims it, which is better than reporting a stored event as
  // not stored (the caller would push it again).
  if (auto r = EnforceBoundsLocked(); !r) {
    log::Warn("failure queue: cannot drop the oldest events: {}", r.error());
  }
  return stored.event_id;
}

Result<std::optional<std::string>> FailureQueue::TryCoalesceLocked(const CoalesceKey& key,
                                                                   const FailureEvent& event) {
  for (auto it = events_.rbegin(); it != events_.rend(); ++it) {
    Entry& entry = it->second;
    if (!entry.coalesce_key || *entry.coalesce_key != key) continue;
    const std::filesystem::path path = EventPath(it->first);
    Result<FailureEvent> queued = ReadEventFile(path);
    if (!queued ||
        static_cast<uint64_t>(queued->count) + event.count > std::numeric_limits<uint32_t>::max()) {
      // Unreadable (reported when it is next read) or full: store the new one separately.
      entry.coalesce_key.reset();
      return std::optional<std::string>();
    }
    queued->count += event.count;
    queued->first_time = std::min(queued->first_time, FloorToSeconds(event.first_time));
    queued->last_time = std::max(queued->last_time, FloorToSeconds(event.last_time));
    const std::string json = DumpJson(formats::ToJson(*queued));
    if (json.size() > options_.max_bytes) {
      entry.coalesce_key.reset();
      return std::optional<std::string>();
    }
    MOAT_TRY(AtomicWriteFile(path, json, AtomicWriteOptions{.mode = kFileMode}));
    bytes_ = bytes_ - entry.bytes + json.size();
    entry.bytes = json.size();
    return std::optional<std::string>(queued->event_id);
  }
  return std::optional<std::string>();
}

Result<void> FailureQueue::RecordDroppedLocked(uint64_t count) {
  FailureEvent dropped;
  const SystemTime now = FloorToSeconds(clock_.Now());
  if (open_dropped_) {
    dropped = *open_dropped_;
    // A clock stepped backwards must not make the record invalid (last_time < first_time).
    dropped.last_time = std::max(dropped.last_time, now);
    dropped.count = SaturatingAdd(dropped.count, count);
  } else {
    dropped.event_id = random_.NewUuid();
    dropped.kind = FailureKind::kEventsDropped;
    dropped.type = formats::EventType::kUnplanned;
    dropped.event_class = formats::EventClass::kOs;
    dropped.first_time = dropped.last_time = now;
    dropped.count = SaturatingAdd(0, count);
  }
  MOAT_TRY(AtomicWriteFile(dir_ / kOpenDroppedName, DumpJson(formats::ToJson(dropped)),
                           AtomicWriteOptions{.mode = kFileMode}));
  open_dropped_ = std::move(dropped);
  return Ok();
}

Result<void> FailureQueue::EnforceBoundsLocked() {
  size_t victims = 0;
  size_t remaining_bytes = bytes_;
  for (auto it = events_.begin(); it != events_.end(); ++it) {
    if (events_.size() - victims <= options_.max_events && remaining_bytes <= options_.max_bytes) {
      break;
    }
    ++victims;
    remaining_bytes -= it->second.bytes;
  }
  if (victims == 0) return Ok();
  // Count first, delete second: a crash in between counts these events twice (they are
  // dropped again at the next Open) but never loses the count.
  MOAT_TRY(RecordDroppedLocked(victims));
  for (size_t i = 0; i < victims; ++i) MOAT_TRY(RemoveEventLocked(events_.begin()->first));
  return SyncDirectory(dir_);
}

Result<void> FailureQueue::RemoveEventLocked(uint64_t sequence) {
  auto it = events_.find(sequence);
  if (it == events_.end()) return Ok();
  MOAT_TRY(Unlink(EventPath(sequence)));
  bytes_ -= it->second.bytes;
  events_.erase(it);
  return Ok();
}

Result<Batch> FailureQueue::NextBatch(size_t max_events, size_t max_bytes) {
  std::lock_guard lock(mu_);
  Batch batch;
  batch.token.queue_instance_ = instance_;
  max_events = std::min(max_events, formats::kMaxEventBatchEvents);
  max_bytes = std::min(max_bytes, formats::kMaxEventBatchJsonBytes);
  if (max_events == 0) return batch;

  size_t total = kBatchOverheadBytes;
  // Whether an event of `bytes` JSON bytes still fits (the first always does).
  auto fits = [&](size_t bytes) {
    if (batch.events.empty()) return true;
    return batch.events.size() < max_events && total + 1 + bytes <= max_bytes;
  };
  auto add = [&](FailureEvent event, size_t bytes) {
    total += bytes + (batch.events.empty() ? 0 : 1);
    batch.events.push_back(std::move(event));
  };

  // Seal the open events_dropped record (a rename, atomic and durable) so that this batch,
  // however often it is re-sent, carries one fixed count under its event_id; drops from now
  // on go into a new record with a new event_id.
  if (!sealed_dropped_ && open_dropped_) {
    const std::filesystem::path from = dir_ / kOpenDroppedName;
    const std::filesystem::path to = dir_ / kSealedDroppedName;
    if (::rename(from.c_str(), to.c_str()) != 0) return Fail(ErrnoError("rename", from, errno));
    MOAT_TRY(SyncDirectory(dir_));
    sealed_dropped_ = std::move(open_dropped_);
    open_dropped_.reset();
  }
  if (sealed_dropped_) {
    add(*sealed_dropped_, DumpJson(formats::ToJson(*sealed_dropped_)).size());
    batch.token.dropped_event_id_ = sealed_dropped_->event_id;
  }

  std::vector<uint64_t> unreadable;
  for (auto& [sequence, entry] : events_) {
    if (!fits(entry.bytes)) break;
    size_t bytes = 0;
    Result<FailureEvent> event = ReadEventFile(EventPath(sequence), &bytes);
    if (!event || event->kind == FailureKind::kEventsDropped) {
      log::Warn("failure queue: discarding unreadable record {}: {}", EventPath(sequence).string(),
                event ? Error(ErrorCode::kInvalidArgument, "unexpected kind") : event.error());
      unreadable.push_back(sequence);
      continue;
    }
    // Handed out: the service may store it from now on, so it must not change any more.
    entry.coalesce_key.reset();
    add(std::move(*event), bytes);
    batch.token.sequences_.push_back(sequence);
  }
  if (!unreadable.empty()) {
    for (uint64_t sequence : unreadable) MOAT_TRY(RemoveEventLocked(sequence));
    MOAT_TRY(RecordDroppedLocked(unreadable.size()));
    MOAT_TRY(SyncDirectory(dir_));
  }
  return batch;
}

Result<void> FailureQueue::Acknowledge(const BatchToken& token) {
  if (token.queue_instance_ != instance_) {
    return Fail(ErrorCode::kInvalidArgument,
                "failure queue {}: batch token was issued by another queue", dir_.string());
  }
  std::lock_guard lock(mu_);
  // Events dropped for space while the batch was out are simply gone already.
  for (uint64_t sequence : token.sequences_) MOAT_TRY(RemoveEventLocked(sequence));
  if (!token.dropped_event_id_.empty() && sealed_dropped_ &&
      sealed_dropped_->event_id == token.dropped_event_id_) {
    MOAT_TRY(Unlink(dir_ / kSealedDroppedName));
    sealed_dropped_.reset();
  }
  // Without this a power cut could bring acknowledged events back; they would be re-sent
  // under the same event_id, which the service ignores, so this is about tidiness, not safety.
  return SyncDirectory(dir_);
}

QueueStats FailureQueue::Stats() const {
  std::lock_guard lock(mu_);
  QueueStats stats{.events = events_.size(), .bytes = bytes_};
  if (open_dropped_) stats.dropped += open_dropped_->count;
  if (sealed_dropped_) stats.dropped += sealed_dropped_->count;
  return stats;
}

}  // namespace moat::device::reporting
