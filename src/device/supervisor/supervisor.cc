// The supervisor's event loop. One thread owns every sandbox; the public methods only change
// flags under the lock and wake it. The loop, per turn:
//   1. send SIGKILL to sandboxes whose stop grace ran out; forget apps that are fully stopped
//   2. launch apps whose restart time has come
//   3. run queued callbacks (unlocked), then poll: wake eventfd, pidfds, output pipes
//   4. copy output into the logs; handle ended sandboxes (status, failure event, backoff)
#include "device/supervisor/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "core/file.h"
#include "core/log.h"
#include "device/sandbox/app_network.h"
#include "device/supervisor/app_log.h"

namespace moat::device::supervisor {

using sandbox::ExitStatus;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

constexpr size_t kReadChunk = 64 << 10;
// Reads per stream per turn while an app runs, so one app flooding its output cannot starve the
// others' output, restarts or ends.
constexpr int kReadsPerTurn = 4;

// Whether the kernel's OOM killer acted in the app's memory cgroup. Must be read before the
// sandbox is reaped: LaunchedProcess::Wait removes the cgroups. Each launch gets a fresh group,
// so any count at all is this run's.
bool OomKilled(const std::vector<std::filesystem::path>& dirs) {
  for (const auto& dir : dirs) {
    // v2: memory.events; v1: memory.oom_control. Both have a line "oom_kill N" (v1 since 4.13).
    for (const char* file : {"memory.events", "memory.oom_control"}) {
      auto text = ReadFile(dir / file, 4096);
      if (!text) continue;
      size_t at = text->find("oom_kill ");
      if (at == std::string::npos || (at > 0 && (*text)[at - 1] != '\n')) continue;
      uint64_t count = 0;
      const char* begin = text->data() + at + 9;
      std::from_chars(begin, text->data() + text->size(), count);
      if (count > 0) return true;
    }
  }
  return false;
}

milliseconds CeilMs(steady_clock::duration d) {
  return std::chrono::ceil<milliseconds>(std::max(d, steady_clock::duration::zero()));
}

struct Started {
  sandbox::LaunchedProcess process;
  std::array<UniqueFd, 2> out;  // read ends of its stdout and stderr
};

// Launches `app` with its stdout and stderr on pipes whose (non-blocking) read ends it returns.
Result<Started> LaunchWithPipes(const SupervisedApp& app, const sandbox::CgroupLayout& layout,
                                sandbox::NetworkHook network_hook) {
  const std::string what = fmt::format("app {} output", app.component_id.ToString());
  sandbox::LaunchOptions launch;
  launch.cgroup_layout = layout;
  launch.network_hook = std::move(network_hook);
  std::array<UniqueFd, 2> read_ends;
  for (int s = 0; s < 2; ++s) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return Fail(ErrnoError("pipe2", what, errno));
    read_ends[s].Reset(p[0]);
    (s == 0 ? launch.io.stdout_fd : launch.io.stderr_fd).Reset(p[1]);
    // Non-blocking, so the loop never waits on one app's output.
    if (::fcntl(p[0], F_SETFL, O_NONBLOCK) != 0) {
      return Fail(ErrnoError("fcntl O_NONBLOCK", what, errno));
    }
  }
  MOAT_ASSIGN_OR_RETURN(sandbox::LaunchedProcess process,
                        sandbox::Launch(app.spec, std::move(launch)));
  return Started{std::move(process), std::move(read_ends)};
}

}  // namespace

std::string_view AppStateName(AppState state) {
  switch (state) {
    case AppState::kRunning:
      return "running";
    case AppState::kWaiting:
      return "waiting";
    case AppState::kStopping:
      return "stopping";
  }
  return "?";
}

// The app-link pool, shared with the leases so that a slot returns its link whenever it is freed
// (by the loop or by Remove), without the supervisor's lock.
struct AppLinkPool {
  explicit AppLinkPool(sandbox::AddressPool p) : pool(std::move(p)) {}
  std::mutex mu;
  sandbox::AddressPool pool;
};

