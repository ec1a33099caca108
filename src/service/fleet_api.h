// The fleet part of the operator plane: products and their device groups, which device group a
// device is in, a tenant's image-signing keys, and its image store.
//
//   /api/v1/tenants/{t}/products[/{product}[/device-groups[/{group}]]]
//   PATCH /api/v1/tenants/{t}/devices/{id}             (moves a device to a device group)
//   /api/v1/tenants/{t}/image-signing-keys[/{id}/revoke]
//   /api/v1/tenants/{t}/images[/{id}[/content]]
//
// Roles (docs/service-api.md has the table): Reader reads; Contributor creates and changes
// products, device groups and device placements, and adds images; Administrator deletes
// products and groups and manages image-signing keys (a key decides which images the tenant
// accepts, and an accepted app image becomes an attestation reference value).
//
// Images are stored once, by content: the image ID is the lowercase hex SHA-256 of the package
// file, the same digest a device measures when it installs the image. The bytes live in
// `image_dir`/<id> (mode 0600, written atomically); their metadata and the tenant's claim on
// them live in the database. Two tenants adding the same file share the blob.
//
// Thread-safety: Handle() may be called from many I/O threads at once.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string_view>

#include "core/clock.h"
#include "core/random.h"
#include "net/http.h"
#include "service/caller.h"
#include "service/repositories.h"
#include "store/database.h"

namespace moat::service {

class FleetApi {
 public:
  // The largest image package `POST .../images` accepts. The HTTP server's body limit must be
  // at least this (Service sets it to this).
  static constexpr size_t kMaxImagePackageBytes = size_t{64} << 20;

  // A device group is created with its TUF repository (in `repositories`) and deleted with it.
  FleetApi(store::Database& db, const Clock& clock, Random& random, std::filesystem::path image_dir,
           Repositories& repositories);

  // True if `request` (split into `seg`, see Segments()) is one of FleetApi's endpoints.
  static bool Routes(const net::HttpRequest& request, std::span<const std::string_view> seg);

  // Answers a request Routes() accepted, on behalf of the authenticated `caller`.
  net::HttpResponse Handle(const net::HttpRequest& request, const Caller& caller,
                           std::span<const std::string_view> seg);

  struct Context;  // one request's tenant, role and time (fleet_api.cc)

 private:
  net::HttpResponse Products(Context& c, std::span<const std::string_view> seg);
  net::HttpResponse DeviceGroups(Context& c, std::span<const std::string_view> seg);
  net::HttpResponse MoveDevice(Context& c, std::string_view device_id);
  net::HttpResponse SigningKeys(Context& c, std::span<const std::string_view> seg);
  net::HttpResponse Images(Context& c, std::span<const std::string_view> seg);
  net::HttpResponse AddImage(Context& c);
  // Writes an audit entry of a refusal and answers 403 with `why`.
  net::HttpResponse Forbidden(Context& c, std::string_view action, std::string_view target,
                              std::string_view why);

  store::Database& db_;
  const Clock& clock_;
  Random& random_;
  std::filesystem::path image_dir_;
  Repositories& repositories_;
};

}  // namespace moat::service
