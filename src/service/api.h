// The operator plane (/api/v1/...) and health endpoint of moat-service; device-plane requests
// (/device/v1/...) go to DeviceApi.
//
// Every request except GET /healthz must carry a client certificate (verified by the TLS
// layer) that belongs to a known, unrevoked operator; the operator's roles decide what it may
// do. Errors are RFC 9457 problems; bad input is a 4xx naming the problem. Every change an
// operator makes, and every refusal, lands in the audit log.
//
// Thread-safety: Handle() may be called from many I/O threads at once.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "core/clock.h"
#include "core/random.h"
#include "net/http.h"
#include "service/caller.h"
#include "service/deployment_api.h"
#include "service/device_api.h"
#include "service/fleet_api.h"
#include "service/pki.h"
#include "service/repositories.h"
#include "store/database.h"

namespace moat::service {

// Called after a tenant CA is created, so the TLS layer trusts it as an issuer of client
// certificates from the next handshake on.
using TenantCaCreated = std::function<void(const crypto::Certificate&)>;

class Api {
 public:
  // `image_dir` holds the image store's blobs (see FleetApi).
  Api(store::Database& db, const ServicePki& pki, const Clock& clock, Random& random,
      TenantCaCreated on_tenant_ca, std::filesystem::path image_dir);

  net::HttpResponse Handle(const net::HttpRequest& request);

  using Caller = service::Caller;

 private:
  store::Database& db_;
  const ServicePki& pki_;
  const Clock& clock_;
  Random& random_;
  TenantCaCreated on_tenant_ca_;
  Repositories repositories_;  // device groups' TUF repositories
  DeviceApi device_api_;       // /device/v1/...
  FleetApi fleet_;             // products, device groups, image-signing keys, images
  DeploymentApi deployments_;  // deployments, root rotation, deployment status
};

// Creates the first operator, a service-wide Administrator, for `moat-service init`.
Result<crypto::Certificate> CreateFirstAdministrator(store::Database& db, const ServicePki& pki,
                                                     const Clock& clock, Random& random,
                                                     std::string_view name,
                                                     const crypto::CertificateRequest& csr);

}  // namespace moat::service