namespace {

// An app's /30 for as long as it is supervised.
class LinkLease {
 public:
  LinkLease(std::shared_ptr<AppLinkPool> pool, sandbox::Ipv4Subnet link)
      : pool_(std::move(pool)), link_(link) {}
  ~LinkLease();
  LinkLease(const LinkLease&) = delete;
  LinkLease& operator=(const LinkLease&) = delete;
  const sandbox::Ipv4Subnet& link() const { return link_; }

 private:
  std::shared_ptr<AppLinkPool> pool_;
  sandbox::Ipv4Subnet link_;
};

}  // namespace

LinkLease::~LinkLease() {
  std::lock_guard lock(pool_->mu);
  pool_->pool.Release(link_);
}

struct Supervisor::Slot {
  Slot(SupervisedApp a, const RestartPolicy& policy, uint64_t log_max_bytes)
      : app(std::move(a)),
        tracker(policy),
        logs{AppLog(app.spec.stdout_path, log_max_bytes),
             AppLog(app.spec.stderr_path, log_max_bytes)} {}

  SupervisedApp app;
  std::unique_ptr<LinkLease> link;  // with app.network_policy
  // This run's network (veth + nftables): torn down when the run ends or its launch fails.
  std::unique_ptr<sandbox::AppNetwork> network;
  RestartTracker tracker;
  AppStatus status;
  std::optional<sandbox::LaunchedProcess> process;
  std::array<UniqueFd, 2> out;  // read ends of the stdout and stderr pipes
  std::array<AppLog, 2> logs;
  bool log_error_reported = false;

  // Removal.
  bool stop_requested = false;
  bool waiter = false;                              // a Remove() call waits for `final_exit`
  std::optional<steady_clock::time_point> kill_at;  // real time: SIGKILL after the grace
  bool kill_sent = false;
  bool done = false;  // stopped and reaped: the loop forgets it
  std::optional<ExitStatus> final_exit;
};

Result<std::unique_ptr<Supervisor>> Supervisor::Create(SupervisorOptions options) {
  MOAT_TRY(options.restart.Validate());
  if (options.stop_grace.count() < 0 || options.log_max_bytes == 0 ||
      options.max_poll_interval.count() <= 0) {
    return Fail(ErrorCode::kInvalidArgument,
                "supervisor: stop_grace must be >= 0, log_max_bytes and max_poll_interval > 0");
  }
  if (!options.cgroup_layout) {
    MOAT_ASSIGN_OR_RETURN(options.cgroup_layout, sandbox::DetectCgroupLayout());
  }
  if (!options.network_pool) {
    MOAT_ASSIGN_OR_RETURN(options.network_pool,
                          sandbox::Ipv4Subnet::Parse(sandbox::kDefaultAppNetworkPool));
  }
  MOAT_ASSIGN_OR_RETURN(sandbox::AddressPool pool,
                        sandbox::AddressPool::Create(*options.network_pool));
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return Fail(ErrnoError("eventfd", "supervisor wake-up", errno));
  std::unique_ptr<Supervisor> supervisor(new Supervisor(std::move(options), UniqueFd(fd)));
  supervisor->pool_ = std::make_shared<AppLinkPool>(std::move(pool));
  supervisor->thread_ = std::thread(&Supervisor::Loop, supervisor.get());
  supervisor->loop_id_ = supervisor->thread_.get_id();
  return supervisor;
}

Supervisor::Supervisor(SupervisorOptions options, UniqueFd wake_fd)
    : options_(std::move(options)),
      clock_(options_.clock ? options_.clock : std::make_shared<SystemClock>()),
      random_(options_.random ? options_.random : std::make_shared<SystemRandom>()),
      wake_fd_(std::move(wake_fd)) {}

Supervisor::~Supervisor() { Shutdown(); }

