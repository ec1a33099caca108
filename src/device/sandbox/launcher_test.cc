// Runs real apps in real sandboxes (as root, as CI does) and asserts the exact outcome of every
// confinement: the hostile test app (testdata/test_app.cc) tries one forbidden thing per run.
#include "device/sandbox/launcher.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/file.h"
#include "device/sandbox/storage.h"
#include "device/sandbox/testdata/elf_symbols.h"

namespace moat::device::sandbox {
namespace {

using ::testing::HasSubstr;

constexpr uid_t kAppUid = 61234;
constexpr gid_t kAppGid = 61235;

std::map<std::string, std::string> ParseKeyValues(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

std::set<std::string> SplitSet(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.insert(item);
  return out;
}

struct RunResult {
  ExitStatus status = ExitStatus::Exited(-1);
  std::string out;
  std::string err;
  std::map<std::string, std::string> kv;
};

class LauncherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "sandbox tests need root (CI runs them as root)";
    auto dir = TempDir::Create("moat-sandbox-test");
    ASSERT_TRUE(dir);
    dir_.emplace(std::move(*dir));
    image_ = dir_->path() / "image";
    ASSERT_TRUE(MakeDirectories(image_ / "bin"));
    std::filesystem::copy_file(MOAT_SANDBOX_TEST_APP, image_ / "bin" / "test_app");
    std::filesystem::permissions(image_ / "bin" / "test_app", std::filesystem::perms(0755));
    instance_ = fmt::format("t{}", getpid());
    auto layout = DetectCgroupLayout();
    ASSERT_TRUE(layout) << layout.error().message();
    layout_ = *layout;
  }

  void TearDown() override {
    if (!layout_) return;
    // Every test must have cleaned up after itself; then make sure for the next one.
    for (const auto* c : {&layout_->memory, &layout_->pids}) {
      EXPECT_FALSE(std::filesystem::exists(c->Base() / ("moat-" + instance_)))
          << "cgroup left behind under " << c->Base();
    }
    EXPECT_TRUE(RemoveInstanceCgroups(*layout_, instance_));
  }

  SandboxSpec Spec(std::string app, std::vector<std::string> args) {
    SandboxSpec spec;
    spec.instance_id = instance_;
    spec.app_name = std::move(app);
    spec.executable = "/bin/test_app";
    spec.args = std::move(args);
    spec.env = {"PATH=/bin", "MOAT_TEST=1"};
    spec.uid = kAppUid;
    spec.gid = kAppGid;
    spec.root_image = image_;
    spec.limits.memory_bytes = 32 << 20;
    spec.limits.pids_max = 16;
    int run = ++runs_;
    spec.stdout_path = dir_->path() / fmt::format("{}.{}.out", spec.app_name, run);
    spec.stderr_path = dir_->path() / fmt::format("{}.{}.err", spec.app_name, run);
    return spec;
  }

  RunResult Run(const SandboxSpec& spec) {
    RunResult result;
    auto process = Launch(spec);
    EXPECT_TRUE(process) << process.error().message();
    if (!process) return result;
    auto status = process->Wait();
    EXPECT_TRUE(status) << status.error().message();
    if (status) result.status = *status;
    result.out = ReadFile(spec.stdout_path, 1 << 20).value_or("");
    result.err = ReadFile(spec.stderr_path, 1 << 20).value_or("");
    result.kv = ParseKeyValues(result.out);
    return result;
  }

  // Runs `test_app <args>` and returns what it printed.
  RunResult RunApp(std::vector<std::string> args) {
    return Run(Spec(fmt::format("app{}", runs_.load() + 1), std::move(args)));
  }

