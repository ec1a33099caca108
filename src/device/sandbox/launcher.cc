#include "device/sandbox/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>

#include "core/file.h"
#include "core/log.h"
#include "device/sandbox/capabilities.h"
#include "device/sandbox/child_fds.h"
#include "device/sandbox/child_step.h"
#include "device/sandbox/credentials.h"
#include "device/sandbox/init_process.h"
#include "device/sandbox/landlock.h"
#include "device/sandbox/mounts.h"
#include "device/sandbox/namespaces.h"
#include "device/sandbox/network.h"
#include "device/sandbox/rlimits.h"
#include "device/sandbox/seccomp_policy.h"

// Why clone3 with fork semantics and not a dedicated-stack clone or vfork: the child needs its own
// copy of memory (it changes credentials and mounts for itself only, and the launcher must not be
// suspended while it sets up), and fork semantics let the child simply continue in RunChild()
// over the ChildPlan. The price is the usual rule for children of multi-threaded processes: after
// the clone, only async-signal-safe code. So everything that allocates (paths, argv, envp, BPF
// programs, the libcap state) is prepared in ChildPlan before the clone, and RunChild() makes
// syscalls over it and ends in execve or _exit: no malloc, no locks, no exceptions, no return.

namespace moat::device::sandbox {
namespace {

// Everything the child needs, computed before the clone. The child reads it through its
// copy-on-write copy of the launcher's memory.
struct ChildPlan {
  std::string app_name;
  MountPlan mounts;
  LandlockPlan landlock;
  std::vector<RlimitSetting> rlimits;
  BpfProgram app_filter;
  BpfProgram init_filter;
  EmptyCapSet empty_caps;
  std::string hostname;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string executable;
  std::vector<std::string> argv_storage;
  std::vector<std::string> envp_storage;
  std::vector<char*> argv;
  std::vector<char*> envp;
};

// The child's descriptors (its copies; the launcher keeps its own UniqueFds).
struct ChildFds {
  int sync;    // go-ahead from the launcher
  int error;   // failure reports to the launcher (CLOEXEC: closes on execve)
  int status;  // the init reports the app's wait status here
  int stdio[3];
  int inherited[kMaxInheritedFds];  // LaunchOptions::inherited_fds, for the app only
  int inherited_target[kMaxInheritedFds];
  size_t inherited_count;
};

[[noreturn]] void Die(int error_fd, ChildStep step, StepStatus status, int exit_code = 126) {
  ChildFailure failure{step, status.index, status.err};
  ssize_t n;
  do {
    n = ::write(error_fd, &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  ::_exit(exit_code);
}

// Child-side: the sandbox pipeline. See launcher.h for the order and why.
[[noreturn]] void RunChild(const ChildPlan& plan, ChildFds fds) {
  int keep[3 + kMaxInheritedFds] = {fds.sync, fds.error, fds.status};
  for (size_t i = 0; i < fds.inherited_count; ++i) keep[3 + i] = fds.inherited[i];
  if (StepStatus s = ArrangeChildFds(fds.stdio, std::span(keep, 3 + fds.inherited_count));
      !s.ok()) {
    Die(fds.error, ChildStep::kStdio, s);
  }
  const int sync = keep[0], error = keep[1], status = keep[2];

  // Wait until the launcher has put us into our cgroups (and run the network hook). EOF means it
  // gave up: exit quietly, nobody is listening.
  char go = 0;
  ssize_t n;
  do {
    n = ::read(sync, &go, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) ::_exit(1);
  ::close(sync);
  ::prctl(PR_SET_NAME, "moat-init", 0, 0, 0);  // cosmetic (ps, crash reports); cannot fail

  if (StepStatus s = UnshareCgroupNamespace(); !s.ok()) Die(error, ChildStep::kUnshareCgroup, s);
  if (StepStatus s = ApplyMountPlan(plan.mounts); !s.ok()) Die(error, ChildStep::kMount, s);
  ::umask(022);
  if (StepStatus s = BringUpLoopback(); !s.ok()) Die(error, ChildStep::kLoopback, s);
  if (::sethostname(plan.hostname.data(), plan.hostname.size()) != 0) {
    Die(error, ChildStep::kHostname, StepStatus::FromErrno());
  }
  if (StepStatus s = ApplyRlimits(plan.rlimits); !s.ok()) Die(error, ChildStep::kRlimit, s);
  // SECURITY: from here on no execve can gain privileges (setuid bits, file capabilities).
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    Die(error, ChildStep::kNoNewPrivs, StepStatus::FromErrno());
  }
  if (StepStatus s = ApplyLandlock(plan.landlock); !s.ok()) Die(error, ChildStep::kLandlock, s);
  ChildStep step = ChildStep::kSecurebits;
  if (StepStatus s = DropBoundingAndAmbient(step); !s.ok()) Die(error, step, s);
  if (StepStatus s = SwitchToAppIds(plan.uid, plan.gid, step); !s.ok()) Die(error, step, s);
  if (StepStatus s = ClearProcessCapabilities(plan.empty_caps); !s.ok()) {
    Die(error, ChildStep::kCapset, s);
  }
  if (StepStatus s = PrepareInitSignals(); !s.ok()) Die(error, ChildStep::kSignals, s);

  pid_t app = ForkWithoutHandlers();
  if (app < 0) Die(error, ChildStep::kForkApp, StepStatus::FromErrno());
  if (app == 0) {
    ::close(status);
    // The inherited descriptors at their numbers, without close-on-exec (dup2 clears it); the
    // CLOEXEC copies above kFirstPrivateFd vanish at execve.
    for (size_t i = 0; i < fds.inherited_count; ++i) {
      if (::dup2(keep[3 + i], fds.inherited_target[i]) < 0) {
        Die(error, ChildStep::kStdio, StepStatus::FromErrno(5), 127);
      }
    }
    if (StepStatus s = ResetSignalsForApp(); !s.ok()) Die(error, ChildStep::kSignals, s, 127);
    // Crash capture: the init becomes our tracer (crash_capture.h). Before the seccomp filter,
    // which forbids ptrace to the app. Best effort: where the host forbids it (Yama
    // ptrace_scope 3), the app runs untraced and its crashes are reported by signal only.
    (void)::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
    // SECURITY: the filter goes on last, right before execve, so that it covers the app from its
    // first instruction and nothing the sandbox itself needs has to be allowed.
    if (StepStatus s = ApplySeccompFilter(plan.app_filter); !s.ok()) {
      Die(error, ChildStep::kSeccompApp, s, 127);
    }
    ::execve(plan.executable.c_str(), plan.argv.data(), plan.envp.data());
    Die(error, ChildStep::kExecve, StepStatus::FromErrno(), 127);
  }
  for (size_t i = 0; i < fds.inherited_count; ++i) ::close(keep[3 + i]);
  RunInit(app, status, error, plan.init_filter);
}

Error DescribeChildFailure(const ChildPlan& plan, const ChildFailure& f) {
  std::string what;
  std::string subject;
  switch (f.step) {
    case ChildStep::kUnshareCgroup:
      what = "unshare";
      subject = "cgroup namespace";
      break;
    case ChildStep::kStdio:
      what = f.index < 3 || f.index == 5 ? "dup2" : f.index == 3 ? "fcntl F_DUPFD" : "close_range";
      subject = f.index < 3    ? fmt::format("stdio {}", f.index)
                : f.index == 5 ? std::string("inherited descriptors")
                               : std::string("launcher descriptors");
      break;
    case ChildStep::kMount:
      if (f.index < plan.mounts.ops.size()) {
        what = plan.mounts.ops[f.index].what;
        subject = plan.mounts.ops[f.index].subject;
      } else {
        what = "mount";
        subject = fmt::format("op {}", f.index);
      }
      break;
    case ChildStep::kLoopback:
      what = "bring up";
      subject = "lo";
      break;
    case ChildStep::kHostname:
      what = "sethostname";
      subject = plan.hostname;
      break;
    case ChildStep::kRlimit:
      what = "setrlimit";
      subject = f.index < plan.rlimits.size() ? std::string(plan.rlimits[f.index].name) : "?";
      break;
    case ChildStep::kNoNewPrivs:
      what = "prctl";
      subject = "PR_SET_NO_NEW_PRIVS";
      break;
    case ChildStep::kLandlock:
      if (f.index < plan.landlock.rules.size()) {
        what = "landlock rule for";
        subject = plan.landlock.rules[f.index].path;
      } else {
        what = f.index == plan.landlock.rules.size() ? "landlock_create_ruleset"
                                                     : "landlock_restrict_self";
        subject = fmt::format("ABI {}", plan.landlock.abi);
      }
      break;
    case ChildStep::kSecurebits:
      what = "prctl";
      subject = "PR_SET_SECUREBITS";
      break;
    case ChildStep::kBoundingSet:
      what = "drop bounding capability";
      subject = fmt::format("{}", f.index);
      break;
    case ChildStep::kAmbient:
      what = "clear";
      subject = "ambient capabilities";
      break;
    case ChildStep::kSetgroups:
      what = "setgroups";
      subject = "[]";
      break;
    case ChildStep::kSetresgid:
      what = "setresgid";
      subject = fmt::format("{}", plan.gid);
      break;
    case ChildStep::kSetresuid:
      what = "setresuid";
      subject = fmt::format("{}", plan.uid);
      break;
    case ChildStep::kCapset:
      what = "capset";
      subject = "empty capability sets";
      break;
    case ChildStep::kSignals:
      what = "sigaction";
      subject = fmt::format("signal {}", f.index);
      break;
    case ChildStep::kForkApp:
      what = "fork";
      subject = "the app";
      break;
    case ChildStep::kSeccompInit:
      what = "seccomp";
      subject = "the init's filter";
      break;
    case ChildStep::kSeccompApp:
      what = "seccomp";
      subject = "the app's filter";
      break;
    case ChildStep::kExecve:
      what = "execve";
      subject = plan.executable;
      break;
  }
  return ErrnoError(what, subject, f.err);
}

Result<UniqueFd> OpenOutput(const std::filesystem::path& path) {
  if (path.empty()) return OpenFile("/dev/null", O_WRONLY);
  return OpenFile(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0640);
}

// The seccomp programs depend only on the class (the launcher passes no extra ioctls yet) and the
// native architecture, while compiling them with libseccomp costs about a millisecond of CPU per
// launch, a large part of a cold start (bench/README.md, moat-sandbox-coldstart). So each
// program is compiled once per process and copied into every plan: the same bytes as before.
Result<BpfProgram> CachedFilter(std::optional<SeccompClass> app_class) {
  static std::mutex mutex;
  static std::map<std::optional<SeccompClass>, BpfProgram> cache;  // nullopt: the init's filter
  std::lock_guard lock(mutex);
  if (auto it = cache.find(app_class); it != cache.end()) return it->second;
  MOAT_ASSIGN_OR_RETURN(BpfProgram program,
                        app_class ? BuildAppFilter(*app_class) : BuildInitFilter());
  cache.emplace(app_class, program);
  return program;
}

Result<ChildPlan> PlanChild(const SandboxSpec& spec) {
  ChildPlan plan;
  plan.app_name = spec.app_name;
  MOAT_ASSIGN_OR_RETURN(plan.mounts, BuildMountPlan(spec));
  MOAT_ASSIGN_OR_RETURN(int abi, LandlockAbiVersion());
  if (abi == 0) {
    log::Warn("sandbox '{}': the kernel has no Landlock; launching with the other layers only",
              spec.app_name);
  }
  plan.landlock = BuildLandlockPlan(spec, abi);
  plan.rlimits = BuildRlimits(spec);
  MOAT_ASSIGN_OR_RETURN(plan.app_filter, CachedFilter(spec.seccomp_class));
  MOAT_ASSIGN_OR_RETURN(plan.init_filter, CachedFilter(std::nullopt));
  MOAT_ASSIGN_OR_RETURN(plan.empty_caps, MakeEmptyCapSet());
  plan.hostname = spec.EffectiveHostname();
  plan.uid = spec.uid;
  plan.gid = spec.gid;
  plan.executable = spec.executable.native();
  plan.argv_storage.push_back(plan.executable);
  plan.argv_storage.insert(plan.argv_storage.end(), spec.args.begin(), spec.args.end());
  plan.envp_storage = spec.env;
  for (auto& a : plan.argv_storage) plan.argv.push_back(a.data());
  plan.argv.push_back(nullptr);
  for (auto& e : plan.envp_storage) plan.envp.push_back(e.data());
  plan.envp.push_back(nullptr);
  return plan;
}

Result<std::pair<UniqueFd, UniqueFd>> MakePipe(std::string_view what) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Fail(ErrnoError("pipe2", std::string(what), errno));
  return std::pair{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// Reads the child's failure report. Returns nullopt on EOF (the app's execve succeeded: the last
// copy of the CLOEXEC write end is gone), or an error if the child takes longer than `timeout`.
Result<std::optional<ChildFailure>> ReadChildReport(int fd, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  ChildFailure failure{};
  size_t got = 0;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Fail(ErrorCode::kUnavailable, "the sandbox did not finish setting up within {} ms",
                  timeout.count());
    }
    struct pollfd p {
      fd, POLLIN, 0
    };
    int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0) {
      if (errno == EINTR) continue;
      return Fail(ErrnoError("poll", "sandbox error pipe", errno));
    }
    if (rc == 0) continue;
    ssize_t n = ::read(fd, reinterpret_cast<char*>(&failure) + got, sizeof failure - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail(ErrnoError("read", "sandbox error pipe", errno));
    }
    if (n == 0) {
      if (got == 0) return std::optional<ChildFailure>();
      return Fail(ErrorCode::kInternal, "truncated failure report from the sandbox ({} bytes)",
                  got);
    }
    got += static_cast<size_t>(n);
    if (got == sizeof failure) return std::optional<ChildFailure>(failure);
  }
}

bool IsForwarded(int signal) {
  for (int s : ForwardedSignals()) {
    if (s == signal) return true;
  }
  return false;
}

}  // namespace

ExitStatus ExitStatus::FromWaitStatus(int status) {
  if (WIFSIGNALED(status)) return Killed(WTERMSIG(status));
  return Exited(WEXITSTATUS(status));
}

std::string ExitStatus::Describe() const {
  if (exited()) return fmt::format("exited with status {}", value_);
  const char* abbrev = sigabbrev_np(value_);
  return fmt::format("killed by signal {} (SIG{})", value_, abbrev ? abbrev : "?");
}

LaunchedProcess::~LaunchedProcess() {
  if (!pidfd_.valid() || status_) return;
  (void)Signal(SIGKILL);
  (void)Wait();  // reaps and removes the cgroups; nothing more to do if it fails
}

Result<void> LaunchedProcess::Signal(int signal) {
  if (signal != SIGKILL && !IsForwarded(signal)) {
    return Fail(ErrorCode::kInvalidArgument, "sandbox '{}': signal {} is not forwarded to apps",
                app_name_, signal);
  }
  if (status_) return Ok();
  if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), signal, nullptr, 0) != 0 && errno != ESRCH) {
    return Fail(ErrnoError("pidfd_send_signal", fmt::format("sandbox '{}'", app_name_), errno));
  }
  return Ok();
}

