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
#include <sys/socket.h>
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

constexpr int kEventsFd = 3;
constexpr int kFirstConnectionFd = 4;
// The last inherited descriptor; app connections stop below it.
constexpr int kDeviceAuthFd = 3 + sandbox::kMaxInheritedFds - 1;

// Launches `app` with its stdout and stderr on pipes whose (non-blocking) read ends it returns,
// and its services: the event socket at fd 3 (its other end in `events`) and its app-connection
// channels from fd 4 on, and its device-authentication socket at kDeviceAuthFd (its other end
// in `device_auth`), all named in the environment.
Result<Started> LaunchWithPipes(const SupervisedApp& app, const sandbox::CgroupLayout& layout,
                                sandbox::NetworkHook network_hook,
                                const std::map<formats::Guid, std::shared_ptr<UniqueFd>>& channels,
                                UniqueFd& events, UniqueFd& device_auth) {
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
  sandbox::SandboxSpec spec = app.spec;
  UniqueFd our_events;
  if (app.services.system_events) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
      return Fail(ErrnoError("socketpair",
                             fmt::format("app {} events", app.component_id.ToString()), errno));
    }
    our_events.Reset(pair[0]);
    launch.inherited_fds.push_back({UniqueFd(pair[1]), kEventsFd});
    spec.env.push_back(fmt::format("MOAT_EVENTS_FD={}", kEventsFd));
  }
  std::string connections;
  int next_fd = kFirstConnectionFd;
  for (const auto& [peer, end] : channels) {
    if (next_fd >= kDeviceAuthFd) {
      log::Warn("supervisor: app {}: more app connections than descriptors; {} left out",
                app.component_id.ToString(), peer.ToString());
      continue;
    }
    int copy = ::fcntl(end->get(), F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return Fail(ErrnoError("fcntl F_DUPFD_CLOEXEC", "app connection", errno));
    launch.inherited_fds.push_back({UniqueFd(copy), next_fd});
    connections += fmt::format("{}{}={}", connections.empty() ? "" : ",", peer.ToString(), next_fd);
    ++next_fd;
  }
  if (!connections.empty()) spec.env.push_back("MOAT_APP_CONNECTIONS=" + connections);
  UniqueFd our_device_auth;
  if (app.services.device_authentication) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
      return Fail(ErrnoError(
          "socketpair", fmt::format("app {} device authentication", app.component_id.ToString()),
          errno));
    }
    our_device_auth.Reset(pair[0]);
    launch.inherited_fds.push_back({UniqueFd(pair[1]), kDeviceAuthFd});
    spec.env.push_back(fmt::format("MOAT_DEVICE_AUTH_FD={}", kDeviceAuthFd));
  }
  MOAT_ASSIGN_OR_RETURN(sandbox::LaunchedProcess process, sandbox::Launch(spec, std::move(launch)));
  events = std::move(our_events);
  device_auth = std::move(our_device_auth);
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
    case AppState::kStopped:
      return "stopped";
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

  // StopApp: stopped on request and kept (not restarted until StartApp).
  bool parked = false;

  // App services. `events`: the supervisor's end of this run's event socket. `channels`: this
  // app's ends of its app-connection socketpairs, by peer; they live while both apps are
  // supervised (every launch gets a duplicate), so a restart of either side loses nothing queued.
  UniqueFd events;
  uint32_t event_seq = 0;
  std::map<formats::Guid, std::shared_ptr<UniqueFd>> channels;

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
  std::unique_ptr<DeviceAuthServer> device_auth;
  if (options.device_authority) {
    MOAT_ASSIGN_OR_RETURN(device_auth, DeviceAuthServer::Create(options.device_authority,
                                                                options.device_auth_limits));
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
  supervisor->device_auth_ = std::move(device_auth);
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
  if (app.services.device_authentication && !options_.device_authority) {
    return Fail(ErrorCode::kFailedPrecondition,
                "supervisor: app {} asks for DeviceAuthentication, but this supervisor has no "
                "device authority",
                app.component_id.ToString());
  }
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
  // App connections: one socketpair per pair of apps that list each other. A running peer
  // gets its end at its next start.
  for (auto& [peer_id, peer] : slots_) {
    const auto& mine = slot->app.services.connections;
    const auto& theirs = peer->app.services.connections;
    if (std::find(mine.begin(), mine.end(), peer_id) == mine.end() ||
        std::find(theirs.begin(), theirs.end(), id) == theirs.end()) {
      continue;
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
      return Fail(ErrnoError(
          "socketpair", fmt::format("app connection {} <-> {}", id.ToString(), peer_id.ToString()),
          errno));
    }
    slot->channels[peer_id] = std::make_shared<UniqueFd>(pair[0]);
    peer->channels[id] = std::make_shared<UniqueFd>(pair[1]);
  }
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
  // No app runs any more; the authority (the caller's) is not called after this.
  if (device_auth_) device_auth_->Shutdown();
}

