#include "formats/tuf.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "core/encoding.h"
#include "formats/json_reader.h"

namespace moat::formats::tuf {
namespace {

constexpr size_t kKeyIdHexChars = 64;
constexpr size_t kMaxSignatureHexChars = 1024;  // a DER ECDSA or Ed25519 signature is far less
constexpr size_t kMaxPublicKeyChars = 4096;
constexpr size_t kMaxTargetNameBytes = 255;
constexpr std::string_view kPemPublicKeyHeader = "-----BEGIN PUBLIC KEY-----";

// "parent['key']": map keys are untrusted and may contain dots, so they are always quoted.
std::string MapPath(std::string_view parent, std::string_view key) {
  return fmt::format("{}[{}]", parent, QuoteForMessage(key));
}

template <typename... Args>
std::unexpected<Error> Invalid(fmt::format_string<Args...> format, Args&&... args) {
  return Fail(ErrorCode::kInvalidArgument, format, std::forward<Args>(args)...);
}

bool IsLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// ---- canonical JSON ----

void AppendCanonicalString(std::string_view s, std::string& out) {
  out += '"';
  for (char c : s) {
    // OLPC canonical JSON escapes only these two; every other byte is written as is.
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  out += '"';
}

Result<void> AppendCanonical(const Json& value, std::string_view path, std::string& out) {
  switch (value.type()) {
    case Json::value_t::null:
      out += "null";
      return Ok();
    case Json::value_t::boolean:
      out += value.get<bool>() ? "true" : "false";
      return Ok();
    case Json::value_t::number_integer:
      out += fmt::format("{}", value.get<int64_t>());
      return Ok();
    case Json::value_t::number_unsigned:
      out += fmt::format("{}", value.get<uint64_t>());
      return Ok();
    case Json::value_t::string:
      AppendCanonicalString(value.get_ref<const std::string&>(), out);
      return Ok();
    case Json::value_t::array: {
      out += '[';
      for (size_t i = 0; i < value.size(); ++i) {
        if (i > 0) out += ',';
        MOAT_TRY(AppendCanonical(value[i], JsonPathIndex(path, i), out));
      }
      out += ']';
      return Ok();
    }
    case Json::value_t::object: {
      // nlohmann's object is a std::map<std::string, ...>: iteration is in byte order, which
      // for UTF-8 is code-point order, as securesystemslib sorts.
      out += '{';
      bool first = true;
      for (auto it = value.begin(); it != value.end(); ++it) {
        if (!first) out += ',';
        first = false;
        AppendCanonicalString(it.key(), out);
        out += ':';
        MOAT_TRY(AppendCanonical(it.value(), MapPath(path, it.key()), out));
      }
      out += '}';
      return Ok();
    }
    case Json::value_t::number_float:
      return Invalid("{}: floating-point numbers cannot be canonical JSON",
                     path.empty() ? "value" : path);
    default:
      return Invalid("{}: {} values cannot be canonical JSON", path.empty() ? "value" : path,
                     JsonTypeName(value));
  }
}

// ---- reading helpers ----

Result<const Json*> RequiredMember(ObjectReader& r, std::string_view parent, std::string_view key,
                                   Json::value_t type) {
  const Json* v = r.Member(key);
  if (v == nullptr) return Invalid("{}: missing required field '{}'", parent, key);
  MOAT_TRY(ExpectType(*v, type, r.PathOf(key)));
  return v;
}

Result<std::string> ReadKeyId(const Json& value, std::string_view path) {
  MOAT_TRY(ExpectType(value, Json::value_t::string, path));
  const auto& s = value.get_ref<const std::string&>();
  if (s.size() != kKeyIdHexChars || !IsLowerHex(s)) {
    return Invalid("{}: a keyid is 64 lowercase hex digits, got {}", path, QuoteForMessage(s));
  }
  return s;
}

Result<crypto::Sha256Digest> ReadSha256Hex(const Json& value, std::string_view path) {
  MOAT_TRY(ExpectType(value, Json::value_t::string, path));
  const auto& s = value.get_ref<const std::string&>();
  if (s.size() != 64 || !IsLowerHex(s)) {
    return Invalid("{}: a sha256 hash is 64 lowercase hex digits, got {}", path,
                   QuoteForMessage(s));
  }
  auto bytes = HexDecode(s);
  crypto::Sha256Digest d{};
  std::copy(bytes->begin(), bytes->end(), d.begin());
  return d;
}

// "hashes": {"sha256": "<hex>"}. Moat writes and accepts sha256 only.
Result<crypto::Sha256Digest> ReadHashes(const Json& value, std::string_view path) {
  MOAT_TRY(ExpectType(value, Json::value_t::object, path));
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (it.key() != "sha256") {
      return Invalid("{}: unsupported hash algorithm (Moat uses sha256 only)",
                     MapPath(path, it.key()));
    }
  }
  auto it = value.find("sha256");
  if (it == value.end()) return Invalid("{}: missing required field 'sha256'", path);
  return ReadSha256Hex(*it, JsonPathJoin(path, "sha256"));
}

// "YYYY-MM-DDTHH:MM:SSZ" exactly, so that a timestamp has one spelling.
Result<SystemTime> ReadExpires(ObjectReader& r, std::string_view parent) {
  MOAT_ASSIGN_OR_RETURN(std::string s, r.RequiredString("expires", 32));
  auto t = ParseRfc3339(s);
  if (!t || FormatRfc3339(*t) != s) {
    return Invalid("{}: expected an RFC 3339 UTC time 'YYYY-MM-DDTHH:MM:SSZ', got {}",
                   JsonPathJoin(parent, "expires"), QuoteForMessage(s));
  }
  return *t;
}

// spec_version "1.<minor>[.<patch>]": the major version must be 1 (TUF's compatibility rule).
Result<void> CheckSpecVersion(std::string_view s, std::string_view path) {
  auto is_number = [](std::string_view part) {
    return !part.empty() && part.size() <= 9 &&
           std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    parts.push_back(s.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  bool well_formed = (parts.size() == 2 || parts.size() == 3) &&
                     std::all_of(parts.begin(), parts.end(), is_number);
  if (!well_formed) {
    return Invalid("{}: expected '1.<minor>[.<patch>]', got {}", path, QuoteForMessage(s));
  }
  if (parts[0] != "1") {
    return Invalid("{}: spec version {} is not supported (major version 1 only)", path,
                   QuoteForMessage(s));
  }
  return Ok();
}

Result<Common> ReadCommon(ObjectReader& r, Role role, std::string_view path) {
  Common c;
  MOAT_ASSIGN_OR_RETURN(std::string type, r.RequiredString("_type", 32));
  if (type != RoleName(role)) {
    return Invalid("{}: expected '{}', got {}", r.PathOf("_type"), RoleName(role),
                   QuoteForMessage(type));
  }
  MOAT_ASSIGN_OR_RETURN(c.spec_version, r.RequiredString("spec_version", 32));
  MOAT_TRY(CheckSpecVersion(c.spec_version, r.PathOf("spec_version")));
  MOAT_ASSIGN_OR_RETURN(c.version, r.RequiredInt("version", 1, kMaxVersion));
  MOAT_ASSIGN_OR_RETURN(c.expires, ReadExpires(r, path));
  return c;
}

Result<MetaFile> ReadMetaFile(const Json& value, std::string_view path) {
  ObjectReader r(value, path);
  MOAT_TRY(r.status());
  MetaFile m;
  MOAT_ASSIGN_OR_RETURN(m.version, r.RequiredInt("version", 1, kMaxVersion));
  MOAT_ASSIGN_OR_RETURN(m.length, r.OptionalInt("length", 0, kMaxLength));
  if (const Json* h = r.Member("hashes")) {
    MOAT_ASSIGN_OR_RETURN(m.sha256, ReadHashes(*h, r.PathOf("hashes")));
  }
  MOAT_TRY(r.NoOtherFields());
  return m;
}

// The only entry of a timestamp's or snapshot's "meta".
Result<MetaFile> ReadOnlyMetaEntry(ObjectReader& r, std::string_view parent,
                                   std::string_view expected, std::string_view why) {
  MOAT_ASSIGN_OR_RETURN(const Json* meta, RequiredMember(r, parent, "meta", Json::value_t::object));
  std::string path = r.PathOf("meta");
  for (auto it = meta->begin(); it != meta->end(); ++it) {
    if (it.key() != expected) {
      return Invalid("{}: unexpected entry ({})", MapPath(path, it.key()), why);
    }
  }
  auto it = meta->find(expected);
  if (it == meta->end()) return Invalid("{}: missing required entry '{}'", path, expected);
  return ReadMetaFile(*it, MapPath(path, expected));
}

Result<RoleKeys> ReadRoleKeys(const Json& value, std::string_view path,
                              const std::map<std::string, Key>& keys,
                              const MetadataLimits& limits) {
  ObjectReader r(value, path);
  MOAT_TRY(r.status());
  RoleKeys role;
  MOAT_ASSIGN_OR_RETURN(const Json* ids, RequiredMember(r, path, "keyids", Json::value_t::array));
  std::string ids_path = r.PathOf("keyids");
  if (ids->empty()) return Invalid("{}: must list at least one key", ids_path);
  if (ids->size() > limits.max_role_keys) {
    return Fail(ErrorCode::kLimitExceeded, "{}: {} keys exceed the limit of {}", ids_path,
                ids->size(), limits.max_role_keys);
  }
  for (size_t i = 0; i < ids->size(); ++i) {
    std::string item_path = JsonPathIndex(ids_path, i);
    MOAT_ASSIGN_OR_RETURN(std::string id, ReadKeyId((*ids)[i], item_path));
    if (!keys.contains(id)) return Invalid("{}: key {} is not in keys", item_path, id);
    if (std::find(role.keyids.begin(), role.keyids.end(), id) != role.keyids.end()) {
      return Invalid("{}: key {} is listed twice", item_path, id);
    }
    role.keyids.push_back(std::move(id));
  }
  MOAT_ASSIGN_OR_RETURN(role.threshold, r.RequiredInt("threshold", 1, kMaxVersion));
  if (static_cast<size_t>(role.threshold) > role.keyids.size()) {
    return Invalid("{}: {} exceeds the number of keys ({}), so the role could never sign",
                   r.PathOf("threshold"), role.threshold, role.keyids.size());
  }
  MOAT_TRY(r.NoOtherFields());
  return role;
}

Result<TargetFile> ReadTargetFile(const Json& value, std::string_view path,
                                  const MetadataLimits& limits) {
  ObjectReader r(value, path);
  MOAT_TRY(r.status());
  TargetFile t;
  MOAT_ASSIGN_OR_RETURN(t.length, r.RequiredInt("length", 0, kMaxLength));
  MOAT_ASSIGN_OR_RETURN(const Json* hashes,
                        RequiredMember(r, path, "hashes", Json::value_t::object));
  MOAT_ASSIGN_OR_RETURN(t.sha256, ReadHashes(*hashes, r.PathOf("hashes")));
  if (const Json* custom = r.Member("custom")) {
    MOAT_TRY(ExpectType(*custom, Json::value_t::object, r.PathOf("custom")));
    MOAT_ASSIGN_OR_RETURN(std::string canonical, CanonicalJson(*custom));
    if (canonical.size() > limits.max_custom_bytes) {
      return Fail(ErrorCode::kLimitExceeded, "{}: {} bytes exceed the limit of {}",
                  r.PathOf("custom"), canonical.size(), limits.max_custom_bytes);
    }
    t.custom = *custom;
  }
  MOAT_TRY(r.NoOtherFields());
  return t;
}

// The envelope: {"signatures":[{"keyid","sig"}...],"signed":{...}}. Returns the "signed" value.
Result<Json> ReadEnvelope(std::string_view bytes, Role role, const MetadataLimits& limits,
                          Envelope& envelope) {
  std::string_view name = RoleName(role);
  if (bytes.size() > limits.max_bytes) {
    return Fail(ErrorCode::kLimitExceeded, "{}: {} bytes exceed the limit of {} bytes", name,
                bytes.size(), limits.max_bytes);
  }
  MOAT_ASSIGN_OR_RETURN(Json doc, ParseJson(bytes, name, {limits.max_bytes, limits.max_depth}));
  ObjectReader r(doc, name);
  MOAT_TRY(r.status());
  MOAT_ASSIGN_OR_RETURN(const Json* sigs,
                        RequiredMember(r, name, "signatures", Json::value_t::array));
  std::string sigs_path = r.PathOf("signatures");
  if (sigs->size() > limits.max_signatures) {
    return Fail(ErrorCode::kLimitExceeded, "{}: {} signatures exceed the limit of {}", sigs_path,
                sigs->size(), limits.max_signatures);
  }
  for (size_t i = 0; i < sigs->size(); ++i) {
    std::string path = JsonPathIndex(sigs_path, i);
    ObjectReader sr((*sigs)[i], path);
    MOAT_TRY(sr.status());
    const Json* keyid = sr.Member("keyid");
    if (keyid == nullptr) return Invalid("{}: missing required field 'keyid'", path);
    Signature sig;
    MOAT_ASSIGN_OR_RETURN(sig.keyid, ReadKeyId(*keyid, sr.PathOf("keyid")));
    MOAT_ASSIGN_OR_RETURN(std::string hex, sr.RequiredString("sig", kMaxSignatureHexChars));
    auto raw = HexDecode(hex);
    if (!raw) return Invalid("{}: not hex: {}", sr.PathOf("sig"), raw.error().message());
    sig.sig = std::move(*raw);
    MOAT_TRY(sr.NoOtherFields());
    envelope.signatures.push_back(std::move(sig));
  }
  MOAT_ASSIGN_OR_RETURN(const Json* signed_json,
                        RequiredMember(r, name, "signed", Json::value_t::object));
  MOAT_TRY(r.NoOtherFields());
  auto canonical = CanonicalJson(*signed_json);
  if (!canonical) return Fail(canonical.error().WithContext(r.PathOf("signed")));
  envelope.canonical_signed = std::move(*canonical);
  return *signed_json;
}

Result<Root> ReadRoot(const Json& signed_json, const MetadataLimits& limits) {
  const std::string path = "root.signed";
  ObjectReader r(signed_json, path);
  Root root;
  MOAT_ASSIGN_OR_RETURN(static_cast<Common&>(root), ReadCommon(r, Role::kRoot, path));
  MOAT_ASSIGN_OR_RETURN(const Json* cs,
                        RequiredMember(r, path, "consistent_snapshot", Json::value_t::boolean));
  root.consistent_snapshot = cs->get<bool>();

  MOAT_ASSIGN_OR_RETURN(const Json* keys, RequiredMember(r, path, "keys", Json::value_t::object));
  std::string keys_path = r.PathOf("keys");
  if (keys->size() > limits.max_keys) {
    return Fail(ErrorCode::kLimitExceeded, "{}: {} keys exceed the limit of {}", keys_path,
                keys->size(), limits.max_keys);
  }
  for (auto it = keys->begin(); it != keys->end(); ++it) {
    std::string key_path = MapPath(keys_path, it.key());
    MOAT_ASSIGN_OR_RETURN(std::string id, ReadKeyId(Json(it.key()), key_path));
    MOAT_ASSIGN_OR_RETURN(Key key, Key::FromJson(it.value(), key_path));
    // SECURITY: a keyid must name exactly one key, so the ID listed must be the key's own.
    if (key.keyid() != id) {
      return Invalid("{}: keyid does not match the key (its keyid is {})", key_path, key.keyid());
    }
    root.keys.emplace(std::move(id), std::move(key));
  }

  MOAT_ASSIGN_OR_RETURN(const Json* roles, RequiredMember(r, path, "roles", Json::value_t::object));
  ObjectReader rr(*roles, r.PathOf("roles"));
  for (Role role : {Role::kRoot, Role::kTimestamp, Role::kSnapshot, Role::kTargets}) {
    MOAT_ASSIGN_OR_RETURN(const Json* v, RequiredMember(rr, r.PathOf("roles"), RoleName(role),
                                                        Json::value_t::object));
    MOAT_ASSIGN_OR_RETURN(root.role(role),
                          ReadRoleKeys(*v, rr.PathOf(RoleName(role)), root.keys, limits));
  }
  MOAT_TRY(rr.NoOtherFields());
  MOAT_TRY(r.NoOtherFields());
  return root;
}

Result<Timestamp> ReadTimestamp(const Json& signed_json, const MetadataLimits&) {
  const std::string path = "timestamp.signed";
  ObjectReader r(signed_json, path);
  Timestamp t;
  MOAT_ASSIGN_OR_RETURN(static_cast<Common&>(t), ReadCommon(r, Role::kTimestamp, path));
  MOAT_ASSIGN_OR_RETURN(t.snapshot,
                        ReadOnlyMetaEntry(r, path, "snapshot.json", "only snapshot.json"));
  MOAT_TRY(r.NoOtherFields());
  return t;
}

Result<Snapshot> ReadSnapshot(const Json& signed_json, const MetadataLimits&) {
  const std::string path = "snapshot.signed";
  ObjectReader r(signed_json, path);
  Snapshot s;
  MOAT_ASSIGN_OR_RETURN(static_cast<Common&>(s), ReadCommon(r, Role::kSnapshot, path));
  MOAT_ASSIGN_OR_RETURN(
      s.targets, ReadOnlyMetaEntry(r, path, "targets.json",
                                   "delegations are not supported: only targets.json is listed"));
  MOAT_TRY(r.NoOtherFields());
  return s;
}

Result<Targets> ReadTargets(const Json& signed_json, const MetadataLimits& limits) {
  const std::string path = "targets.signed";
  ObjectReader r(signed_json, path);
  Targets t;
  MOAT_ASSIGN_OR_RETURN(static_cast<Common&>(t), ReadCommon(r, Role::kTargets, path));
  // Refused before anything else in the body: a repository relying on delegations must not
  // be half-understood.
  if (r.Member("delegations") != nullptr) {
    return Invalid("{}: delegations are not supported", r.PathOf("delegations"));
  }
  MOAT_ASSIGN_OR_RETURN(const Json* targets,
                        RequiredMember(r, path, "targets", Json::value_t::object));
  std::string targets_path = r.PathOf("targets");
  if (targets->size() > limits.max_targets) {
    return Fail(ErrorCode::kLimitExceeded, "{}: {} targets exceed the limit of {}", targets_path,
                targets->size(), limits.max_targets);
  }
  for (auto it = targets->begin(); it != targets->end(); ++it) {
    std::string target_path = MapPath(targets_path, it.key());
    auto valid = ValidateTargetName(it.key());
    if (!valid) return Fail(valid.error().WithContext(target_path));
    MOAT_ASSIGN_OR_RETURN(TargetFile file, ReadTargetFile(it.value(), target_path, limits));
    t.targets.emplace(it.key(), std::move(file));
  }
  MOAT_TRY(r.NoOtherFields());
  return t;
}

template <typename T, typename Reader>
Result<Metadata<T>> ParseMetadata(std::string_view bytes, Role role, const MetadataLimits& limits,
                                  Reader read) {
  Metadata<T> m;
  MOAT_ASSIGN_OR_RETURN(Json signed_json, ReadEnvelope(bytes, role, limits, m.envelope));
  MOAT_ASSIGN_OR_RETURN(m.signed_, read(signed_json, limits));
  return m;
}

// ---- writing helpers ----

Json CommonToJson(const Common& c, Role role) {
  return Json{{"_type", RoleName(role)},
              {"spec_version", c.spec_version},
              {"version", c.version},
              {"expires", FormatRfc3339(c.expires)}};
}

Json HashesToJson(const crypto::Sha256Digest& d) { return Json{{"sha256", HexEncode(d)}}; }

Json MetaFileToJson(const MetaFile& m) {
  Json j{{"version", m.version}};
  if (m.length) j["length"] = *m.length;
  if (m.sha256) j["hashes"] = HashesToJson(*m.sha256);
  return j;
}

template <typename Parse>
Result<std::string> SignJson(const Json& signed_json, std::span<const crypto::PrivateKey> keys,
                             Parse parse_back) {
  MOAT_ASSIGN_OR_RETURN(std::string canonical, CanonicalJson(signed_json));
  Json sigs = Json::array();
  for (const crypto::PrivateKey& key : keys) {
    MOAT_ASSIGN_OR_RETURN(auto sig, key.Sign(canonical));
    sigs.push_back(
        Json{{"keyid", Key::FromPublicKey(key.public_key()).keyid()}, {"sig", HexEncode(sig)}});
  }
  // The file itself is ordinary compact JSON, not canonical JSON: canonical JSON leaves control
  // characters (the newlines of a PEM key) unescaped, which JSON parsers rightly refuse.
  std::string bytes = DumpJson(Json{{"signatures", sigs}, {"signed", signed_json}});
  // The writer refuses to publish what a reader would refuse.
  auto parsed = parse_back(bytes);
  if (!parsed) return Fail(parsed.error().WithContext("refusing to sign invalid metadata"));
  return bytes;
}

Result<void> CheckSigners(const RoleSigners& s, Role role) {
  if (s.keys.empty() || s.keys.size() > MetadataLimits{}.max_role_keys) {
    return Invalid("{} role: needs 1..{} keys, got {}", RoleName(role),
                   MetadataLimits{}.max_role_keys, s.keys.size());
  }
  if (s.threshold < 1 || static_cast<size_t>(s.threshold) > s.keys.size()) {
    return Invalid("{} role: threshold {} cannot be met by {} keys", RoleName(role), s.threshold,
                   s.keys.size());
  }
  return Ok();
}

SystemTime ExpiresAt(SystemTime now, Seconds lifetime) {
  return std::chrono::floor<Seconds>(now) + lifetime;
}

}  // namespace

// ---- public API ----

Result<std::string> CanonicalJson(const Json& value) {
  std::string out;
  MOAT_TRY(AppendCanonical(value, "", out));
  return out;
}

Result<std::string> ComputeKeyId(const Json& key_object) {
  MOAT_ASSIGN_OR_RETURN(std::string canonical, CanonicalJson(key_object));
  return HexEncode(crypto::Sha256(canonical));
}

Key Key::FromPublicKey(const crypto::PublicKey& key) {
  Json json;
  if (key.type() == crypto::KeyType::kEd25519) {
    json = Json{{"keytype", "ed25519"},
                {"scheme", "ed25519"},
                {"keyval", Json{{"public", HexEncode(key.ToRaw())}}}};
  } else {
    json = Json{{"keytype", "ecdsa-sha2-nistp256"},
                {"scheme", "ecdsa-sha2-nistp256"},
                {"keyval", Json{{"public", key.ToPem()}}}};
  }
  // Only strings: canonical JSON cannot fail.
  std::string keyid = ComputeKeyId(json).value();
  return Key(std::move(json), std::move(keyid), key);
}

Result<Key> Key::FromJson(const Json& json, std::string_view path) {
  ObjectReader r(json, path);
  MOAT_TRY(r.status());
  MOAT_ASSIGN_OR_RETURN(std::string keytype, r.RequiredString("keytype", 64));
  MOAT_ASSIGN_OR_RETURN(std::string scheme, r.RequiredString("scheme", 64));
  MOAT_ASSIGN_OR_RETURN(const Json* keyval,
                        RequiredMember(r, path, "keyval", Json::value_t::object));
  ObjectReader kr(*keyval, r.PathOf("keyval"));
  MOAT_ASSIGN_OR_RETURN(std::string pub, kr.RequiredString("public", kMaxPublicKeyChars));
  MOAT_TRY(kr.NoOtherFields());
  // Written by older securesystemslib versions; part of the key ID, otherwise unused.
  if (const Json* algs = r.Member("keyid_hash_algorithms")) {
    std::string algs_path = r.PathOf("keyid_hash_algorithms");
    MOAT_TRY(ExpectType(*algs, Json::value_t::array, algs_path));
    if (algs->size() > 8) return Invalid("{}: more than 8 entries", algs_path);
    for (size_t i = 0; i < algs->size(); ++i) {
      MOAT_TRY(ExpectType((*algs)[i], Json::value_t::string, JsonPathIndex(algs_path, i)));
    }
  }
  MOAT_TRY(r.NoOtherFields());

  std::string pub_path = kr.PathOf("public");
  std::optional<crypto::PublicKey> key;
  if (keytype == "ed25519") {
    if (scheme != "ed25519") {
      return Invalid("{}: expected 'ed25519' for an ed25519 key, got {}", r.PathOf("scheme"),
                     QuoteForMessage(scheme));
    }
    if (pub.size() != 64 || !IsLowerHex(pub)) {
      return Invalid("{}: an ed25519 key is 64 lowercase hex digits", pub_path);
    }
    auto parsed = crypto::PublicKey::FromRaw(crypto::KeyType::kEd25519, *HexDecode(pub));
    if (!parsed) return Fail(parsed.error().WithContext(pub_path));
    key = std::move(*parsed);
  } else if (keytype == "ecdsa-sha2-nistp256" || keytype == "ecdsa") {
    if (scheme != "ecdsa-sha2-nistp256") {
      return Invalid("{}: expected 'ecdsa-sha2-nistp256', got {}", r.PathOf("scheme"),
                     QuoteForMessage(scheme));
    }
    if (!pub.starts_with(kPemPublicKeyHeader)) {
      return Invalid("{}: an ecdsa key is a PEM 'PUBLIC KEY' block", pub_path);
    }
    auto parsed = crypto::PublicKey::FromPem(pub);
    if (!parsed) return Fail(parsed.error().WithContext(pub_path));
    if (parsed->type() != crypto::KeyType::kEcdsaP256) {
      return Invalid("{}: not a P-256 key", pub_path);
    }
    key = std::move(*parsed);
  } else {
    return Invalid("{}: unsupported key type {} (Moat supports ed25519 and ecdsa-sha2-nistp256)",
                   r.PathOf("keytype"), QuoteForMessage(keytype));
  }
  MOAT_ASSIGN_OR_RETURN(std::string keyid, ComputeKeyId(json));
  return Key(json, std::move(keyid), std::move(*key));
}

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kRoot:
      return "root";
    case Role::kTimestamp:
      return "timestamp";
    case Role::kSnapshot:
      return "snapshot";
    case Role::kTargets:
      return "targets";
  }
  return "unknown";
}

const RoleKeys& Root::role(Role r) const {
  switch (r) {
    case Role::kRoot:
      return root;
    case Role::kTimestamp:
      return timestamp;
    case Role::kSnapshot:
      return snapshot;
    case Role::kTargets:
      return targets;
  }
  return root;
}

RoleKeys& Root::role(Role r) { return const_cast<RoleKeys&>(std::as_const(*this).role(r)); }

Result<void> ValidateTargetName(std::string_view name) {
  if (name.empty() || name.size() > kMaxTargetNameBytes) {
    return Invalid("a target name is 1..{} bytes, got {}", kMaxTargetNameBytes, name.size());
  }
  if (name[0] == '.') return Invalid("a target name may not start with '.'");
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '+' || c == '~';
    if (!ok) {
      return Invalid("a target name is made of A-Z a-z 0-9 . _ - + ~ (got {})",
                     QuoteForMessage(std::string_view(&c, 1)));
    }
  }
  return Ok();
}