void Supervisor::Wake() {
  uint64_t one = 1;
  // Can only fail with EAGAIN when the counter is near 2^64, and then the loop is awake anyway.
  (void)!::write(wake_fd_.get(), &one, sizeof one);
}

Result<void> Supervisor::Add(SupervisedApp app) {
  if (app.component_id.IsNil()) {
    return Fail(ErrorCode::kInvalidArgument, "supervisor: an app needs a non-nil component ID");
  }
  MOAT_TRY(app.spec.Validate());
  const bool configured = app.spec.network == sandbox::NetworkMode::kConfigured;
  const int network_sources = (app.network_policy ? 1 : 0) + (app.network_hook ? 1 : 0);
  if (network_sources != (configured ? 1 : 0)) {
    return Fail(ErrorCode::kInvalidArgument,
                "supervisor: app {}: network {} needs {} of network_policy and network_hook",
                app.component_id.ToString(), sandbox::NetworkModeName(app.spec.network),
                configured ? "exactly one" : "neither");
  }
  if (app.network_policy) MOAT_TRY(app.network_policy->Validate());
  std::lock_guard lock(mu_);
  if (shutting_down_) {
    return Fail(ErrorCode::kFailedPrecondition, "supervisor: shutting down; cannot add app {}",
                app.component_id.ToString());
  }
  if (slots_.contains(app.component_id)) {
    return Fail(ErrorCode::kAlreadyExists, "supervisor: app {} is already supervised",
                app.component_id.ToString());
  }
  // SECURITY: the sandbox name is the cgroup name, and creating a cgroup kills whatever holds a
  // group of that name (a crashed run's leftover). Two apps with one name would kill each other.
  for (const auto& [id, slot] : slots_) {
    if (slot->app.spec.instance_id == app.spec.instance_id &&
        slot->app.spec.app_name == app.spec.app_name) {
      return Fail(ErrorCode::kAlreadyExists,
                  "supervisor: sandbox name '{}' of app {} is already used by app {}",
                  app.spec.app_name, app.component_id.ToString(), id.ToString());
    }
  }
  std::unique_ptr<LinkLease> link;
  if (app.network_policy) {
    std::lock_guard pool_lock(pool_->mu);
    auto allocated = pool_->pool.Allocate();
    if (!allocated) {
      return Fail(allocated.error().WithContext(
          fmt::format("supervisor: app {}", app.component_id.ToString())));
    }
    link = std::make_unique<LinkLease>(pool_, *allocated);
  }
  formats::Guid id = app.component_id;
  auto slot = std::make_shared<Slot>(std::move(app), options_.restart, options_.log_max_bytes);
  slot->link = std::move(link);
  slot->status.next_start = clock_->Monotonic();  // due now
  slots_.emplace(id, std::move(slot));
  Wake();
  return Ok();
}

void Supervisor::BeginStop(Slot& slot) {
  slot.stop_requested = true;
  if (!slot.process) {
    slot.done = true;  // waiting for a restart: nothing runs
    return;
  }
  slot.status.state = AppState::kStopping;
  slot.kill_at = steady_clock::now() + options_.stop_grace;
  if (auto r = slot.process->Signal(SIGTERM); !r) {
    log::Warn("supervisor: app {}: {}; killing it", slot.app.component_id.ToString(),
              r.error().message());
    slot.kill_at = steady_clock::now();
  }
}

Result<std::optional<ExitStatus>> Supervisor::Remove(const formats::Guid& component_id) {
  std::unique_lock lock(mu_);
  auto it = slots_.find(component_id);
  if (it == slots_.end() || it->second->stop_requested) {
    return Fail(ErrorCode::kNotFound, "supervisor: no app {} (or it is being removed)",
                component_id.ToString());
  }
  std::shared_ptr<Slot> slot = it->second;
  const bool on_loop = std::this_thread::get_id() == loop_id_;
  slot->waiter = !on_loop;
  BeginStop(*slot);
  Wake();
  if (on_loop) return std::optional<ExitStatus>();
  // The loop reaps the sandbox and marks the slot done; a waited-for slot is erased here, so
  // that the same component can be added again as soon as Remove returns.
  changed_.wait(lock, [&] { return slot->done; });
  ForgetSlot(component_id);
  Wake();  // a shutting-down loop waits for the map to empty
  return slot->final_exit;
}

