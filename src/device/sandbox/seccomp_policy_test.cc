#include "device/sandbox/seccomp_policy.h"

#include <seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <functional>

#include <gtest/gtest.h>

namespace moat::device::sandbox {
namespace {

TEST(SeccompPolicyTest, NoDeniedSyscallIsAllowedInAnyClass) {
  for (SeccompClass c : {SeccompClass::kDefault, SeccompClass::kRealTime}) {
    auto allowed = AllowedSyscallNames(c);
    for (const DeniedSyscall& denied : DeniedSyscalls()) {
      EXPECT_EQ(std::count(allowed.begin(), allowed.end(), denied.name), 0)
          << denied.name << " is allowed in class " << SeccompClassName(c);
      EXPECT_FALSE(denied.why.empty()) << denied.name;
    }
  }
}

TEST(SeccompPolicyTest, EveryNameIsAKnownSyscall) {
  for (SeccompClass c : {SeccompClass::kDefault, SeccompClass::kRealTime}) {
    for (std::string_view name : AllowedSyscallNames(c)) {
      EXPECT_NE(seccomp_syscall_resolve_name(std::string(name).c_str()), __NR_SCMP_ERROR) << name;
    }
  }
  for (const DeniedSyscall& denied : DeniedSyscalls()) {
    EXPECT_NE(seccomp_syscall_resolve_name(std::string(denied.name).c_str()), __NR_SCMP_ERROR)
        << denied.name;
  }
}

TEST(SeccompPolicyTest, RealTimeIsStricterThanDefault) {
  auto rt = AllowedSyscallNames(SeccompClass::kRealTime);
  auto def = AllowedSyscallNames(SeccompClass::kDefault);
  for (std::string_view name : {"fork", "vfork", "wait4"}) {
    EXPECT_EQ(std::count(rt.begin(), rt.end(), name), 0) << name;
    EXPECT_EQ(std::count(def.begin(), def.end(), name), 1) << name;
  }
}

TEST(SeccompPolicyTest, FiltersCompileForEveryArchitecture) {
  for (SeccompArch arch : {SeccompArch::kNative, SeccompArch::kX86_64, SeccompArch::kAarch64}) {
    for (SeccompClass c : {SeccompClass::kDefault, SeccompClass::kRealTime}) {
      auto program = BuildAppFilter(c, {}, arch);
      ASSERT_TRUE(program) << program.error().message();
      EXPECT_GT(program->instructions.size(), 50u);
      EXPECT_LT(program->instructions.size(), static_cast<size_t>(BPF_MAXINSNS));
    }
    auto init = BuildInitFilter(arch);
    ASSERT_TRUE(init) << init.error().message();
    EXPECT_LT(init->instructions.size(), 40u);
  }
}

TEST(SeccompPolicyTest, TerminalInjectionIoctlsCannotBeAdded) {
  const uint32_t bad[] = {TIOCSTI};
  auto program = BuildAppFilter(SeccompClass::kDefault, bad);
  ASSERT_FALSE(program);
  EXPECT_EQ(program.error().message(), "seccomp policy: ioctl 0x5412 is never allowed");
}

// Runs `body` in a forked child under the default app filter and returns its wait status.
int RunFiltered(const BpfProgram& program, const std::function<int()>& body) {
  pid_t pid = fork();
  if (pid == 0) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(100);
    if (!ApplySeccompFilter(program).ok()) _exit(101);
    _exit(body());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

TEST(SeccompPolicyTest, TheRealFilterAllowsAndKills) {
  auto program = BuildAppFilter(SeccompClass::kDefault);
  ASSERT_TRUE(program);
  auto exits_zero = [](int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; };
  auto sigsys = [](int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS; };

  EXPECT_TRUE(exits_zero(RunFiltered(*program, [] { return getpid() > 0 ? 0 : 1; })));
  EXPECT_TRUE(exits_zero(RunFiltered(*program, [] {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    return s >= 0 ? 0 : 1;
  })));
  // clone3 fails softly so that glibc falls back to the filtered clone.
  EXPECT_TRUE(exits_zero(RunFiltered(
      *program, [] { return syscall(SYS_clone3, nullptr, 0) < 0 && errno == ENOSYS ? 0 : 1; })));
  EXPECT_TRUE(sigsys(RunFiltered(
      *program, [] { return static_cast<int>(ptrace(PTRACE_TRACEME, 0, nullptr, nullptr)); })));
  EXPECT_TRUE(sigsys(RunFiltered(*program, [] { return socket(AF_INET, SOCK_RAW, 1); })));
  EXPECT_TRUE(sigsys(RunFiltered(*program, [] { return socket(AF_PACKET, SOCK_DGRAM, 0); })));
  // The upper half of a 64-bit argument cannot launder a forbidden value.
  EXPECT_TRUE(sigsys(RunFiltered(*program, [] {
    return static_cast<int>(syscall(SYS_socket, (1ul << 32) | AF_INET, SOCK_STREAM, 0));
  })));
  EXPECT_TRUE(sigsys(RunFiltered(*program, [] {
    char c = 'x';
    return static_cast<int>(syscall(SYS_ioctl, 0, (1ul << 32) | TIOCSTI, &c));
  })));
  EXPECT_TRUE(sigsys(RunFiltered(*program, [] { return unshare(CLONE_NEWUSER); })));
  EXPECT_TRUE(sigsys(RunFiltered(*program, [] { return prctl(PR_SET_SECUREBITS, 0, 0, 0, 0); })));
}

TEST(SeccompPolicyTest, TheInitMayOnlyReadAndResumeTheAppThroughPtrace) {
  auto program = BuildInitFilter();
  ASSERT_TRUE(program);
  auto exits_zero = [](int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; };
  auto sigsys = [](int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS; };
  // Allowed requests reach the kernel (and fail there: nobody is traced).
  for (long request : std::initializer_list<long>{PTRACE_CONT, PTRACE_GETSIGINFO, PTRACE_GETREGSET,
                                                  PTRACE_SETOPTIONS}) {
    EXPECT_TRUE(exits_zero(RunFiltered(*program, [request] {
      return syscall(SYS_ptrace, request, 1, 0, 0) < 0 && errno == ESRCH ? 0 : 1;
    }))) << request;
  }
  // Anything that could change the app, or trace another process, kills the init.
  for (long request : std::initializer_list<long>{
           PTRACE_POKEDATA, PTRACE_POKEUSER, PTRACE_SETREGS, PTRACE_SETREGSET, PTRACE_ATTACH,
           PTRACE_SEIZE, PTRACE_TRACEME, PTRACE_PEEKDATA, PTRACE_CONT | (1L << 32)}) {
    EXPECT_TRUE(sigsys(RunFiltered(*program, [request] {
      return static_cast<int>(syscall(SYS_ptrace, request, 1, 0, 0));
    }))) << request;
  }
  EXPECT_TRUE(sigsys(RunFiltered(*program, [] {
    return static_cast<int>(syscall(SYS_process_vm_writev, 1, nullptr, 0, nullptr, 0, 0));
  })));
}

}  // namespace
}  // namespace moat::device::sandbox