  std::optional<TempDir> dir_;
  std::filesystem::path image_;
  std::string instance_;
  std::optional<CgroupLayout> layout_;
  std::atomic<int> runs_{0};
};

TEST_F(LauncherTest, HelloRunsWithArgsAndOutputGoesToTheLogFiles) {
  auto r = RunApp({"hello", "a b", "c"});
  EXPECT_EQ(r.status, ExitStatus::Exited(0));
  EXPECT_EQ(r.out, "hello from the sandbox a b c\n");
  EXPECT_EQ(r.err, "this is stderr\n");
}

TEST_F(LauncherTest, TheAppsExitCodeIsReported) {
  EXPECT_EQ(RunApp({"exit", "42"}).status, ExitStatus::Exited(42));
}

TEST_F(LauncherTest, ACrashIsReportedWithItsSignal) {
  auto r = RunApp({"crash"});
  EXPECT_EQ(r.status, ExitStatus::Killed(SIGSEGV));
  EXPECT_EQ(r.status.Describe(), "killed by signal 11 (SIGSEGV)");
}

TEST_F(LauncherTest, TheAppRunsConfined) {
  auto spec = Spec("probe", {"probe"});
  spec.hostname = "probe-host";
  spec.max_open_files = 100;
  // A descriptor the launcher holds without CLOEXEC must not reach the app.
  int leaked = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(leaked, 0);
  auto r = Run(spec);
  ::close(leaked);
  ASSERT_EQ(r.status, ExitStatus::Exited(0)) << r.out;
  auto& kv = r.kv;
  EXPECT_EQ(kv["uid"], std::to_string(kAppUid));
  EXPECT_EQ(kv["euid"], std::to_string(kAppUid));
  EXPECT_EQ(kv["gid"], std::to_string(kAppGid));
  EXPECT_EQ(kv["egid"], std::to_string(kAppGid));
  EXPECT_EQ(kv["groups"], "0");
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(kv[set], "0000000000000000") << set;
  }
  EXPECT_EQ(kv["NoNewPrivs"], "1");
  EXPECT_EQ(kv["Seccomp"], "2");  // filter mode
  EXPECT_EQ(kv["hostname"], "probe-host");
  // Its own PID namespace: the init is 1, the app 2, and nothing else is visible.
  EXPECT_EQ(kv["pid"], "2");
  EXPECT_EQ(kv["ppid"], "1");
  EXPECT_EQ(SplitSet(kv["proc_pids"]), (std::set<std::string>{"1", "2"}));
  // Its own cgroup namespace, rooted at its group.
  EXPECT_THAT(kv["cgroup"], HasSubstr("0::/;"));
  EXPECT_THAT(kv["cgroup"], ::testing::Not(HasSubstr("moat-")));
  EXPECT_EQ(kv["rlimit_core"], "0");
  EXPECT_EQ(kv["rlimit_memlock"], "0");
  EXPECT_EQ(kv["rlimit_nofile"], "100");
  EXPECT_EQ(kv["cwd"], "/");
  EXPECT_EQ(kv["env"], "PATH=/bin,MOAT_TEST=1");
  EXPECT_EQ(kv["open_fds"], "3");
}

