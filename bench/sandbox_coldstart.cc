// moat-sandbox-coldstart: the issue-6 bench (bench/README.md).
//
// Sandboxed cold start, from the supervisor's decision to the app's `main`, for a static hello
// binary (coldstart_hello.cc), beside two peers launching the same binary from the same root
// directory in the same run:
//   moat   Launch() with the full sandbox: namespaces, pivot_root into a read-only root, seccomp,
//          Landlock, memory+pids cgroups, capabilities dropped, no network, uid 61234;
//   bwrap  bwrap --unshare-all --die-with-parent --ro-bind ROOT / --proc /proc --dev /dev /hello
//   crun   crun run with a generated OCI bundle: the same root read-only; pid, ipc, uts, mount,
//          network and cgroup namespaces; no capabilities; no_new_privs; memory+pids limits.
// A run starts the clock (CLOCK_MONOTONIC) just before Launch() / posix_spawn of the runtime, and
// ends at the time the app itself reads in main and writes to its stdout, a pipe to the bench.
// Waiting for the exit and cleaning up (LaunchedProcess::Wait, waitpid, crun delete) are outside
// the timed region. The launchers take turns (rotating order) so that noise hits all of them.
// Needs root.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "core/unique_fd.h"
#include "device/sandbox/cgroups.h"
#include "device/sandbox/launcher.h"

#ifndef MOAT_COLDSTART_HELLO
#define MOAT_COLDSTART_HELLO "coldstart_hello"
#endif

extern char** environ;

namespace moat::bench {
namespace {

namespace sb = moat::device::sandbox;

constexpr uid_t kAppUid = 61234;
constexpr gid_t kAppGid = 61235;

struct Options {
  int runs = 50;
  int warmup = 3;
  int cpu = -1;
  std::string launchers = "moat,bwrap,crun";
  std::string hello = MOAT_COLDSTART_HELLO;
  std::string bwrap = "bwrap";
  std::string crun = "crun";
  std::string json_path;
};

int64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

Result<Pipe> MakePipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Fail(ErrorCode::kInternal, "pipe2: {}", strerror(errno));
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// Reads the app's 8-byte CLOCK_MONOTONIC stamp; fails on EOF (the app never reached main) or
// after 10 s.
Result<int64_t> ReadStamp(int fd) {
  int64_t stamp = 0;
  size_t got = 0;
  auto* out = reinterpret_cast<char*>(&stamp);
  while (got < sizeof stamp) {
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, 10000);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return Fail(ErrorCode::kInternal, "no stamp from the app within 10 s");
    ssize_t n = read(fd, out + got, sizeof stamp - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Fail(ErrorCode::kInternal, "the app's stdout closed before its stamp");
    got += static_cast<size_t>(n);
  }
  return stamp;
}

struct Sample {
  int64_t to_main_ns = 0;    // start -> the app's main
  int64_t returned_ns = -1;  // start -> Launch() returned (moat only)
  int64_t cpu_ns = 0;        // CPU time used by the launch (see Main)
};

class Bench {
 public:
  Bench(Options o, std::filesystem::path dir) : o_(std::move(o)), dir_(std::move(dir)) {}

  Result<void> Prepare() {
    root_ = dir_ / "root";
    for (const char* d : {"proc", "dev", "tmp"}) {
      if (auto r = MakeDirectories(root_ / d); !r) return r;
    }
    std::error_code ec;
    std::filesystem::copy_file(o_.hello, root_ / "hello", ec);
    if (ec) return Fail(ErrorCode::kInternal, "copy {}: {}", o_.hello, ec.message());
    chmod((root_ / "hello").c_str(), 0755);
    chmod(dir_.c_str(), 0755);  // the app's uid (crun) must traverse to the root
    chmod(root_.c_str(), 0755);
    instance_ = fmt::format("coldstart{}", getpid());
    auto layout = sb::DetectCgroupLayout();
    if (!layout) return std::unexpected(layout.error());
    layout_ = *layout;
    bundle_ = dir_ / "bundle";
    if (auto r = MakeDirectories(bundle_); !r) return r;
    std::ofstream(bundle_ / "config.json") << CrunConfig();
    return {};
  }

  void Cleanup() {
    if (layout_) (void)sb::RemoveInstanceCgroups(*layout_, instance_);
  }

