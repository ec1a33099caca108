#include "device/sandbox/seccomp_policy.h"

#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>

#include "core/file.h"
#include "core/unique_fd.h"

namespace moat::device::sandbox {
namespace {

enum Classes : unsigned {
  kDefaultClass = 1u << 0,
  kRealTimeClass = 1u << 1,
  kAllClasses = kDefaultClass | kRealTimeClass,
};

unsigned ClassBit(SeccompClass c) {
  return c == SeccompClass::kDefault ? kDefaultClass : kRealTimeClass;
}

// ---------------------------------------------------------------------------------------------
// The decision table: syscalls allowed without argument checks, by group. Anything not listed
// here or in AddConditionalRules() kills the app.
// ---------------------------------------------------------------------------------------------
struct AllowGroup {
  std::string_view group;
  unsigned classes;
  std::vector<std::string_view> syscalls;
  std::string_view why;
};

const std::vector<AllowGroup>& AllowTable() {
  static const std::vector<AllowGroup> table = {
      {"exit", kAllClasses, {"exit", "exit_group"}, "every process must be able to end"},
      {"exec",
       kAllClasses,
       {"execve"},
       "the sandbox's last step is the app's execve; later execs can only reach the read-only "
       "image and runtime binds (Landlock and the mounts decide what exists)"},
      {"memory",
       kAllClasses,
       {"brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync", "mincore", "membarrier"},
       "heap, stacks, the loader mapping code, allocators returning memory; usage is bounded by "
       "the "
       "memory cgroup"},
      {"memory-lock",
       kRealTimeClass,
       {"mlock", "mlock2", "munlock", "mlockall", "munlockall"},
       "real-time apps lock their working set; RLIMIT_MEMLOCK bounds it (0 for other classes)"},
      {"file-io",
       kAllClasses,
       {"read",      "write",           "readv",       "writev",  "pread64",
        "pwrite64",  "preadv",          "pwritev",     "preadv2", "pwritev2",
        "lseek",     "close",           "close_range", "dup",     "dup2",
        "dup3",      "fcntl",           "flock",       "pipe",    "pipe2",
        "sendfile",  "copy_file_range", "splice",      "tee",     "fadvise64",
        "readahead", "fsync",           "fdatasync",   "syncfs",  "ftruncate",
        "fallocate", "memfd_create"},
       "I/O on descriptors the app already holds"},
      {"file-names",
       kAllClasses,
       {"open",
        "openat",
        "creat",
        "stat",
        "lstat",
        "fstat",
        "newfstatat",
        "statx",
        "statfs",
        "fstatfs",
        "access",
        "faccessat",
        "faccessat2",
        "getdents",
        "getdents64",
        "readlink",
        "readlinkat",
        "getcwd",
        "chdir",
        "fchdir",
        "mkdir",
        "mkdirat",
        "rmdir",
        "unlink",
        "unlinkat",
        "rename",
        "renameat",
        "renameat2",
        "link",
        "linkat",
        "symlink",
        "symlinkat",
        "chmod",
        "fchmod",
        "fchmodat",
        "truncate",
        "utimensat",
        "umask",
        "mknod",
        "mknodat",
        "inotify_init1",
        "inotify_add_watch",
        "inotify_rm_watch"},
       "path operations inside the sandbox's own view: the mounts make all but /tmp and storage "
       "read-only, Landlock repeats it, and without capabilities mknod can only make FIFOs"},
      {"poll",
       kAllClasses,
       {"poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
        "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "signalfd",
        "signalfd4"},
       "event loops"},
      {"time",
       kAllClasses,
       {"clock_gettime", "clock_getres", "clock_nanosleep", "gettimeofday", "nanosleep", "time",
        "times", "getitimer", "setitimer", "alarm", "timer_create", "timer_settime",
        "timer_gettime", "timer_getoverrun", "timer_delete", "timerfd_create", "timerfd_settime",
        "timerfd_gettime"},
       "reading clocks and sleeping; setting the clock is denied"},
      {"signals",
       kAllClasses,
       {"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait",
        "rt_sigsuspend", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack", "kill", "tgkill",
        "tkill", "pause", "restart_syscall"},
       "signal handling; signals only reach processes in the app's own PID namespace (and "
       "Landlock's signal scope where the kernel has it)"},
      {"threads",
       kAllClasses,
       {"futex", "set_robust_list", "get_robust_list", "set_tid_address", "rseq", "gettid",
        "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
        "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min", "getpriority",
        "setpriority", "getcpu", "arch_prctl"},
       "threads and their synchronisation (clone itself is filtered below); arch_prctl sets the "
       "x86 TLS register; affinity stays inside the cpuset; raising priority needs RLIMIT_NICE, "
       "which is 0"},
      {"processes",
       kDefaultClass,
       {"fork", "vfork", "wait4", "waitid"},
       "default apps may run child processes (bounded by pids.max)"},
      {"identity",
       kAllClasses,
       {"getpid", "getppid", "getpgrp", "getpgid",   "setpgid",   "getsid",    "setsid",
        "getuid", "geteuid", "getgid",  "getegid",   "getresuid", "getresgid", "getgroups",
        "capget", "uname",   "sysinfo", "getrandom", "getrlimit", "setrlimit", "getrusage"},
       "reading who and where the process is, and lowering its own limits (raising a hard limit "
       "needs CAP_SYS_RESOURCE)"},
      {"sockets",
       kAllClasses,
       {"bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername", "sendto",
        "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "setsockopt",
        "getsockopt"},
       "use of sockets the app could create (socket() is filtered below); where they can reach is "
       "the network namespace's business"},
  };
  return table;
}

// The argument-filtered syscalls; AddConditionalRules() implements them.
constexpr std::string_view kConditionalNames[] = {"socket", "socketpair", "clone",    "clone3",
                                                  "prctl",  "ioctl",      "prlimit64"};

// ---------------------------------------------------------------------------------------------
// Refused on purpose (none of these may appear above; seccomp_policy_test checks it).
// ---------------------------------------------------------------------------------------------
constexpr DeniedSyscall kDenied[] = {
    {"ptrace", "inspecting or controlling other processes"},
    {"process_vm_readv", "reading another process's memory"},
    {"process_vm_writev", "writing another process's memory"},
    {"kcmp", "probing another process's kernel objects"},
    {"pidfd_getfd", "stealing another process's descriptors"},
    {"mount", "changing the sandbox's file system view"},
    {"umount2", "uncovering what a mount hides"},
    {"fsopen", "new mount API"},
    {"fsconfig", "new mount API"},
    {"fsmount", "new mount API"},
    {"fspick", "new mount API"},
    {"move_mount", "new mount API"},
    {"open_tree", "new mount API"},
    {"mount_setattr", "new mount API"},
    {"pivot_root", "changing the root"},
    {"chroot", "changing the root"},
    {"unshare", "new namespaces (a user namespace would grant capabilities inside it)"},
    {"setns", "entering other namespaces"},
    {"bpf", "loading kernel programs; a large attack surface"},
    {"kexec_load", "replacing the running kernel"},
    {"kexec_file_load", "replacing the running kernel"},
    {"keyctl", "the kernel keyring (shared across the machine)"},
    {"add_key", "the kernel keyring"},
    {"request_key", "the kernel keyring"},
    {"init_module", "loading kernel modules"},
    {"finit_module", "loading kernel modules"},
    {"delete_module", "unloading kernel modules"},
    {"perf_event_open", "performance counters: side channels and kernel attack surface"},
    {"userfaultfd", "stalling the kernel on page faults, a common exploit primitive"},
    {"io_uring_setup", "io_uring performs I/O that seccomp never sees"},
    {"io_uring_enter", "io_uring"},
    {"io_uring_register", "io_uring"},
    {"reboot", "rebooting the device"},
    {"swapon", "swap configuration"},
    {"swapoff", "swap configuration"},
    {"acct", "process accounting"},
    {"quotactl", "disk quotas"},
    {"open_by_handle_at", "opening files by handle bypasses the mount view"},
    {"name_to_handle_at", "file handles"},
    {"iopl", "raw I/O port access"},
    {"ioperm", "raw I/O port access"},
    {"personality", "legacy execution domains (e.g. READ_IMPLIES_EXEC)"},
    {"syslog", "the kernel log"},
    {"settimeofday", "setting the clock"},
    {"clock_settime", "setting the clock"},
    {"clock_adjtime", "adjusting the clock"},
    {"adjtimex", "adjusting the clock"},
    {"sethostname", "the hostname is the sandbox's"},
    {"setdomainname", "the domain name is the sandbox's"},
    {"seccomp", "stacking filters with user notification is not needed by apps"},
    {"setuid", "identity is fixed by the sandbox"},
    {"setgid", "identity is fixed by the sandbox"},
    {"setreuid", "identity is fixed by the sandbox"},
    {"setregid", "identity is fixed by the sandbox"},
    {"setresuid", "identity is fixed by the sandbox"},
    {"setresgid", "identity is fixed by the sandbox"},
    {"setgroups", "identity is fixed by the sandbox"},
    {"setfsuid", "identity is fixed by the sandbox"},
    {"setfsgid", "identity is fixed by the sandbox"},
    {"capset", "capabilities are fixed (empty) by the sandbox"},
    {"chown", "changing ownership"},
    {"fchown", "changing ownership"},
    {"lchown", "changing ownership"},
    {"fchownat", "changing ownership"},
    {"mbind", "NUMA policy"},
    {"set_mempolicy", "NUMA policy"},
    {"migrate_pages", "moving other processes' pages"},
    {"move_pages", "moving other processes' pages"},
    {"fanotify_init", "watching the whole file system"},
    {"vhangup", "hanging up terminals"},
    {"uselib", "legacy library loading"},
    {"landlock_create_ruleset", "not needed: the sandbox's ruleset is already applied"},
};

// ---------------------------------------------------------------------------------------------
// libseccomp plumbing.
// ---------------------------------------------------------------------------------------------
struct CtxRelease {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};
using Ctx = std::unique_ptr<void, CtxRelease>;

Error SeccompError(std::string_view what, std::string_view subject, int rc) {
  return ErrnoError(fmt::format("seccomp {}", what), std::string(subject), -rc);
}

uint32_t ArchToken(SeccompArch arch) {
  switch (arch) {
    case SeccompArch::kNative:
      return SCMP_ARCH_NATIVE;
    case SeccompArch::kX86_64:
      return SCMP_ARCH_X86_64;
    case SeccompArch::kAarch64:
      return SCMP_ARCH_AARCH64;
  }
  return SCMP_ARCH_NATIVE;
}

class FilterBuilder {
 public:
  static Result<FilterBuilder> Create(SeccompArch arch) {
    Ctx ctx(seccomp_init(SCMP_ACT_KILL_PROCESS));
    if (!ctx) return Fail(ErrorCode::kInternal, "seccomp_init failed");
    // SECURITY: a syscall through a foreign ABI (int 0x80, x32) kills the process too, instead of
    // the libseccomp default (killing only the thread).
    if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
        rc != 0) {
      return Fail(SeccompError("attr", "ACT_BADARCH", rc));
    }
    uint32_t target = ArchToken(arch);
    if (arch != SeccompArch::kNative && target != seccomp_arch_native()) {
      if (int rc = seccomp_arch_add(ctx.get(), target); rc != 0) {
        return Fail(SeccompError("arch_add", "target", rc));
      }
      if (int rc = seccomp_arch_remove(ctx.get(), SCMP_ARCH_NATIVE); rc != 0) {
        return Fail(SeccompError("arch_remove", "native", rc));
      }
    } else {
      target = seccomp_arch_native();
    }
    return FilterBuilder(std::move(ctx), target);
  }