Result<Metadata<Root>> ParseRoot(std::string_view bytes, const MetadataLimits& limits) {
  return ParseMetadata<Root>(bytes, Role::kRoot, limits, ReadRoot);
}
Result<Metadata<Timestamp>> ParseTimestamp(std::string_view bytes, const MetadataLimits& limits) {
  return ParseMetadata<Timestamp>(bytes, Role::kTimestamp, limits, ReadTimestamp);
}
Result<Metadata<Snapshot>> ParseSnapshot(std::string_view bytes, const MetadataLimits& limits) {
  return ParseMetadata<Snapshot>(bytes, Role::kSnapshot, limits, ReadSnapshot);
}
Result<Metadata<Targets>> ParseTargets(std::string_view bytes, const MetadataLimits& limits) {
  return ParseMetadata<Targets>(bytes, Role::kTargets, limits, ReadTargets);
}

Result<void> VerifyRole(const Envelope& envelope, const Root& authority, Role role,
                        std::string_view what) {
  const RoleKeys& keys = authority.role(role);
  // SECURITY: count public keys, not keyids. The root guarantees each keyid names one key,
  // but two keyids could still name the same key (a PEM spelt two ways); one signer must
  // never count twice towards a threshold.
  std::set<crypto::Sha256Digest> signers;
  for (const Signature& sig : envelope.signatures) {
    if (std::find(keys.keyids.begin(), keys.keyids.end(), sig.keyid) == keys.keyids.end()) {
      continue;  // not this role's key: ignored, as the spec requires
    }
    auto it = authority.keys.find(sig.keyid);
    if (it == authority.keys.end()) continue;  // ReadRoot rules this out
    const crypto::PublicKey& key = it->second.public_key();
    auto fingerprint = key.Fingerprint();
    if (signers.contains(fingerprint)) continue;
    if (key.Verify(envelope.canonical_signed, sig.sig)) signers.insert(fingerprint);
  }
  if (signers.size() < static_cast<size_t>(keys.threshold)) {
    return Fail(ErrorCode::kVerificationFailed,
                "{}: {} valid signature(s) from the {} role's keys, threshold is {}", what,
                signers.size(), RoleName(role), keys.threshold);
  }
  return Ok();
}

