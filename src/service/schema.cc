#include "service/schema.h"

namespace moat::service {
namespace {

// Times are unix seconds (BIGINT). IDs are UUID text. A role's scope is '*' for the whole
// service or a tenant ID.
constexpr std::string_view kV1 = R"sql(
CREATE TABLE operators (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  certificate_sha256 TEXT NOT NULL UNIQUE,
  certificate_serial TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  revoked_at BIGINT
);
CREATE TABLE tenants (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  created_at BIGINT NOT NULL
);
CREATE TABLE role_assignments (
  operator_id TEXT NOT NULL REFERENCES operators(id),
  scope TEXT NOT NULL,
  role TEXT NOT NULL,
  PRIMARY KEY (operator_id, scope)
);
CREATE TABLE tenant_cas (
  serial_hex TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  certificate_pem TEXT NOT NULL,
  sealed_key BLOB NOT NULL,
  not_before BIGINT NOT NULL,
  not_after BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX tenant_cas_by_tenant ON tenant_cas (tenant_id, not_after);
CREATE TABLE audit_log (
  seq BIGINT PRIMARY KEY,
  at BIGINT NOT NULL,
  operator_id TEXT,
  operator_name TEXT,
  tenant_id TEXT,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  outcome TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, seq);
)sql";

// Devices: registered by a manufacturer (ID and identity key), then claimed into a tenant.
// A transfer to another tenant is requested by the current tenant's Administrator and
// completed by the receiving tenant's Administrator.
constexpr std::string_view kV2 = R"sql(
CREATE TABLE devices (
  id TEXT PRIMARY KEY,
  public_key BLOB NOT NULL,
  registered_at BIGINT NOT NULL,
  registered_by TEXT NOT NULL,
  tenant_id TEXT REFERENCES tenants(id),
  claimed_at BIGINT,
  last_seen BIGINT,
  os_version TEXT,
  certificate_not_after BIGINT,
  last_attestation_at BIGINT,
  last_attestation_result TEXT
);
CREATE INDEX devices_by_tenant ON devices (tenant_id, id);
CREATE TABLE device_transfers (
  device_id TEXT PRIMARY KEY REFERENCES devices(id),
  from_tenant TEXT NOT NULL REFERENCES tenants(id),
  to_tenant TEXT NOT NULL REFERENCES tenants(id),
  requested_by TEXT NOT NULL,
  requested_at BIGINT NOT NULL
);
)sql";

// Attestation: per-tenant known-good measurements, single-use challenges, the security events
// a failed attestation records, and what the device last proved about itself.
constexpr std::string_view kV3 = R"sql(
CREATE TABLE reference_values (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  comment TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL,
  UNIQUE (tenant_id, kind, name, sha256)
);
CREATE TABLE attestation_challenges (
  nonce TEXT PRIMARY KEY,
  device_id TEXT NOT NULL REFERENCES devices(id),
  expires_at BIGINT NOT NULL
);
CREATE INDEX attestation_challenges_by_device ON attestation_challenges (device_id, expires_at);
CREATE TABLE security_events (
  seq BIGINT PRIMARY KEY,
  at BIGINT NOT NULL,
  tenant_id TEXT REFERENCES tenants(id),
  device_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX security_events_by_tenant ON security_events (tenant_id, seq);
ALTER TABLE devices ADD COLUMN measured_images TEXT;
ALTER TABLE devices ADD COLUMN update_certificate_not_after BIGINT;
)sql";

// Fleet: products and their device groups (which device is in which group), a tenant's
// image-signing keys, and its images. An image's ID is the SHA-256 of its package file (the blob
// is <data-dir>/images/<id>); size_bytes is that file's size. A device group's update window is
// a bit mask of days (bit 0 Monday .. bit 6 Sunday) and hours, all NULL when it has none.
constexpr std::string_view kV4 = R"sql(
CREATE TABLE products (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  name TEXT NOT NULL,
  description TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL,
  UNIQUE (tenant_id, name)
);
CREATE TABLE device_groups (
  id TEXT PRIMARY KEY,
  product_id TEXT NOT NULL REFERENCES products(id),
  name TEXT NOT NULL,
  description TEXT NOT NULL,
  os_feed TEXT NOT NULL,
  app_update_policy TEXT NOT NULL,
  update_days BIGINT,
  update_start_hour BIGINT,
  update_end_hour BIGINT,
  created_at BIGINT NOT NULL,
  UNIQUE (product_id, name)
);
ALTER TABLE devices ADD COLUMN device_group_id TEXT REFERENCES device_groups(id);
CREATE INDEX devices_by_group ON devices (device_group_id);
CREATE TABLE image_signing_keys (
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  key_id TEXT NOT NULL,
  name TEXT NOT NULL,
  algorithm TEXT NOT NULL,
  public_key_pem TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL,
  revoked_at BIGINT,
  PRIMARY KEY (tenant_id, key_id),
  UNIQUE (tenant_id, name)
);
CREATE TABLE images (
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  id TEXT NOT NULL,
  image_type TEXT NOT NULL,
  component_id TEXT NOT NULL,
  package_image_id TEXT NOT NULL,
  version TEXT NOT NULL,
  name TEXT NOT NULL,
  size_bytes BIGINT NOT NULL,
  signer_key_id TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, signer_key_id) REFERENCES image_signing_keys (tenant_id, key_id)
);
CREATE INDEX images_by_component ON images (tenant_id, component_id);
)sql";