void Supervisor::Shutdown() {
  const bool on_loop = std::this_thread::get_id() == loop_id_;
  std::unique_lock serial(shutdown_mu_, std::defer_lock);
  if (!on_loop) serial.lock();
  {
    std::lock_guard lock(mu_);
    if (!thread_.joinable()) return;
    shutting_down_ = true;
    for (auto& [id, slot] : slots_) {
      if (!slot->stop_requested) BeginStop(*slot);
    }
  }
  Wake();
  if (on_loop) return;  // from a callback: the loop ends by itself; the destructor joins
  thread_.join();
}

std::optional<AppStatus> Supervisor::Status(const formats::Guid& component_id) const {
  std::lock_guard lock(mu_);
  auto it = slots_.find(component_id);
  if (it == slots_.end()) return std::nullopt;
  return it->second->status;
}

void Supervisor::QueueFailure(Slot& slot, formats::FailureKind kind, int signal, int exit_status,
                              std::vector<Callback>& callbacks) {
  formats::FailureEvent event;
  event.event_id = random_->NewUuid();
  event.kind = kind;
  event.type = formats::EventType::kUnplanned;
  event.event_class = formats::EventClass::kApplication;
  event.component_id = slot.app.component_id;
  event.image_id = slot.app.image_id;
  event.signal = signal;
  event.exit_status = exit_status;
  event.first_time = event.last_time = std::chrono::floor<std::chrono::seconds>(clock_->Now());
  event.count = 1;
  ++slot.status.failures;
  if (options_.on_failure) {
    callbacks.push_back([this, event = std::move(event)] { options_.on_failure(event); });
  }
}

void Supervisor::StartApp(Slot& slot, std::vector<Callback>& callbacks) {
  const std::string id = slot.app.component_id.ToString();
  auto now = clock_->Monotonic();
  Result<Started> process = [&]() -> Result<Started> {
    sandbox::NetworkHook hook = slot.app.network_hook;
    if (slot.app.network_policy) {
      MOAT_ASSIGN_OR_RETURN(slot.network, sandbox::AppNetwork::Create(
                                              {slot.app.spec.instance_id, slot.app.spec.app_name,
                                               slot.link->link(), *slot.app.network_policy}));
      hook = slot.network->Hook();
    }
    return LaunchWithPipes(slot.app, *options_.cgroup_layout, std::move(hook));
  }();
  if (!process) {
    TearDownNetwork(slot);
    slot.status.last_error = process.error().message();
    log::Warn("supervisor: app {}: launch failed: {}", id, slot.status.last_error);
    QueueFailure(slot, formats::FailureKind::kLaunchFailed, 0, 0, callbacks);
    RestartTracker::Decision d = slot.tracker.OnEnded(now, /*failure=*/true);
    slot.status.state = AppState::kWaiting;
    slot.status.last_delay = d.delay;
    slot.status.next_start = now + d.delay;
    if (d.crash_loop) QueueCrashLoop(slot, callbacks);
    return;
  }
  slot.process.emplace(std::move(process->process));
  slot.out = std::move(process->out);
  slot.tracker.OnStarted(now);
  slot.status.state = AppState::kRunning;
  slot.status.pid = slot.process->pid();
  slot.status.next_start.reset();
  ++slot.status.launches;
  log::Info("supervisor: app {} started (pid {}, launch {})", id, slot.process->pid(),
            slot.status.launches);
}

void Supervisor::ForgetSlot(const formats::Guid& component_id) {
  auto it = slots_.find(component_id);
  if (it == slots_.end()) return;
  // The loop's poll set may keep the slot alive a little longer; its link is free now.
  it->second->link.reset();
  slots_.erase(it);
}