Json ToJson(const Root& root) {
  Json j = CommonToJson(root, Role::kRoot);
  j["consistent_snapshot"] = root.consistent_snapshot;
  Json keys = Json::object();
  for (const auto& [id, key] : root.keys) keys[id] = key.ToJson();
  j["keys"] = std::move(keys);
  Json roles = Json::object();
  for (Role r : {Role::kRoot, Role::kTimestamp, Role::kSnapshot, Role::kTargets}) {
    const RoleKeys& rk = root.role(r);
    roles[std::string(RoleName(r))] = Json{{"keyids", rk.keyids}, {"threshold", rk.threshold}};
  }
  j["roles"] = std::move(roles);
  return j;
}

Json ToJson(const Timestamp& timestamp) {
  Json j = CommonToJson(timestamp, Role::kTimestamp);
  j["meta"] = Json{{"snapshot.json", MetaFileToJson(timestamp.snapshot)}};
  return j;
}

Json ToJson(const Snapshot& snapshot) {
  Json j = CommonToJson(snapshot, Role::kSnapshot);
  j["meta"] = Json{{"targets.json", MetaFileToJson(snapshot.targets)}};
  return j;
}

Json ToJson(const Targets& targets) {
  Json j = CommonToJson(targets, Role::kTargets);
  Json files = Json::object();
  for (const auto& [name, file] : targets.targets) {
    Json f{{"length", file.length}, {"hashes", HashesToJson(file.sha256)}};
    if (!file.custom.is_null()) f["custom"] = file.custom;
    files[name] = std::move(f);
  }
  j["targets"] = std::move(files);
  return j;
}

