// Azure Sphere hardware definitions, and boards built from them.
//
// A hardware definition is a JSON file that names a board's peripherals so that a manifest can say
// "$SAMPLE_LED" instead of GPIO 8:
//
//   {"Metadata": {"Type": "Azure Sphere Hardware Definition", "Version": 1},
//    "Description": {"Name": "...", "MainCoreHeaderFileTopContent": ["..."]},   (optional)
//    "Imports": [{"Path": "mt3620.json"}],                                      (optional)
//    "Peripherals": [
//      {"Name": "MT3620_GPIO8", "Type": "Gpio", "AppManifestValue": 8, "MainCoreHeaderValue":
//      "(8)"},
//      {"Name": "SAMPLE_LED", "Type": "Gpio", "Mapping": "MT3620_GPIO8", "Comment": "..."}]}
//
// A peripheral either maps to another one by name (Mapping; chains are allowed and may cross into
// imported files) or carries its own AppManifestValue (an integer or a name). A peripheral may
// instead carry only a MainCoreHeaderValue: Azure Sphere uses that for plain numbers (Type "int",
// e.g. an ADC channel) that no manifest can request. Moat adds one optional field per peripheral,
// "LinuxDevice": the device node ("/dev/gpiochip0") that a sandbox exposes for it. Every other
// unknown field is an error; a top-level "$schema" (written by editor tooling) is accepted.
//
// Everything here is pure: loading imported files is I/O, so Board::Load takes a loader. Errors
// are kInvalidArgument (kLimitExceeded for size limits, kNotFound for an unknown constant) and
// start with "hardware definition '<file>': ".
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/error.h"
#include "formats/app_manifest.h"

namespace moat::formats {

// What a manifest entry becomes: a number (Gpio 8) or a name ("ISU0").
using PeripheralValue = std::variant<int64_t, std::string>;

struct HardwarePeripheral {
  std::string name;  // a C identifier, unique across a board
  std::string type;  // "Gpio", "Uart", "I2cMaster", "SpiMaster", "Pwm", "Adc", "int", ...
  std::optional<std::string> mapping;                 // the peripheral this one stands for
  std::optional<PeripheralValue> app_manifest_value;  // set only when `mapping` is not
  std::optional<std::string> main_core_header_value;  // e.g. "(8)", for generated C headers
  std::optional<std::string> linux_device;            // Moat: "/dev/..." node for a sandbox
  std::string comment;

  bool operator==(const HardwarePeripheral&) const = default;
};

struct HardwareDefinition {
  std::string name;                               // Description.Name, or empty
  std::vector<std::string> main_core_header_top;  // Description.MainCoreHeaderFileTopContent
  std::vector<std::string> imports;               // Imports[].Path, as written
  std::vector<HardwarePeripheral> peripherals;

  bool operator==(const HardwareDefinition&) const = default;
};

struct HardwareDefinitionLimits {
  size_t max_bytes = 1 << 20;      // one file; Azure Sphere's mt3620.json is ~40 KiB
  size_t max_peripherals = 4096;   // in one file
  size_t max_imports = 16;         // in one file
  size_t max_string_bytes = 4096;  // any one string (comments are the long ones)
  size_t max_header_lines = 256;   // MainCoreHeaderFileTopContent
  size_t max_definitions = 32;     // in a board, the root included
  size_t max_import_depth = 8;     // root -> import -> import ...
  size_t max_mapping_chain = 16;   // mappings from a name to its value (Azure Sphere uses 2-3)
};

// Parses one file. `what` names it in messages (e.g. "board.json"). Checks each field's type and
// form and that names are unique within the file; mappings are checked by Board::Load.
// Import paths must be relative, without "." or ".." components.
Result<HardwareDefinition> ParseHardwareDefinition(std::string_view json, std::string_view what,
                                                   const HardwareDefinitionLimits& limits = {});

// Returns the text of the hardware definition an import names (its Path, as written). The loader
// decides where import paths are looked up (Azure Sphere: the importing file's directory, then the
// SDK's HardwareDefinitions directory).
// SECURITY: import paths come from the files themselves; the loader must confine them to its
// search directories (Moat rejects absolute paths and ".." before calling it).
using HardwareDefinitionLoader = std::function<Result<std::string>(std::string_view import_path)>;

// A root hardware definition with all its imports loaded and checked: every peripheral name is
// unique across the board, every Mapping names a peripheral of the same Type in the mapping file
// or one it (transitively) imports, and no mapping chain loops. A file imported twice (a diamond)
// is loaded once; an import cycle is an error; no chain is longer than max_mapping_chain.
// Immutable after Load; thread-compatible.
class Board {
 public:
  static Result<Board> Load(std::string_view root_json, std::string_view root_name,
                            const HardwareDefinitionLoader& load,
                            const HardwareDefinitionLimits& limits = {});