void Supervisor::TearDownNetwork(Slot& slot) {
  if (!slot.network) return;
  // A failure is logged, not fatal: the next launch's Attach removes a leftover of this name.
  if (auto r = slot.network->Teardown(); !r) {
    log::Warn("supervisor: app {}: {}", slot.app.component_id.ToString(), r.error().message());
  }
  slot.network.reset();
}

void Supervisor::QueueCrashLoop(Slot& slot, std::vector<Callback>& callbacks) {
  log::Warn(
      "supervisor: app {} is crash-looping ({} failures within {} s)",
      slot.app.component_id.ToString(), options_.restart.crash_loop_crashes,
      std::chrono::duration_cast<std::chrono::seconds>(options_.restart.crash_loop_window).count());
  if (options_.on_crash_loop) {
    callbacks.push_back([this, id = slot.app.component_id] { options_.on_crash_loop(id); });
  }
}

void Supervisor::ReadOutput(Slot& slot, int stream, bool until_eof) {
  UniqueFd& fd = slot.out[stream];
  std::string buffer(kReadChunk, '\0');
  for (int reads = 0; fd && (until_eof || reads < kReadsPerTurn); ++reads) {
    ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      if (n < 0) {
        log::Warn("supervisor: app {}: reading its output: {}", slot.app.component_id.ToString(),
                  ErrnoError("read", "pipe", errno).message());
      }
      fd.Reset();  // EOF: every writer (the sandbox) has gone
      return;
    }
    auto written = slot.logs[stream].Append(std::string_view(buffer.data(), n));
    if (!written && !slot.log_error_reported) {
      // Reported once per app: a full disk would otherwise log every line the app prints.
      log::Warn("supervisor: app {}: {}", slot.app.component_id.ToString(),
                written.error().message());
      slot.log_error_reported = true;
    }
  }
}

void Supervisor::HandleEnd(Slot& slot, std::vector<Callback>& callbacks) {
  const std::string id = slot.app.component_id.ToString();
  const bool oom = OomKilled(slot.process->CgroupDirectories());
  auto waited = slot.process->Wait();
  if (!waited) {
    // Wait records the status before removing the cgroups; a second call returns it if only
    // the cleanup failed.
    log::Warn("supervisor: app {}: {}", id, waited.error().message());
    waited = slot.process->Wait();
  }
  // Without a status (waitid itself failed, which a pidfd we own cannot make happen), count
  // the run as killed: it is over and it did not end cleanly.
  ExitStatus exit = waited ? *waited : ExitStatus::Killed(SIGKILL);
  for (int s = 0; s < 2; ++s) {
    ReadOutput(slot, s, /*until_eof=*/true);
    slot.out[s].Reset();  // a done slot holds no descriptor (Remove may erase it while polling)
  }
  slot.process.reset();
  TearDownNetwork(slot);
  slot.status.pid.reset();
  slot.status.last_exit = exit;

  if (slot.stop_requested) {
    slot.final_exit = exit;
    slot.done = true;
    changed_.notify_all();
    log::Info("supervisor: app {} stopped ({})", id, exit.Describe());
    return;
  }

  auto now = clock_->Monotonic();
  bool failure = true;
  if (exit.exited() && exit.code() == 0) {
    failure = false;
  } else if (exit.killed() && exit.signal() == SIGKILL && oom) {
    QueueFailure(slot, formats::FailureKind::kAppMemoryLimit, SIGKILL, 0, callbacks);
  } else if (exit.killed()) {
    QueueFailure(slot, formats::FailureKind::kAppCrash, exit.signal(), 0, callbacks);
  } else {
    QueueFailure(slot, formats::FailureKind::kAppExit, 0, exit.code(), callbacks);
  }
  RestartTracker::Decision d = slot.tracker.OnEnded(now, failure);
  slot.status.state = AppState::kWaiting;
  slot.status.last_delay = d.delay;
  slot.status.next_start = now + d.delay;
  log::Info("supervisor: app {} {}{}; restarting in {} ms", id, exit.Describe(),
            oom ? " (memory limit)" : "", d.delay.count());
  if (d.crash_loop) QueueCrashLoop(slot, callbacks);
}