Result<std::string> SignRoot(const Root& root, std::span<const crypto::PrivateKey> keys) {
  return SignJson(ToJson(root), keys, [](std::string_view b) { return ParseRoot(b); });
}
Result<std::string> SignTimestamp(const Timestamp& timestamp,
                                  std::span<const crypto::PrivateKey> keys) {
  return SignJson(ToJson(timestamp), keys, [](std::string_view b) { return ParseTimestamp(b); });
}
Result<std::string> SignSnapshot(const Snapshot& snapshot,
                                 std::span<const crypto::PrivateKey> keys) {
  return SignJson(ToJson(snapshot), keys, [](std::string_view b) { return ParseSnapshot(b); });
}
Result<std::string> SignTargets(const Targets& targets, std::span<const crypto::PrivateKey> keys) {
  return SignJson(ToJson(targets), keys, [](std::string_view b) { return ParseTargets(b); });
}

MetaFile DescribeMetaFile(std::string_view bytes, int64_t version) {
  return MetaFile{.version = version,
                  .length = static_cast<int64_t>(bytes.size()),
                  .sha256 = crypto::Sha256(bytes)};
}

TargetFile DescribeTarget(std::string_view bytes, Json custom) {
  return TargetFile{.length = static_cast<int64_t>(bytes.size()),
                    .sha256 = crypto::Sha256(bytes),
                    .custom = std::move(custom)};
}

