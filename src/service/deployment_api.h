// Deployments, the operator side: what images a device group's devices are told to run, published
// as a new targets version of the group's TUF repository (service/repositories.h).
//
//   GET  /api/v1/tenants/{t}/deployments[?device_group=PRODUCT/GROUP]   newest first
//   POST /api/v1/tenants/{t}/deployments  {"device_group": "PRODUCT/GROUP", "images": [ID...]}
//   GET  /api/v1/tenants/{t}/deployments/{id}
//   POST /api/v1/tenants/{t}/products/{p}/device-groups/{g}/rotate-root
//   GET  /api/v1/tenants/{t}/products/{p}/device-groups/{g}/repository
//   GET  /api/v1/tenants/{t}/devices/{id}/deployment-status
//
// Roles: Reader reads; Contributor creates deployments; Administrator rotates root keys.
//
// A deployment lists one image per component, all of the tenant's, none signed by a revoked
// image-signing key, at most one OS image, and no application image when the group's
// application-update policy is no-third-party-app-updates. Its targets version names every image
// as "<image-id>.imagepackage" and carries image-signing-keys.json (the tenant's unrevoked keys),
// see docs/formats/tuf.md.
//
// Thread-safety: Handle() may be called from many I/O threads at once.
#pragma once

#include <filesystem>
#include <span>
#include <string_view>

#include "core/clock.h"
#include "core/json.h"
#include "core/random.h"
#include "net/http.h"
#include "service/caller.h"
#include "service/repositories.h"
#include "store/database.h"

namespace moat::service {

class DeploymentApi {
 public:
  // At most this many images in one deployment.
  static constexpr size_t kMaxImages = 5000;

  DeploymentApi(store::Database& db, Repositories& repositories, const Clock& clock,
                Random& random);

  static bool Routes(const net::HttpRequest& request, std::span<const std::string_view> seg);
  net::HttpResponse Handle(const net::HttpRequest& request, const Caller& caller,
                           std::span<const std::string_view> seg);

  struct Context;

 private:
  net::HttpResponse Create(Context& c);
  net::HttpResponse List(Context& c);
  net::HttpResponse Show(Context& c, std::string_view id, int status = 200);
  net::HttpResponse RotateRoot(Context& c, std::string_view product, std::string_view group);
  net::HttpResponse RepositoryInfo(Context& c, std::string_view product, std::string_view group);
  net::HttpResponse Forbidden(Context& c, std::string_view action, std::string_view target,
                              std::string_view why);

  store::Database& db_;
  Repositories& repositories_;
  const Clock& clock_;
  Random& random_;
};

// A device's deployment status: its group's newest deployment (the targeted images) against
// what the device last reported (POST /device/v1/status). `device_id` must be in `tenant_id`.
Result<Json> DeploymentStatusJson(store::Database& db, std::string_view tenant_id,
                                  std::string_view device_id);

}  // namespace moat::service
