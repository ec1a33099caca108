// moat-service-load: the issue-3 load driver (bench/README.md).
//
// Starts the real moat-service as a child process on one core (--service-cpu, `run --threads 1`)
// and drives it from the other core (--driver-cpu) with N simulated devices, each its own
// mutual-TLS connection:
//   A  attestation: every device connects with its self-certified identity certificate and runs
//      challenge + attestation (a fresh connection, so a full handshake, per attestation);
//   B  cheap request: every device holds one keep-alive connection with the client certificate
//      it got in A and repeats GET /device/v1/whoami for --seconds;
//   C  baselines in the same run and on the same cores: `openssl speed ecdsap256 ecdhp256` and
//      an `openssl s_server` / `s_time -new` full TLS 1.3 handshake rate;
//   D  deployment publish: a deployment of --deployment-images images (each its own component)
//      to the devices' group, i.e. one signed targets version of 1,000 targets + snapshot +
//      timestamp, timed per publish;
//   E  metadata poll: every device's keep-alive connection repeats
//      GET /device/v1/repo/<group>/timestamp.json for --seconds;
//   F  report ingestion: every device's connection POSTs failure-event batches
//      (--report-batch events each, fresh event IDs) to /device/v1/reports for --seconds.
// Every response is checked; a non-2xx status fails the run with the body printed. Rates are
// given per wall second and per second of service CPU (from /proc), which is the steadier figure
// on a shared machine.
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/ranges.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/random.h"
#include "crypto/digest.h"
#include "crypto/key.h"
#include "crypto/x509.h"
#include "formats/attestation.h"
#include "formats/failure_event.h"
#include "formats/guid.h"
#include "formats/image_package.h"
#include "formats/operator_config.h"
#include "net/https_client.h"
#include "service/service.h"

#ifndef MOAT_SERVICE_BINARY
#define MOAT_SERVICE_BINARY "moat-service"
#endif

namespace moat::bench {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Options {
  int devices = 100;
  int threads = 8;
  int rounds = 1;
  double seconds = 10;
  int service_cpu = 0;
  int driver_cpu = 1;
  std::string service_binary = MOAT_SERVICE_BINARY;
  std::string service_log_level = "info";
  std::string json_path;
  std::string tmpdir;  // where the data directory goes (its file system decides fsync cost)
  bool baselines = true;
  int speed_seconds = 3;
  int stime_seconds = 5;
  int deployment_images = 1000;  // 0: skip phases D, E and F
  int deployment_publishes = 3;
  int report_batch = 50;
};

[[noreturn]] void Die(const std::string& message);

// ---------------------------------------------------------------------------------------------
// Child processes. Every child is registered so that a signal thread (SIGINT/SIGTERM) and the
// normal exit path can stop it; PR_SET_PDEATHSIG covers the driver being killed outright.

std::mutex g_children_mu;
std::set<pid_t> g_children;           // guarded by g_children_mu
std::filesystem::path g_cleanup_dir;  // set once before any signal can be handled usefully

bool g_pin = true;  // false on a machine with fewer than two CPUs

int WaitChild(pid_t pid, std::chrono::milliseconds timeout);

// Set by the first thread to start exiting abnormally (a failure or a signal); any other thread
// that wants to exit then waits for that one to finish cleaning up and end the process.
std::atomic<bool> g_exiting{false};

[[noreturn]] void WaitForExit() {
  for (;;) std::this_thread::sleep_for(1h);
}

// Stops every child still running (SIGTERM, then SIGKILL) and removes the temp directory.
void CleanUp() {
  std::vector<pid_t> pids;
  {
    std::lock_guard lock(g_children_mu);
    pids.assign(g_children.begin(), g_children.end());
  }
  for (pid_t p : pids) kill(p, SIGTERM);
  for (pid_t p : pids) {
    if (WaitChild(p, 5s) < 0) {
      kill(p, SIGKILL);
      WaitChild(p, 2s);
    }
  }
  std::error_code ec;
  if (!g_cleanup_dir.empty()) std::filesystem::remove_all(g_cleanup_dir, ec);
}

// Fails the run from any thread: stops the children and exits at once (other threads may still
// be running, so no static destructors).
[[noreturn]] void Die(const std::string& message) {
  if (g_exiting.exchange(true)) WaitForExit();
  std::cout.flush();
  std::cerr << "moat-service-load: FAILED: " << message << std::endl;
  CleanUp();
  std::_Exit(1);
}

struct SpawnOptions {
  int cpu = -1;                  // -1: no pinning
  std::filesystem::path output;  // stdout and stderr go here (empty: /dev/null)
};

pid_t Spawn(const std::vector<std::string>& args, const SpawnOptions& o) {
  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const std::string out = o.output.empty() ? "/dev/null" : o.output.string();
  cpu_set_t set;
  CPU_ZERO(&set);
  if (o.cpu >= 0) CPU_SET(o.cpu, &set);
  const bool pin = g_pin && o.cpu >= 0;
  const pid_t parent = getpid();
  sigset_t none;
  sigemptyset(&none);

  std::unique_lock lock(g_children_mu);
  const pid_t pid = fork();
  if (pid < 0) {
    lock.unlock();
    Die(fmt::format("fork: {}", std::strerror(errno)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigprocmask(SIG_SETMASK, &none, nullptr);  // the driver blocks SIGINT/SIGTERM
    if (pin && sched_setaffinity(0, sizeof(set), &set) != 0) _exit(126);
    int in = open("/dev/null", O_RDONLY);
    int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (in < 0 || fd < 0) _exit(125);
    dup2(in, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  g_children.insert(pid);
  return pid;
}

// Waits for `pid`; returns its exit status (-1 if it did not end within `timeout`).
int WaitChild(pid_t pid, std::chrono::milliseconds timeout) {
  const auto end = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      std::lock_guard lock(g_children_mu);
      g_children.erase(pid);
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (r < 0) return -1;
    if (Clock::now() >= end) return -1;
    std::this_thread::sleep_for(10ms);
  }
}

void StopChild(pid_t pid) {
  kill(pid, SIGTERM);
  if (WaitChild(pid, 10s) < 0) {
    kill(pid, SIGKILL);
    WaitChild(pid, 5s);
  }
}

bool ChildRunning(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, WNOHANG) == 0) return true;
  std::lock_guard lock(g_children_mu);
  g_children.erase(pid);
  return false;
}

// Runs a command to completion; returns its output (stdout + stderr). Dies on failure.
std::string RunCommand(const std::vector<std::string>& args, int cpu,
                       const std::filesystem::path& output, std::chrono::seconds timeout) {
  pid_t pid = Spawn(args, {.cpu = cpu, .output = output});
  int status = WaitChild(pid, timeout);
  if (status < 0) {
    kill(pid, SIGKILL);
    WaitChild(pid, 5s);
  }
  std::ifstream in(output);
  std::stringstream text;
  text << in.rdbuf();
  if (status != 0) {
    Die(fmt::format("`{}` failed (status {}):\n{}", fmt::join(args, " "), status, text.str()));
  }
  return text.str();
}

void StartSignalThread() {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  std::thread([stop] {
    int sig = 0;
    sigwait(&stop, &sig);
    if (g_exiting.exchange(true)) WaitForExit();
    std::cerr << "\nmoat-service-load: interrupted; stopping child processes" << std::endl;
    CleanUp();
    std::_Exit(130);
  }).detach();
}

// CPU seconds (user + system, all threads) a process has used, from /proc.
double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  std::string f;
  double utime = 0, stime = 0;
  // After "(comm) ": state is field 3; utime and stime are fields 14 and 15.
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stod(f);
    if (i == 15) stime = std::stod(f);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double SelfCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    Die("cannot find a free port");
  }
  close(fd);
  return ntohs(a.sin_port);
}

