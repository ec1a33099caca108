#include "device/sandbox/init_process.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

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
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
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
  ::_exit(WIFEXITED(app_status) ? WEXITSTATUS(app_status) : 128 + WTERMSIG(app_status));
}

}  // namespace moat::device::sandbox