Result<ExitStatus> LaunchedProcess::Wait() {
  if (status_) return *status_;
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  while (::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED) != 0) {
    if (errno != EINTR) {
      return Fail(ErrnoError("waitid", fmt::format("sandbox '{}'", app_name_), errno));
    }
  }
  // The init reports the app's own status; without it (the init was killed, e.g. by Stop's
  // SIGKILL) the init's death is the app's.
  ExitStatus result = info.si_code == CLD_EXITED ? ExitStatus::Exited(info.si_status)
                                                 : ExitStatus::Killed(info.si_status);
  int app_status = 0;
  ssize_t n;
  do {
    n = ::read(status_fd_.get(), &app_status, sizeof app_status);
  } while (n < 0 && errno == EINTR);
  if (n == sizeof app_status) {
    result = ExitStatus::FromWaitStatus(app_status);
    // A crash record may follow (init_process.cc). The init is gone, so this reads to EOF.
    std::vector<uint8_t> record(sizeof(CrashRecord) + 1);
    size_t got = 0;
    while (got < record.size()) {
      ssize_t r = ::read(status_fd_.get(), record.data() + got, record.size() - got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    if (got > 0 && result.killed()) {
      auto crash = ParseCrashRecord(std::span(record.data(), got));
      if (!crash) {
        log::Warn("sandbox '{}': ignoring the crash record: {}", app_name_,
                  crash.error().message());
      } else if (crash->signal == result.signal()) {
        crash_ = std::move(*crash);
      }
    }
  }
  status_ = result;
  if (auto r = cgroup_.Remove(); !r) {
    return Fail(r.error().WithContext(
        fmt::format("sandbox '{}' {}, but cleanup failed", app_name_, result.Describe())));
  }
  return result;
}

Result<std::optional<ExitStatus>> LaunchedProcess::WaitFor(std::chrono::milliseconds timeout) {
  if (status_) return std::optional<ExitStatus>(*status_);
  struct pollfd p {
    pidfd_.get(), POLLIN, 0
  };
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    int rc = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (rc > 0) break;
    if (rc == 0) return std::optional<ExitStatus>();
    if (errno != EINTR)
      return Fail(ErrnoError("poll", fmt::format("sandbox '{}'", app_name_), errno));
  }
  MOAT_ASSIGN_OR_RETURN(ExitStatus status, Wait());
  return std::optional<ExitStatus>(status);
}

