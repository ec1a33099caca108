// The device-authentication server: one thread, a poll(2) loop over a wake eventfd and every
// attached channel. Each turn serves at most one request per readable channel, so one busy app
// cannot starve the others; the authority (which may sign in a TPM) is called without the lock.
#include "device/supervisor/device_auth.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include "core/encoding.h"
#include "core/file.h"
#include "core/log.h"

namespace moat::device::supervisor {

struct DeviceAuthServer::Channel {
  formats::Guid component;
  formats::Guid tenant;
  UniqueFd fd;
  double tokens = 0;
  std::chrono::steady_clock::time_point refilled;
};

Result<std::unique_ptr<DeviceAuthServer>> DeviceAuthServer::Create(
    std::shared_ptr<DeviceAuthority> authority, DeviceAuthLimits limits) {
  if (!authority) {
    return Fail(ErrorCode::kInvalidArgument, "device authentication: no authority given");
  }
  if (!(limits.burst >= 1) || !(limits.per_second > 0)) {
    return Fail(ErrorCode::kInvalidArgument,
                "device authentication: burst must be >= 1 and per_second > 0");
  }
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return Fail(ErrnoError("eventfd", "device authentication server", errno));
  std::unique_ptr<DeviceAuthServer> server(
      new DeviceAuthServer(std::move(authority), limits, UniqueFd(fd)));
  server->thread_ = std::thread(&DeviceAuthServer::Loop, server.get());
  return server;
}

DeviceAuthServer::DeviceAuthServer(std::shared_ptr<DeviceAuthority> authority,
                                   DeviceAuthLimits limits, UniqueFd wake)
    : authority_(std::move(authority)), limits_(limits), wake_(std::move(wake)) {}

DeviceAuthServer::~DeviceAuthServer() { Shutdown(); }

void DeviceAuthServer::Shutdown() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    channels_.clear();
  }
  Wake();
  if (thread_.joinable()) thread_.join();
}

void DeviceAuthServer::Wake() {
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);  // EAGAIN: the loop is awake anyway
}

void DeviceAuthServer::Attach(const formats::Guid& component, const formats::Guid& tenant,
                              UniqueFd channel) {
  auto c = std::make_shared<Channel>();
  c->component = component;
  c->tenant = tenant;
  c->fd = std::move(channel);
  c->tokens = limits_.burst;
  c->refilled = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    channels_[component] = std::move(c);
  }
  Wake();
}

void DeviceAuthServer::Detach(const formats::Guid& component) {
  {
    std::lock_guard lock(mu_);
    if (channels_.erase(component) == 0) return;
  }
  Wake();
}

size_t DeviceAuthServer::ChannelCount() const {
  std::lock_guard lock(mu_);
  return channels_.size();
}

bool DeviceAuthServer::Serve(Channel& channel) {
  const std::string app = channel.component.ToString();
  char buffer[formats::kMaxDeviceAuthRequest + 1];
  // MSG_TRUNC: the real length of a longer message, which is then refused, not cut.
  ssize_t n = ::recv(channel.fd.get(), buffer, sizeof buffer, MSG_DONTWAIT | MSG_TRUNC);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
  if (n < 0) {
    log::Warn("device authentication: app {}: {}", app,
              ErrnoError("recv", "device-auth channel", errno).message());
    return false;
  }
  if (n == 0) return false;  // the app's run ended (every copy of its end is closed)

  std::string answer;
  const auto now = std::chrono::steady_clock::now();
  channel.tokens =
      std::min(limits_.burst,
               channel.tokens + limits_.per_second *
                                    std::chrono::duration<double>(now - channel.refilled).count());
  channel.refilled = now;
  if (channel.tokens < 1) {
    answer = "error rate limit exceeded: too many requests; retry later\n";
  } else {
    channel.tokens -= 1;
    auto request =
        static_cast<size_t>(n) > formats::kMaxDeviceAuthRequest
            ? Result<formats::DeviceAuthRequest>(Fail(ErrorCode::kLimitExceeded,
                                                      "request of {} bytes (at most {})", n,
                                                      formats::kMaxDeviceAuthRequest))
            : formats::ParseDeviceAuthRequest(std::string_view(buffer, static_cast<size_t>(n)));
    if (!request) {
      answer = fmt::format("error malformed request: {}\n", request.error().message());
      log::Info("device authentication: app {}: {}", app, request.error().message());
    } else if (request->kind == formats::DeviceAuthRequest::Kind::kChain) {
      auto chain = authority_->CertificateChainPem(channel.tenant);
      answer = chain ? "ok\n" + *chain : fmt::format("error {}\n", chain.error().message());
      if (!chain)
        log::Info("device authentication: app {}: refused: {}", app, chain.error().message());
    } else {
      auto signature = authority_->SignDigest(channel.tenant, request->digest);
      answer = signature ? fmt::format("ok {}\n", HexEncode(*signature))
                         : fmt::format("error {}\n", signature.error().message());
      if (!signature) {
        log::Info("device authentication: app {}: refused: {}", app, signature.error().message());
      }
    }
  }
  if (answer.size() > formats::kMaxDeviceAuthAnswer) {
    answer = "error the answer is too large for the channel\n";
  }
  if (::send(channel.fd.get(), answer.data(), answer.size(), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
    // EAGAIN: the app does not read its answers; it is cut off rather than buffered for.
    log::Warn("device authentication: app {}: {}; closing its channel", app,
              errno == EAGAIN ? std::string("it does not read its answers")
                              : ErrnoError("send", "device-auth channel", errno).message());
    return false;
  }
  return true;
}

void DeviceAuthServer::Loop() {
  for (;;) {
    std::vector<std::shared_ptr<Channel>> serving;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      for (const auto& [id, c] : channels_) serving.push_back(c);
    }
    std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}};
    for (const auto& c : serving) fds.push_back({c->fd.get(), POLLIN, 0});
    int rc = ::poll(fds.data(), fds.size(), -1);
    if (rc < 0) {
      if (errno != EINTR) {
        log::Error("device authentication: {}", ErrnoError("poll", "server loop", errno).message());
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      continue;
    }
    if (fds[0].revents != 0) {
      uint64_t count;
      (void)!::read(wake_.get(), &count, sizeof count);
    }
    for (size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      Channel& c = *serving[i - 1];
      if (Serve(c)) continue;
      std::lock_guard lock(mu_);
      // Only this channel: a newer run's channel of the same app may have replaced it.
      auto it = channels_.find(c.component);
      if (it != channels_.end() && it->second.get() == &c) channels_.erase(it);
    }
  }
}

}  // namespace moat::device::supervisor