  Result<Sample> RunMoat() {
    sb::SandboxSpec spec;
    spec.instance_id = instance_;
    spec.app_name = "hello";
    spec.executable = "/hello";
    spec.env = {"PATH=/"};
    spec.uid = kAppUid;
    spec.gid = kAppGid;
    spec.root_image = root_;
    auto pipe = MakePipe();
    if (!pipe) return std::unexpected(pipe.error());
    sb::LaunchOptions options;
    options.io.stdout_fd = std::move(pipe->write);
    options.cgroup_layout = layout_;
    Sample s;
    int64_t start = NowNs();
    auto app = sb::Launch(spec, std::move(options));
    int64_t returned = NowNs();
    if (!app) return std::unexpected(app.error());
    auto stamp = ReadStamp(pipe->read.get());
    auto status = app->Wait();
    if (!stamp) return std::unexpected(stamp.error());
    if (!status) return std::unexpected(status.error());
    if (*status != sb::ExitStatus::Exited(0)) {
      return Fail(ErrorCode::kInternal, "moat: hello {}", status->Describe());
    }
    s.to_main_ns = *stamp - start;
    s.returned_ns = returned - start;
    return s;
  }

  Result<Sample> RunBwrap() {
    return RunSpawned("bwrap", {o_.bwrap, "--unshare-all", "--die-with-parent", "--ro-bind",
                                root_.string(), "/", "--proc", "/proc", "--dev", "/dev", "/hello"});
  }

  Result<Sample> RunCrun() {
    std::string id = fmt::format("moat-coldstart-{}-{}", getpid(), ++crun_runs_);
    auto s = RunSpawned("crun", {o_.crun, "run", "--bundle", bundle_.string(), id});
    // `crun run` deletes its container when the process exits; make sure (untimed).
    (void)Spawn({o_.crun, "delete", "-f", id}, /*quiet=*/true);
    return s;
  }

 private:
  // posix_spawn of argv with stdout = the stamp pipe, stdin = /dev/null; waits for the exit.
  Result<Sample> RunSpawned(const char* what, const std::vector<std::string>& args) {
    auto pipe = MakePipe();
    if (!pipe) return std::unexpected(pipe.error());
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipe->write.get(), 1);
    int64_t start = NowNs();
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    pipe->write.Reset();
    if (rc != 0) return Fail(ErrorCode::kInternal, "spawn {}: {}", argv[0], strerror(rc));
    auto stamp = ReadStamp(pipe->read.get());
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!stamp) return Fail(ErrorCode::kInternal, "{}: {}", what, stamp.error().message());
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return Fail(ErrorCode::kInternal, "{}: wait status {:#x}", what, status);
    }
    return Sample{*stamp - start, -1};
  }

  static Result<void> Spawn(const std::vector<std::string>& args, bool quiet) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (quiet) {
      posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
      posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    }
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return Fail(ErrorCode::kInternal, "spawn {}: {}", argv[0], strerror(rc));
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return {};
  }

  // An OCI runtime config close to Moat's sandbox: same root (read-only), same uid/gid, no
  // capabilities, no_new_privs, RLIMIT_NOFILE 256, memory 64 MiB and 64 pids, /proc and a /dev
  // tmpfs (crun populates null, zero, full, random, urandom, tty), new pid/ipc/uts/mount/network/
  // cgroup namespaces. crun applies no seccomp filter and no Landlock here (none requested).
  std::string CrunConfig() const {
    return fmt::format(R"({{
  "ociVersion": "1.0.2",
  "process": {{
    "terminal": false,
    "user": {{"uid": {uid}, "gid": {gid}}},
    "args": ["/hello"],
    "env": ["PATH=/"],
    "cwd": "/",
    "capabilities": {{"bounding": [], "effective": [], "inheritable": [], "permitted": [],
                      "ambient": []}},
    "rlimits": [{{"type": "RLIMIT_NOFILE", "hard": 256, "soft": 256}}],
    "noNewPrivileges": true
  }},
  "root": {{"path": "{root}", "readonly": true}},
  "hostname": "hello",
  "mounts": [
    {{"destination": "/proc", "type": "proc", "source": "proc"}},
    {{"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
      "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=64k"]}}
  ],
  "linux": {{
    "resources": {{"memory": {{"limit": 67108864}}, "pids": {{"limit": 64}}}},
    "namespaces": [{{"type": "pid"}}, {{"type": "ipc"}}, {{"type": "uts"}}, {{"type": "mount"}},
                   {{"type": "network"}}, {{"type": "cgroup"}}]
  }}
}}
)",
                       fmt::arg("uid", kAppUid), fmt::arg("gid", kAppGid),
                       fmt::arg("root", root_.string()));
  }

  Options o_;
  std::filesystem::path dir_;
  std::filesystem::path root_;
  std::filesystem::path bundle_;
  std::string instance_;
  std::optional<sb::CgroupLayout> layout_;
  int crun_runs_ = 0;
};

struct Stats {
  double median, p10, p90, mean, min;
};