std::vector<AppInfo> Supervisor::List() const {
  std::lock_guard lock(mu_);
  std::vector<AppInfo> out;
  for (const auto& [id, slot] : slots_) {
    out.push_back(AppInfo{id, slot->app.image_id, slot->app.spec.app_name, slot->status});
  }
  return out;
}

Result<std::optional<ExitStatus>> Supervisor::StopApp(const formats::Guid& component_id) {
  std::unique_lock lock(mu_);
  auto it = slots_.find(component_id);
  if (it == slots_.end() || it->second->stop_requested) {
    return Fail(ErrorCode::kNotFound, "supervisor: no app {} (or it is being removed)",
                component_id.ToString());
  }
  std::shared_ptr<Slot> slot = it->second;
  if (slot->parked) return std::optional<ExitStatus>();
  slot->parked = true;
  if (!slot->process) {
    slot->status.state = AppState::kStopped;
    slot->status.next_start.reset();
    log::Info("supervisor: app {} stopped on request (was waiting); kept", component_id.ToString());
    return std::optional<ExitStatus>();
  }
  slot->status.state = AppState::kStopping;
  slot->kill_at = steady_clock::now() + options_.stop_grace;
  if (auto r = slot->process->Signal(SIGTERM); !r) {
    log::Warn("supervisor: app {}: {}; killing it", component_id.ToString(), r.error().message());
    slot->kill_at = steady_clock::now();
  }
  Wake();
  if (std::this_thread::get_id() == loop_id_) return std::optional<ExitStatus>();
  // Until the loop has reaped it (or a Remove/Shutdown took over meanwhile).
  changed_.wait(lock, [&] { return !slot->process || slot->stop_requested; });
  if (slot->stop_requested && slot->process) return std::optional<ExitStatus>();
  return slot->status.last_exit;
}

Result<void> Supervisor::StartApp(const formats::Guid& component_id) {
  std::lock_guard lock(mu_);
  auto it = slots_.find(component_id);
  if (it == slots_.end() || it->second->stop_requested) {
    return Fail(ErrorCode::kNotFound, "supervisor: no app {} (or it is being removed)",
                component_id.ToString());
  }
  Slot& slot = *it->second;
  if (!slot.parked || slot.process) {
    return Fail(ErrorCode::kFailedPrecondition, "supervisor: app {} is {}, not stopped",
                component_id.ToString(), AppStateName(slot.status.state));
  }
  slot.parked = false;
  slot.status.state = AppState::kWaiting;
  slot.status.next_start = clock_->Monotonic();
  Wake();
  return Ok();
}

std::optional<sandbox::SandboxSpec> Supervisor::Spec(const formats::Guid& component_id) const {
  std::lock_guard lock(mu_);
  auto it = slots_.find(component_id);
  if (it == slots_.end()) return std::nullopt;
  return it->second->app.spec;
}