// Failure reports. (Version 4 is products, device groups and images.)
constexpr std::string_view kV5 = R"sql(
CREATE TABLE failure_buckets (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  stack_signature TEXT NOT NULL,
  image_id TEXT NOT NULL,
  component_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  description TEXT NOT NULL,
  event_count BIGINT NOT NULL,
  first_seen BIGINT NOT NULL,
  last_seen BIGINT NOT NULL
);
CREATE INDEX failure_buckets_by_tenant ON failure_buckets (tenant_id, event_count);
CREATE TABLE failure_events (
  device_id TEXT NOT NULL REFERENCES devices(id),
  event_id TEXT NOT NULL,
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  bucket_id TEXT REFERENCES failure_buckets(id),
  kind TEXT NOT NULL,
  event_type TEXT NOT NULL,
  event_class TEXT NOT NULL,
  component_id TEXT,
  image_id TEXT,
  event_count BIGINT NOT NULL,
  description TEXT NOT NULL,
  stack_signature TEXT,
  first_time BIGINT NOT NULL,
  last_time BIGINT NOT NULL,
  received_at BIGINT NOT NULL,
  event_json TEXT NOT NULL,
  PRIMARY KEY (device_id, event_id)
);
CREATE INDEX failure_events_by_tenant ON failure_events (tenant_id, last_time);
)sql";