  // Resolves `name`: the native number (what seccomp_rule_add expects; libseccomp translates it
  // for the target) or nullopt if the target architecture has no such syscall. An unknown name is
  // an error in the table.
  Result<std::optional<int>> Resolve(std::string_view name) const {
    std::string n(name);
    int native = seccomp_syscall_resolve_name(n.c_str());
    int on_target = seccomp_syscall_resolve_name_arch(target_, n.c_str());
    if (native == __NR_SCMP_ERROR && on_target == __NR_SCMP_ERROR) {
      return Fail(ErrorCode::kInternal, "seccomp policy: unknown syscall '{}'", name);
    }
    if (on_target < 0) return std::optional<int>();
    return std::optional<int>(native);
  }

  Result<void> Add(std::string_view name, uint32_t action,
                   std::initializer_list<scmp_arg_cmp> args = {}) {
    MOAT_ASSIGN_OR_RETURN(std::optional<int> nr, Resolve(name));
    if (!nr) return Ok();
    int rc = seccomp_rule_add_array(ctx_.get(), action, *nr, static_cast<unsigned>(args.size()),
                                    args.size() ? args.begin() : nullptr);
    if (rc != 0) return Fail(SeccompError("rule_add", name, rc));
    return Ok();
  }

  Result<BpfProgram> Export() {
    UniqueFd memfd(::memfd_create("moat-seccomp", MFD_CLOEXEC));
    if (!memfd) return Fail(ErrnoError("memfd_create", "seccomp filter", errno));
    if (int rc = seccomp_export_bpf(ctx_.get(), memfd.get()); rc != 0) {
      return Fail(SeccompError("export_bpf", "filter", rc));
    }
    if (::lseek(memfd.get(), 0, SEEK_SET) != 0) {
      return Fail(ErrnoError("lseek", "seccomp filter", errno));
    }
    constexpr size_t kMaxBytes = BPF_MAXINSNS * sizeof(sock_filter);
    MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                          ReadAll(memfd.get(), kMaxBytes, "seccomp filter"));
    if (bytes.empty() || bytes.size() % sizeof(sock_filter) != 0) {
      return Fail(ErrorCode::kInternal, "seccomp filter: bad BPF size {}", bytes.size());
    }
    BpfProgram program;
    program.instructions.resize(bytes.size() / sizeof(sock_filter));
    std::memcpy(program.instructions.data(), bytes.data(), bytes.size());
    return program;
  }