TEST_F(LauncherTest, AMissingEntryPointIsAnErrorNamingExecve) {
  auto spec = Spec("missing", {});
  spec.executable = "/bin/nope";
  auto process = Launch(spec);
  ASSERT_FALSE(process);
  EXPECT_EQ(process.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(process.error().message(),
            "sandbox launch of 'missing': execve /bin/nope: No such file or directory");
  // Nothing is left: no cgroup (TearDown checks) and no process.
}

TEST_F(LauncherTest, AnInvalidSpecStartsNothing) {
  auto spec = Spec("bad", {});
  spec.uid = 0;
  auto process = Launch(spec);
  ASSERT_FALSE(process);
  EXPECT_EQ(process.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(process.error().message(),
            "sandbox launch of 'bad': sandbox spec for 'bad': uid: 0 is not an app uid (0 and -1 "
            "are refused)");
}

TEST_F(LauncherTest, AMissingDeviceIsAnErrorBeforeAnythingStarts) {
  auto spec = Spec("nodev", {"hello"});
  spec.devices = {"/dev/moat-no-such-device"};
  auto process = Launch(spec);
  ASSERT_FALSE(process);
  EXPECT_EQ(process.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(process.error().message(),
            "sandbox launch of 'nodev': stat device /dev/moat-no-such-device: No such file or "
            "directory");
}

// Each forbidden syscall kills the app with SIGSYS; "returned=" would mean it got through.
class ForbiddenSyscallTest : public LauncherTest,
                             public ::testing::WithParamInterface<const char*> {};

TEST_P(ForbiddenSyscallTest, KillsTheAppWithSigsys) {
  auto r = RunApp({"forbidden", GetParam()});
  EXPECT_EQ(r.status, ExitStatus::Killed(SIGSYS)) << r.status.Describe() << ": " << r.out;
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("returned=")));
}

INSTANTIATE_TEST_SUITE_P(Seccomp, ForbiddenSyscallTest,
                         ::testing::Values("ptrace", "mount", "umount", "bpf", "keyctl", "add_key",
                                           "finit_module", "init_module", "delete_module",
                                           "kexec_load", "perf_event_open", "userfaultfd",
                                           "raw_socket", "packet_socket", "sctp_socket",
                                           "unshare_user", "clone_newuser", "setns", "pivot_root",
                                           "chroot", "reboot", "swapon", "io_uring_setup",
                                           "tiocsti", "tiocsti_high_bits", "process_vm_readv",
                                           "open_by_handle_at", "personality", "setuid"));

TEST_F(LauncherTest, TheRootAndTheImageAreReadOnly) {
  EXPECT_EQ(RunApp({"write", "/newfile"}).kv["write"], "EROFS");
  EXPECT_EQ(RunApp({"write", "/bin/newfile"}).kv["write"], "EROFS");
  EXPECT_EQ(RunApp({"write", "/dev/newfile"}).kv["write"], "EROFS");
  EXPECT_EQ(RunApp({"write", "/proc/sys/kernel/hostname"}).kv["write"], "EROFS");
  // Nothing appeared on the host image either.
  EXPECT_FALSE(std::filesystem::exists(image_ / "bin" / "newfile"));
}

TEST_F(LauncherTest, LandlockDeniesWritesTheMountsWouldAllow) {
  // /proc is a read-write mount and the app owns /proc/self/comm, so only Landlock stops this.
  EXPECT_EQ(RunApp({"write", "/proc/self/comm"}).kv["write"], "EACCES");
}

TEST_F(LauncherTest, TmpIsPrivateWritableAndSizeLimited) {
  EXPECT_EQ(RunApp({"write", "/tmp/file"}).kv["write"], "ok");
  auto spec = Spec("tmpfill", {"fill", "/tmp/big"});
  spec.tmp_size_bytes = 256 * 1024;
  auto r = Run(spec);
  EXPECT_EQ(r.kv["errno"], "ENOSPC");
  EXPECT_LE(std::stol(r.kv["bytes"]), 256 * 1024);
  EXPECT_GE(std::stol(r.kv["bytes"]), 200 * 1024);
}

TEST_F(LauncherTest, HostFilesThatAreNotBoundDoNotExist) {
  auto keystore = TempDir::Create("moat-keystore");
  ASSERT_TRUE(keystore);
  auto secret = keystore->path() / "device-key.pem";
  ASSERT_TRUE(AtomicWriteFile(secret, std::string_view("SECRET")));
  auto r = RunApp({"read", secret.string()});
  EXPECT_EQ(r.kv["read"], "ENOENT");
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("SECRET")));
  EXPECT_EQ(RunApp({"read", "/etc/passwd"}).kv["read"], "ENOENT");
  // The root holds the image's entries and what the sandbox provides, nothing else.
  EXPECT_EQ(SplitSet(RunApp({"ls", "/"}).kv["ls"]),
            (std::set<std::string>{"bin", "dev", "proc", "tmp"}));
  EXPECT_EQ(SplitSet(RunApp({"ls", "/dev"}).kv["ls"]),
            (std::set<std::string>{"null", "zero", "urandom", "fd", "stdin", "stdout", "stderr"}));
}

TEST_F(LauncherTest, ImageSymlinksResolveInsideTheSandbox) {
  // An absolute link in the image must not reach the host's /etc.
  std::filesystem::create_symlink("/etc", image_ / "hostetc");
  EXPECT_EQ(RunApp({"read", "/hostetc/passwd"}).kv["read"], "ENOENT");
  std::filesystem::create_symlink("bin", image_ / "sbin");
  EXPECT_EQ(RunApp({"ls", "/sbin/"}).kv["ls"], "test_app");
}

TEST_F(LauncherTest, BadImagesAndBindsAreRefusedBeforeAnythingStarts) {
  auto spec = Spec("conflict", {"hello"});
  spec.runtime_binds = {"/bin/sh"};
  auto conflict = Launch(spec);
  ASSERT_FALSE(conflict);
  EXPECT_EQ(conflict.error().message(),
            "sandbox launch of 'conflict': runtime bind /bin/sh lies under the app image's /bin, "
            "which is already bound");
  ASSERT_EQ(::mkfifo((image_ / "fifo").c_str(), 0600), 0);
  auto fifo = Launch(Spec("fifo", {"hello"}));
  ASSERT_FALSE(fifo);
  EXPECT_EQ(fifo.error().message(),
            fmt::format("sandbox launch of 'fifo': root image entry {} is not a directory, regular "
                        "file or symlink",
                        (image_ / "fifo").string()));
}