bool CanConnect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

std::string ReadText(const std::filesystem::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// ---------------------------------------------------------------------------------------------
// Statistics.

struct Latency {
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
};

Latency Percentiles(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
  };
  return {at(0.50), at(0.99), v.back()};
}

// The first failure any thread sees; the run stops and reports it.
struct Failure {
  std::mutex mu;
  std::optional<std::string> message;
  std::atomic<bool> failed{false};
  void Set(std::string m) {
    std::lock_guard lock(mu);
    if (!message) message = std::move(m);
    failed = true;
  }
};

std::string Describe(std::string_view what, const Result<net::HttpResponse>& r) {
  if (!r) return fmt::format("{}: {}", what, r.error().message());
  return fmt::format("{}: HTTP {}\n{}", what, r->status, r->body);
}

Json ParseOrEmpty(const std::string& body) {
  auto j = ParseJson(body, "response");
  return j ? *j : Json();
}

// ---------------------------------------------------------------------------------------------
// The simulated devices.

struct Device {
  crypto::PrivateKey identity;
  crypto::PrivateKey tls_key;
  std::string id;
  std::optional<crypto::Certificate> identity_certificate;  // self-certified
  std::string csr_pem;                                      // made once; reused every round
  // From phase A: the client certificate and its issuing (tenant) CA.
  std::optional<crypto::Certificate> client_certificate;
  std::vector<crypto::Certificate> client_chain;
};

const formats::MeasurementLog& DeviceLog() {
  static const formats::MeasurementLog log{{
      {.pcr = formats::kMoatPcr,
       .kind = formats::MeasurementKind::kOs,
       .name = "moat-linux",
       .version = "1.0",
       .digest = crypto::Sha256(std::string_view("bench os image 1.0"))},
      {.pcr = formats::kMoatPcr,
       .kind = formats::MeasurementKind::kApp,
       .name = "telemetry",
       .version = "1.2.0",
       .digest = crypto::Sha256(std::string_view("bench telemetry 1.2.0"))},
  }};
  return log;
}

class Driver {
 public:
  explicit Driver(Options o) : o_(std::move(o)) {}

  int Run();

 private:
  void StartService();
  void Setup();
  void PhaseAttestation();
  // B (whoami) and E (timestamp.json): GET `path` on every device's keep-alive connection.
  void PhasePoll(const std::string& path, const std::string& key);
  void SetupDeployment();
  void PhaseDeploy();
  void PhaseReports();
  void PhaseBaselines();
  void Report();

  std::unique_ptr<net::HttpsClient> Connect(const crypto::Certificate& cert,
                                            const crypto::PrivateKey& key,
                                            std::vector<crypto::Certificate> chain = {}) {
    net::HttpsClientConfig config{.base_url = base_url_};
    config.tls.server_roots = {*root_};
    config.tls.certificate = cert;
    config.tls.chain = std::move(chain);
    config.tls.key = key;
    auto client = net::HttpsClient::Create(config);
    if (!client) Die("creating a client: " + client.error().message());
    return std::move(*client);
  }

  net::HttpResponse Admin(std::string_view method, std::string_view path, int want,
                          std::string_view body = {}) {
    auto r = admin_->Send(method, path, body);
    if (!r || r->status != want) {
      Die(Describe(fmt::format("{} {} (expected {})", method, path, want), r));
    }
    return *r;
  }

  Options o_;
  std::optional<TempDir> dir_;
  pid_t service_pid_ = -1;
  std::filesystem::path service_log_;
  std::string base_url_;
  uint16_t port_ = 0;
  std::optional<crypto::Certificate> root_;
  std::unique_ptr<net::HttpsClient> admin_;
  std::vector<Device> devices_;
  std::unique_ptr<net::HttpsClient> deployer_;  // an operator connection for phase D
  std::vector<std::string> image_ids_;
  std::string group_id_;
  Json results_ = Json::object();
  std::string data_dir_note_;
};