 private:
  FilterBuilder(Ctx ctx, uint32_t target) : ctx_(std::move(ctx)), target_(target) {}
  Ctx ctx_;
  uint32_t target_;
};

constexpr uint64_t kNamespaceFlags = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
                                     CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET;
constexpr uint64_t kLow32 = 0xffffffffull;

// ioctl requests any app may make: terminal queries (isatty, window size) and generic
// descriptor flags. Compared on the low 32 bits, as the kernel reads the request.
constexpr uint32_t kBasicIoctls[] = {TCGETS, TIOCGWINSZ, FIONREAD, FIONBIO, FIOCLEX, FIONCLEX};
// Interface queries by name/index (if_nametoindex and friends) for apps with sockets.
constexpr uint32_t kNetIoctls[] = {SIOCGIFINDEX, SIOCGIFNAME, SIOCGIFFLAGS};

Result<void> AddConditionalRules(FilterBuilder& b, SeccompClass seccomp_class,
                                 std::span<const uint32_t> extra_ioctls) {
  const bool realtime = seccomp_class == SeccompClass::kRealTime;

  // socket(): by family, type and protocol. SECURITY: no AF_PACKET, no SOCK_RAW for IP, no
  // protocols beyond TCP/UDP (an unusual protocol autoloads its kernel module: attack surface).
  // Netlink only for NETLINK_ROUTE, which glibc's getaddrinfo/getifaddrs read (changing routes
  // needs CAP_NET_ADMIN). Real-time apps get AF_UNIX only: they have no network.
  auto socket_rule = [&b](int domain, int type, int protocol) {
    return b.Add("socket", SCMP_ACT_ALLOW,
                 {SCMP_A0(SCMP_CMP_EQ, static_cast<uint64_t>(domain)),
                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, static_cast<uint64_t>(type)),
                  SCMP_A2(SCMP_CMP_EQ, static_cast<uint64_t>(protocol))});
  };
  for (int type : {SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET})
    MOAT_TRY(socket_rule(AF_UNIX, type, 0));
  if (!realtime) {
    for (int domain : {AF_INET, AF_INET6}) {
      MOAT_TRY(socket_rule(domain, SOCK_STREAM, 0));
      MOAT_TRY(socket_rule(domain, SOCK_STREAM, IPPROTO_TCP));
      MOAT_TRY(socket_rule(domain, SOCK_DGRAM, 0));
      MOAT_TRY(socket_rule(domain, SOCK_DGRAM, IPPROTO_UDP));
    }
    MOAT_TRY(socket_rule(AF_NETLINK, SOCK_DGRAM, NETLINK_ROUTE));
    MOAT_TRY(socket_rule(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE));
  }
  // socketpair(): connected AF_UNIX pairs only.
  MOAT_TRY(b.Add("socketpair", SCMP_ACT_ALLOW, {SCMP_A0(SCMP_CMP_EQ, AF_UNIX)}));

  // clone(): threads and (default class) processes, never with a namespace flag. SECURITY: an
  // unprivileged CLONE_NEWUSER would hand the app a full capability set inside a user namespace.
  // Real-time apps may only create threads.
  if (realtime) {
    MOAT_TRY(b.Add("clone", SCMP_ACT_ALLOW,
                   {SCMP_A0(SCMP_CMP_MASKED_EQ, kNamespaceFlags | CLONE_THREAD, CLONE_THREAD)}));
  } else {
    MOAT_TRY(b.Add("clone", SCMP_ACT_ALLOW, {SCMP_A0(SCMP_CMP_MASKED_EQ, kNamespaceFlags, 0)}));
  }
  // clone3(): its flags are in memory, which seccomp cannot read. ENOSYS makes glibc fall back to
  // clone(), whose flags the rule above checks.
  MOAT_TRY(b.Add("clone3", SCMP_ACT_ERRNO(ENOSYS)));

  // prctl(): only options that affect the caller alone and grant nothing.
  for (int option :
       {PR_SET_NAME, PR_GET_NAME, PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_GET_DUMPABLE,
        PR_SET_DUMPABLE, PR_GET_NO_NEW_PRIVS, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_READ,
        PR_GET_SECUREBITS, PR_GET_KEEPCAPS, PR_SET_VMA, PR_GET_TIMERSLACK, PR_SET_TIMERSLACK}) {
    MOAT_TRY(b.Add("prctl", SCMP_ACT_ALLOW, {SCMP_A0(SCMP_CMP_EQ, static_cast<uint64_t>(option))}));
  }

  // ioctl(): an allowlist of requests. SECURITY: notably not TIOCSTI (typing into a terminal)
  // nor TIOCLINUX. The comparison masks to 32 bits because the kernel truncates the request, so
  // garbage in the upper half cannot smuggle a request past the filter.
  std::vector<uint32_t> ioctls(std::begin(kBasicIoctls), std::end(kBasicIoctls));
  if (!realtime) ioctls.insert(ioctls.end(), std::begin(kNetIoctls), std::end(kNetIoctls));
  ioctls.insert(ioctls.end(), extra_ioctls.begin(), extra_ioctls.end());
  for (uint32_t request : ioctls) {
    if (request == TIOCSTI || request == TIOCLINUX) {
      return Fail(ErrorCode::kInvalidArgument, "seccomp policy: ioctl {:#x} is never allowed",
                  request);
    }
    MOAT_TRY(b.Add("ioctl", SCMP_ACT_ALLOW, {SCMP_A1(SCMP_CMP_MASKED_EQ, kLow32, request)}));
  }

  // prlimit64(): on itself only (glibc's getrlimit/setrlimit use it with pid 0).
  MOAT_TRY(b.Add("prlimit64", SCMP_ACT_ALLOW, {SCMP_A0(SCMP_CMP_EQ, 0)}));
  return Ok();
}

}  // namespace

