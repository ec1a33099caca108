// moatd's local control socket: a Unix stream socket that only root (or moatd's own user,
// for development) may use — the socket file is mode 0600 in a 0700 directory, and every
// connection's peer credentials (SO_PEERCRED) are checked as well.
//
// Protocol: the client sends one JSON object on one line ({"command":"status"}), at most
// 4 KiB; moatd answers one JSON object on one line and closes. Errors are
// {"error":"..."}. moatctl is the client.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>

#include "core/error.h"
#include "core/json.h"
#include "core/unique_fd.h"

namespace moat::device::agent {

inline constexpr size_t kMaxControlRequestBytes = 4096;

using ControlHandler = std::function<Json(const Json& request)>;

class ControlServer {
 public:
  // Binds `path` (replacing a stale socket file, refusing anything else there) and serves on
  // its own thread until destroyed.
  static Result<std::unique_ptr<ControlServer>> Start(const std::filesystem::path& path,
                                                      ControlHandler handler);
  ~ControlServer();

 private:
  ControlServer(std::filesystem::path path, UniqueFd listener, UniqueFd wake,
                ControlHandler handler);
  void Serve();
  void ServeOne(int fd);

  std::filesystem::path path_;
  UniqueFd listener_;
  UniqueFd wake_;  // eventfd: written to stop the thread
  ControlHandler handler_;
  std::thread thread_;
};

// The client side (moatctl): sends `request`, returns the answer, waiting at most `timeout` for
// it (an update check or a bundle install may take minutes).
Result<Json> ControlCall(const std::filesystem::path& path, const Json& request,
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));

}  // namespace moat::device::agent