void Driver::StartService() {
  if (!o_.tmpdir.empty()) setenv("TMPDIR", o_.tmpdir.c_str(), 1);
  auto dir = TempDir::Create("moat-service-load");
  if (!dir) Die("temp dir: " + dir.error().message());
  dir_.emplace(std::move(*dir));
  g_cleanup_dir = dir_->path();
  const auto data = dir_->path() / "data";
  SystemClock clock;
  SystemRandom random;
  std::ostringstream progress;
  auto made = service::InitDataDir({.data_dir = data, .port = 0}, clock, random, progress);
  if (!made) Die("init: " + made.error().message());

  service_log_ = dir_->path() / "service.log";
  // A free port chosen here (not an ephemeral one the service would log), so that readiness does
  // not depend on the log level.
  port_ = FreePort();
  service_pid_ = Spawn({o_.service_binary, "--log-level", o_.service_log_level, "run", "--data-dir",
                        data.string(), "--threads", "1", "--port", std::to_string(port_)},
                       {.cpu = o_.service_cpu, .output = service_log_});
  const auto deadline = Clock::now() + 30s;
  while (!CanConnect(port_)) {
    if (!ChildRunning(service_pid_) || Clock::now() > deadline) {
      Die(fmt::format("moat-service did not start ({}):\n{}", o_.service_binary,
                      ReadText(service_log_)));
    }
    std::this_thread::sleep_for(20ms);
  }
  base_url_ = fmt::format("https://127.0.0.1:{}", port_);

  auto text = ReadFile(data / "admin.moat.json", 1 << 20);
  if (!text) Die("admin config: " + text.error().message());
  auto config = formats::ParseOperatorConfig(*text);
  if (!config) Die("admin config: " + config.error().message());
  root_ = *crypto::Certificate::FromPem(config->root_certificate_pem);
  auto chain = crypto::Certificate::ParsePemChain(config->certificate_pem);
  auto key = crypto::PrivateKey::FromPem(config->private_key_pem);
  if (!chain || chain->empty() || !key) Die("admin config: bad certificate or key");
  admin_ = Connect(chain->front(), *key, {chain->begin() + 1, chain->end()});
}

void Driver::Setup() {
  Admin("POST", "/api/v1/tenants", 201, R"({"name":"bench"})");
  for (const auto& m : DeviceLog().entries) {
    Json body = {{"kind", std::string(formats::MeasurementKindName(m.kind))},
                 {"name", m.name},
                 {"sha256", HexEncode(m.digest)}};
    Admin("POST", "/api/v1/tenants/bench/reference-values", 201, body.dump());
  }
  const auto now = std::chrono::system_clock::now();
  devices_.reserve(static_cast<size_t>(o_.devices));
  for (int i = 0; i < o_.devices; ++i) {
    auto identity = crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
    auto tls_key = crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256);
    if (!identity || !tls_key) Die("key generation failed");
    Device d{.identity = std::move(*identity), .tls_key = std::move(*tls_key)};
    d.id = d.identity.public_key().FingerprintHex();
    auto cert = crypto::SelfCertifiedDeviceCertificate(d.identity, now - 1h, now + 24h);
    auto csr = crypto::CertificateRequest::Create(d.tls_key, d.id);
    if (!cert || !csr) Die("device certificate or CSR failed");
    d.identity_certificate = std::move(*cert);
    d.csr_pem = csr->ToPem();
    Admin("POST", "/api/v1/devices", 201,
          Json{{"public_key", d.identity.public_key().ToPem()}}.dump());
    Admin("POST", fmt::format("/api/v1/tenants/bench/devices/{}/claim", d.id), 200);
    devices_.push_back(std::move(d));
  }
}

// One attestation on a fresh connection (so a full handshake). Returns an error text or "".
std::string AttestOnce(Device& d, net::HttpsClient& client) {
  auto r = client.Send("POST", "/device/v1/attestation/challenge");
  if (!r || r->status != 201) return Describe("POST /device/v1/attestation/challenge", r);
  Json j = ParseOrEmpty(r->body);
  auto nonce = Base64Decode(j.value("nonce", ""), Base64Alphabet::kUrl, Base64Padding::kWithout);
  if (!nonce) return "challenge response without a nonce: " + r->body;
  formats::AttestationEvidence e{
      .device_id = d.id, .nonce = *nonce, .log = DeviceLog(), .os_version = "1.0"};
  auto sig = d.identity.Sign(formats::AttestationSigningInput(e));
  if (!sig) return "signing evidence: " + sig.error().message();
  e.signature = std::move(*sig);
  const std::string body = Json{{"evidence", formats::ToJson(e)}, {"csr", d.csr_pem}}.dump();
  r = client.Send("POST", "/device/v1/attestation", body);
  if (!r || r->status != 200) return Describe("POST /device/v1/attestation", r);
  j = ParseOrEmpty(r->body);
  if (j.value("result", "") != "passed" || !j.contains("client_certificate") ||
      !j["client_certificate"].is_string()) {
    return "attestation did not pass: " + r->body;
  }
  auto chain = crypto::Certificate::ParsePemChain(j["client_certificate"].get<std::string>());
  if (!chain || chain->size() != 2) return "bad client certificate chain: " + r->body;
  d.client_certificate = chain->at(0);
  d.client_chain = {chain->at(1)};
  return "";
}