Result<BpfProgram> BuildAppFilter(SeccompClass seccomp_class,
                                  std::span<const uint32_t> extra_ioctls, SeccompArch arch) {
  MOAT_ASSIGN_OR_RETURN(FilterBuilder b, FilterBuilder::Create(arch));
  const unsigned bit = ClassBit(seccomp_class);
  for (const AllowGroup& group : AllowTable()) {
    if ((group.classes & bit) == 0) continue;
    for (std::string_view name : group.syscalls) MOAT_TRY(b.Add(name, SCMP_ACT_ALLOW));
  }
  MOAT_TRY(AddConditionalRules(b, seccomp_class, extra_ioctls));
  return b.Export();
}

Result<BpfProgram> BuildInitFilter(SeccompArch arch) {
  MOAT_ASSIGN_OR_RETURN(FilterBuilder b, FilterBuilder::Create(arch));
  // The init blocks the signals it forwards and takes them with sigwaitinfo (rt_sigtimedwait),
  // reaps with wait4, forwards with kill, reports the app's status with write and exits.
  for (std::string_view name : {"rt_sigtimedwait", "wait4", "kill", "write", "close", "exit",
                                "exit_group", "restart_syscall", "rt_sigreturn"}) {
    MOAT_TRY(b.Add(name, SCMP_ACT_ALLOW));
  }
  // Crash capture (crash_capture.h): the init traces the app. SECURITY: only the ptrace
  // requests that resume a thread or read from it, never PEEK/POKE, SETREGS or ATTACH, and no
  // process_vm_writev: the init can look at the app, not change it. It reads the app's memory
  // (process_vm_readv) and /proc/<app>/maps (openat, read).
  for (long request : {PTRACE_CONT, PTRACE_GETSIGINFO, PTRACE_GETREGSET, PTRACE_SETOPTIONS}) {
    MOAT_TRY(
        b.Add("ptrace", SCMP_ACT_ALLOW, {SCMP_A0(SCMP_CMP_EQ, static_cast<uint64_t>(request))}));
  }
  for (std::string_view name : {"process_vm_readv", "openat", "read"}) {
    MOAT_TRY(b.Add(name, SCMP_ACT_ALLOW));
  }
  return b.Export();
}

std::vector<std::string_view> AllowedSyscallNames(SeccompClass seccomp_class) {
  std::vector<std::string_view> names;
  const unsigned bit = ClassBit(seccomp_class);
  for (const AllowGroup& group : AllowTable()) {
    if ((group.classes & bit) == 0) continue;
    names.insert(names.end(), group.syscalls.begin(), group.syscalls.end());
  }
  for (std::string_view name : kConditionalNames) {
    if (name != "clone3") names.push_back(name);  // clone3 only ever fails with ENOSYS
  }
  return names;
}

std::span<const DeniedSyscall> DeniedSyscalls() { return kDenied; }

StepStatus ApplySeccompFilter(const BpfProgram& program) {
  struct sock_fprog prog {};
  prog.len = static_cast<unsigned short>(program.instructions.size());
  prog.filter = const_cast<sock_filter*>(program.instructions.data());
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
    return StepStatus::FromErrno();
  }
  return {};
}

}  // namespace moat::device::sandbox