Result<std::string> Supervisor::LogTail(const formats::Guid& component_id, LogStream stream,
                                        size_t max_bytes) const {
  // Under the lock: the loop appends and rotates under it, so the two files are consistent.
  std::lock_guard lock(mu_);
  auto it = slots_.find(component_id);
  if (it == slots_.end()) {
    return Fail(ErrorCode::kNotFound, "supervisor: no app {}", component_id.ToString());
  }
  const sandbox::SandboxSpec& spec = it->second->app.spec;
  return ReadLogTail(stream == LogStream::kStdout ? spec.stdout_path : spec.stderr_path, max_bytes);
}

namespace {

// Parses an app's answer to update-pending `seq`: "ok <seq>" or "defer <seq> <seconds>".
std::optional<UpdateAnswer> ParseUpdateAnswer(std::string_view message, uint32_t seq) {
  while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) {
    message.remove_suffix(1);
  }
  auto number = [](std::string_view text, uint64_t& out) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && end == text.data() + text.size() && !text.empty();
  };
  const std::string seq_text = std::to_string(seq);
  if (message == "ok " + seq_text) return UpdateAnswer{UpdateAnswer::Kind::kAcknowledged, {}};
  const std::string prefix = "defer " + seq_text + " ";
  uint64_t seconds = 0;
  if (message.starts_with(prefix) && number(message.substr(prefix.size()), seconds) &&
      seconds >= 1 && seconds <= static_cast<uint64_t>(kMaxUpdateDeferral.count())) {
    return UpdateAnswer{UpdateAnswer::Kind::kDeferred,
                        std::chrono::seconds(static_cast<int64_t>(seconds))};
  }
  return std::nullopt;
}

}  // namespace