void Driver::PhaseAttestation() {
  const int threads = std::min(o_.threads, o_.devices);
  Failure failure;
  std::vector<std::vector<double>> latencies(static_cast<size_t>(threads));
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point start, end;
  double cpu_before = 0, driver_before = 0;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ++ready;
      while (!go) std::this_thread::yield();
      for (int round = 0; round < o_.rounds && !failure.failed; ++round) {
        for (size_t i = static_cast<size_t>(t); i < devices_.size() && !failure.failed;
             i += static_cast<size_t>(threads)) {
          Device& d = devices_[i];
          // The connection is made (and the handshake done) by the first Send.
          auto client = Connect(*d.identity_certificate, d.identity);
          const auto t0 = Clock::now();
          std::string error = AttestOnce(d, *client);
          const auto t1 = Clock::now();
          if (!error.empty()) {
            failure.Set(fmt::format("device {}: {}", d.id, error));
            return;
          }
          latencies[static_cast<size_t>(t)].push_back(
              std::chrono::duration<double, std::milli>(t1 - t0).count());
        }
      }
    });
  }
  while (ready < threads) std::this_thread::yield();
  cpu_before = ProcessCpuSeconds(service_pid_);
  driver_before = SelfCpuSeconds();
  start = Clock::now();
  go = true;
  for (auto& th : pool) th.join();
  end = Clock::now();
  const double service_cpu = ProcessCpuSeconds(service_pid_) - cpu_before;
  const double driver_cpu = SelfCpuSeconds() - driver_before;
  if (failure.failed) Die("phase A (attestation) failed: " + *failure.message);

  std::vector<double> all;
  for (auto& v : latencies) all.insert(all.end(), v.begin(), v.end());
  const double wall = std::chrono::duration<double>(end - start).count();
  const auto lat = Percentiles(all);
  const double n = static_cast<double>(all.size());
  results_["attestation"] = {
      {"devices", o_.devices},
      {"rounds", o_.rounds},
      {"driver_threads", threads},
      {"attestations", all.size()},
      {"certificates_issued", 2 * all.size()},
      {"wall_seconds", wall},
      {"attestations_per_second", n / wall},
      {"service_cpu_seconds", service_cpu},
      {"attestations_per_service_cpu_second", service_cpu > 0 ? n / service_cpu : 0.0},
      {"service_cpu_utilisation", service_cpu / wall},
      {"driver_cpu_utilisation", driver_cpu / wall},
      {"latency_ms", {{"p50", lat.p50_ms}, {"p99", lat.p99_ms}, {"max", lat.max_ms}}}};
}

// Distinct client endpoints (remote=IP:port) in the service log for whoami requests, and the
// number of such log lines: each distinct endpoint is one TCP connection, so one handshake.
std::pair<size_t, size_t> WhoamiConnectionsFromLog(const std::string& log) {
  std::set<std::string> remotes;
  size_t lines = 0;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("https: GET /device/v1/whoami ") == std::string::npos) continue;
    ++lines;
    auto at = line.find(" remote=");
    if (at == std::string::npos) continue;
    auto stop = line.find(' ', at + 8);
    remotes.insert(line.substr(at + 8, stop == std::string::npos ? stop : stop - at - 8));
  }
  return {remotes.size(), lines};
}

void Driver::PhasePoll(const std::string& path, const std::string& key) {
  const bool whoami = key == "whoami";
  const int threads = std::min(o_.threads, o_.devices);
  Failure failure;
  std::vector<std::vector<double>> latencies(static_cast<size_t>(threads));
  std::vector<std::vector<std::unique_ptr<net::HttpsClient>>> clients(static_cast<size_t>(threads));

  // Open every connection (one handshake each) and check the credential, outside the timing.
  for (size_t i = 0; i < devices_.size(); ++i) {
    Device& d = devices_[i];
    auto client = Connect(*d.client_certificate, d.tls_key, d.client_chain);
    auto r = client->Send("GET", path);
    if (!r || r->status != 200) Die(Describe("warm-up GET " + path, r));
    Json j = ParseOrEmpty(r->body);
    if (whoami && (j.value("credential", "") != "client" || j.value("device_id", "") != d.id)) {
      Die("whoami does not see the client certificate: " + r->body);
    }
    clients[i % static_cast<size_t>(threads)].push_back(std::move(client));
  }

  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point start, deadline;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      auto& mine = clients[static_cast<size_t>(t)];
      auto& lat = latencies[static_cast<size_t>(t)];
      lat.reserve(1 << 16);
      ++ready;
      while (!go) std::this_thread::yield();
      // Round-robin over this thread's connections, so all of them stay busy and open.
      for (size_t k = 0; !failure.failed; k = (k + 1) % mine.size()) {
        const auto t0 = Clock::now();
        if (t0 >= deadline) break;
        auto r = mine[k]->Send("GET", path);
        const auto t1 = Clock::now();
        if (!r || r->status != 200) {
          failure.Set(Describe("GET " + path, r));
          return;
        }
        lat.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
    });
  }
  while (ready < threads) std::this_thread::yield();
  const double cpu_before = ProcessCpuSeconds(service_pid_);
  const double driver_before = SelfCpuSeconds();
  start = Clock::now();
  deadline = start +
             std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.seconds));
  go = true;
  for (auto& th : pool) th.join();
  const auto end = Clock::now();
  const double service_cpu = ProcessCpuSeconds(service_pid_) - cpu_before;
  const double driver_cpu = SelfCpuSeconds() - driver_before;
  if (failure.failed) Die(fmt::format("polling {} failed: {}", path, *failure.message));

  std::vector<double> all;
  for (auto& v : latencies) all.insert(all.end(), v.begin(), v.end());
  const double wall = std::chrono::duration<double>(end - start).count();
  const double n = static_cast<double>(all.size());
  const auto lat = Percentiles(all);
  Json phase = {{"connections", o_.devices},
                {"driver_threads", threads},
                {"requests", all.size()},
                {"wall_seconds", wall},
                {"requests_per_second", n / wall},
                {"service_cpu_seconds", service_cpu},
                {"requests_per_service_cpu_second", service_cpu > 0 ? n / service_cpu : 0.0},
                {"service_cpu_utilisation", service_cpu / wall},
                {"driver_cpu_utilisation", driver_cpu / wall},
                {"latency_ms", {{"p50", lat.p50_ms}, {"p99", lat.p99_ms}, {"max", lat.max_ms}}}};
  clients.clear();  // close the connections
  // The service logs one line per request with the client's address; give it a moment to write
  // the last ones, then count the distinct connections that carried whoami requests.
  if (whoami && (o_.service_log_level == "debug" || o_.service_log_level == "info")) {
    std::this_thread::sleep_for(300ms);
    auto [connections, lines] = WhoamiConnectionsFromLog(ReadText(service_log_));
    phase["connections_seen_by_service"] = connections;
    phase["requests_logged_by_service"] = lines;
    // Warm-up requests included: one per device.
    if (lines != all.size() + devices_.size()) {
      std::cerr << fmt::format(
          "warning: the service logged {} whoami requests, the driver sent {}\n", lines,
          all.size() + devices_.size());
    }
  }
  results_[key] = std::move(phase);
}