double Percentile(const std::vector<int64_t>& sorted, double p) {
  // Linear interpolation between closest ranks.
  double pos = p * static_cast<double>(sorted.size() - 1);
  size_t lo = static_cast<size_t>(pos);
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  double frac = pos - static_cast<double>(lo);
  return static_cast<double>(sorted[lo]) * (1 - frac) + static_cast<double>(sorted[hi]) * frac;
}

Stats Summarize(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  double sum = std::accumulate(v.begin(), v.end(), 0.0);
  return {Percentile(v, 0.5) / 1e6, Percentile(v, 0.1) / 1e6, Percentile(v, 0.9) / 1e6,
          sum / static_cast<double>(v.size()) / 1e6, static_cast<double>(v.front()) / 1e6};
}

// crun 1.8 refuses a hybrid cgroup layout whose cgroup2 hierarchy holds a controller ("cgroups in
// hybrid mode not supported, drop all controllers from cgroupv2"), as on hosts that bind hugetlb
// there. Then the bench hides that hierarchy in a mount namespace of its own (the host is not
// touched), so crun uses the v1 hierarchies as Moat does; Moat uses memory and pids on v1 either
// way.
Result<void> HideControllerfulCgroup2ForCrun() {
  const std::filesystem::path unified = "/sys/fs/cgroup/unified";
  auto controllers = ReadFile(unified / "cgroup.controllers", 1 << 12);
  if (!controllers || controllers->find_first_not_of(" \n") == std::string::npos) return {};
  if (unshare(CLONE_NEWNS) != 0) return Fail(ErrorCode::kInternal, "unshare: {}", strerror(errno));
  if (mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
    return Fail(ErrorCode::kInternal, "make / rslave: {}", strerror(errno));
  }
  if (umount2(unified.c_str(), MNT_DETACH) != 0) {
    return Fail(ErrorCode::kInternal, "umount {}: {}", unified.string(), strerror(errno));
  }
  fmt::print(
      "note: {} holds controllers ({}), which crun 1.8 refuses in hybrid mode; hidden in "
      "the bench's own mount namespace\n",
      unified.string(), controllers->substr(0, controllers->find('\n')));
  return {};
}

bool HaveProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return access(name.c_str(), X_OK) == 0;
  const char* path = getenv("PATH");
  std::istringstream in(path ? path : "/usr/bin:/bin");
  std::string d;
  while (std::getline(in, d, ':')) {
    if (access((std::filesystem::path(d) / name).c_str(), X_OK) == 0) return true;
  }
  return false;
}