std::string RootPath(int64_t version) { return fmt::format("{}.root.json", version); }

std::string MetadataPath(Role role, int64_t version, bool consistent_snapshot) {
  // timestamp.json is never versioned: it is the one file a client fetches unconditionally.
  if (role == Role::kTimestamp) return "timestamp.json";
  if (role == Role::kRoot) return RootPath(version);
  if (!consistent_snapshot) return fmt::format("{}.json", RoleName(role));
  return fmt::format("{}.{}.json", version, RoleName(role));
}

std::string TargetPath(std::string_view name, const crypto::Sha256Digest& sha256,
                       bool consistent_snapshot) {
  if (!consistent_snapshot) return fmt::format("targets/{}", name);
  return fmt::format("targets/{}.{}", HexEncode(sha256), name);
}

// ---- RepositoryWriter ----

Result<RepositoryWriter> RepositoryWriter::Create(RoleSigners root, RoleSigners timestamp,
                                                  RoleSigners snapshot, RoleSigners targets,
                                                  SystemTime now, Expiry expiry) {
  RepositoryWriter w;
  w.expiry_ = expiry;
  w.signers_[Role::kRoot] = std::move(root);
  w.signers_[Role::kTimestamp] = std::move(timestamp);
  w.signers_[Role::kSnapshot] = std::move(snapshot);
  w.signers_[Role::kTargets] = std::move(targets);
  w.root_.version = 0;
  for (auto& [role, signers] : w.signers_) {
    MOAT_TRY(CheckSigners(signers, role));
    RoleKeys& rk = w.root_.role(role);
    rk.threshold = signers.threshold;
    for (const auto& k : signers.keys) {
      Key key = Key::FromPublicKey(k.public_key());
      rk.keyids.push_back(key.keyid());
      w.root_.keys.emplace(key.keyid(), std::move(key));
    }
  }
  w.root_.version = 1;
  w.root_.expires = ExpiresAt(now, expiry.root);
  MOAT_TRY(w.PublishRoot(w.signers_[Role::kRoot].keys));
  w.targets_.version = 1;
  w.snapshot_.version = 0;
  w.timestamp_.version = 0;
  MOAT_TRY(w.PublishTargetsChain(now));
  return w;
}