TEST_F(LauncherTest, OnlyTheListedDevicesAreVisible) {
  auto spec = Spec("devices", {"write", "/dev/full"});
  spec.devices = {"/dev/full"};
  // Writing to /dev/full proves it is the real device node.
  EXPECT_EQ(Run(spec).kv["write"], "ENOSPC");
  EXPECT_EQ(RunApp({"read", "/dev/kmsg"}).kv["read"], "ENOENT");
  EXPECT_EQ(RunApp({"read", "/dev/full"}).kv["read"], "ENOENT");
  EXPECT_EQ(RunApp({"read", "/dev/urandom"}).kv["read"], "ok");
}

TEST_F(LauncherTest, TheMemoryLimitKillsTheApp) {
  auto spec = Spec("hog", {"alloc", "128"});
  spec.limits.memory_bytes = 16 << 20;
  auto r = Run(spec);
  EXPECT_EQ(r.status, ExitStatus::Killed(SIGKILL)) << r.out;
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("alloc=ok")));
}

TEST_F(LauncherTest, AForkBombStopsAtPidsMax) {
  auto spec = Spec("forkbomb", {"forkbomb", "1000"});
  spec.limits.pids_max = 10;
  auto r = Run(spec);
  EXPECT_EQ(r.status, ExitStatus::Exited(0)) << r.out;
  EXPECT_EQ(r.kv["errno"], "EAGAIN");
  // The init and the app count too: at most 8 children.
  EXPECT_LE(std::stol(r.kv["forks"]), 8);
  EXPECT_GE(std::stol(r.kv["forks"]), 1);
}

TEST_F(LauncherTest, StorageIsPersistentPrivateAndQuotaLimited) {
  auto image = dir_->path() / "storage.img";
  ASSERT_TRUE(CreateStorageImage(image, 128, {.owner_uid = kAppUid, .owner_gid = kAppGid}));
  auto with_storage = [&](std::vector<std::string> args) {
    auto spec = Spec("storage", std::move(args));
    spec.storage = MutableStorage{image, 128};
    return Run(spec);
  };
  EXPECT_EQ(with_storage({"write", "/mnt/storage/data"}).kv["write"], "ok");
  // A second run sees what the first wrote.
  auto again = with_storage({"read", "/mnt/storage/data"});
  EXPECT_EQ(again.kv["read"], "ok");
  EXPECT_EQ(again.kv["content"], "x");
  // Nothing written there can be executed (nor in /tmp), though the same script in the image
  // could be.
  EXPECT_EQ(with_storage({"write_exec", "/mnt/storage/payload"}).kv["exec"], "EACCES");
  EXPECT_EQ(RunApp({"write_exec", "/tmp/payload"}).kv["exec"], "EACCES");
  // The quota is the image's size.
  auto fill = with_storage({"fill", "/mnt/storage/big"});
  EXPECT_EQ(fill.kv["errno"], "ENOSPC");
  EXPECT_LT(std::stol(fill.kv["bytes"]), 128 * 1024);
  EXPECT_GT(std::stol(fill.kv["bytes"]), 64 * 1024);
  // Beside the storage, nothing is writable.
  EXPECT_EQ(with_storage({"write", "/mnt/other"}).kv["write"], "EROFS");
  // Another app (here: one without storage) sees neither the mount nor the image on the host.
  EXPECT_EQ(RunApp({"read", "/mnt/storage/data"}).kv["read"], "ENOENT");
  EXPECT_EQ(RunApp({"read", image.string()}).kv["read"], "ENOENT");
}

TEST_F(LauncherTest, AStorageImageOfTheWrongSizeIsRefused) {
  auto image = dir_->path() / "storage.img";
  ASSERT_TRUE(CreateStorageImage(image, 128, {.owner_uid = kAppUid, .owner_gid = kAppGid}));
  auto spec = Spec("resized", {"hello"});
  spec.storage = MutableStorage{image, 256};
  auto process = Launch(spec);
  ASSERT_FALSE(process);
  EXPECT_EQ(process.error().message(),
            fmt::format("sandbox launch of 'resized': storage image {} is 131072 bytes, but the "
                        "spec's quota is 256 KiB (resizing is not supported)",
                        image.string()));
}

