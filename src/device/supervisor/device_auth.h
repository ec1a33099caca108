// The device-authentication channel: how an app with Capabilities.DeviceAuthentication uses the
// device's TLS client certificate without ever holding its private key (docs/supervisor.md,
// "Device authentication").
//
// Each run of such an app gets one end of an AF_UNIX SOCK_SEQPACKET socketpair
// (MOAT_DEVICE_AUTH_FD); a DeviceAuthServer serves the other end on a thread of its own. The app
// asks for the certificate chain and for ECDSA P-256 signatures over SHA-256 digests (its TLS
// CertificateVerify); the server checks the request and asks a DeviceAuthority, which moatd's
// agent implements over its key store and certificates (the supervisor never sees either).
//
// Wire format (one message each way per request, ASCII, at most formats::kMaxDeviceAuthRequest
// bytes in; the request parser is formats/device_auth.h):
//   app -> moatd   "chain\n"                  the chain, PEM, leaf first
//                  "sign <64 hex digits>\n"   an ECDSA P-256 signature over that SHA-256 digest
//   moatd -> app   "ok\n<PEM>"                 answer to "chain"
//                  "ok <hex DER signature>\n"  answer to "sign"
//                  "error <reason>\n"          refused (the reason names why; no secret in it)
// The final "\n" of a request is optional; anything else (other words, upper-case hex, spaces,
// NUL bytes, a longer message) is "error malformed request: ...".
//
// SECURITY: the parser faces untrusted app input: strict, bounded. The server answers one request
// at a time per app and reads the next only after its answer was queued, so an app that never
// reads its answers is cut off rather than buffered; requests beyond a token bucket (burst
// `burst`, refilled at `per_second`) are refused without reaching the authority. Digests and
// signatures are never logged.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/unique_fd.h"
#include "formats/device_auth.h"
#include "formats/guid.h"

namespace moat::device::supervisor {

// What moatd lends apps (implemented by the agent, over its key store). Both calls get the
// tenant the app's manifest names, and must refuse (an Error whose message the app may see)
// when the device does not belong to that tenant or has no valid client certificate. Called
// from the server's thread; implementations must be thread-safe.
class DeviceAuthority {
 public:
  virtual ~DeviceAuthority() = default;
  // The device's client certificate, then its issuers (the tenant CA chain), PEM.
  virtual Result<std::string> CertificateChainPem(const formats::Guid& tenant) = 0;
  // ECDSA P-256 with the key of that certificate over `digest` (SHA-256), DER ECDSA-Sig-Value.
  virtual Result<std::vector<uint8_t>> SignDigest(const formats::Guid& tenant,
                                                  const std::array<uint8_t, 32>& digest) = 0;
};

struct DeviceAuthLimits {
  double burst = 16;      // requests an app may make at once
  double per_second = 4;  // sustained requests per second
};

// Serves the channels of running apps. Thread-safe.
class DeviceAuthServer {
 public:
  static Result<std::unique_ptr<DeviceAuthServer>> Create(
      std::shared_ptr<DeviceAuthority> authority, DeviceAuthLimits limits = {});
  ~DeviceAuthServer();  // Shutdown()
  DeviceAuthServer(const DeviceAuthServer&) = delete;
  DeviceAuthServer& operator=(const DeviceAuthServer&) = delete;

  // Serves `channel` (moatd's end of the app's socket) for `component`, whose manifest names
  // `tenant`, until Detach or until the app closes its end. Replaces an earlier channel of the
  // same component (a new run).
  void Attach(const formats::Guid& component, const formats::Guid& tenant, UniqueFd channel);
  // Stops serving `component` and closes moatd's end. No-op if not attached.
  void Detach(const formats::Guid& component);
  // Number of channels being served (tests).
  size_t ChannelCount() const;
  void Shutdown();

 private:
  struct Channel;
  DeviceAuthServer(std::shared_ptr<DeviceAuthority> authority, DeviceAuthLimits limits,
                   UniqueFd wake);
  void Loop();
  void Wake();
  // Handles one request on `channel`; false: stop serving it.
  bool Serve(Channel& channel);

  std::shared_ptr<DeviceAuthority> authority_;
  DeviceAuthLimits limits_;
  UniqueFd wake_;
  mutable std::mutex mu_;
  std::map<formats::Guid, std::shared_ptr<Channel>> channels_;  // guarded by mu_
  bool stopping_ = false;                                       // guarded by mu_
  std::thread thread_;
};

}  // namespace moat::device::supervisor