Result<RepositoryWriter> RepositoryWriter::Restore(RoleSigners root, RoleSigners timestamp,
                                                   RoleSigners snapshot, RoleSigners targets,
                                                   std::map<std::string, std::string> files,
                                                   Expiry expiry) {
  RepositoryWriter w;
  w.expiry_ = expiry;
  w.signers_[Role::kRoot] = std::move(root);
  w.signers_[Role::kTimestamp] = std::move(timestamp);
  w.signers_[Role::kSnapshot] = std::move(snapshot);
  w.signers_[Role::kTargets] = std::move(targets);
  auto file = [&](const std::string& path) -> Result<const std::string*> {
    auto it = files.find(path);
    if (it == files.end()) {
      return Invalid("restoring a repository: {} is missing", path);
    }
    return &it->second;
  };
  MOAT_ASSIGN_OR_RETURN(const std::string* root_bytes, file("root.json"));
  MOAT_ASSIGN_OR_RETURN(auto root_md, ParseRoot(*root_bytes));
  MOAT_TRY(VerifyRole(root_md.envelope, root_md.signed_, Role::kRoot, "root.json"));
  w.root_ = std::move(root_md.signed_);
  // SECURITY: the keys about to sign must be the ones the root names, or the writer would
  // publish metadata no client accepts (or, worse, sign with keys the operator retired).
  for (auto& [role, signers] : w.signers_) {
    MOAT_TRY(CheckSigners(signers, role));
    const RoleKeys& rk = w.root_.role(role);
    std::set<std::string> want(rk.keyids.begin(), rk.keyids.end()), have;
    for (const auto& k : signers.keys) have.insert(Key::FromPublicKey(k.public_key()).keyid());
    if (want != have || rk.threshold != signers.threshold) {
      return Invalid(
          "restoring a repository: the {} role's signing keys are not the {} key(s) with "
          "threshold {} that root version {} names",
          RoleName(role), rk.keyids.size(), rk.threshold, w.root_.version);
    }
  }
  MOAT_ASSIGN_OR_RETURN(const std::string* ts_bytes, file("timestamp.json"));
  MOAT_ASSIGN_OR_RETURN(auto ts_md, ParseTimestamp(*ts_bytes));
  MOAT_TRY(VerifyRole(ts_md.envelope, w.root_, Role::kTimestamp, "timestamp.json"));
  w.timestamp_ = std::move(ts_md.signed_);
  const std::string snapshot_path =
      MetadataPath(Role::kSnapshot, w.timestamp_.snapshot.version, true);
  MOAT_ASSIGN_OR_RETURN(const std::string* snap_bytes, file(snapshot_path));
  if (DescribeMetaFile(*snap_bytes, w.timestamp_.snapshot.version) != w.timestamp_.snapshot) {
    return Fail(ErrorCode::kVerificationFailed,
                "restoring a repository: {} does not match its length and hash in timestamp.json",
                snapshot_path);
  }
  MOAT_ASSIGN_OR_RETURN(auto snap_md, ParseSnapshot(*snap_bytes));
  MOAT_TRY(VerifyRole(snap_md.envelope, w.root_, Role::kSnapshot, snapshot_path));
  w.snapshot_ = std::move(snap_md.signed_);
  const std::string targets_path = MetadataPath(Role::kTargets, w.snapshot_.targets.version, true);
  MOAT_ASSIGN_OR_RETURN(const std::string* targets_bytes, file(targets_path));
  if (DescribeMetaFile(*targets_bytes, w.snapshot_.targets.version) != w.snapshot_.targets) {
    return Fail(ErrorCode::kVerificationFailed,
                "restoring a repository: {} does not match its length and hash in {}", targets_path,
                snapshot_path);
  }
  MOAT_ASSIGN_OR_RETURN(auto targets_md, ParseTargets(*targets_bytes));
  MOAT_TRY(VerifyRole(targets_md.envelope, w.root_, Role::kTargets, targets_path));
  w.targets_ = std::move(targets_md.signed_);
  w.files_ = std::move(files);
  w.files_.try_emplace(RootPath(w.root_.version), w.files_.at("root.json"));
  return w;
}