TEST_F(LauncherTest, NetworkNoneHasOnlyLoopback) {
  EXPECT_EQ(RunApp({"udp_lo"}).kv["udp_lo"], "ok");
  EXPECT_EQ(RunApp({"connect", "10.1.2.3", "80"}).kv["connect"], "ENETUNREACH");
}

TEST_F(LauncherTest, TheNetworkHookRunsBeforeTheAppStarts) {
  auto spec = Spec("nethook", {"hello"});
  spec.network = NetworkMode::kConfigured;
  LaunchOptions options;
  pid_t seen = 0;
  bool app_started_before_hook = false;
  options.network_hook = [&](pid_t pid) -> Result<void> {
    seen = pid;
    // The child is still waiting: its output file is empty.
    app_started_before_hook = !ReadFile(spec.stdout_path, 100).value_or("").empty();
    return Ok();
  };
  auto process = Launch(spec, std::move(options));
  ASSERT_TRUE(process) << process.error().message();
  EXPECT_EQ(seen, process->pid());
  EXPECT_FALSE(app_started_before_hook);
  EXPECT_EQ(process->Wait().value_or(ExitStatus::Exited(-1)), ExitStatus::Exited(0));

  auto failing = Spec("nethook2", {"hello"});
  failing.network = NetworkMode::kConfigured;
  LaunchOptions failing_options;
  failing_options.network_hook = [](pid_t) -> Result<void> {
    return Fail(ErrorCode::kUnavailable, "no veth today");
  };
  auto refused = Launch(failing, std::move(failing_options));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message(), "sandbox launch of 'nethook2': network hook: no veth today");
  EXPECT_EQ(ReadFile(failing.stdout_path, 100).value_or("?"), "");  // the app never ran
}

TEST_F(LauncherTest, StopIsSigtermThenSigkill) {
  auto polite = Launch(Spec("polite", {"sleep"}));
  ASSERT_TRUE(polite) << polite.error().message();
  EXPECT_EQ(polite->Stop(std::chrono::seconds(5)).value_or(ExitStatus::Exited(-1)),
            ExitStatus::Killed(SIGTERM));

  auto stubborn_spec = Spec("stubborn", {"ignore_term"});
  auto stubborn = Launch(stubborn_spec);
  ASSERT_TRUE(stubborn) << stubborn.error().message();
  // Let it install its handler first.
  for (int i = 0; i < 200 && ReadFile(stubborn_spec.stdout_path, 100).value_or("").empty(); ++i) {
    usleep(5000);
  }
  EXPECT_EQ(stubborn->Stop(std::chrono::milliseconds(200)).value_or(ExitStatus::Exited(-1)),
            ExitStatus::Killed(SIGKILL));
}

TEST_F(LauncherTest, OnlyForwardedSignalsCanBeSent) {
  auto process = Launch(Spec("signals", {"sleep"}));
  ASSERT_TRUE(process);
  auto r = process->Signal(SIGSTOP);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(process->Signal(SIGUSR1));  // forwarded; the app's default action ends it
  EXPECT_EQ(process->Wait().value_or(ExitStatus::Exited(-1)), ExitStatus::Killed(SIGUSR1));
}

