#include "device/sandbox/init_process.h"

#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "device/sandbox/crash_capture.h"

namespace moat::device::sandbox {
namespace {

constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

void IgnoreSignal(int) {}

sigset_t InitSignalSet() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : kForwarded) sigaddset(&set, sig);
  sigaddset(&set, SIGCHLD);
  return set;
}

void WriteFailure(int fd, ChildStep step, int err) {
  ChildFailure failure{step, 0, err};
  ssize_t n;
  do {
    n = ::write(fd, &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
}

// The latest crash capture (the app may survive a signal it handles; what counts is the one
// that killed it). Static: the init is single-threaded and must not allocate.
CrashRecord g_crash;
bool g_have_crash = false;
bool g_exec_seen = false;

long Ptrace(int request, pid_t tid, unsigned long addr, unsigned long data) {
  return ::syscall(SYS_ptrace, request, tid, addr, data);
}

// A traced thread of the app stopped (crash_capture.h has why the init traces the app). Every
// stop ends with the thread resumed; errors (ESRCH: it died meanwhile) need no handling.
void HandleStop(pid_t app, pid_t tid, int status) {
  const int sig = WSTOPSIG(status);
  if ((status >> 16) != 0) {
    // PTRACE_EVENT_CLONE / _EXEC: nothing to deliver.
    Ptrace(PTRACE_CONT, tid, 0, 0);
    return;
  }
  if (!g_exec_seen && tid == app && sig == SIGTRAP) {
    // The SIGTRAP that PTRACE_TRACEME's tracee gets after its execve. From now on: follow its
    // threads, report later execs as events (not as a SIGTRAP that would kill it), and take
    // the app down if the init dies.
    g_exec_seen = true;
    Ptrace(PTRACE_SETOPTIONS, tid, 0, PTRACE_O_EXITKILL | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC);
    Ptrace(PTRACE_CONT, tid, 0, 0);
    return;
  }
  siginfo_t info;
  if (Ptrace(PTRACE_GETSIGINFO, tid, 0, reinterpret_cast<unsigned long>(&info)) != 0) {
    // A group-stop (SIGSTOP/SIGTSTP took effect): resume; apps are not stopped.
    Ptrace(PTRACE_CONT, tid, 0, 0);
    return;
  }
  if (sig == SIGSTOP) {
    // The stop a new thread starts with under PTRACE_O_TRACECLONE (or a SIGSTOP the app sent
    // itself): swallowed. The init never forwards SIGSTOP.
    Ptrace(PTRACE_CONT, tid, 0, 0);
    return;
  }
  if (IsCrashSignal(sig)) {
    CaptureCrash(tid, app, info, &g_crash);
    g_have_crash = true;
  }
  Ptrace(PTRACE_CONT, tid, 0, static_cast<unsigned long>(sig));
}

}  // namespace

std::span<const int> ForwardedSignals() { return kForwarded; }

StepStatus PrepareInitSignals() {
  struct sigaction action {};
  action.sa_handler = IgnoreSignal;
  sigemptyset(&action.sa_mask);
  for (int sig : kForwarded) {
    if (::sigaction(sig, &action, nullptr) != 0)
      return StepStatus::FromErrno(static_cast<uint32_t>(sig));
  }
  if (::sigaction(SIGCHLD, &action, nullptr) != 0) return StepStatus::FromErrno(SIGCHLD);
  sigset_t set = InitSignalSet();
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0) return StepStatus::FromErrno();
  return {};
}

StepStatus ResetSignalsForApp() {
  // Every disposition, not just the forwarded ones: an ignored signal (moatd may ignore SIGPIPE)
  // would stay ignored across execve.
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    // glibc reserves a few real-time signals for itself and refuses them with EINVAL.
    if (::sigaction(sig, &action, nullptr) != 0 && errno != EINVAL) {
      return StepStatus::FromErrno(static_cast<uint32_t>(sig));
    }
  }
  sigset_t empty;
  sigemptyset(&empty);
  if (::sigprocmask(SIG_SETMASK, &empty, nullptr) != 0) return StepStatus::FromErrno();
  return {};
}

void RunInit(pid_t app, int status_fd, int error_fd, const BpfProgram& init_filter) {
  if (StepStatus s = ApplySeccompFilter(init_filter); !s.ok()) {
    WriteFailure(error_fd, ChildStep::kSeccompInit, s.err);
    ::kill(app, SIGKILL);
    ::_exit(125);
  }
  ::close(error_fd);

  const sigset_t set = InitSignalSet();
  int app_status = 0;
  for (;;) {
    siginfo_t info;
    int sig = ::sigwaitinfo(&set, &info);
    if (sig < 0) continue;  // EINTR
    if (sig != SIGCHLD) {
      ::kill(app, sig);
      continue;
    }
    bool app_done = false;
    for (;;) {
      int status = 0;
      // __WALL: the app's threads are traced too, and their stops come here.
      pid_t pid = ::waitpid(-1, &status, WNOHANG | __WALL);
      if (pid <= 0) break;
      if (WIFSTOPPED(status)) {
        HandleStop(app, pid, status);
        continue;
      }
      if (pid == app) {
        app_status = status;
        app_done = true;
      }
    }
    if (app_done) break;
  }
  ssize_t n;
  do {
    n = ::write(status_fd, &app_status, sizeof app_status);
  } while (n < 0 && errno == EINTR);
  // The crash record follows the status, when the signal that killed the app is the captured
  // one (the launcher checks again: it trusts nothing from inside the sandbox).
  if (g_have_crash && WIFSIGNALED(app_status) && WTERMSIG(app_status) == g_crash.signo) {
    do {
      n = ::write(status_fd, &g_crash, sizeof g_crash);
    } while (n < 0 && errno == EINTR);
  }
  ::_exit(WIFEXITED(app_status) ? WEXITSTATUS(app_status) : 128 + WTERMSIG(app_status));
}

}  // namespace moat::device::sandbox