// The group the devices are in, N signed images (each its own component) in the image store.
void Driver::SetupDeployment() {
  Admin("POST", "/api/v1/tenants/bench/products", 201, R"({"name":"bench"})");
  auto signer = crypto::PrivateKey::Generate(crypto::KeyType::kEd25519);
  if (!signer) Die("key generation failed");
  Admin("POST", "/api/v1/tenants/bench/image-signing-keys", 201,
        Json{{"public_key", signer->public_key().ToPem()}, {"name", "bench"}}.dump());
  SystemRandom random;
  const std::string manifest_format =
      R"({{"SchemaVersion":1,"Name":"bench{}","ComponentId":"{}","EntryPoint":"/bin/app",)"
      R"("CmdArgs":[],"Capabilities":{{}},"ApplicationType":"Default"}})";
  const auto upload_start = Clock::now();
  for (int i = 0; i < o_.deployment_images; ++i) {
    formats::ImagePackageHeader h;
    const std::string component = random.NewUuid();
    h.component_id = *formats::Guid::Parse(component);
    h.image_id = *formats::Guid::Parse(random.NewUuid());
    h.version = "1.0." + std::to_string(i);
    h.name = "bench" + std::to_string(i);
    h.created = std::chrono::system_clock::now();
    std::string program = fmt::format("bench app {} {}", i, component);
    std::vector<formats::FileTreeEntry> files = {
        {.kind = formats::FileTreeEntry::Kind::kDirectory, .path = "bin", .mode = 0755},
        {.kind = formats::FileTreeEntry::Kind::kFile,
         .path = "bin/app",
         .mode = 0755,
         .data = std::vector<uint8_t>(program.begin(), program.end())}};
    auto pkg = formats::BuildImagePackage(
        h, fmt::format(fmt::runtime(manifest_format), i, component), files, *signer);
    if (!pkg) Die("building a package: " + pkg.error().message());
    auto r = admin_->Send("POST", "/api/v1/tenants/bench/images",
                          std::string_view(reinterpret_cast<const char*>(pkg->data()), pkg->size()),
                          "application/octet-stream");
    if (!r || r->status != 201) Die(Describe("POST /api/v1/tenants/bench/images", r));
    image_ids_.push_back(ParseOrEmpty(r->body).value("id", ""));
  }
  const double upload_s = std::chrono::duration<double>(Clock::now() - upload_start).count();
  results_["image_uploads"] = {{"images", o_.deployment_images},
                               {"seconds", upload_s},
                               {"per_second", o_.deployment_images / upload_s}};
  auto group = Admin("GET", "/api/v1/tenants/bench/products/bench/device-groups/Field%20Test", 200);
  group_id_ = ParseOrEmpty(group.body).value("id", "");
  for (const Device& d : devices_) {
    Admin("PATCH", "/api/v1/tenants/bench/devices/" + d.id, 200,
          R"({"device_group":"bench/Field Test"})");
  }
}

void Driver::PhaseDeploy() {
  const std::string body =
      Json{{"device_group", "bench/Field Test"}, {"images", image_ids_}}.dump();
  std::vector<double> ms;
  double cpu = 0;
  int64_t targets_version = 0;
  for (int i = 0; i < o_.deployment_publishes; ++i) {
    const double cpu_before = ProcessCpuSeconds(service_pid_);
    const auto t0 = Clock::now();
    auto r = deployer_->Send("POST", "/api/v1/tenants/bench/deployments", body);
    const auto t1 = Clock::now();
    if (!r || r->status != 201) Die(Describe("POST /api/v1/tenants/bench/deployments", r));
    cpu += ProcessCpuSeconds(service_pid_) - cpu_before;
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    targets_version = ParseOrEmpty(r->body).value("targets_version", int64_t{0});
  }
  const auto lat = Percentiles(ms);
  results_["deployment"] = {{"images", o_.deployment_images},
                            {"publishes", o_.deployment_publishes},
                            {"publish_ms", ms},
                            {"latency_ms", {{"p50", lat.p50_ms}, {"max", lat.max_ms}}},
                            {"service_cpu_ms_per_publish", 1000 * cpu / o_.deployment_publishes},
                            {"last_targets_version", targets_version}};
}