TEST_F(LauncherTest, CgroupsHoldTheSandboxAndAreRemovedAfterwards) {
  auto spec = Spec("grouped", {"sleep"});
  spec.limits.memory_bytes = 24 << 20;
  auto process = Launch(spec);
  ASSERT_TRUE(process) << process.error().message();
  auto dirs = process->CgroupDirectories();
  ASSERT_FALSE(dirs.empty());
  for (const auto& dir : dirs) {
    auto procs = ReadFile(dir / "cgroup.procs", 4096);
    ASSERT_TRUE(procs);
    EXPECT_THAT(*procs, HasSubstr(std::to_string(process->pid()) + "\n"));
  }
  auto memory_dir = layout_->memory.Base() / ("moat-" + instance_) / "grouped";
  if (layout_->memory.version == CgroupVersion::kV1) {
    EXPECT_EQ(ReadFile(memory_dir / "memory.limit_in_bytes", 100).value_or(""), "25165824\n");
  }
  ASSERT_TRUE(process->Stop(std::chrono::seconds(5)));
  for (const auto& dir : dirs) EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST_F(LauncherTest, DestroyingARunningSandboxKillsItAndCleansUp) {
  pid_t pid = 0;
  std::vector<std::filesystem::path> dirs;
  {
    auto process = Launch(Spec("dropped", {"sleep"}));
    ASSERT_TRUE(process);
    pid = process->pid();
    dirs = process->CgroupDirectories();
  }
  EXPECT_NE(::kill(pid, 0), 0);
  for (const auto& dir : dirs) EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST_F(LauncherTest, InstancesDoNotCollide) {
  auto a = Spec("same", {"sleep"});
  auto b = Spec("same", {"sleep"});
  b.instance_id = instance_ + "b";
  auto pa = Launch(a);
  auto pb = Launch(b);
  ASSERT_TRUE(pa) << pa.error().message();
  ASSERT_TRUE(pb) << pb.error().message();
  EXPECT_NE(pa->CgroupDirectories(), pb->CgroupDirectories());
  EXPECT_TRUE(pa->Stop(std::chrono::seconds(5)));
  EXPECT_TRUE(pb->Stop(std::chrono::seconds(5)));
  EXPECT_TRUE(RemoveInstanceCgroups(*layout_, b.instance_id));
}

TEST_F(LauncherTest, RealTimeAppsAreStricterAndPinned) {
  for (const char* attempt : {"inet_socket", "fork_realtime"}) {
    auto spec = Spec(fmt::format("rt-{}", attempt), {"forbidden", attempt});
    spec.seccomp_class = SeccompClass::kRealTime;
    auto r = Run(spec);
    EXPECT_EQ(r.status, ExitStatus::Killed(SIGSYS)) << attempt << ": " << r.out;
  }
  auto spec = Spec("rt-probe", {"probe"});
  spec.seccomp_class = SeccompClass::kRealTime;
  spec.limits.cpu = 0;
  auto r = Run(spec);
  EXPECT_EQ(r.status, ExitStatus::Exited(0)) << r.out;
  EXPECT_EQ(r.kv["Cpus_allowed_list"], "0");
}

TEST_F(LauncherTest, LaunchesFromAMultiThreadedProcessWhileOtherThreadsAllocate) {
  // The child of a clone must not touch locks other threads may hold (launcher.cc): launch
  // repeatedly, from two threads at once, while others hammer malloc.
  std::atomic<bool> stop{false};
  std::vector<std::thread> allocators;
  for (int i = 0; i < 3; ++i) {
    allocators.emplace_back([&stop] {
      while (!stop.load()) {
        std::vector<std::string> junk(64, std::string(512, 'x'));
      }
    });
  }
  std::atomic<int> ok{0};
  auto launch_some = [&](int thread) {
    for (int i = 0; i < 8; ++i) {
      auto spec = Spec(fmt::format("mt{}-{}", thread, i), {"exit", "7"});
      auto process = Launch(spec);
      if (process && process->Wait().value_or(ExitStatus::Exited(-1)) == ExitStatus::Exited(7)) {
        ++ok;
      }
    }
  };
  std::thread a(launch_some, 0), b(launch_some, 1);
  a.join();
  b.join();
  stop = true;
  for (auto& t : allocators) t.join();
  EXPECT_EQ(ok.load(), 16);
}

// The ELF interpreter of `binary` (its PT_INTERP), e.g. /lib64/ld-linux-x86-64.so.2.
std::string Interpreter(const std::string& binary) {
  auto bytes = ReadFileBytes(binary, 64 << 20);
  if (!bytes || bytes->size() < sizeof(Elf64_Ehdr)) return "";
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(bytes->data());
  for (int i = 0; i < eh->e_phnum; ++i) {
    const auto* ph =
        reinterpret_cast<const Elf64_Phdr*>(bytes->data() + eh->e_phoff + i * eh->e_phentsize);
    if (ph->p_type == PT_INTERP) {
      return std::string(reinterpret_cast<const char*>(bytes->data() + ph->p_offset));
    }
  }
  return "";
}

TEST_F(LauncherTest, ADynamicBinaryRunsWithItsRuntimeBinds) {
  std::filesystem::copy_file(MOAT_SANDBOX_TEST_APP_DYNAMIC, image_ / "bin" / "dynamic_app");
  std::filesystem::permissions(image_ / "bin" / "dynamic_app", std::filesystem::perms(0755));
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&::write), &info), 0);
  std::filesystem::path libdir = std::filesystem::path(info.dli_fname).parent_path();
  std::string interp = Interpreter(MOAT_SANDBOX_TEST_APP_DYNAMIC);
  ASSERT_FALSE(interp.empty());

  auto spec = Spec("dynamic", {"hello", "dyn"});
  spec.executable = "/bin/dynamic_app";
  auto without = Launch(spec);
  ASSERT_FALSE(without);  // no loader in the sandbox
  EXPECT_EQ(without.error().message(),
            "sandbox launch of 'dynamic': execve /bin/dynamic_app: No such file or directory");

  spec.runtime_binds = {interp};
  if (!interp.starts_with(libdir.native() + "/")) spec.runtime_binds.push_back(libdir);
  auto r = Run(spec);
  EXPECT_EQ(r.status, ExitStatus::Exited(0)) << r.err;
  EXPECT_EQ(r.out, "hello from the sandbox dyn\n");
}