// Deployments: every device group is one TUF repository (docs/formats/tuf.md, "The service's
// repositories"). tuf_repositories holds the versions of the current metadata; `generation`
// counts changes, so a writer that signed from a stale state finds out and starts over.
// tuf_keys holds each role's private keys sealed (AES-256-GCM) under the master key, like tenant
// CA keys; a retired key (a rotated root key) keeps its row with retired_at set. tuf_files holds
// every published metadata file and the small targets the service writes itself
// (image-signing-keys.json); image packages stay in the image store. A deployment lists its
// images in deployment_images; the newest deployment of a group decides what its devices are
// targeted with. device_status is what a device last reported (POST /device/v1/status).
constexpr std::string_view kV6 = R"sql(
CREATE TABLE tuf_repositories (
  device_group_id TEXT PRIMARY KEY REFERENCES device_groups(id),
  generation BIGINT NOT NULL,
  root_version BIGINT NOT NULL,
  targets_version BIGINT NOT NULL,
  snapshot_version BIGINT NOT NULL,
  timestamp_version BIGINT NOT NULL,
  timestamp_expires BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX tuf_repositories_by_expiry ON tuf_repositories (timestamp_expires);
CREATE TABLE tuf_keys (
  device_group_id TEXT NOT NULL REFERENCES device_groups(id),
  key_id TEXT NOT NULL,
  role TEXT NOT NULL,
  key_type TEXT NOT NULL,
  sealed_key BLOB NOT NULL,
  created_at BIGINT NOT NULL,
  retired_at BIGINT,
  PRIMARY KEY (device_group_id, key_id)
);
CREATE TABLE tuf_files (
  device_group_id TEXT NOT NULL REFERENCES device_groups(id),
  path TEXT NOT NULL,
  content BLOB NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (device_group_id, path)
);
CREATE TABLE deployments (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  device_group_id TEXT NOT NULL REFERENCES device_groups(id),
  targets_version BIGINT NOT NULL,
  image_count BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL
);
CREATE INDEX deployments_by_group ON deployments (device_group_id, targets_version);
CREATE INDEX deployments_by_tenant ON deployments (tenant_id, created_at);
CREATE TABLE deployment_images (
  deployment_id TEXT NOT NULL REFERENCES deployments(id),
  device_group_id TEXT NOT NULL REFERENCES device_groups(id),
  image_id TEXT NOT NULL,
  PRIMARY KEY (deployment_id, image_id)
);
CREATE INDEX deployment_images_by_group ON deployment_images (device_group_id, image_id);
CREATE TABLE device_status (
  device_id TEXT PRIMARY KEY REFERENCES devices(id),
  reported_at BIGINT NOT NULL,
  os_name TEXT NOT NULL,
  os_version TEXT NOT NULL,
  installed TEXT NOT NULL,
  running TEXT NOT NULL,
  last_update_result TEXT NOT NULL,
  last_update_at BIGINT,
  last_update_detail TEXT NOT NULL,
  last_update_targets_version BIGINT
);
)sql";

// TPM 2.0 devices (docs/service-api.md, "TPM devices"): the manufacturers' CAs that sign
// endorsement key certificates; a TPM device's EK certificate (its `public_key` is then the EK's
// TPM2B_PUBLIC, from which its ID derives); and, per challenge, the AK it named and the hash of
// the secret its credential carries. PCR policies: a quoted TPM PCR must hold one of the listed
// values, for a device group (device_group_id) or the whole tenant (NULL).
constexpr std::string_view kV7 = R"sql(
CREATE TABLE manufacturer_cas (
  sha256 TEXT PRIMARY KEY,
  subject TEXT NOT NULL,
  certificate BLOB NOT NULL,
  not_after BIGINT NOT NULL,
  added_at BIGINT NOT NULL,
  added_by TEXT NOT NULL
);
ALTER TABLE devices ADD COLUMN ek_certificate BLOB;
ALTER TABLE attestation_challenges ADD COLUMN ak_name TEXT;
ALTER TABLE attestation_challenges ADD COLUMN credential_sha256 TEXT;
CREATE TABLE pcr_policies (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  device_group_id TEXT REFERENCES device_groups(id),
  pcr BIGINT NOT NULL,
  sha256 TEXT NOT NULL,
  comment TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL
);
CREATE INDEX pcr_policies_by_tenant ON pcr_policies (tenant_id, device_group_id);
)sql";

constexpr store::Migration kMigrations[] = {
    {1, "operators, tenants, tenant CAs, audit log", kV1},
    {2, "devices and ownership transfers", kV2},
    {3, "attestation: reference values, challenges, security events", kV3},
    {4, "products, device groups, images, image-signing keys", kV4},
    {5, "failure reports and crash buckets", kV5},
    {6, "device group TUF repositories, deployments, device status", kV6},
    {7, "TPM devices: manufacturer CAs, EK certificates, credential activation", kV7},
};

}  // namespace

std::span<const store::Migration> Migrations() { return kMigrations; }

}  // namespace moat::service
