#include "rot/testing/swtpm.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "core/file.h"

extern char** environ;

namespace moat::rot::testing {
namespace {

// A port the kernel just handed out on 127.0.0.1 (closed again: a small race we accept).
Result<int> FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(ErrnoError("socket", "", errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int err = errno;
    ::close(fd);
    return Fail(ErrnoError("bind", "127.0.0.1:0", err));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool PortFree(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

bool CanConnect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

Result<int> RunQuiet(const std::string& command) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return Fail(ErrnoError("popen", command, errno));
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  int status = ::pclose(pipe);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Fail(ErrorCode::kInternal, "'{}' failed: {}", command, out.substr(0, 2000));
  }
  return 0;
}

}  // namespace

std::string FindTool(const std::string& name) {
  for (const char* dir : {"/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin"}) {
    std::string path = std::string(dir) + "/" + name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return {};
}

bool Swtpm::Available() { return !FindTool("swtpm").empty() && !FindTool("swtpm_setup").empty(); }

Result<Swtpm> Swtpm::Start(const std::filesystem::path& state_dir, bool fresh) {
  MOAT_TRY(MakeDirectories(state_dir, 0700));
  if (fresh) {
    MOAT_TRY(RunQuiet(FindTool("swtpm_setup") + " --tpm2 --tpmstate " + state_dir.string() +
                      " --create-ek-cert --create-platform-cert --overwrite"));
  }
  Swtpm tpm(state_dir);
  // The swtpm TCTI finds the control channel at port + 1.
  for (int attempt = 0; attempt < 50 && tpm.port_ == 0; ++attempt) {
    MOAT_ASSIGN_OR_RETURN(int port, FreePort());
    if (port < 65535 && !CanConnect(port + 1) && PortFree(port + 1)) {
      tpm.port_ = port;
      tpm.ctrl_port_ = port + 1;
    }
  }
  if (tpm.port_ == 0) return Fail(ErrorCode::kUnavailable, "no two adjacent free ports");
  MOAT_TRY(tpm.Launch());
  return tpm;
}

Result<void> Swtpm::Launch() {
  std::string binary = FindTool("swtpm");
  std::vector<std::string> args = {
      binary,
      "socket",
      "--tpm2",
      "--tpmstate",
      "dir=" + state_dir_.string(),
      "--server",
      "type=tcp,bindaddr=127.0.0.1,port=" + std::to_string(port_),
      "--ctrl",
      "type=tcp,bindaddr=127.0.0.1,port=" + std::to_string(ctrl_port_),
      "--flags",
      "not-need-init,startup-clear"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (int rc = ::posix_spawn(&pid, binary.c_str(), nullptr, nullptr, argv.data(), environ);
      rc != 0) {
    return Fail(ErrnoError("posix_spawn", binary, rc));
  }
  pid_ = pid;
  // Ready when the control port accepts (connecting to the data port would take swtpm's one
  // connection slot).
  for (int i = 0; i < 500; ++i) {
    if (CanConnect(ctrl_port_)) return Ok();
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return Fail(ErrorCode::kInternal, "swtpm exited at start (status {})", status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Stop();
  return Fail(ErrorCode::kUnavailable, "swtpm did not listen on port {} within 5 s", ctrl_port_);
}

Swtpm::~Swtpm() { Stop(); }

Swtpm::Swtpm(Swtpm&& other) noexcept
    : state_dir_(std::move(other.state_dir_)),
      port_(other.port_),
      ctrl_port_(other.ctrl_port_),
      pid_(std::exchange(other.pid_, -1)) {}

void Swtpm::Stop() {
  if (pid_ <= 0) return;
  // swtpm acts on SIGTERM only between commands: one blocked reading a client connection that
  // is still open (a TLS key outliving its store) needs SIGKILL. NV state is saved by each
  // command it completed, so either way it is consistent.
  ::kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 200; ++i) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

Result<void> Swtpm::Restart() {
  Stop();
  return Launch();
}

std::string Swtpm::tcti() const {
  return "swtpm:host=127.0.0.1,port=" + std::to_string(port_);
}

bool SoftHsmAvailable() {
  return !FindTool("softhsm2-util").empty() &&
         ::access("/usr/lib/softhsm/libsofthsm2.so", R_OK) == 0;
}

Result<SoftHsmToken> InitSoftHsm(const std::filesystem::path& dir) {
  MOAT_TRY(MakeDirectories(dir / "tokens", 0700));
  std::filesystem::path conf = dir / "softhsm2.conf";
  MOAT_TRY(AtomicWriteFile(conf,
                           "directories.tokendir = " + (dir / "tokens").string() +
                               "\nobjectstore.backend = file\nlog.level = ERROR\n",
                           {.mode = 0600}));
  if (::setenv("SOFTHSM2_CONF", conf.c_str(), 1) != 0) {
    return Fail(ErrnoError("setenv", "SOFTHSM2_CONF", errno));
  }
  SoftHsmToken token;
  token.pin_file = dir / "pin";
  MOAT_TRY(AtomicWriteFile(token.pin_file, "1234\n", {.mode = 0600}));
  MOAT_TRY(RunQuiet(FindTool("softhsm2-util") +
                    " --init-token --free --label moat --pin 1234 --so-pin 56789012"));
  return token;
}

}  // namespace moat::rot::testing