void Driver::PhaseReports() {
  const int threads = std::min(o_.threads, o_.devices);
  std::vector<std::vector<std::unique_ptr<net::HttpsClient>>> clients(static_cast<size_t>(threads));
  for (size_t i = 0; i < devices_.size(); ++i) {
    Device& d = devices_[i];
    clients[i % static_cast<size_t>(threads)].push_back(
        Connect(*d.client_certificate, d.tls_key, d.client_chain));
  }
  Failure failure;
  std::atomic<int64_t> accepted{0};
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point deadline;
  std::vector<std::vector<double>> latencies(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      SystemRandom random;
      auto& mine = clients[static_cast<size_t>(t)];
      ++ready;
      while (!go) std::this_thread::yield();
      for (size_t k = 0; !failure.failed; k = (k + 1) % mine.size()) {
        std::vector<formats::FailureEvent> batch(static_cast<size_t>(o_.report_batch));
        const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
        for (size_t e = 0; e < batch.size(); ++e) {
          auto& ev = batch[e];
          ev.event_id = random.NewUuid();
          ev.kind = formats::FailureKind::kAppCrash;
          ev.component_id = *formats::Guid::Parse("6f1d5c3e-0b7a-4c1e-9a52-3d8e2f4b7c10");
          ev.image_id = *formats::Guid::Parse("0c8d1b3a-5e6f-4a7b-8c9d-0e1f2a3b4c5d");
          ev.signal = 11;
          ev.pc = 0x1000 + (e % 4);  // four distinct stack signatures
          ev.stack = {{.pc = 0x1000 + (e % 4), .module = "app", .offset = 0x234}};
          ev.first_time = ev.last_time = now;
        }
        const std::string body = formats::SerializeFailureEventBatch(batch);
        const auto t0 = Clock::now();
        if (t0 >= deadline) break;
        auto r = mine[k]->Send("POST", "/device/v1/reports", body);
        const auto t1 = Clock::now();
        if (!r || r->status != 200) {
          failure.Set(Describe("POST /device/v1/reports", r));
          return;
        }
        accepted += ParseOrEmpty(r->body).value("accepted", int64_t{0});
        latencies[static_cast<size_t>(t)].push_back(
            std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
    });
  }
  while (ready < threads) std::this_thread::yield();
  const double cpu_before = ProcessCpuSeconds(service_pid_);
  const auto start = Clock::now();
  deadline = start +
             std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.seconds));
  go = true;
  for (auto& th : pool) th.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  const double service_cpu = ProcessCpuSeconds(service_pid_) - cpu_before;
  if (failure.failed) Die("phase F (reports) failed: " + *failure.message);
  std::vector<double> all;
  for (auto& v : latencies) all.insert(all.end(), v.begin(), v.end());
  const auto lat = Percentiles(all);
  const double n = static_cast<double>(accepted.load());
  results_["reports"] = {{"batch_events", o_.report_batch},
                         {"batches", all.size()},
                         {"events_accepted", accepted.load()},
                         {"events_per_second", n / wall},
                         {"events_per_service_cpu_second", service_cpu > 0 ? n / service_cpu : 0.0},
                         {"service_cpu_utilisation", service_cpu / wall},
                         {"latency_ms", {{"p50", lat.p50_ms}, {"p99", lat.p99_ms}}}};
}

