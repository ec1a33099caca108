#include "formats/hardware_definition.h"

#include <algorithm>
#include <array>
#include <limits>
#include <utility>

#include "core/json.h"
#include "formats/json_reader.h"

namespace moat::formats {
namespace {

constexpr std::string_view kMetadata = "Metadata";
constexpr std::string_view kDescription = "Description";
constexpr std::string_view kImports = "Imports";
constexpr std::string_view kPeripherals = "Peripherals";
constexpr std::string_view kSchema = "$schema";  // written by editor tooling; ignored
constexpr std::string_view kType = "Type";
constexpr std::string_view kVersion = "Version";
constexpr std::string_view kName = "Name";
constexpr std::string_view kHeaderTop = "MainCoreHeaderFileTopContent";
constexpr std::string_view kPath = "Path";
constexpr std::string_view kMapping = "Mapping";
constexpr std::string_view kAppManifestValue = "AppManifestValue";
constexpr std::string_view kMainCoreHeaderValue = "MainCoreHeaderValue";
constexpr std::string_view kComment = "Comment";
constexpr std::string_view kLinuxDevice = "LinuxDevice";

constexpr std::string_view kMetadataType = "Azure Sphere Hardware Definition";
constexpr size_t kMaxTypeBytes = 64;
constexpr size_t kMaxHeaderValueBytes = 256;
// AppManifestValue integers are pin and channel numbers; anything outside int32 is a mistake.
constexpr int64_t kMinValue = std::numeric_limits<int32_t>::min();
constexpr int64_t kMaxValue = std::numeric_limits<int32_t>::max();

// Every message about a definition file starts "hardware definition '<file>'".
std::string DocumentName(std::string_view file) {
  return fmt::format("hardware definition '{}'", file);
}

// Errors in a manifest's peripheral requests read like the manifest reader's own.
constexpr DocumentReader kManifest("app manifest");

bool IsAsciiAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// Type: a short identifier ("Gpio", "int"). Unknown types are allowed in a definition; only the
// peripheral capabilities' types can be requested by a manifest.
bool IsValidType(std::string_view s) {
  if (s.empty() || s.size() > kMaxTypeBytes) return false;
  if (!IsAsciiAlnum(s[0]) || (s[0] >= '0' && s[0] <= '9')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return IsAsciiAlnum(c) || c == '_'; });
}

// Splits on '/' and checks that every component is a plain name.
bool HasOnlyPlainComponents(std::string_view s) {
  size_t start = 0;
  while (true) {
    size_t end = s.find('/', start);
    std::string_view part = s.substr(start, end == std::string_view::npos ? s.npos : end - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (end == std::string_view::npos) return true;
    start = end + 1;
  }
}

// An import path: relative, '/'-separated, plain components only.
bool IsValidImportPath(std::string_view s) {
  if (s.empty() || s.front() == '/' || HasControlCharacter(s)) return false;
  if (s.find('\\') != std::string_view::npos) return false;
  return HasOnlyPlainComponents(s);
}

// SECURITY: a LinuxDevice is exposed inside an app's sandbox, so it must be a normalized path
// below /dev (no "..", no empty or "." components) made of characters device names use.
bool IsValidLinuxDevice(std::string_view s) {
  constexpr std::string_view kDev = "/dev/";
  if (!s.starts_with(kDev) || s.size() > 255) return false;
  std::string_view rest = s.substr(kDev.size());
  if (!std::all_of(rest.begin(), rest.end(), [](char c) {
        return IsAsciiAlnum(c) || c == '/' || c == '.' || c == '_' || c == '-' || c == ':' ||
               c == '+' || c == '@';
      })) {
    return false;
  }
  return HasOnlyPlainComponents(rest);
}

// Strings in a definition are short text: bounded, and without control characters.
Result<std::string> GetString(const Json& value, std::string_view path,
                              const HardwareDefinitionLimits& limits, const DocumentReader& r) {
  MOAT_ASSIGN_OR_RETURN(std::string s, r.ReadString(value, path, limits.max_string_bytes));
  if (HasControlCharacter(s)) return r.Invalid(path, "contains a control character");
  return s;
}

Result<void> ParseMetadata(const Json& value, const HardwareDefinitionLimits& limits,
                           const DocumentReader& r) {
  std::string_view path = kMetadata;
  if (!value.is_object()) return r.WrongType(path, "an object", value);
  MOAT_TRY(r.KnownFields(value, path, std::array{kType, kVersion}));
  const Json* type = FindMember(value, kType);
  if (type == nullptr) return r.Invalid(path, "missing required field '{}'", kType);
  std::string type_path = JsonPathJoin(path, kType);
  MOAT_ASSIGN_OR_RETURN(std::string t, GetString(*type, type_path, limits, r));
  if (t != kMetadataType) {
    return r.Invalid(type_path, "{} is not '{}'", QuoteForMessage(t), kMetadataType);
  }
  const Json* version = FindMember(value, kVersion);
  if (version == nullptr) return r.Invalid(path, "missing required field '{}'", kVersion);
  return r.ExpectVersion(*version, JsonPathJoin(path, kVersion), 1);
}

Result<void> ParseDescription(const Json& value, HardwareDefinition& def,
                              const HardwareDefinitionLimits& limits, const DocumentReader& r) {
  std::string_view path = kDescription;
  if (!value.is_object()) return r.WrongType(path, "an object", value);
  MOAT_TRY(r.KnownFields(value, path, std::array{kName, kHeaderTop}));
  if (const Json* name = FindMember(value, kName)) {
    MOAT_ASSIGN_OR_RETURN(def.name, GetString(*name, JsonPathJoin(path, kName), limits, r));
  }
  if (const Json* top = FindMember(value, kHeaderTop)) {
    std::string top_path = JsonPathJoin(path, kHeaderTop);
    MOAT_ASSIGN_OR_RETURN(const Json::array_t* lines,
                          r.ReadArray(*top, top_path, limits.max_header_lines));
    for (size_t i = 0; i < lines->size(); ++i) {
      MOAT_ASSIGN_OR_RETURN(std::string line,
                            GetString((*lines)[i], JsonPathIndex(top_path, i), limits, r));
      def.main_core_header_top.push_back(std::move(line));
    }
  }
  return Ok();
}

Result<void> ParseImports(const Json& value, HardwareDefinition& def,
                          const HardwareDefinitionLimits& limits, const DocumentReader& r) {
  MOAT_ASSIGN_OR_RETURN(const Json::array_t* items,
                        r.ReadArray(value, kImports, limits.max_imports));
  for (size_t i = 0; i < items->size(); ++i) {
    std::string item_path = JsonPathIndex(kImports, i);
    const Json& item = (*items)[i];
    if (!item.is_object()) return r.WrongType(item_path, "an object", item);
    MOAT_TRY(r.KnownFields(item, item_path, std::array{kPath}));
    const Json* path = FindMember(item, kPath);
    if (path == nullptr) return r.Invalid(item_path, "missing required field '{}'", kPath);
    std::string path_path = JsonPathJoin(item_path, kPath);
    MOAT_ASSIGN_OR_RETURN(std::string p, GetString(*path, path_path, limits, r));
    if (!IsValidImportPath(p)) {
      return r.Invalid(path_path,
                       "{} is not a relative path of plain names (no '/' at the start, no '\\', "
                       "'.' or '..')",
                       QuoteForMessage(p));
    }
    if (std::find(def.imports.begin(), def.imports.end(), p) != def.imports.end()) {
      return r.Invalid(path_path, "{} is imported twice", QuoteForMessage(p));
    }
    def.imports.push_back(std::move(p));
  }
  return Ok();
}

Result<HardwarePeripheral> ParsePeripheral(const Json& item, std::string_view path,
                                           const HardwareDefinitionLimits& limits,
                                           const DocumentReader& r) {
  if (!item.is_object()) return r.WrongType(path, "an object", item);
  MOAT_TRY(r.KnownFields(item, path,
                         std::array{kName, kType, kMapping, kAppManifestValue, kMainCoreHeaderValue,
                                    kComment, kLinuxDevice}));
  HardwarePeripheral p;
  const Json* name = FindMember(item, kName);
  if (name == nullptr) return r.Invalid(path, "missing required field '{}'", kName);
  std::string name_path = JsonPathJoin(path, kName);
  MOAT_ASSIGN_OR_RETURN(p.name, GetString(*name, name_path, limits, r));
  if (!IsValidConstantName(p.name)) {
    return r.Invalid(name_path, "{} is not a valid peripheral name (a C identifier of 1..{} bytes)",
                     QuoteForMessage(p.name), kMaxConstantNameBytes);
  }
  const Json* type = FindMember(item, kType);
  if (type == nullptr) return r.Invalid(path, "missing required field '{}'", kType);
  std::string type_path = JsonPathJoin(path, kType);
  MOAT_ASSIGN_OR_RETURN(p.type, GetString(*type, type_path, limits, r));
  if (!IsValidType(p.type)) {
    return r.Invalid(type_path, "{} is not a valid type", QuoteForMessage(p.type));
  }

  if (const Json* mapping = FindMember(item, kMapping)) {
    std::string mapping_path = JsonPathJoin(path, kMapping);
    MOAT_ASSIGN_OR_RETURN(std::string m, GetString(*mapping, mapping_path, limits, r));
    if (!IsValidConstantName(m)) {
      return r.Invalid(mapping_path, "{} is not a valid peripheral name", QuoteForMessage(m));
    }
    if (m == p.name) return r.Invalid(mapping_path, "{} maps to itself", QuoteForMessage(m));
    p.mapping = std::move(m);
  }
  if (const Json* value = FindMember(item, kAppManifestValue)) {
    std::string value_path = JsonPathJoin(path, kAppManifestValue);
    if (value->is_number_integer()) {
      MOAT_ASSIGN_OR_RETURN(p.app_manifest_value,
                            r.ReadInt(*value, value_path, kMinValue, kMaxValue));
    } else if (value->is_string()) {
      MOAT_ASSIGN_OR_RETURN(std::string s, GetString(*value, value_path, limits, r));
      if (!IsValidPeripheralName(s)) {
        return r.Invalid(value_path,
                         "{} is not a peripheral name (1..{} letters, digits, '_', '-' or '.')",
                         QuoteForMessage(s), kMaxPeripheralNameBytes);
      }
      p.app_manifest_value = std::move(s);
    } else {
      return r.WrongType(value_path, "an integer or a string", *value);
    }
  }
  if (const Json* header = FindMember(item, kMainCoreHeaderValue)) {
    std::string header_path = JsonPathJoin(path, kMainCoreHeaderValue);
    MOAT_ASSIGN_OR_RETURN(std::string h, GetString(*header, header_path, limits, r));
    if (h.empty() || h.size() > kMaxHeaderValueBytes) {
      return r.Invalid(header_path, "must be 1..{} bytes", kMaxHeaderValueBytes);
    }
    p.main_core_header_value = std::move(h);
  }
  if (const Json* comment = FindMember(item, kComment)) {
    MOAT_ASSIGN_OR_RETURN(p.comment, GetString(*comment, JsonPathJoin(path, kComment), limits, r));
  }
  if (const Json* device = FindMember(item, kLinuxDevice)) {
    std::string device_path = JsonPathJoin(path, kLinuxDevice);
    MOAT_ASSIGN_OR_RETURN(std::string d, GetString(*device, device_path, limits, r));
    if (!IsValidLinuxDevice(d)) {
      return r.Invalid(device_path, "{} is not a normalized path under /dev/", QuoteForMessage(d));
    }
    p.linux_device = std::move(d);
  }

  // A peripheral is either an alias (Mapping) or a value; a value-less one must at least give
  // the C header a value (Azure Sphere's plain "int" constants).
  if (p.mapping && (p.app_manifest_value || p.main_core_header_value)) {
    return r.Invalid(path,
                     "'{}' has a {} and a value; a mapped peripheral takes its target's value",
                     p.name, kMapping);
  }
  if (!p.mapping && !p.app_manifest_value && !p.main_core_header_value) {
    return r.Invalid(path, "'{}' needs a {}, an {} or a {}", p.name, kMapping, kAppManifestValue,
                     kMainCoreHeaderValue);
  }
  return p;
}

Result<void> ParsePeripherals(const Json& value, HardwareDefinition& def,
                              const HardwareDefinitionLimits& limits, const DocumentReader& r) {
  MOAT_ASSIGN_OR_RETURN(const Json::array_t* items,
                        r.ReadArray(value, kPeripherals, limits.max_peripherals));
  std::map<std::string_view, size_t> seen;
  def.peripherals.reserve(items->size());
  for (size_t i = 0; i < items->size(); ++i) {
    std::string item_path = JsonPathIndex(kPeripherals, i);
    MOAT_ASSIGN_OR_RETURN(HardwarePeripheral p, ParsePeripheral((*items)[i], item_path, limits, r));
    def.peripherals.push_back(std::move(p));
  }
  // Names are checked once the vector no longer moves, so the map can view them.
  for (size_t i = 0; i < def.peripherals.size(); ++i) {
    auto [it, inserted] = seen.emplace(def.peripherals[i].name, i);
    if (!inserted) {
      return r.Invalid(JsonPathJoin(JsonPathIndex(kPeripherals, i), kName),
                       "'{}' is already defined at {}", def.peripherals[i].name,
                       JsonPathIndex(kPeripherals, it->second));
    }
  }
  return Ok();
}

std::string ValueToString(const PeripheralValue& v) {
  if (const auto* n = std::get_if<int64_t>(&v)) return std::to_string(*n);
  return fmt::format("'{}'", std::get<std::string>(v));
}

}  // namespace

Result<HardwareDefinition> ParseHardwareDefinition(std::string_view json, std::string_view what,
                                                   const HardwareDefinitionLimits& limits) {
  const std::string document = DocumentName(what);
  const DocumentReader r(document);
  // Real definitions nest four levels (Peripherals[i].Name); allow slack for clearer errors.
  MOAT_ASSIGN_OR_RETURN(
      Json doc,
      ParseJson(json, document, JsonLimits{.max_bytes = limits.max_bytes, .max_depth = 8}));
  if (!doc.is_object()) return r.WrongType("", "a JSON object", doc);
  MOAT_TRY(
      r.KnownFields(doc, "", std::array{kSchema, kMetadata, kDescription, kImports, kPeripherals}));
  const Json* metadata = FindMember(doc, kMetadata);
  if (metadata == nullptr) return r.Invalid("", "missing required field '{}'", kMetadata);
  MOAT_TRY(ParseMetadata(*metadata, limits, r));
  const Json* peripherals = FindMember(doc, kPeripherals);
  if (peripherals == nullptr) return r.Invalid("", "missing required field '{}'", kPeripherals);

  HardwareDefinition def;
  if (const Json* schema = FindMember(doc, kSchema)) {
    MOAT_TRY(GetString(*schema, kSchema, limits, r));
  }
  if (const Json* description = FindMember(doc, kDescription)) {
    MOAT_TRY(ParseDescription(*description, def, limits, r));
  }
  if (const Json* imports = FindMember(doc, kImports)) {
    MOAT_TRY(ParseImports(*imports, def, limits, r));
  }
  MOAT_TRY(ParsePeripherals(*peripherals, def, limits, r));
  return def;
}

Result<Board> Board::Load(std::string_view root_json, std::string_view root_name,
                          const HardwareDefinitionLoader& load,
                          const HardwareDefinitionLimits& limits) {
  MOAT_ASSIGN_OR_RETURN(HardwareDefinition root,
                        ParseHardwareDefinition(root_json, root_name, limits));
  Board board;
  board.files_.emplace_back(std::string(root_name), std::move(root));
  board.imports_.emplace_back();
  std::vector<size_t> stack;
  MOAT_TRY(board.LoadImports(0, 0, stack, load, limits));
  MOAT_TRY(board.Index(limits));
  return board;
}

Result<void> Board::LoadImports(size_t file, size_t depth, std::vector<size_t>& stack,
                                const HardwareDefinitionLoader& load,
                                const HardwareDefinitionLimits& limits) {
  stack.push_back(file);
  // Copied: files_ grows below, which would invalidate a reference into it.
  const std::vector<std::string> paths = files_[file].second.imports;
  const std::string document = DocumentName(files_[file].first);
  const DocumentReader r(document);
  for (size_t i = 0; i < paths.size(); ++i) {
    const std::string& path = paths[i];
    std::string item_path = JsonPathJoin(JsonPathIndex(kImports, i), kPath);
    auto loaded =
        std::find_if(files_.begin(), files_.end(), [&](const auto& f) { return f.first == path; });
    if (loaded != files_.end()) {
      size_t target = static_cast<size_t>(loaded - files_.begin());
      if (std::find(stack.begin(), stack.end(), target) != stack.end()) {
        std::string cycle;
        for (auto it = std::find(stack.begin(), stack.end(), target); it != stack.end(); ++it) {
          cycle += files_[*it].first + " -> ";
        }
        return r.Invalid(item_path, "import cycle {}{}", cycle, path);
      }
      imports_[file].push_back(target);  // a diamond: already loaded, share it
      continue;
    }
    if (depth + 1 > limits.max_import_depth) {
      return r.TooBig(item_path, "imports nest deeper than {} levels", limits.max_import_depth);
    }
    if (files_.size() >= limits.max_definitions) {
      return r.TooBig(item_path, "a board may have at most {} files", limits.max_definitions);
    }
    auto text = load(path);
    if (!text) {
      return Fail(text.error().WithContext(
          fmt::format("{}: cannot load {}", r.Context(item_path), QuoteForMessage(path))));
    }
    MOAT_ASSIGN_OR_RETURN(HardwareDefinition def, ParseHardwareDefinition(*text, path, limits));
    size_t target = files_.size();
    files_.emplace_back(path, std::move(def));
    imports_.emplace_back();
    imports_[file].push_back(target);
    MOAT_TRY(LoadImports(target, depth + 1, stack, load, limits));
  }
  stack.pop_back();
  return Ok();
}

Result<void> Board::Index(const HardwareDefinitionLimits& limits) {
  // Names are unique across the whole board (Azure Sphere requires the same).
  for (size_t f = 0; f < files_.size(); ++f) {
    const auto& peripherals = files_[f].second.peripherals;
    for (size_t i = 0; i < peripherals.size(); ++i) {
      auto [it, inserted] = by_name_.emplace(peripherals[i].name, where_.size());
      if (!inserted) {
        const std::string document = DocumentName(files_[f].first);
        return DocumentReader(document).Invalid(
            JsonPathJoin(JsonPathIndex(kPeripherals, i), kName), "'{}' is already defined in '{}'",
            peripherals[i].name, files_[where_[it->second].first].first);
      }
      where_.emplace_back(f, i);
    }
  }

  // Which files each file sees: itself and everything it imports, transitively. The import
  // graph is acyclic by now, and small (max_definitions).
  std::vector<std::vector<bool>> sees(files_.size(), std::vector<bool>(files_.size(), false));
  for (size_t f = 0; f < files_.size(); ++f) {
    std::vector<size_t> todo = {f};
    while (!todo.empty()) {
      size_t g = todo.back();
      todo.pop_back();
      if (sees[f][g]) continue;
      sees[f][g] = true;
      for (size_t h : imports_[g]) todo.push_back(h);
    }
  }

  // Mapping targets: visible from the mapping file and of the same type.
  target_.assign(where_.size(), kNone);
  for (size_t id = 0; id < where_.size(); ++id) {
    const HardwarePeripheral& p = At(id);
    if (!p.mapping) continue;
    auto [f, i] = where_[id];
    const std::string document = DocumentName(files_[f].first);
    const DocumentReader r(document);
    std::string mapping_path = JsonPathJoin(JsonPathIndex(kPeripherals, i), kMapping);
    auto it = by_name_.find(*p.mapping);
    if (it == by_name_.end() || !sees[f][where_[it->second].first]) {
      return r.Invalid(mapping_path, "'{}' is not defined in '{}' or its imports", *p.mapping,
                       files_[f].first);
    }
    const HardwarePeripheral& target = At(it->second);
    if (target.type != p.type) {
      return r.Invalid(mapping_path, "'{}' is a {}, but '{}' is a {}", *p.mapping, target.type,
                       p.name, p.type);
    }
    target_[id] = it->second;
  }

  // Each peripheral has at most one target, so the mapping graph is a set of chains and loops.
  // Walk each chain once, remembering where it ends; a walk that meets itself is a loop.
  enum class State { kNew, kOnPath, kDone };
  std::vector<State> state(where_.size(), State::kNew);
  std::vector<size_t> length(where_.size(), 0);  // mappings from each peripheral to its leaf
  leaf_.assign(where_.size(), kNone);
  for (size_t start = 0; start < where_.size(); ++start) {
    std::vector<size_t> path;
    size_t id = start;
    while (id != kNone && state[id] == State::kNew) {
      state[id] = State::kOnPath;
      path.push_back(id);
      id = target_[id];
    }
    if (id != kNone && state[id] == State::kOnPath) {
      std::string cycle;
      for (auto it = std::find(path.begin(), path.end(), id); it != path.end(); ++it) {
        cycle += At(*it).name + " -> ";
      }
      const std::string document = DocumentName(files_[where_[id].first].first);
      return DocumentReader(document).Invalid("", "mapping cycle {}{}", cycle, At(id).name);
    }
    size_t leaf = id == kNone ? path.back() : leaf_[id];
    size_t next_length = id == kNone ? 0 : length[id] + 1;
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      state[*it] = State::kDone;
      leaf_[*it] = leaf;
      length[*it] = next_length++;
    }
  }
  // Long chains make every resolution slow and every message long; real ones are short.
  for (size_t id = 0; id < where_.size(); ++id) {
    if (length[id] > limits.max_mapping_chain) {
      auto [f, i] = where_[id];
      const std::string document = DocumentName(files_[f].first);
      return DocumentReader(document).TooBig(JsonPathJoin(JsonPathIndex(kPeripherals, i), kMapping),
                                             "'{}' is more than {} mappings away from its value",
                                             At(id).name, limits.max_mapping_chain);
    }
  }
  return Ok();
}