void Supervisor::Loop() {
  std::vector<Callback> callbacks;
  std::unique_lock lock(mu_);
  for (;;) {
    // 1. Stops: escalate, then forget apps that are stopped.
    const auto real_now = steady_clock::now();
    for (auto& [id, slot] : slots_) {
      if (slot->process && slot->kill_at && !slot->kill_sent && real_now >= *slot->kill_at) {
        if (auto r = slot->process->Signal(SIGKILL); !r) {
          log::Error("supervisor: app {}: {}", id.ToString(), r.error().message());
        }
        slot->kill_sent = true;
      }
    }
    bool erased = false;
    for (auto it = slots_.begin(); it != slots_.end();) {
      if (it->second->done && !it->second->waiter) {
        it->second->link.reset();  // the link is free the moment the app is forgotten
        it = slots_.erase(it);
        erased = true;
      } else {
        ++it;
      }
    }
    if (erased) changed_.notify_all();

    // 2. Restarts that are due.
    const auto now = clock_->Monotonic();
    if (!shutting_down_) {
      for (auto& [id, slot] : slots_) {
        if (!slot->process && !slot->stop_requested && slot->status.next_start &&
            now >= *slot->status.next_start) {
          StartApp(*slot, callbacks);
        }
      }
    }

    // 3. What to wait for, and until when.
    std::vector<pollfd> fds{{wake_fd_.get(), POLLIN, 0}};
    struct Source {
      std::shared_ptr<Slot> slot;
      int stream;  // 0, 1: output; -1: the pidfd
    };
    std::vector<Source> sources{{nullptr, 0}};
    milliseconds timeout = options_.max_poll_interval;
    for (auto& [id, slot] : slots_) {
      for (int s = 0; s < 2; ++s) {
        if (slot->out[s]) {
          fds.push_back({slot->out[s].get(), POLLIN, 0});
          sources.push_back({slot, s});
        }
      }
      if (slot->process) {
        fds.push_back({slot->process->pidfd(), POLLIN, 0});
        sources.push_back({slot, -1});
      }
      if (!slot->process && !slot->stop_requested && slot->status.next_start) {
        timeout = std::min(timeout, CeilMs(*slot->status.next_start - now));
      }
      if (slot->process && slot->kill_at && !slot->kill_sent) {
        timeout = std::min(timeout, CeilMs(*slot->kill_at - steady_clock::now()));
      }
    }
    const bool finished = shutting_down_ && slots_.empty();

    // Callbacks run unlocked, so they may call back into the supervisor.
    lock.unlock();
    for (Callback& callback : callbacks) callback();
    callbacks.clear();
    if (finished) return;
    int rc = ::poll(fds.data(), fds.size(), static_cast<int>(timeout.count()));
    int poll_errno = errno;
    lock.lock();
    if (rc < 0) {
      if (poll_errno != EINTR) {
        log::Error("supervisor: {}", ErrnoError("poll", "supervisor loop", poll_errno).message());
      }
      continue;
    }

    // 4. Events.
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      const Source& source = sources[i];
      if (!source.slot) {
        uint64_t count;
        (void)!::read(wake_fd_.get(), &count, sizeof count);  // EAGAIN: already drained
        continue;
      }
      Slot& slot = *source.slot;
      if (source.stream >= 0) {
        // The pipe may have been drained and closed by an end handled earlier in this turn.
        if (slot.out[source.stream].get() == fds[i].fd) {
          ReadOutput(slot, source.stream, /*until_eof=*/false);
        }
      } else if (slot.process && slot.process->pidfd() == fds[i].fd) {
        HandleEnd(slot, callbacks);
      }
    }
  }
}

}  // namespace moat::device::supervisor