int Main(const Options& o) {
  if (geteuid() != 0) {
    fmt::print(stderr, "moat-sandbox-coldstart: needs root (the sandbox launcher does)\n");
    return 2;
  }
  if (o.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(o.cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
      fmt::print(stderr, "sched_setaffinity({}): {}\n", o.cpu, strerror(errno));
      return 2;
    }
  }
  std::vector<std::string> names;
  {
    std::istringstream in(o.launchers);
    std::string n;
    while (std::getline(in, n, ',')) {
      if (n != "moat" && n != "bwrap" && n != "crun") {
        fmt::print(stderr, "unknown launcher '{}'\n", n);
        return 2;
      }
      if (n == "bwrap" && !HaveProgram(o.bwrap)) {
        fmt::print("bwrap not found: skipped (apt-get install bubblewrap)\n");
        continue;
      }
      if (n == "crun" && !HaveProgram(o.crun)) {
        fmt::print("crun not found: skipped (apt-get install crun)\n");
        continue;
      }
      names.push_back(n);
    }
  }
  if (std::ranges::find(names, "crun") != names.end()) {
    if (auto r = HideControllerfulCgroup2ForCrun(); !r) {
      fmt::print(stderr, "{}\n", r.error());
      return 1;
    }
  }
  auto dir = TempDir::Create("moat-coldstart");
  if (!dir) {
    fmt::print(stderr, "{}\n", dir.error());
    return 1;
  }
  Bench bench(o, dir->path());
  if (auto r = bench.Prepare(); !r) {
    fmt::print(stderr, "prepare: {}\n", r.error());
    return 1;
  }
  std::map<std::string, std::vector<int64_t>> to_main, returned, cpu;
  // CPU time of the bench (for moat: the launcher) plus every reaped descendant (for moat: the
  // sandbox init and the app; for the peers: the runtime and all it started), per launch,
  // cleanup included. Kernel work in worker threads (e.g. namespace teardown) is not counted.
  auto cpu_ns = [] {
    int64_t total = 0;
    for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
      rusage ru{};
      getrusage(who, &ru);
      for (const timeval& tv : {ru.ru_utime, ru.ru_stime})
        total += int64_t{tv.tv_sec} * 1'000'000'000 + int64_t{tv.tv_usec} * 1000;
    }
    return total;
  };
  auto run_one = [&](const std::string& n) -> Result<Sample> {
    int64_t cpu_before = cpu_ns();
    auto s = n == "moat" ? bench.RunMoat() : n == "bwrap" ? bench.RunBwrap() : bench.RunCrun();
    if (s) s->cpu_ns = cpu_ns() - cpu_before;
    return s;
  };
  int failed = 0;
  for (int i = -o.warmup; i < o.runs && failed == 0; ++i) {
    for (size_t k = 0; k < names.size(); ++k) {
      const auto& n = names[(k + static_cast<size_t>(i + o.warmup)) % names.size()];
      auto s = run_one(n);
      if (!s) {
        fmt::print(stderr, "run {} of {}: {}\n", i, n, s.error());
        ++failed;
        break;
      }
      if (i < 0) continue;
      to_main[n].push_back(s->to_main_ns);
      if (s->returned_ns >= 0) returned[n].push_back(s->returned_ns);
      cpu[n].push_back(s->cpu_ns);
    }
  }
  bench.Cleanup();
  if (failed) return 1;

  fmt::print(
      "\ncold start of a static hello, start -> the app's main, ms ({} runs each, {} "
      "warm-up, {})\n",
      o.runs, o.warmup, o.cpu >= 0 ? fmt::format("pinned to cpu {}", o.cpu) : "unpinned");
  fmt::print("{:<34}{:>9}{:>9}{:>9}{:>9}{:>9}\n", "launcher", "median", "p10", "p90", "mean",
             "min");
  std::map<std::string, Stats> stats;
  std::string json = "{";
  auto row = [&](const std::string& label, const std::string& key, const std::vector<int64_t>& v) {
    Stats s = Summarize(v);
    fmt::print("{:<34}{:>9.2f}{:>9.2f}{:>9.2f}{:>9.2f}{:>9.2f}\n", label, s.median, s.p10, s.p90,
               s.mean, s.min);
    json += fmt::format(
        R"({}"{}": {{"median_ms": {:.4f}, "p10_ms": {:.4f}, "p90_ms": {:.4f}, "mean_ms": {:.4f}, )"
        R"("min_ms": {:.4f}, "runs": {}}})",
        json.size() > 1 ? ", " : "", key, s.median, s.p10, s.p90, s.mean, s.min, v.size());
    return s;
  };
  for (const auto& n : names) {
    std::string label = n == "moat"    ? "moat Launch (full sandbox)"
                        : n == "bwrap" ? "bwrap --unshare-all"
                                       : "crun run";
    stats[n] = row(label, n, to_main[n]);
    if (n == "moat") row("  (moat Launch() returned)", "moat_launch_returned", returned[n]);
  }
  fmt::print(
      "CPU ms per launch (user+sys of the launcher, runtime, init and app; cleanup "
      "included; 1 ms resolution per run at worst)\n");
  for (const auto& n : names) row(fmt::format("  {}", n), n + "_cpu", cpu[n]);
  if (stats.contains("moat")) {
    for (const char* peer : {"bwrap", "crun"}) {
      if (!stats.contains(peer)) continue;
      double r = stats["moat"].median / stats[peer].median;
      fmt::print("ratio moat/{:<6} (median)  {:.2f}{}\n", peer, r,
                 std::string_view(peer) == "bwrap" ? "   (goal <= 1.00)" : "");
      json += fmt::format(R"(, "ratio_moat_{}_median": {:.4f})", peer, r);
    }
  }
  json += fmt::format(R"(, "runs": {}, "warmup": {}, "cpu": {}}})", o.runs, o.warmup, o.cpu);
  if (!o.json_path.empty()) std::ofstream(o.json_path) << json << "\n";
  return 0;
}

}  // namespace
}  // namespace moat::bench

int main(int argc, char** argv) {
  moat::bench::Options o;
  CLI::App app{
      "Sandboxed cold start of a static hello: Moat's Launch beside bwrap and crun "
      "(issue 6; bench/README.md). Needs root."};
  app.add_option("--runs", o.runs, "Timed runs per launcher")->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "Untimed runs per launcher first")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--cpu", o.cpu, "Pin the bench (and so every launcher and app) to this CPU");
  app.add_option("--launchers", o.launchers, "Comma-separated subset of moat,bwrap,crun");
  app.add_option("--hello", o.hello, "The static hello binary");
  app.add_option("--bwrap", o.bwrap, "bwrap executable");
  app.add_option("--crun", o.crun, "crun executable");
  app.add_option("--json", o.json_path, "Write the figures as JSON here");
  CLI11_PARSE(app, argc, argv);
  return moat::bench::Main(o);
}
