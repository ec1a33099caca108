// The device plane of moat-service: /device/v1/...
//
// A device authenticates with one of three credentials, all mutual TLS:
//   identity  its self-certified bootstrap certificate (crypto::IsSelfCertifiedDeviceCertificate):
//             proves only that it holds the identity key; good for attestation alone;
//   client    the 24 h certificate attestation issues (EKU clientAuth): everything;
//   update    the certificate a device gets even when attestation fails (EKU moatDeviceUpdate):
//             attestation, updates and failure reports only, so it can recover.
// The device ID always comes from the certificate (its urn:moat:device SAN), never the body.
//
// Endpoints:
//   GET  /device/v1/whoami                   who the service thinks the caller is (any credential)
//   POST /device/v1/attestation/challenge    a single-use nonce (any credential)
//   POST /device/v1/attestation              evidence + CSR -> certificates (any credential)
//   POST /device/v1/reports                  a batch of failure events (client or update)
//   GET  /device/v1/repo/<group id>/<path>   the device group's TUF repository (client or
//                                            update; only the caller's own group)
//   POST /device/v1/status                   what the device runs and its last update (client
//                                            or update)
//
// Thread-safety: Handle() may be called from many I/O threads at once.
#pragma once

#include <filesystem>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/clock.h"
#include "net/http.h"
#include "service/pki.h"
#include "service/repositories.h"
#include "service/tenant_ca.h"
#include "store/database.h"

namespace moat::service {

class DeviceApi {
 public:
  // Repository targets that are image packages are read from `image_dir` (the image store).
  DeviceApi(store::Database& db, const ServicePki& pki, const Clock& clock,
            Repositories& repositories, std::filesystem::path image_dir);

  // The largest POST /device/v1/status body.
  static constexpr size_t kMaxStatusBytes = 64 * 1024;

  // For requests whose path starts with /device/.
  net::HttpResponse Handle(const net::HttpRequest& request);

  struct Caller;  // device_api.cc

 private:
  net::HttpResponse Challenge(const Caller& caller, const net::HttpRequest& req);
  net::HttpResponse Attest(const Caller& caller, const net::HttpRequest& request);
  net::HttpResponse WhoAmI(const Caller& caller);
  net::HttpResponse Reports(const Caller& caller, const net::HttpRequest& request);
  net::HttpResponse Repository(const Caller& caller, const net::HttpRequest& request,
                               std::string_view group_id);
  net::HttpResponse Status(const Caller& caller, const net::HttpRequest& request);
  // Records `last_seen` at most every few minutes per device, so a busy device costs no writes.
  void NoteSeen(const std::string& device_id, int64_t now);

  store::Database& db_;
  const ServicePki& pki_;
  const Clock& clock_;
  Repositories& repositories_;
  std::filesystem::path image_dir_;
  TenantCaCache cas_;
  std::mutex seen_mu_;
  std::unordered_map<std::string, int64_t> seen_written_;  // guarded by seen_mu_
};

}  // namespace moat::service