Result<Board::Resolved> Board::Resolve(std::string_view constant_name) const {
  auto it = by_name_.find(constant_name);
  if (it == by_name_.end()) {
    return Fail(ErrorCode::kNotFound, "hardware definition '{}': unknown peripheral {}",
                root_name(), QuoteForMessage(constant_name));
  }
  Resolved out;
  size_t id = it->second;
  out.type = At(id).type;
  out.chain = At(id).name;
  // Chains are loop-free (checked by Index), so this ends.
  while (true) {
    const HardwarePeripheral& p = At(id);
    if (!out.linux_device && p.linux_device) out.linux_device = p.linux_device;
    if (target_[id] == kNone) break;
    id = target_[id];
    out.chain += " -> " + At(id).name;
  }
  const HardwarePeripheral& leaf = At(id);
  if (!leaf.app_manifest_value) {
    return Fail(ErrorCode::kInvalidArgument,
                "hardware definition '{}': peripheral '{}' has no AppManifestValue ({})",
                files_[where_[id].first].first, leaf.name, out.chain);
  }
  out.app_manifest_value = *leaf.app_manifest_value;
  return out;
}

std::optional<std::string> Board::LinuxDeviceFor(std::string_view type,
                                                 const PeripheralValue& value) const {
  for (size_t id = 0; id < where_.size(); ++id) {
    const HardwarePeripheral& p = At(id);
    if (!p.linux_device) continue;
    const HardwarePeripheral& leaf = At(leaf_[id]);
    if (leaf.type == type && leaf.app_manifest_value == value) return p.linux_device;
  }
  return std::nullopt;
}

