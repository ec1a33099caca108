#include "device/agent/control.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "core/file.h"
#include "core/log.h"

namespace moat::device::agent {
namespace {

constexpr int kIoTimeoutMs = 2000;

Result<sockaddr_un> Address(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string p = path.string();
  if (p.size() >= sizeof addr.sun_path) {
    return Fail(ErrorCode::kInvalidArgument, "control socket path '{}' is too long", p);
  }
  std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
  return addr;
}

// Waits until `fd` is ready for `events`, at most kIoTimeoutMs.
bool WaitFor(int fd, short events, int timeout_ms = kIoTimeoutMs) {
  pollfd p{.fd = fd, .events = events, .revents = 0};
  for (;;) {
    int n = ::poll(&p, 1, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    return n == 1 && (p.revents & events) != 0;
  }
}

// Reads one line (without the '\n'), at most kMaxControlRequestBytes.
Result<std::string> ReadLine(int fd, int timeout_ms = kIoTimeoutMs) {
  std::string line;
  char buf[512];
  for (;;) {
    if (!WaitFor(fd, POLLIN, timeout_ms))
      return Fail(ErrorCode::kUnavailable, "control socket: timed out");
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail(ErrnoError("read", "control socket", errno));
    }
    if (n == 0) break;
    line.append(buf, static_cast<size_t>(n));
    if (line.size() > kMaxControlRequestBytes * 64) {
      return Fail(ErrorCode::kLimitExceeded, "control socket: message too long");
    }
    if (line.find('\n') != std::string::npos) break;
  }
  if (auto nl = line.find('\n'); nl != std::string::npos) line.resize(nl);
  return line;
}

Result<void> WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    if (!WaitFor(fd, POLLOUT)) return Fail(ErrorCode::kUnavailable, "control socket: timed out");
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail(ErrnoError("send", "control socket", errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Ok();
}

}  // namespace

Result<std::unique_ptr<ControlServer>> ControlServer::Start(const std::filesystem::path& path,
                                                            ControlHandler handler) {
  MOAT_TRY(MakeDirectories(path.parent_path(), 0700));
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    // Only a socket (left by an earlier moatd) is replaced; anything else is someone's file.
    if (!S_ISSOCK(st.st_mode)) {
      return Fail(ErrorCode::kAlreadyExists, "{} exists and is not a socket", path.string());
    }
    // A socket someone still listens on is another moatd's, not a leftover.
    MOAT_ASSIGN_OR_RETURN(sockaddr_un live, Address(path));
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe) return Fail(ErrnoError("socket", path, errno));
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&live), sizeof live) == 0) {
      return Fail(ErrorCode::kAlreadyExists,
                  "another moatd is listening on {} (give each moatd its own control_socket)",
                  path.string());
    }
    if (::unlink(path.c_str()) != 0) return Fail(ErrnoError("unlink", path, errno));
  }
  MOAT_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listener) return Fail(ErrnoError("socket", path, errno));
  // SECURITY: created 0600 (umask 0177 around bind), then checked per connection.
  const mode_t old_mask = ::umask(0177);
  const int bound = ::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int bind_errno = errno;
  ::umask(old_mask);
  if (bound != 0) return Fail(ErrnoError("bind", path, bind_errno));
  if (::chmod(path.c_str(), 0600) != 0) return Fail(ErrnoError("chmod", path, errno));
  if (::listen(listener.get(), 16) != 0) return Fail(ErrnoError("listen", path, errno));
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) return Fail(ErrnoError("eventfd", "control socket", errno));
  auto server = std::unique_ptr<ControlServer>(
      new ControlServer(path, std::move(listener), std::move(wake), std::move(handler)));
  server->thread_ = std::thread([s = server.get()] { s->Serve(); });
  return server;
}

ControlServer::ControlServer(std::filesystem::path path, UniqueFd listener, UniqueFd wake,
                             ControlHandler handler)
    : path_(std::move(path)),
      listener_(std::move(listener)),
      wake_(std::move(wake)),
      handler_(std::move(handler)) {}

ControlServer::~ControlServer() {
  const uint64_t one = 1;
  if (::write(wake_.get(), &one, sizeof one) != sizeof one) {
    log::Error("control socket: cannot wake the server thread: {}", std::strerror(errno));
  }
  if (thread_.joinable()) thread_.join();
  ::unlink(path_.c_str());
}

void ControlServer::Serve() {
  for (;;) {
    pollfd fds[2] = {{.fd = listener_.get(), .events = POLLIN, .revents = 0},
                     {.fd = wake_.get(), .events = POLLIN, .revents = 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log::Error("control socket: poll: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!conn) continue;  // EAGAIN or the peer went away
    ServeOne(conn.get());
  }
}

void ControlServer::ServeOne(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  // SECURITY: root, or the user moatd runs as (a development moatd runs unprivileged).
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
      (cred.uid != 0 && cred.uid != ::geteuid())) {
    log::Warn("control socket: refused a connection from uid {}", cred.uid);
    (void)WriteAll(fd, R"({"error":"permission denied"})"
                       "\n");
    return;
  }
  Json answer;
  auto line = ReadLine(fd);
  if (!line) {
    answer = {{"error", line.error().message()}};
  } else {
    auto request = ParseJson(*line, "request",
                             JsonLimits{.max_bytes = kMaxControlRequestBytes, .max_depth = 4});
    if (!request || !request->is_object()) {
      answer = {{"error", request ? "request: expected a JSON object" : request.error().message()}};
    } else {
      answer = handler_(*request);
    }
  }
  if (auto w = WriteAll(fd, DumpJson(answer) + "\n"); !w) {
    log::Debug("control socket: {}", w.error().message());
  }
}

Result<Json> ControlCall(const std::filesystem::path& path, const Json& request,
                         std::chrono::milliseconds timeout) {
  MOAT_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Fail(ErrnoError("socket", path, errno));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    const int e = errno;
    if (e == ENOENT || e == ECONNREFUSED) {
      return Fail(ErrorCode::kUnavailable, "moatd is not running (no socket at {})", path.string());
    }
    return Fail(ErrnoError("connect", path, e));
  }
  MOAT_TRY(WriteAll(fd.get(), DumpJson(request) + "\n"));
  MOAT_ASSIGN_OR_RETURN(std::string line, ReadLine(fd.get(), static_cast<int>(timeout.count())));
  MOAT_ASSIGN_OR_RETURN(Json answer,
                        ParseJson(line, "moatd's answer", JsonLimits{.max_bytes = 1 << 20}));
  if (answer.is_object() && answer.contains("error") && answer["error"].is_string()) {
    return Fail(ErrorCode::kFailedPrecondition, "moatd: {}", answer["error"].get<std::string>());
  }
  return answer;
}

}  // namespace moat::device::agent