Result<ExitStatus> LaunchedProcess::Stop(std::chrono::milliseconds grace) {
  MOAT_TRY(Signal(SIGTERM));
  MOAT_ASSIGN_OR_RETURN(std::optional<ExitStatus> status, WaitFor(grace));
  if (status) return *status;
  MOAT_TRY(Signal(SIGKILL));
  return Wait();
}

// The launch pipeline proper; a friend of LaunchedProcess so it can build one.
class Launcher {
 public:
  static Result<LaunchedProcess> Run(const SandboxSpec& spec, LaunchOptions& options);
};

Result<LaunchedProcess> Launcher::Run(const SandboxSpec& spec, LaunchOptions& options) {
  MOAT_TRY(spec.Validate());
  if (spec.network == NetworkMode::kConfigured && !options.network_hook) {
    return Fail(ErrorCode::kInvalidArgument, "network mode 'configured' needs a network hook");
  }
  if (spec.network == NetworkMode::kNone && options.network_hook) {
    return Fail(ErrorCode::kInvalidArgument, "network mode 'none' takes no network hook");
  }
  if (options.inherited_fds.size() > static_cast<size_t>(kMaxInheritedFds)) {
    return Fail(ErrorCode::kInvalidArgument, "at most {} inherited descriptors, not {}",
                kMaxInheritedFds, options.inherited_fds.size());
  }
  bool used[kMaxInheritedFds] = {};
  for (const InheritedFd& inherited : options.inherited_fds) {
    const int slot = inherited.target - 3;
    if (!inherited.fd || slot < 0 || slot >= kMaxInheritedFds || used[slot]) {
      return Fail(ErrorCode::kInvalidArgument,
                  "inherited descriptor for {}: targets are 3..{}, each once, with a valid fd",
                  inherited.target, 2 + kMaxInheritedFds);
    }
    used[slot] = true;
  }

  // 1. Plan everything the child will do, and open what it will inherit.
  MOAT_ASSIGN_OR_RETURN(ChildPlan plan, PlanChild(spec));
  MOAT_ASSIGN_OR_RETURN(UniqueFd stdin_fd, OpenFile("/dev/null", O_RDONLY));
  UniqueFd stdout_fd = std::move(options.io.stdout_fd);
  UniqueFd stderr_fd = std::move(options.io.stderr_fd);
  if (!stdout_fd) {
    MOAT_ASSIGN_OR_RETURN(stdout_fd, OpenOutput(spec.stdout_path));
  }
  if (!stderr_fd) {
    MOAT_ASSIGN_OR_RETURN(stderr_fd, OpenOutput(spec.stderr_path));
  }

  // 2. The cgroups, before any process exists.
  if (!options.cgroup_layout) {
    MOAT_ASSIGN_OR_RETURN(options.cgroup_layout, DetectCgroupLayout());
  }
  MOAT_ASSIGN_OR_RETURN(
      AppCgroup cgroup,
      AppCgroup::Create(*options.cgroup_layout, spec.instance_id, spec.app_name, spec.limits));

  // 3. The channels: go-ahead (a socket, so that a dead child gives EPIPE, not SIGPIPE),
  // failure reports, and the app's exit status.
  int sync_pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sync_pair) != 0) {
    return Fail(ErrnoError("socketpair", "sandbox go-ahead", errno));
  }
  UniqueFd sync_parent(sync_pair[0]);
  UniqueFd sync_child(sync_pair[1]);
  MOAT_ASSIGN_OR_RETURN(auto error_pipe, MakePipe("sandbox error pipe"));
  MOAT_ASSIGN_OR_RETURN(auto status_pipe, MakePipe("sandbox status pipe"));

  // 4. Clone. The child never returns from RunChild.
  ChildFds child_fds{sync_child.get(),
                     error_pipe.second.get(),
                     status_pipe.second.get(),
                     {stdin_fd.get(), stdout_fd.get(), stderr_fd.get()},
                     {},
                     {},
                     options.inherited_fds.size()};
  for (size_t i = 0; i < options.inherited_fds.size(); ++i) {
    child_fds.inherited[i] = options.inherited_fds[i].fd.get();
    child_fds.inherited_target[i] = options.inherited_fds[i].target;
  }
  MOAT_ASSIGN_OR_RETURN(ClonedChild child, CloneIntoNewNamespaces());
  if (child.pid == 0) RunChild(plan, child_fds);
  options.inherited_fds.clear();
  sync_child.Reset();
  error_pipe.second.Reset();
  status_pipe.second.Reset();
  stdin_fd.Reset();
  stdout_fd.Reset();
  stderr_fd.Reset();
  // From here on, any failure return destroys `process`, which kills and reaps the child and
  // removes the cgroups.
  LaunchedProcess process(spec.app_name, child.pid, std::move(child.pidfd),
                          std::move(status_pipe.first), std::move(cgroup));

  // 5. Confine the child from outside, then let it go.
  MOAT_TRY(process.cgroup_.AddProcess(child.pid));
  if (options.network_hook) {
    if (auto r = options.network_hook(child.pid); !r) {
      return Fail(r.error().WithContext("network hook"));
    }
  }
  char go = 1;
  if (::send(sync_parent.get(), &go, 1, MSG_NOSIGNAL) != 1) {
    return Fail(ErrnoError("send", "sandbox go-ahead", errno));
  }
  sync_parent.Reset();

  // 6. Wait for the app's execve or a failure report.
  MOAT_ASSIGN_OR_RETURN(std::optional<ChildFailure> failure,
                        ReadChildReport(error_pipe.first.get(), options.setup_timeout));
  if (failure) return Fail(DescribeChildFailure(plan, *failure));
  return process;
}

Result<LaunchedProcess> Launch(const SandboxSpec& spec, LaunchOptions options) {
  auto launched = Launcher::Run(spec, options);
  if (!launched) {
    return Fail(launched.error().WithContext(fmt::format("sandbox launch of '{}'", spec.app_name)));
  }
  return launched;
}

}  // namespace moat::device::sandbox