Result<void> RepositoryWriter::PublishRoot(std::span<const crypto::PrivateKey> signers) {
  MOAT_ASSIGN_OR_RETURN(std::string bytes, SignRoot(root_, signers));
  files_[RootPath(root_.version)] = bytes;
  files_["root.json"] = std::move(bytes);
  return Ok();
}

Result<void> RepositoryWriter::PublishTargetsChain(SystemTime now) {
  targets_.expires = ExpiresAt(now, expiry_.targets);
  MOAT_ASSIGN_OR_RETURN(std::string targets_bytes,
                        SignTargets(targets_, signers_[Role::kTargets].keys));
  files_[MetadataPath(Role::kTargets, targets_.version, true)] = targets_bytes;

  snapshot_.version += 1;
  snapshot_.expires = ExpiresAt(now, expiry_.snapshot);
  snapshot_.targets = DescribeMetaFile(targets_bytes, targets_.version);
  MOAT_ASSIGN_OR_RETURN(std::string snapshot_bytes,
                        SignSnapshot(snapshot_, signers_[Role::kSnapshot].keys));
  timestamp_.snapshot = DescribeMetaFile(snapshot_bytes, snapshot_.version);
  files_[MetadataPath(Role::kSnapshot, snapshot_.version, true)] = std::move(snapshot_bytes);
  return PublishTimestamp(now);
}