// The captured stack of `crash`: its top frame lies in moat_test_crash_here and the next in
// moat_test_crash_caller, both in `module` with the binary's build-ID.
void ExpectCrashStack(const CrashReport& crash, const std::string& binary,
                      const std::string& module) {
  auto elf = testing::ElfFile::Load(binary);
  ASSERT_TRUE(elf);
  auto here = elf->Symbol("moat_test_crash_here");
  auto caller = elf->Symbol("moat_test_crash_caller");
  ASSERT_TRUE(here && caller);
  const std::string build_id = elf->BuildId();
  EXPECT_FALSE(build_id.empty());
  ASSERT_GE(crash.frames.size(), 3u);
  const CrashFrame& top = crash.frames[0];
  EXPECT_EQ(top.module, module);
  EXPECT_EQ(top.build_id, build_id);
  EXPECT_GE(top.offset, here->address);
  EXPECT_LT(top.offset, here->address + here->size);
  EXPECT_EQ(top.pc, crash.pc);
  EXPECT_EQ(crash.frames[1].module, module);
  EXPECT_GT(crash.frames[1].offset, caller->address);  // a return address: after the call
  EXPECT_LT(crash.frames[1].offset, caller->address + caller->size);
  // The pc and offset differ by the load bias, the same for every frame of the module.
  EXPECT_EQ(top.pc - top.offset, crash.frames[1].pc - crash.frames[1].offset);
}

TEST_F(LauncherTest, ACrashIsCapturedWithRegistersFaultAndAStackOfTheAppsFunctions) {
  auto spec = Spec("crashcap", {"crash"});
  auto process = Launch(spec);
  ASSERT_TRUE(process) << process.error().message();
  auto status = process->Wait();
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_EQ(*status, ExitStatus::Killed(SIGSEGV));
  ASSERT_TRUE(process->crash());
  const CrashReport& crash = *process->crash();
  EXPECT_EQ(crash.signal, SIGSEGV);
  EXPECT_EQ(crash.code, SEGV_MAPERR);
  EXPECT_EQ(crash.error_number, 0);
  EXPECT_EQ(crash.fault_address, 0u);
  ASSERT_TRUE(crash.pc && crash.sp);
  EXPECT_NE(*crash.sp, 0u);
#if defined(__x86_64__)
  EXPECT_FALSE(crash.lr) << "x86-64 has no link register";
#endif
  ExpectCrashStack(crash, MOAT_SANDBOX_TEST_APP, "test_app");
}

TEST_F(LauncherTest, APositionIndependentAppsCrashHasOffsetsRelativeToItsLoadAddress) {
  std::filesystem::copy_file(MOAT_SANDBOX_TEST_APP_DYNAMIC, image_ / "bin" / "dynamic_app");
  std::filesystem::permissions(image_ / "bin" / "dynamic_app", std::filesystem::perms(0755));
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&::write), &info), 0);
  std::filesystem::path libdir = std::filesystem::path(info.dli_fname).parent_path();
  std::string interp = Interpreter(MOAT_SANDBOX_TEST_APP_DYNAMIC);
  auto spec = Spec("dyncrash", {"crash"});
  spec.executable = "/bin/dynamic_app";
  spec.runtime_binds = {interp};
  if (!interp.starts_with(libdir.native() + "/")) spec.runtime_binds.push_back(libdir);
  auto process = Launch(spec);
  ASSERT_TRUE(process) << process.error().message();
  ASSERT_EQ(process->Wait().value_or(ExitStatus::Exited(0)), ExitStatus::Killed(SIGSEGV));
  ASSERT_TRUE(process->crash());
  ExpectCrashStack(*process->crash(), MOAT_SANDBOX_TEST_APP_DYNAMIC, "dynamic_app");
  // A PIE is loaded at a random base: pc and offset differ.
  EXPECT_NE(process->crash()->frames[0].pc, process->crash()->frames[0].offset);
}