void Driver::PhaseBaselines() {
  const auto dir = dir_->path();
  Json b = Json::object();
  std::string version = RunCommand({"openssl", "version"}, -1, dir / "version.txt", 30s);
  b["openssl_version"] = version.substr(0, version.find('\n'));
  // 1. ECDSA P-256 and ECDH P-256 on the service's core.
  const std::string speed = RunCommand(
      {"openssl", "speed", "-seconds", std::to_string(o_.speed_seconds), "ecdsap256", "ecdhp256"},
      o_.service_cpu, dir / "speed.txt", std::chrono::seconds(10 * o_.speed_seconds + 30));
  std::smatch m;
  if (std::regex_search(
          speed, m,
          std::regex(R"(256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+))"))) {
    b["ecdsap256_sign_per_second"] = std::stod(m[1]);
    b["ecdsap256_verify_per_second"] = std::stod(m[2]);
  } else {
    Die("cannot parse `openssl speed ecdsap256`:\n" + speed);
  }
  if (std::regex_search(speed, m, std::regex(R"(256 bits ecdh \(nistp256\)\s+\S+s\s+([\d.]+))"))) {
    b["ecdhp256_per_second"] = std::stod(m[1]);
  }

  // 2. Full TLS 1.3 handshakes: s_server (P-256 certificate) on the service's core, s_time -new
  //    on the driver's core. Once server-authenticated only, once mutual (client certificate).
  const auto cert = dir / "sserver.pem", key = dir / "sserver.key";
  const auto ccert = dir / "sclient.pem", ckey = dir / "sclient.key";
  using Pair = std::tuple<std::filesystem::path, std::filesystem::path, std::string>;
  for (const auto& [c, k, cn] : {Pair{cert, key, "localhost"}, Pair{ccert, ckey, "client"}}) {
    RunCommand(
        {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", k.string(), "-out", c.string(), "-subj", "/CN=" + cn, "-days", "1"},
        -1, dir / "req.txt", 30s);
  }
  for (bool mutual : {false, true}) {
    const uint16_t port = FreePort();
    std::vector<std::string> server = {
        "openssl", "s_server",    "-accept", fmt::format("127.0.0.1:{}", port),
        "-cert",   cert.string(), "-key",    key.string(),
        "-tls1_3", "-www",        "-quiet"};
    if (mutual) server.insert(server.end(), {"-Verify", "1", "-CAfile", ccert.string()});
    pid_t srv = Spawn(server, {.cpu = o_.service_cpu, .output = dir / "s_server.txt"});
    const auto deadline = Clock::now() + 10s;
    while (!CanConnect(port)) {
      if (!ChildRunning(srv) || Clock::now() > deadline) {
        Die("openssl s_server did not start:\n" + ReadText(dir / "s_server.txt"));
      }
      std::this_thread::sleep_for(20ms);
    }
    std::vector<std::string> client = {
        "openssl", "s_time",  "-connect", fmt::format("127.0.0.1:{}", port),
        "-new",    "-tls1_3", "-time",    std::to_string(o_.stime_seconds)};
    if (mutual) client.insert(client.end(), {"-cert", ccert.string(), "-key", ckey.string()});
    // The probe connection above counts as one accepted connection; it did no handshake.
    const double cpu_before = ProcessCpuSeconds(srv);
    const auto t0 = Clock::now();
    const std::string out = RunCommand(client, o_.driver_cpu, dir / "s_time.txt",
                                       std::chrono::seconds(o_.stime_seconds * 4 + 30));
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    const double cpu = ProcessCpuSeconds(srv) - cpu_before;
    StopChild(srv);
    if (!std::regex_search(out, m, std::regex(R"((\d+) connections in ([\d.]+)s;)"))) {
      Die("cannot parse `openssl s_time`:\n" + out);
    }
    const double n = std::stod(m[1]);
    if (n <= 0) Die("openssl s_time made no connections:\n" + out);
    b[mutual ? "tls13_mutual" : "tls13"] = {
        {"handshakes", n},
        {"wall_seconds", wall},
        {"handshakes_per_second", n / wall},
        {"s_server_cpu_seconds", cpu},
        {"handshakes_per_server_cpu_second", cpu > 0 ? n / cpu : 0.0},
        {"s_time_client_cpu_seconds", std::stod(m[2])}};
  }
  results_["baselines"] = std::move(b);
}

void Driver::Report() {
  const Json& a = results_["attestation"];
  const Json& w = results_["whoami"];
  auto f = [](const Json& j, const char* k) { return j.value(k, 0.0); };
  std::cout << "\n== moat-service-load: one service core (cpu " << o_.service_cpu
            << ", --threads 1), driver on cpu " << o_.driver_cpu << "; " << data_dir_note_ << "\n";
  std::cout << fmt::format("{:<44}{:>12}{:>14}{:>10}{:>10}{:>10}\n", "", "per second",
                           "per svc-CPU s", "p50 ms", "p99 ms", "svc CPU");
  auto row = [&](const std::string& name, const Json& j, const char* rate, const char* per_cpu) {
    std::cout << fmt::format("{:<44}{:>12.1f}{:>14.1f}{:>10.2f}{:>10.2f}{:>9.0f}%\n", name,
                             f(j, rate), f(j, per_cpu), f(j["latency_ms"], "p50"),
                             f(j["latency_ms"], "p99"), 100 * f(j, "service_cpu_utilisation"));
  };
  row(fmt::format("A attestations ({} devices x {} rounds)", o_.devices, o_.rounds), a,
      "attestations_per_second", "attestations_per_service_cpu_second");
  std::cout << fmt::format("{:<44}{:>12.1f}{:>14.1f}\n", "  = certificates issued (client+update)",
                           2 * f(a, "attestations_per_second"),
                           2 * f(a, "attestations_per_service_cpu_second"));
  row(fmt::format("B GET whoami ({} keep-alive connections)", o_.devices), w, "requests_per_second",
      "requests_per_service_cpu_second");
  if (results_.contains("deployment")) {
    const Json& d = results_["deployment"];
    std::cout << fmt::format("{:<44}{:>12}{:>14}{:>10.0f}{:>10.0f}   svc CPU {:.0f} ms/publish\n",
                             fmt::format("D deployment publish ({} images)", o_.deployment_images),
                             "-", "-", f(d["latency_ms"], "p50"), f(d["latency_ms"], "max"),
                             f(d, "service_cpu_ms_per_publish"));
    row(fmt::format("E GET timestamp.json ({} keep-alive conns)", o_.devices),
        results_["timestamp_poll"], "requests_per_second", "requests_per_service_cpu_second");
    row(fmt::format("F report events (batches of {})", o_.report_batch), results_["reports"],
        "events_per_second", "events_per_service_cpu_second");
    std::cout << fmt::format("  (image uploads for D: {:.1f}/s; D's p99 column is its max)\n",
                             f(results_["image_uploads"], "per_second"));
  }
  if (w.contains("connections_seen_by_service")) {
    std::cout << fmt::format(
        "  connections used by whoami, per the service log: {} (devices: {})\n",
        w["connections_seen_by_service"].get<size_t>(), o_.devices);
  }
  std::cout << fmt::format(
      "  driver CPU: {:.0f}% in A, {:.0f}% in B (100% = one core; if it is "
      "near 100% and the service is not, the driver is the limit)\n",
      100 * f(a, "driver_cpu_utilisation"), 100 * f(w, "driver_cpu_utilisation"));
  if (!results_.contains("baselines")) return;
  const Json& b = results_["baselines"];
  const double sign = f(b, "ecdsap256_sign_per_second");
  const double verify = f(b, "ecdsap256_verify_per_second");
  const double ecdh = f(b, "ecdhp256_per_second");
  std::cout << "\n== baselines, same run (" << b.value("openssl_version", "openssl") << ")\n";
  std::cout << fmt::format("{:<44}{:>12.1f}\n", "openssl speed ecdsap256 sign/s", sign);
  std::cout << fmt::format("{:<44}{:>12.1f}\n", "openssl speed ecdsap256 verify/s", verify);
  std::cout << fmt::format("{:<44}{:>12.1f}\n", "openssl speed ecdhp256 op/s", ecdh);
  for (const char* k : {"tls13", "tls13_mutual"}) {
    if (!b.contains(k)) continue;
    std::cout << fmt::format(
        "{:<44}{:>12.1f}{:>14.1f}\n",
        std::string("s_server/s_time -new ") +
            (std::string(k) == "tls13" ? "TLS 1.3 handshakes" : "TLS 1.3 mTLS handshakes"),
        f(b[k], "handshakes_per_second"), f(b[k], "handshakes_per_server_cpu_second"));
  }
  // What one attestation costs the service in public-key operations (counted from the code):
  // ECDSA signs: TLS CertificateVerify, update certificate, client certificate;
  // ECDSA verifies: the self-certified certificate (TLS callback, then Identify() on each of the
  // two requests), the client's TLS CertificateVerify, the evidence, the CSR; one ECDHE.
  constexpr int kSigns = 3, kVerifies = 6, kEcdh = 1;
  const double crypto_us = 1e6 * (kSigns / sign + kVerifies / verify + kEcdh / ecdh);
  const double per_cpu = f(a, "attestations_per_service_cpu_second");
  // `openssl speed` divides by CPU user time, so the like-for-like service figure is the one per
  // second of service CPU; the wall-clock ratio is given too.
  std::cout << fmt::format(
      "\nattestations per svc-CPU s : ecdsap256 sign/s = 1 : {:.0f} (wall-clock: 1 : {:.0f})\n",
      per_cpu > 0 ? sign / per_cpu : 0.0,
      f(a, "attestations_per_second") > 0 ? sign / f(a, "attestations_per_second") : 0.0);
  std::cout << fmt::format(
      "public-key budget per attestation ({} sign + {} verify + {} ECDH) = {:.0f} us -> at most "
      "{:.0f}/s;\nmeasured service CPU per attestation = {:.0f} us ({:.0f}% of it is that "
      "budget)\n",
      kSigns, kVerifies, kEcdh, crypto_us, 1e6 / crypto_us, per_cpu > 0 ? 1e6 / per_cpu : 0.0,
      per_cpu > 0 ? 100 * crypto_us / (1e6 / per_cpu) : 0.0);
  results_["model"] = {
      {"signs", kSigns},
      {"verifies", kVerifies},
      {"ecdh", kEcdh},
      {"public_key_us_per_attestation", crypto_us},
      {"service_cpu_us_per_attestation", per_cpu > 0 ? 1e6 / per_cpu : 0.0},
      {"sign_per_second_over_attestations_per_service_cpu_second",
       per_cpu > 0 ? sign / per_cpu : 0.0},
      {"attestations_per_second_over_sign_per_second", f(a, "attestations_per_second") / sign}};
}

int Driver::Run() {
  StartService();
  std::cerr << fmt::format("moat-service pid {} on cpu {}, port {}; setting up {} devices\n",
                           service_pid_, o_.service_cpu, port_, o_.devices);
  Setup();
  if (o_.deployment_images > 0) {
    std::cerr << fmt::format("uploading {} images for phase D\n", o_.deployment_images);
    SetupDeployment();
    deployer_ = std::move(admin_);
  }
  admin_.reset();  // only device connections (and the deployer's) from here on
  std::cerr << "phase A: attestation\n";
  PhaseAttestation();
  std::cerr << fmt::format("phase B: GET /device/v1/whoami for {} s\n", o_.seconds);
  PhasePoll("/device/v1/whoami", "whoami");
  if (o_.deployment_images > 0) {
    std::cerr << fmt::format("phase D: {} deployment(s) of {} images\n", o_.deployment_publishes,
                             o_.deployment_images);
    PhaseDeploy();
    std::cerr << fmt::format("phase E: GET timestamp.json for {} s\n", o_.seconds);
    PhasePoll(fmt::format("/device/v1/repo/{}/timestamp.json", group_id_), "timestamp_poll");
    std::cerr << fmt::format("phase F: failure reports for {} s\n", o_.seconds);
    PhaseReports();
  }
  deployer_.reset();
  StopChild(service_pid_);
  if (o_.baselines) {
    std::cerr << "phase C: openssl baselines\n";
    PhaseBaselines();
  }
  struct statfs fs {};
  const bool tmpfs = statfs(dir_->path().c_str(), &fs) == 0 && fs.f_type == 0x01021994;
  data_dir_note_ = fmt::format("data dir {} ({})", dir_->path().string(),
                               tmpfs ? "tmpfs: no disk in fsync" : "on disk: SQLite fsyncs");
  results_["options"] = {{"data_dir", dir_->path().string()},
                         {"data_dir_tmpfs", tmpfs},
                         {"devices", o_.devices},
                         {"threads", o_.threads},
                         {"rounds", o_.rounds},
                         {"seconds", o_.seconds},
                         {"service_cpu", o_.service_cpu},
                         {"driver_cpu", o_.driver_cpu},
                         {"service_log_level", o_.service_log_level}};
  Report();
  if (!o_.json_path.empty()) {
    std::ofstream out(o_.json_path);
    out << results_.dump(2) << "\n";
    if (!out) Die("cannot write " + o_.json_path);
  }
  return 0;
}

}  // namespace
}  // namespace moat::bench