Result<void> RepositoryWriter::PublishTimestamp(SystemTime now) {
  timestamp_.version += 1;
  timestamp_.expires = ExpiresAt(now, expiry_.timestamp);
  MOAT_ASSIGN_OR_RETURN(std::string bytes,
                        SignTimestamp(timestamp_, signers_[Role::kTimestamp].keys));
  files_["timestamp.json"] = std::move(bytes);
  return Ok();
}

Result<void> RepositoryWriter::RotateKeys(Role role, RoleSigners signers, SystemTime now) {
  MOAT_TRY(CheckSigners(signers, role));
  std::vector<crypto::PrivateKey> root_signers = signers_[Role::kRoot].keys;
  if (role == Role::kRoot) {
    // A client accepts root N+1 only if a threshold of root N's keys AND a threshold of root
    // N+1's keys signed it.
    for (const auto& k : signers.keys) {
      bool present = std::any_of(root_signers.begin(), root_signers.end(),
                                 [&](const auto& o) { return o.public_key() == k.public_key(); });
      if (!present) root_signers.push_back(k);
    }
  }
  RoleKeys& rk = root_.role(role);
  rk.keyids.clear();
  rk.threshold = signers.threshold;
  for (const auto& k : signers.keys) {
    Key key = Key::FromPublicKey(k.public_key());
    rk.keyids.push_back(key.keyid());
    root_.keys.emplace(key.keyid(), std::move(key));
  }
  signers_[role] = std::move(signers);
  // Drop keys no role uses any more (revocation).
  std::set<std::string> used;
  for (Role r : {Role::kRoot, Role::kTimestamp, Role::kSnapshot, Role::kTargets}) {
    used.insert(root_.role(r).keyids.begin(), root_.role(r).keyids.end());
  }
  std::erase_if(root_.keys, [&](const auto& entry) { return !used.contains(entry.first); });

  root_.version += 1;
  root_.expires = ExpiresAt(now, expiry_.root);
  MOAT_TRY(PublishRoot(root_signers));
  targets_.version += 1;
  return PublishTargetsChain(now);
}

Result<void> RepositoryWriter::SetTargets(std::map<std::string, TargetFile> targets,
                                          SystemTime now) {
  targets_.targets = std::move(targets);
  targets_.version += 1;
  return PublishTargetsChain(now);
}

Result<void> RepositoryWriter::RefreshTimestamp(SystemTime now) { return PublishTimestamp(now); }

}  // namespace moat::formats::tuf