Result<UpdateAnswer> Supervisor::NotifyUpdatePending(const formats::Guid& component_id,
                                                     SystemTime deadline, milliseconds timeout) {
  std::lock_guard serial(notify_mu_);
  UniqueFd fd;
  uint32_t seq = 0;
  bool deferral = false;
  {
    std::lock_guard lock(mu_);
    auto it = slots_.find(component_id);
    if (it == slots_.end()) {
      return Fail(ErrorCode::kNotFound, "supervisor: no app {}", component_id.ToString());
    }
    Slot& slot = *it->second;
    if (!slot.app.services.system_events) {
      return Fail(ErrorCode::kFailedPrecondition,
                  "supervisor: app {} does not have SystemEventNotifications",
                  component_id.ToString());
    }
    if (!slot.events) {
      return Fail(ErrorCode::kUnavailable, "supervisor: app {} is not running",
                  component_id.ToString());
    }
    int copy = ::fcntl(slot.events.get(), F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return Fail(ErrnoError("fcntl F_DUPFD_CLOEXEC", "app events", errno));
    fd.Reset(copy);
    seq = ++slot.event_seq;
    deferral = slot.app.services.update_deferral;
  }
  const std::string what = fmt::format("app {} events", component_id.ToString());
  char buffer[256];
  // Drop what the app sent unasked (or answered too late) before this notification.
  while (::recv(fd.get(), buffer, sizeof buffer, MSG_DONTWAIT) > 0) {
  }
  const int64_t deadline_s =
      std::chrono::duration_cast<std::chrono::seconds>(deadline.time_since_epoch()).count();
  const std::string message = fmt::format("update-pending {} {}\n", seq, deadline_s);
  if (::send(fd.get(), message.data(), message.size(), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
    if (errno == EAGAIN) return UpdateAnswer{};  // the app reads nothing: no answer
    return Fail(ErrnoError("send", what, errno));
  }
  const auto until = steady_clock::now() + timeout;
  for (;;) {
    const milliseconds left = CeilMs(until - steady_clock::now());
    pollfd p{fd.get(), POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return Fail(ErrnoError("poll", what, errno));
    if (rc == 0) return UpdateAnswer{};
    ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) return UpdateAnswer{};  // the app ended (or closed its end)
    std::optional<UpdateAnswer> answer =
        ParseUpdateAnswer(std::string_view(buffer, static_cast<size_t>(n)), seq);
    if (!answer) continue;  // another notification's answer, or garbage: not this one's
    if (answer->kind == UpdateAnswer::Kind::kDeferred && !deferral) {
      log::Warn("supervisor: app {} asked to defer an update without SoftwareUpdateDeferral",
                component_id.ToString());
      return UpdateAnswer{UpdateAnswer::Kind::kAcknowledged, {}};
    }
    return *answer;
  }
}

std::optional<AppStatus> Supervisor::Status(const formats::Guid& component_id) const {
  std::lock_guard lock(mu_);
  auto it = slots_.find(component_id);
  if (it == slots_.end()) return std::nullopt;
  return it->second->status;
}

void Supervisor::QueueFailure(Slot& slot, formats::FailureKind kind, int signal, int exit_status,
                              std::vector<Callback>& callbacks, const sandbox::CrashReport* crash) {
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
  if (crash != nullptr) {
    // What the sandbox's init captured (sandbox/crash_capture.h); frames carry module, build-ID
    // and offset so that the service can symbolize them.
    event.error_number = std::clamp(crash->error_number, 0, 4095);
    event.code = crash->code;
    event.pc = crash->pc;
    event.lr = crash->lr;
    event.sp = crash->sp;
    event.fault_address = crash->fault_address;
    for (const sandbox::CrashFrame& f : crash->frames) {
      if (event.stack.size() == formats::kMaxStackFrames) break;
      event.stack.push_back(formats::StackFrame{f.pc, f.module, f.build_id, f.offset, ""});
    }
  }
  ++slot.status.failures;
  if (options_.on_failure) {
    callbacks.push_back([this, event = std::move(event)] { options_.on_failure(event); });
  }
}

void Supervisor::LaunchSlot(Slot& slot, std::vector<Callback>& callbacks) {
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
    UniqueFd device_auth;
    MOAT_ASSIGN_OR_RETURN(Started started,
                          LaunchWithPipes(slot.app, *options_.cgroup_layout, std::move(hook),
                                          slot.channels, slot.events, device_auth));
    if (device_auth) {
      device_auth_->Attach(slot.app.component_id, *slot.app.services.device_authentication,
                           std::move(device_auth));
    }
    return started;
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
  DropChannels(component_id, *it->second);
  slots_.erase(it);
}

void Supervisor::DropChannels(const formats::Guid& component_id, Slot& slot) {
  for (auto& [peer_id, end] : slot.channels) {
    if (auto peer = slots_.find(peer_id); peer != slots_.end()) {
      peer->second->channels.erase(component_id);
    }
  }
  slot.channels.clear();
  slot.events.Reset();
  if (device_auth_) device_auth_->Detach(component_id);
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
  std::optional<sandbox::CrashReport> crash = slot.process->crash();
  for (int s = 0; s < 2; ++s) {
    ReadOutput(slot, s, /*until_eof=*/true);
    slot.out[s].Reset();  // a done slot holds no descriptor (Remove may erase it while polling)
  }
  slot.process.reset();
  slot.events.Reset();
  if (device_auth_) device_auth_->Detach(slot.app.component_id);
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
  if (slot.parked) {
    slot.status.state = AppState::kStopped;
    slot.status.next_start.reset();
    slot.kill_at.reset();
    slot.kill_sent = false;
    changed_.notify_all();
    log::Info("supervisor: app {} stopped on request ({}); kept", id, exit.Describe());
    return;
  }

  auto now = clock_->Monotonic();
  bool failure = true;
  if (exit.exited() && exit.code() == 0) {
    failure = false;
  } else if (exit.killed() && exit.signal() == SIGKILL && oom) {
    QueueFailure(slot, formats::FailureKind::kAppMemoryLimit, SIGKILL, 0, callbacks);
  } else if (exit.killed()) {
    QueueFailure(slot, formats::FailureKind::kAppCrash, exit.signal(), 0, callbacks,
                 crash ? &*crash : nullptr);
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
        DropChannels(it->first, *it->second);
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
          LaunchSlot(*slot, callbacks);
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
