#include "device/sandbox/namespaces.h"

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/file.h"

namespace moat::device::sandbox {
namespace {

// struct clone_args from <linux/sched.h> (CLONE_ARGS_SIZE_VER0), spelled out here because that
// header clashes with glibc's <sched.h>.
struct CloneArgs {
  uint64_t flags;
  uint64_t pidfd;
  uint64_t child_tid;
  uint64_t parent_tid;
  uint64_t exit_signal;
  uint64_t stack;
  uint64_t stack_size;
  uint64_t tls;
};
static_assert(sizeof(CloneArgs) == 64);

constexpr uint64_t kClonePidfd = 0x00001000;  // CLONE_PIDFD

long Clone3(CloneArgs* args) { return ::syscall(SYS_clone3, args, sizeof(*args)); }

}  // namespace

Result<ClonedChild> CloneIntoNewNamespaces() {
  int pidfd = -1;
  CloneArgs args{};
  args.flags = kSandboxNamespaces | kClonePidfd;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  long pid = Clone3(&args);
  if (pid < 0) {
    return Fail(ErrnoError("clone3", "new mount/pid/ipc/uts/net namespaces", errno));
  }
  if (pid == 0) return ClonedChild{};
  return ClonedChild{static_cast<pid_t>(pid), UniqueFd(pidfd)};
}

StepStatus UnshareCgroupNamespace() {
  if (::unshare(CLONE_NEWCGROUP) != 0) return StepStatus::FromErrno();
  return {};
}

pid_t ForkWithoutHandlers() {
  CloneArgs args{};
  args.exit_signal = SIGCHLD;
  return static_cast<pid_t>(Clone3(&args));
}

}  // namespace moat::device::sandbox