  struct Resolved {
    std::string type;  // the constant's Type, e.g. "Gpio"
    PeripheralValue app_manifest_value;
    // The LinuxDevice nearest to the constant along its chain, so a board can override the
    // device of a chip-level peripheral it maps to.
    std::optional<std::string> linux_device;
    std::string chain;  // "SAMPLE_LED -> MT3620_RDB_LED1_RED -> MT3620_GPIO8"

    bool operator==(const Resolved&) const = default;
  };

  // Resolves a constant by name (without '$'). kNotFound if the board has no such peripheral;
  // kInvalidArgument if its chain ends in a peripheral with no AppManifestValue.
  Result<Resolved> Resolve(std::string_view constant_name) const;

  // The LinuxDevice for a raw manifest value (Gpio 8, "ISU0"): that of the first peripheral, in
  // load order, that has a LinuxDevice and whose chain ends at a peripheral of `type` with this
  // AppManifestValue; nullopt if there is none.
  std::optional<std::string> LinuxDeviceFor(std::string_view type,
                                            const PeripheralValue& value) const;

  // The root's file name, as given to Load.
  const std::string& root_name() const { return files_.front().first; }
  // Every loaded file, root first, then in the order imports were first reached.
  const std::vector<std::pair<std::string, HardwareDefinition>>& files() const { return files_; }

 private:
  Board() = default;
  Result<void> LoadImports(size_t file, size_t depth, std::vector<size_t>& stack,
                           const HardwareDefinitionLoader& load,
                           const HardwareDefinitionLimits& limits);
  Result<void> Index(const HardwareDefinitionLimits& limits);
  const HardwarePeripheral& At(size_t id) const {
    return files_[where_[id].first].second.peripherals[where_[id].second];
  }

  static constexpr size_t kNone = static_cast<size_t>(-1);
  std::vector<std::pair<std::string, HardwareDefinition>> files_;
  std::vector<std::vector<size_t>> imports_;  // per file: the files it imports
  // Every peripheral of the board gets an id: its (file, index), its Mapping's target id (or
  // kNone) and the id at the end of its chain.
  std::vector<std::pair<size_t, size_t>> where_;
  std::vector<size_t> target_;
  std::vector<size_t> leaf_;
  std::map<std::string, size_t, std::less<>> by_name_;
};

// One peripheral a manifest requests, after resolution against a board.
struct PeripheralGrant {
  PeripheralKind kind;
  PeripheralRef written;  // as in the manifest: 8, "ISU0" or "$SAMPLE_LED"
  PeripheralValue value;  // the AppManifestValue it stands for
  std::optional<std::string> linux_device;
  std::string chain;  // for constants, as in Board::Resolved; empty for raw values

  bool operator==(const PeripheralGrant&) const = default;
};

// Resolves every peripheral of the manifest, in capability order (Gpio, Uart, I2cMaster,
// SpiMaster, Pwm, Adc) and list order. A "$NAME" must be on the board with the capability's Type,
// and its value must be valid for the capability (CheckPeripheralRef). Errors are
// kInvalidArgument, e.g.
//   app manifest: Capabilities.Gpio[0]: unknown peripheral '$SAMPLE_LED' (not in hardware
//   definition 'board.json')
Result<std::vector<PeripheralGrant>> ResolvePeripheralGrants(const AppManifest& manifest,
                                                             const Board& board);

// Returns the manifest with every "$NAME" replaced by its AppManifestValue (same checks as
// ResolvePeripheralGrants). Two constants may name the same pin; such duplicates are collapsed,
// keeping the first, so the result's lists stay duplicate-free.
Result<AppManifest> ResolvePeripherals(const AppManifest& manifest, const Board& board);

}  // namespace moat::formats