Result<std::vector<PeripheralGrant>> ResolvePeripheralGrants(const AppManifest& manifest,
                                                             const Board& board) {
  std::vector<PeripheralGrant> grants;
  for (PeripheralKind kind : kAllPeripheralKinds) {
    std::string_view kind_name = PeripheralKindName(kind);
    const auto& refs = PeripheralList(manifest.capabilities, kind);
    for (size_t i = 0; i < refs.size(); ++i) {
      const PeripheralRef& ref = refs[i];
      std::string path = JsonPathIndex(JsonPathJoin("Capabilities", kind_name), i);
      PeripheralGrant grant{.kind = kind, .written = ref, .value = ref.value};
      if (!ref.IsConstant()) {
        grant.linux_device = board.LinuxDeviceFor(kind_name, ref.value);
        grants.push_back(std::move(grant));
        continue;
      }
      auto resolved = board.Resolve(ref.ConstantName());
      if (!resolved) {
        if (resolved.error().code() == ErrorCode::kNotFound) {
          return kManifest.Invalid(path,
                                   "unknown peripheral '{}' (not in hardware definition '{}')",
                                   ref.ToString(), board.root_name());
        }
        return kManifest.Invalid(path, "{}", resolved.error().message());
      }
      if (resolved->type != kind_name) {
        return kManifest.Invalid(path, "'{}' is a {} peripheral, not a {} ({})", ref.ToString(),
                                 resolved->type, kind_name, resolved->chain);
      }
      auto checked = CheckPeripheralRef(kind, PeripheralRef{resolved->app_manifest_value});
      if (!checked) {
        return kManifest.Invalid(path, "'{}' resolves to {}: {}", ref.ToString(),
                                 ValueToString(resolved->app_manifest_value),
                                 checked.error().message());
      }
      grant.value = std::move(resolved->app_manifest_value);
      grant.linux_device = std::move(resolved->linux_device);
      grant.chain = std::move(resolved->chain);
      grants.push_back(std::move(grant));
    }
  }
  return grants;
}

Result<AppManifest> ResolvePeripherals(const AppManifest& manifest, const Board& board) {
  MOAT_ASSIGN_OR_RETURN(std::vector<PeripheralGrant> grants,
                        ResolvePeripheralGrants(manifest, board));
  AppManifest out = manifest;
  for (PeripheralKind kind : kAllPeripheralKinds) PeripheralList(out.capabilities, kind).clear();
  for (PeripheralGrant& grant : grants) {
    auto& list = PeripheralList(out.capabilities, grant.kind);
    PeripheralRef ref{std::move(grant.value)};
    if (std::find(list.begin(), list.end(), ref) == list.end()) list.push_back(std::move(ref));
  }
  return out;
}

}  // namespace moat::formats