TEST_F(LauncherTest, ACrashInASecondThreadIsCapturedToo) {
  auto spec = Spec("threadcrash", {"crash_thread"});
  auto process = Launch(spec);
  ASSERT_TRUE(process) << process.error().message();
  ASSERT_EQ(process->Wait().value_or(ExitStatus::Exited(0)), ExitStatus::Killed(SIGSEGV));
  ASSERT_TRUE(process->crash());
  EXPECT_EQ(process->crash()->fault_address, 0u);
  ExpectCrashStack(*process->crash(), MOAT_SANDBOX_TEST_APP, "test_app");
}

TEST_F(LauncherTest, AnAbortIsCapturedAndExitsAndSigkillAreNot) {
  auto abort_spec = Spec("abort", {"abort"});
  auto process = Launch(abort_spec);
  ASSERT_TRUE(process) << process.error().message();
  ASSERT_EQ(process->Wait().value_or(ExitStatus::Exited(0)), ExitStatus::Killed(SIGABRT));
  ASSERT_TRUE(process->crash());
  EXPECT_EQ(process->crash()->signal, SIGABRT);
  EXPECT_FALSE(process->crash()->fault_address) << "abort() is a signal sent, not a fault";
  EXPECT_FALSE(process->crash()->frames.empty());

  auto exit_spec = Spec("exit3", {"exit", "3"});
  auto exited = Launch(exit_spec);
  ASSERT_TRUE(exited);
  ASSERT_EQ(exited->Wait().value_or(ExitStatus::Exited(0)), ExitStatus::Exited(3));
  EXPECT_FALSE(exited->crash());

  auto sleep_spec = Spec("killed", {"sleep"});
  auto killed = Launch(sleep_spec);
  ASSERT_TRUE(killed);
  ASSERT_TRUE(killed->Signal(SIGKILL));
  ASSERT_EQ(killed->Wait().value_or(ExitStatus::Exited(0)), ExitStatus::Killed(SIGKILL));
  EXPECT_FALSE(killed->crash());
}

TEST(CrashRecordTest, ARecordFromTheSandboxIsValidatedBeforeUse) {
  CrashRecord r{};
  r.magic = kCrashRecordMagic;
  r.size = sizeof r;
  r.signo = SIGSEGV;
  r.flags = kCrashHasRegisters;
  r.pc = 0x401234;
  r.frame_count = 2;
  r.module_count = 1;
  std::memcpy(r.modules[0].name, "app", 4);
  r.modules[0].build_id[0] = 0xab;
  r.modules[0].build_id[1] = 0x01;
  r.modules[0].build_id_size = 2;
  r.frames[0] = {0x401234, 0x401234, 0, 0};
  r.frames[1] = {0x99, 0, kCrashNoModule, 0};
  auto bytes = [&] { return std::span(reinterpret_cast<const uint8_t*>(&r), sizeof r); };
  auto ok = ParseCrashRecord(bytes());
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->frames[0], (CrashFrame{0x401234, "app", "ab01", 0x401234}));
  EXPECT_EQ(ok->frames[1], (CrashFrame{0x99, "[unknown]", "", 0x99}));
  EXPECT_EQ(ok->pc, 0x401234u);
  EXPECT_FALSE(ok->fault_address);

  EXPECT_FALSE(ParseCrashRecord(bytes().first(100)));
  CrashRecord saved = r;
  std::memcpy(r.modules[0].name, "a/b", 4);
  EXPECT_FALSE(ParseCrashRecord(bytes()));
  r = saved;
  std::memset(r.modules[0].name, 'x', sizeof r.modules[0].name);  // no NUL
  EXPECT_FALSE(ParseCrashRecord(bytes()));
  r = saved;
  r.frames[0].module = 1;  // beyond module_count
  EXPECT_FALSE(ParseCrashRecord(bytes()));
  r = saved;
  r.frame_count = kCrashMaxFrames + 1;
  EXPECT_FALSE(ParseCrashRecord(bytes()));
  r = saved;
  r.modules[0].build_id_size = kCrashMaxBuildIdBytes + 1;
  EXPECT_FALSE(ParseCrashRecord(bytes()));
  r = saved;
  r.signo = 0;
  EXPECT_FALSE(ParseCrashRecord(bytes()));
}

}  // namespace
}  // namespace moat::device::sandbox