int main(int argc, char** argv) {
  moat::bench::Options o;
  CLI::App app{
      "moat-service-load — drive a real moat-service on one core with N mutual-TLS "
      "devices (attestation, then keep-alive whoami), beside openssl baselines.",
      "moat-service-load"};
  app.add_option("--devices", o.devices, "Simulated devices (= connections)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "Driver threads, each owning devices/threads clients")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--rounds", o.rounds,
                 "Attestations per device in phase A (each on a new connection)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--seconds", o.seconds, "Duration of phase B (whoami)")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  app.add_option("--service-cpu", o.service_cpu, "CPU for moat-service and openssl s_server")
      ->capture_default_str();
  app.add_option("--driver-cpu", o.driver_cpu, "CPU for this driver and openssl s_time")
      ->capture_default_str();
  app.add_option("--service-binary", o.service_binary, "moat-service executable")
      ->capture_default_str();
  app.add_option("--service-log-level", o.service_log_level,
                 "moat-service --log-level (info logs one line per request, as in production)")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  app.add_option("--json", o.json_path, "Also write the figures as JSON here");
  app.add_option("--tmpdir", o.tmpdir,
                 "Parent of the temporary data directory (default $TMPDIR or /tmp). SQLite "
                 "commits with fsync, so its file system matters: /dev/shm takes the disk out")
      ->check(CLI::ExistingDirectory);
  app.add_flag("!--no-baselines", o.baselines, "Skip the openssl baselines (phase C)");
  app.add_option("--deployment-images", o.deployment_images,
                 "Images in phase D's deployment (0 skips phases D, E and F)")
      ->check(CLI::Range(0, 5000));
  app.add_option("--deployment-publishes", o.deployment_publishes, "Deployments timed in phase D")
      ->check(CLI::Range(1, 100));
  app.add_option("--report-batch", o.report_batch, "Failure events per upload in phase F")
      ->check(CLI::Range(1, 1000));
  app.add_option("--speed-seconds", o.speed_seconds, "openssl speed -seconds")
      ->check(CLI::Range(1, 60))
      ->capture_default_str();
  app.add_option("--stime-seconds", o.stime_seconds, "openssl s_time -time")
      ->check(CLI::Range(1, 60))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus < 2 || o.service_cpu == o.driver_cpu || o.service_cpu >= cpus || o.driver_cpu >= cpus) {
    std::cerr << "moat-service-load: warning: not pinning (need two distinct CPUs; this machine "
                 "has "
              << cpus << "); figures then include the driver's own CPU use\n";
    moat::bench::g_pin = false;
  } else {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(o.driver_cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
      std::cerr << "moat-service-load: warning: cannot pin to cpu " << o.driver_cpu << "\n";
    }
  }
  moat::bench::StartSignalThread();
  return moat::bench::Driver(o).Run();
}
