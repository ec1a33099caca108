#include "formats/hardware_definition.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/file.h"
#include "core/json.h"

namespace moat::formats {
namespace {

namespace fs = std::filesystem;

const fs::path kHardwareDir = fs::path(MOAT_SOURCE_DIR) / "tests" / "data" / "hardware";
const fs::path kCompatDir =
    fs::path(MOAT_SOURCE_DIR) / ".." / "shared" / "compat" / "azure-sphere-manifests";

std::string ReadTestFile(const fs::path& path) {
  auto text = ReadFile(path, 1 << 20);
  EXPECT_TRUE(text) << text.error().message();
  return text ? *text : std::string();
}

// Loads imports from tests/data/hardware, by file name only.
Result<std::string> LoadFromTestData(std::string_view import_path) {
  fs::path path = kHardwareDir / import_path;
  if (!fs::is_regular_file(path)) {
    return Fail(ErrorCode::kNotFound, "no test file '{}'", import_path);
  }
  return ReadFile(path, 1 << 20);
}

Board MustLoadTestBoard(std::string_view name) {
  auto board = Board::Load(ReadTestFile(kHardwareDir / name), name, LoadFromTestData);
  EXPECT_TRUE(board) << board.error().message();
  if (!board) std::abort();  // every caller needs a board; nothing sensible to continue with
  return std::move(*board);
}

// A loader over in-memory files.
HardwareDefinitionLoader MapLoader(std::map<std::string, std::string> files) {
  return [files = std::move(files)](std::string_view path) -> Result<std::string> {
    auto it = files.find(std::string(path));
    if (it == files.end()) return Fail(ErrorCode::kNotFound, "no such file '{}'", path);
    return it->second;
  };
}

Result<std::string> NoImports(std::string_view path) {
  return Fail(ErrorCode::kNotFound, "unexpected import '{}'", path);
}

// A definition with the given imports and peripherals (raw JSON array elements).
std::string Def(std::vector<std::string> imports, std::string peripherals) {
  std::string out = R"({"Metadata": {"Type": "Azure Sphere Hardware Definition", "Version": 1},)";
  if (!imports.empty()) {
    out += R"("Imports": [)";
    for (size_t i = 0; i < imports.size(); ++i) {
      out += (i ? "," : "") + std::string(R"({"Path": ")") + imports[i] + R"("})";
    }
    out += "],";
  }
  return out + R"("Peripherals": [)" + peripherals + "]}";
}

TEST(HardwareDefinitionTest, ParsesTheTestChip) {
  auto def =
      ParseHardwareDefinition(ReadTestFile(kHardwareDir / "mt3620_like.json"), "mt3620_like.json");
  ASSERT_TRUE(def) << def.error().message();
  EXPECT_EQ(def->name, "MT3620-like chip (Moat test data)");
  EXPECT_EQ(def->main_core_header_top.size(), 2u);
  EXPECT_TRUE(def->imports.empty());
  ASSERT_GT(def->peripherals.size(), 48u);
  const HardwarePeripheral& gpio8 = def->peripherals[8];
  EXPECT_EQ(gpio8, (HardwarePeripheral{.name = "MT3620_GPIO8",
                                       .type = "Gpio",
                                       .app_manifest_value = PeripheralValue{int64_t{8}},
                                       .main_core_header_value = "(8)",
                                       .comment = "GPIO 8"}));
  auto channel = std::find_if(def->peripherals.begin(), def->peripherals.end(),
                              [](const auto& p) { return p.name == "MT3620_ADC_CHANNEL0"; });
  ASSERT_NE(channel, def->peripherals.end());
  EXPECT_EQ(channel->type, "int");
  EXPECT_FALSE(channel->app_manifest_value);
  EXPECT_EQ(channel->main_core_header_value, "(0)");
}

TEST(HardwareDefinitionTest, AcceptsEveryFieldRealDefinitionsUse) {
  auto def = ParseHardwareDefinition(R"json({
    "$schema": "https://example.com/hardware-definition-schema.json",
    "Metadata": {"Type": "Azure Sphere Hardware Definition", "Version": 1},
    "Description": {"Name": "Board", "MainCoreHeaderFileTopContent": ["/* x */", ""]},
    "Imports": [{"Path": "chip.json"}, {"Path": "vendor/module.json"}],
    "Peripherals": [
      {"Name": "BOARD_LED", "Type": "Gpio", "Mapping": "CHIP_GPIO8", "Comment": "LED",
       "LinuxDevice": "/dev/gpiochip0"},
      {"Name": "BOARD_UART", "Type": "Uart", "AppManifestValue": "ISU0",
       "MainCoreHeaderValue": "(4)", "LinuxDevice": "/dev/ttyS1"},
      {"Name": "BOARD_ADC", "Type": "Adc", "AppManifestValue": "ADC-CONTROLLER-0",
       "LinuxDevice": "/dev/iio:device0"},
      {"Name": "BOARD_CHANNEL", "Type": "int", "MainCoreHeaderValue": "(-1)"}
    ]})json",
                                     "board.json");
  ASSERT_TRUE(def) << def.error().message();
  EXPECT_EQ(def->imports, (std::vector<std::string>{"chip.json", "vendor/module.json"}));
  ASSERT_EQ(def->peripherals.size(), 4u);
  EXPECT_EQ(def->peripherals[0].mapping, "CHIP_GPIO8");
  EXPECT_EQ(def->peripherals[0].linux_device, "/dev/gpiochip0");
  EXPECT_EQ(def->peripherals[1].app_manifest_value, PeripheralValue{std::string("ISU0")});
  EXPECT_EQ(def->peripherals[1].main_core_header_value, "(4)");
  EXPECT_EQ(def->peripherals[2].linux_device, "/dev/iio:device0");
  EXPECT_FALSE(def->peripherals[3].app_manifest_value);
}

TEST(HardwareDefinitionTest, RejectsMalformedDefinitions) {
  const std::string meta =
      R"("Metadata": {"Type": "Azure Sphere Hardware Definition", "Version": 1})";
  auto with_peripheral = [&](std::string_view p) {
    return "{" + meta + R"(, "Peripherals": [)" + std::string(p) + "]}";
  };
  struct Case {
    std::string json;
    std::string message;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"[]", "hardware definition 'x.json': expected a JSON object, got array"},
           {R"({"Peripherals": []})",
            "hardware definition 'x.json': missing required field 'Metadata'"},
           {"{" + meta + "}", "hardware definition 'x.json': missing required field 'Peripherals'"},
           {"{" + meta + R"(, "Peripherals": [], "Extra": 1})",
            "hardware definition 'x.json': unknown field 'Extra'"},
           {R"({"Metadata": {"Type": "Other", "Version": 1}, "Peripherals": []})",
            "hardware definition 'x.json': Metadata.Type: 'Other' is not 'Azure Sphere Hardware "
            "Definition'"},
           {R"({"Metadata": {"Type": "Azure Sphere Hardware Definition", "Version": 2},
                "Peripherals": []})",
            "hardware definition 'x.json': Metadata.Version: 2 is not supported (expected 1)"},
           {R"({"Metadata": {"Type": "Azure Sphere Hardware Definition"}, "Peripherals": []})",
            "hardware definition 'x.json': Metadata: missing required field 'Version'"},
           {R"({"Metadata": {"Type": "Azure Sphere Hardware Definition", "Version": 1,
                "Author": "x"}, "Peripherals": []})",
            "hardware definition 'x.json': Metadata: unknown field 'Author'"},
           {"{" + meta + R"(, "Description": {"Title": "x"}, "Peripherals": []})",
            "hardware definition 'x.json': Description: unknown field 'Title'"},
           {"{" + meta + R"(, "Description": {"MainCoreHeaderFileTopContent": [1]},
                "Peripherals": []})",
            "hardware definition 'x.json': Description.MainCoreHeaderFileTopContent[0]: expected "
            "a string, got integer"},
           {"{" + meta + R"(, "Imports": ["chip.json"], "Peripherals": []})",
            "hardware definition 'x.json': Imports[0]: expected an object, got string"},
           {"{" + meta + R"(, "Imports": [{}], "Peripherals": []})",
            "hardware definition 'x.json': Imports[0]: missing required field 'Path'"},
           {"{" + meta + R"(, "Imports": [{"Path": "../chip.json"}], "Peripherals": []})",
            "hardware definition 'x.json': Imports[0].Path: '../chip.json' is not a relative path "
            "of plain names (no '/' at the start, no '\\', '.' or '..')"},
           {"{" + meta + R"(, "Imports": [{"Path": "/etc/chip.json"}], "Peripherals": []})",
            "hardware definition 'x.json': Imports[0].Path: '/etc/chip.json' is not a relative "
            "path of plain names (no '/' at the start, no '\\', '.' or '..')"},
           {"{" + meta + R"(, "Imports": [{"Path": "a\\b.json"}], "Peripherals": []})",
            "hardware definition 'x.json': Imports[0].Path: 'a\\b.json' is not a relative path of "
            "plain names (no '/' at the start, no '\\', '.' or '..')"},
           {"{" + meta + R"(, "Imports": [{"Path": "a.json"}, {"Path": "a.json"}],
                "Peripherals": []})",
            "hardware definition 'x.json': Imports[1].Path: 'a.json' is imported twice"},
           {"{" + meta + R"(, "Peripherals": {}})",
            "hardware definition 'x.json': Peripherals: expected an array, got object"},
           {with_peripheral(R"({"Type": "Gpio", "AppManifestValue": 1})"),
            "hardware definition 'x.json': Peripherals[0]: missing required field 'Name'"},
           {with_peripheral(R"({"Name": "A", "AppManifestValue": 1})"),
            "hardware definition 'x.json': Peripherals[0]: missing required field 'Type'"},
           {with_peripheral(R"({"Name": "A", "Type": "Gpio", "AppManifestValue": 1, "Pin": 3})"),
            "hardware definition 'x.json': Peripherals[0]: unknown field 'Pin'"},
           {with_peripheral(R"({"Name": "A-1", "Type": "Gpio", "AppManifestValue": 1})"),
            "hardware definition 'x.json': Peripherals[0].Name: 'A-1' is not a valid peripheral "
            "name (a C identifier of 1..128 bytes)"},
           {with_peripheral(R"({"Name": "A", "Type": "", "AppManifestValue": 1})"),
            "hardware definition 'x.json': Peripherals[0].Type: '' is not a valid type"},
           {with_peripheral(R"({"Name": "A", "Type": "Gpio", "Mapping": "B",
                                "AppManifestValue": 1})"),
            "hardware definition 'x.json': Peripherals[0]: 'A' has a Mapping and a value; a "
            "mapped peripheral takes its target's value"},
           {with_peripheral(R"({"Name": "A", "Type": "Gpio", "Comment": "nothing"})"),
            "hardware definition 'x.json': Peripherals[0]: 'A' needs a Mapping, an "
            "AppManifestValue or a MainCoreHeaderValue"},
           {with_peripheral(R"({"Name": "A", "Type": "Gpio", "Mapping": "A"})"),
            "hardware definition 'x.json': Peripherals[0].Mapping: 'A' maps to itself"},
           {with_peripheral(R"({"Name": "A", "Type": "Gpio", "AppManifestValue": true})"),
            "hardware definition 'x.json': Peripherals[0].AppManifestValue: expected an integer "
            "or a string, got boolean"},
           {with_peripheral(R"({"Name": "A", "Type": "Gpio", "AppManifestValue": 4294967296})"),
            "hardware definition 'x.json': Peripherals[0].AppManifestValue: 4294967296 is out of "
            "range -2147483648..2147483647"},
           {with_peripheral(R"({"Name": "A", "Type": "Uart", "AppManifestValue": "$ISU0"})"),
            "hardware definition 'x.json': Peripherals[0].AppManifestValue: '$ISU0' is not a "
            "peripheral name (1..64 letters, digits, '_', '-' or '.')"},
           {with_peripheral(R"({"Name": "A", "Type": "int", "MainCoreHeaderValue": ""})"),
            "hardware definition 'x.json': Peripherals[0].MainCoreHeaderValue: must be 1..256 "
            "bytes"},
           {with_peripheral(R"({"Name": "A", "Type": "Gpio", "AppManifestValue": 1,
                                "Comment": "a\u0007b"})"),
            "hardware definition 'x.json': Peripherals[0].Comment: contains a control character"},
           {with_peripheral(R"({"Name": "A", "Type": "Gpio", "AppManifestValue": 1,
                                "LinuxDevice": "/dev/../etc/shadow"})"),
            "hardware definition 'x.json': Peripherals[0].LinuxDevice: '/dev/../etc/shadow' is "
            "not a normalized path under /dev/"},
           {with_peripheral(R"({"Name": "A", "Type": "Gpio", "AppManifestValue": 1,
                                "LinuxDevice": "/tmp/gpiochip0"})"),
            "hardware definition 'x.json': Peripherals[0].LinuxDevice: '/tmp/gpiochip0' is not a "
            "normalized path under /dev/"},
           {with_peripheral(R"({"Name": "A", "Type": "Gpio", "AppManifestValue": 1,
                                "LinuxDevice": "/dev/"})"),
            "hardware definition 'x.json': Peripherals[0].LinuxDevice: '/dev/' is not a "
            "normalized path under /dev/"},
           {with_peripheral(R"({"Name": "A", "Type": "Gpio", "AppManifestValue": 1,
                                "LinuxDevice": "/dev//gpiochip0"})"),
            "hardware definition 'x.json': Peripherals[0].LinuxDevice: '/dev//gpiochip0' is not "
            "a normalized path under /dev/"},
           {with_peripheral(R"({"Name": "A", "Type": "Gpio", "AppManifestValue": 1},
                               {"Name": "A", "Type": "Gpio", "AppManifestValue": 2})"),
            "hardware definition 'x.json': Peripherals[1].Name: 'A' is already defined at "
            "Peripherals[0]"},
           {with_peripheral(R"({"Name": "A", "Name": "B", "Type": "Gpio", "AppManifestValue": 1})"),
            "hardware definition 'x.json': invalid JSON: duplicate key 'Peripherals[0].Name'"},
       }) {
    auto def = ParseHardwareDefinition(c.json, "x.json");
    ASSERT_FALSE(def) << c.json;
    EXPECT_EQ(def.error().message(), c.message);
    EXPECT_EQ(def.error().code(), ErrorCode::kInvalidArgument) << c.message;
  }
}

TEST(HardwareDefinitionTest, EnforcesLimits) {
  std::string doc = Def({}, R"({"Name": "A", "Type": "Gpio", "AppManifestValue": 1},
                               {"Name": "B", "Type": "Gpio", "AppManifestValue": 2})");
  auto big = ParseHardwareDefinition(doc, "x.json", {.max_bytes = 50});
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(big.error().message(),
            fmt::format("hardware definition 'x.json': {} bytes exceeds the limit of 50 bytes",
                        doc.size()));
  auto many = ParseHardwareDefinition(doc, "x.json", {.max_peripherals = 1});
  ASSERT_FALSE(many);
  EXPECT_EQ(many.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(many.error().message(),
            "hardware definition 'x.json': Peripherals: 2 items exceed the limit of 1");
  auto long_string = ParseHardwareDefinition(doc, "x.json", {.max_string_bytes = 3});
  ASSERT_FALSE(long_string);
  EXPECT_EQ(long_string.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(long_string.error().message(),
            "hardware definition 'x.json': Metadata.Type: 32 bytes exceed the limit of 3");
}

TEST(BoardTest, LoadsAChainOfImportsAndResolvesThroughIt) {
  Board board = MustLoadTestBoard("sample_board.json");
  EXPECT_EQ(board.root_name(), "sample_board.json");
  ASSERT_EQ(board.files().size(), 3u);
  EXPECT_EQ(board.files()[1].first, "rdb_like.json");
  EXPECT_EQ(board.files()[2].first, "mt3620_like.json");

  auto led = board.Resolve("SAMPLE_LED");
  ASSERT_TRUE(led) << led.error().message();
  EXPECT_EQ(*led, (Board::Resolved{.type = "Gpio",
                                   .app_manifest_value = int64_t{8},
                                   .linux_device = std::nullopt,
                                   .chain = "SAMPLE_LED -> MT3620_RDB_LED1_RED -> MT3620_GPIO8"}));
  auto uart = board.Resolve("SAMPLE_UART_LOOPBACK");
  ASSERT_TRUE(uart) << uart.error().message();
  EXPECT_EQ(uart->type, "Uart");
  EXPECT_EQ(uart->app_manifest_value, PeripheralValue{std::string("ISU0")});
  // A chip-level name resolves to itself.
  auto gpio = board.Resolve("MT3620_GPIO8");
  ASSERT_TRUE(gpio);
  EXPECT_EQ(gpio->chain, "MT3620_GPIO8");

  auto unknown = board.Resolve("NO_SUCH_LED");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(unknown.error().message(),
            "hardware definition 'sample_board.json': unknown peripheral 'NO_SUCH_LED'");

  // Plain numbers for C code have no manifest value.
  auto channel = board.Resolve("SAMPLE_POTENTIOMETER_ADC_CHANNEL");
  ASSERT_FALSE(channel);
  EXPECT_EQ(channel.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(channel.error().message(),
            "hardware definition 'mt3620_like.json': peripheral 'MT3620_ADC_CHANNEL0' has no "
            "AppManifestValue (SAMPLE_POTENTIOMETER_ADC_CHANNEL -> MT3620_ADC_CHANNEL0)");
}

TEST(BoardTest, GenericLinuxBoardNamesDeviceNodes) {
  Board board = MustLoadTestBoard("generic_linux_board.json");
  EXPECT_EQ(board.files().size(), 1u);
  auto led = board.Resolve("SAMPLE_LED");
  ASSERT_TRUE(led) << led.error().message();
  EXPECT_EQ(*led, (Board::Resolved{.type = "Gpio",
                                   .app_manifest_value = int64_t{17},
                                   .linux_device = "/dev/gpiochip0",
                                   .chain = "SAMPLE_LED -> LINUX_GPIO17"}));
  auto spi = board.Resolve("SAMPLE_LSM6DS3_SPI");
  ASSERT_TRUE(spi);
  EXPECT_EQ(spi->linux_device, "/dev/spidev0.0");
  auto pwm = board.Resolve("SAMPLE_LED_PWM_CONTROLLER");
  ASSERT_TRUE(pwm);
  EXPECT_EQ(pwm->app_manifest_value, PeripheralValue{std::string("PWM0")});
  EXPECT_FALSE(pwm->linux_device);

  EXPECT_EQ(board.LinuxDeviceFor("Uart", std::string("UART1")), "/dev/ttyS1");
  EXPECT_EQ(board.LinuxDeviceFor("Gpio", int64_t{27}), "/dev/gpiochip0");
  EXPECT_EQ(board.LinuxDeviceFor("Gpio", int64_t{4}), std::nullopt);
  EXPECT_EQ(board.LinuxDeviceFor("Uart", int64_t{17}), std::nullopt);
}

TEST(BoardTest, NearestLinuxDeviceWins) {
  auto load = MapLoader({{"chip.json", Def({}, R"(
      {"Name": "CHIP_GPIO3", "Type": "Gpio", "AppManifestValue": 3,
       "LinuxDevice": "/dev/gpiochip1"},
      {"Name": "CHIP_GPIO4", "Type": "Gpio", "AppManifestValue": 4,
       "LinuxDevice": "/dev/gpiochip1"})")}});
  auto board = Board::Load(Def({"chip.json"}, R"(
      {"Name": "LED", "Type": "Gpio", "Mapping": "CHIP_GPIO3", "LinuxDevice": "/dev/gpiochip0"},
      {"Name": "BUTTON", "Type": "Gpio", "Mapping": "CHIP_GPIO4"})"),
                           "board.json", load);
  ASSERT_TRUE(board) << board.error().message();
  EXPECT_EQ(board->Resolve("LED")->linux_device, "/dev/gpiochip0");
  EXPECT_EQ(board->Resolve("BUTTON")->linux_device, "/dev/gpiochip1");
  EXPECT_EQ(board->Resolve("CHIP_GPIO3")->linux_device, "/dev/gpiochip1");
  // Raw values: the first peripheral in load order whose chain ends at the value.
  EXPECT_EQ(board->LinuxDeviceFor("Gpio", int64_t{3}), "/dev/gpiochip0");
  EXPECT_EQ(board->LinuxDeviceFor("Gpio", int64_t{4}), "/dev/gpiochip1");
}

TEST(BoardTest, SharesADiamondImport) {
  auto load = MapLoader({
      {"left.json", Def({"base.json"}, R"({"Name": "LEFT", "Type": "Gpio", "Mapping": "BASE"})")},
      {"right.json", Def({"base.json"}, R"({"Name": "RIGHT", "Type": "Gpio", "Mapping": "BASE"})")},
      {"base.json", Def({}, R"({"Name": "BASE", "Type": "Gpio", "AppManifestValue": 5})")},
  });
  auto board = Board::Load(Def({"left.json", "right.json"}, ""), "root.json", load);
  ASSERT_TRUE(board) << board.error().message();
  EXPECT_EQ(board->files().size(), 4u);
  EXPECT_EQ(board->Resolve("LEFT")->app_manifest_value, PeripheralValue{int64_t{5}});
  EXPECT_EQ(board->Resolve("RIGHT")->chain, "RIGHT -> BASE");
}

struct BoardCase {
  std::string root;
  std::map<std::string, std::string> files;
  std::string message;
  ErrorCode code = ErrorCode::kInvalidArgument;
};

TEST(BoardTest, RejectsBrokenBoards) {
  std::map<std::string, std::string> deep;
  for (int i = 1; i <= 9; ++i) {
    deep[fmt::format("f{}.json", i)] = Def({fmt::format("f{}.json", i + 1)}, "");
  }
  deep["f10.json"] = Def({}, "");
  std::map<std::string, std::string> wide;
  std::vector<std::string> wide_imports;
  for (int i = 0; i < 3; ++i) {
    wide_imports.push_back(fmt::format("w{}.json", i));
    wide[wide_imports.back()] = Def({}, "");
  }

  for (const BoardCase& c : std::initializer_list<BoardCase>{
           {Def({"a.json"}, ""),
            {{"a.json", Def({"b.json"}, "")}, {"b.json", Def({"a.json"}, "")}},
            "hardware definition 'b.json': Imports[0].Path: import cycle a.json -> b.json -> "
            "a.json"},
           {Def({"root.json"}, ""),
            {},
            "hardware definition 'root.json': Imports[0].Path: import cycle root.json -> "
            "root.json"},
           {Def({"missing.json"}, ""),
            {},
            "hardware definition 'root.json': Imports[0].Path: cannot load 'missing.json': no "
            "such file 'missing.json'",
            ErrorCode::kNotFound},
           {Def({"bad.json"}, ""),
            {{"bad.json", "{"}},
            "hardware definition 'bad.json': invalid JSON: parse error at line 1, column 2: "
            "syntax error while parsing object key - unexpected end of input; expected string "
            "literal"},
           {Def({"f1.json"}, ""), deep,
            "hardware definition 'f8.json': Imports[0].Path: imports nest deeper than 8 levels",
            ErrorCode::kLimitExceeded},
           {Def({"a.json"}, R"({"Name": "X", "Type": "Gpio", "AppManifestValue": 1})"),
            {{"a.json", Def({}, R"({"Name": "X", "Type": "Gpio", "AppManifestValue": 2})")}},
            "hardware definition 'a.json': Peripherals[0].Name: 'X' is already defined in "
            "'root.json'"},
           {Def({}, R"({"Name": "LED", "Type": "Gpio", "Mapping": "NOPE"})"),
            {},
            "hardware definition 'root.json': Peripherals[0].Mapping: 'NOPE' is not defined in "
            "'root.json' or its imports"},
           // An imported file cannot see the names of the file that imports it.
           {Def({"chip.json"}, R"({"Name": "ROOT_ONLY", "Type": "Gpio", "AppManifestValue": 1})"),
            {{"chip.json", Def({}, R"({"Name": "CHIP", "Type": "Gpio", "Mapping": "ROOT_ONLY"})")}},
            "hardware definition 'chip.json': Peripherals[0].Mapping: 'ROOT_ONLY' is not defined "
            "in 'chip.json' or its imports"},
           {Def({}, R"({"Name": "GPIO0", "Type": "Gpio", "AppManifestValue": 0},
                       {"Name": "MY_UART", "Type": "Uart", "Mapping": "GPIO0"})"),
            {},
            "hardware definition 'root.json': Peripherals[1].Mapping: 'GPIO0' is a Gpio, but "
            "'MY_UART' is a Uart"},
           {Def({}, R"({"Name": "X", "Type": "Gpio", "Mapping": "Y"},
                       {"Name": "Y", "Type": "Gpio", "Mapping": "Z"},
                       {"Name": "Z", "Type": "Gpio", "Mapping": "X"})"),
            {},
            "hardware definition 'root.json': mapping cycle X -> Y -> Z -> X"},
       }) {
    auto board = Board::Load(c.root, "root.json", MapLoader(c.files));
    ASSERT_FALSE(board) << c.message;
    EXPECT_EQ(board.error().message(), c.message);
    EXPECT_EQ(board.error().code(), c.code) << c.message;
  }

  auto too_many =
      Board::Load(Def(wide_imports, ""), "root.json", MapLoader(wide), {.max_definitions = 3});
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(too_many.error().message(),
            "hardware definition 'root.json': Imports[2].Path: a board may have at most 3 files");
  EXPECT_TRUE(
      Board::Load(Def(wide_imports, ""), "root.json", MapLoader(wide), {.max_definitions = 4}));
  EXPECT_TRUE(Board::Load(Def({"f3.json"}, ""), "root.json", MapLoader(deep)));

  std::string chain = Def({}, R"({"Name": "A", "Type": "Gpio", "Mapping": "B"},
                                 {"Name": "B", "Type": "Gpio", "Mapping": "C"},
                                 {"Name": "C", "Type": "Gpio", "Mapping": "D"},
                                 {"Name": "D", "Type": "Gpio", "AppManifestValue": 1})");
  auto long_chain = Board::Load(chain, "root.json", NoImports, {.max_mapping_chain = 2});
  ASSERT_FALSE(long_chain);
  EXPECT_EQ(long_chain.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(long_chain.error().message(),
            "hardware definition 'root.json': Peripherals[0].Mapping: 'A' is more than 2 "
            "mappings away from its value");
  auto ok_chain = Board::Load(chain, "root.json", NoImports, {.max_mapping_chain = 3});
  ASSERT_TRUE(ok_chain) << ok_chain.error().message();
  EXPECT_EQ(ok_chain->Resolve("A")->chain, "A -> B -> C -> D");
}

AppManifest Manifest(std::string_view capabilities) {
  auto m = ParseAppManifest(fmt::format(
      R"({{"SchemaVersion": 1, "Name": "t", "ComponentId": "9ccf1aac-b73b-4aa5-a5db-628a5fdf99b9",
          "EntryPoint": "/bin/app", "Capabilities": {}}})",
      capabilities));
  EXPECT_TRUE(m) << m.error().message();
  return m ? *m : AppManifest{};
}

std::string ResolveMessage(std::string_view capabilities, const Board& board) {
  auto resolved = ResolvePeripherals(Manifest(capabilities), board);
  EXPECT_FALSE(resolved) << capabilities;
  if (resolved) return "resolved";
  EXPECT_EQ(resolved.error().code(), ErrorCode::kInvalidArgument);
  return resolved.error().message();
}

TEST(ResolvePeripheralsTest, ReplacesConstantsByValues) {
  Board board = MustLoadTestBoard("sample_board.json");
  auto m = ResolvePeripherals(
      Manifest(R"({"Gpio": ["$SAMPLE_BUTTON_1", 30, "$SAMPLE_LED", "$SAMPLE_DEVICE_STATUS_LED"],
                   "Uart": ["$SAMPLE_UART_LOOPBACK"], "I2cMaster": ["ISU2"],
                   "Adc": ["$SAMPLE_POTENTIOMETER_ADC_CONTROLLER"],
                   "Pwm": ["$SAMPLE_LED_PWM_CONTROLLER"], "SpiMaster": ["$SAMPLE_LSM6DS3_SPI"]})"),
      board);
  ASSERT_TRUE(m) << m.error().message();
  // SAMPLE_DEVICE_STATUS_LED is the same pin as SAMPLE_LED, so it is collapsed.
  EXPECT_EQ(m->capabilities.gpio, (std::vector<PeripheralRef>{{12}, {30}, {8}}));
  EXPECT_EQ(m->capabilities.uart, std::vector<PeripheralRef>{{std::string("ISU0")}});
  EXPECT_EQ(m->capabilities.i2c_master, std::vector<PeripheralRef>{{std::string("ISU2")}});
  EXPECT_EQ(m->capabilities.spi_master, std::vector<PeripheralRef>{{std::string("ISU1")}});
  EXPECT_EQ(m->capabilities.pwm, std::vector<PeripheralRef>{{std::string("PWM-CONTROLLER-2")}});
  EXPECT_EQ(m->capabilities.adc, std::vector<PeripheralRef>{{std::string("ADC-CONTROLLER-0")}});
  EXPECT_EQ(m->name, "t");
}

TEST(ResolvePeripheralsTest, GrantsCarryLinuxDevices) {
  Board board = MustLoadTestBoard("generic_linux_board.json");
  auto grants = ResolvePeripheralGrants(
      Manifest(R"({"Gpio": ["$SAMPLE_LED", 27, 99], "Uart": ["$SAMPLE_UART_LOOPBACK"]})"), board);
  ASSERT_TRUE(grants) << grants.error().message();
  ASSERT_EQ(grants->size(), 4u);
  EXPECT_EQ((*grants)[0], (PeripheralGrant{.kind = PeripheralKind::kGpio,
                                           .written = {std::string("$SAMPLE_LED")},
                                           .value = int64_t{17},
                                           .linux_device = "/dev/gpiochip0",
                                           .chain = "SAMPLE_LED -> LINUX_GPIO17"}));
  EXPECT_EQ((*grants)[1], (PeripheralGrant{.kind = PeripheralKind::kGpio,
                                           .written = {27},
                                           .value = int64_t{27},
                                           .linux_device = "/dev/gpiochip0"}));
  EXPECT_EQ((*grants)[2].linux_device, std::nullopt);  // no such line on this board
  EXPECT_EQ((*grants)[3].kind, PeripheralKind::kUart);
  EXPECT_EQ((*grants)[3].value, PeripheralValue{std::string("UART1")});
  EXPECT_EQ((*grants)[3].linux_device, "/dev/ttyS1");
}

TEST(ResolvePeripheralsTest, RejectsWhatTheBoardCannotProvide) {
  Board board = MustLoadTestBoard("sample_board.json");
  EXPECT_EQ(ResolveMessage(R"({"Gpio": [1, "$NO_SUCH_LED"]})", board),
            "app manifest: Capabilities.Gpio[1]: unknown peripheral '$NO_SUCH_LED' (not in "
            "hardware definition 'sample_board.json')");
  EXPECT_EQ(ResolveMessage(R"({"Uart": ["$SAMPLE_LED"]})", board),
            "app manifest: Capabilities.Uart[0]: '$SAMPLE_LED' is a Gpio peripheral, not a Uart "
            "(SAMPLE_LED -> MT3620_RDB_LED1_RED -> MT3620_GPIO8)");
  EXPECT_EQ(ResolveMessage(R"({"Adc": ["$SAMPLE_POTENTIOMETER_ADC_CHANNEL"]})", board),
            "app manifest: Capabilities.Adc[0]: hardware definition 'mt3620_like.json': "
            "peripheral 'MT3620_ADC_CHANNEL0' has no AppManifestValue "
            "(SAMPLE_POTENTIOMETER_ADC_CHANNEL -> MT3620_ADC_CHANNEL0)");

  // A definition may give a Gpio a name, but a manifest's Gpio list holds numbers.
  auto odd = Board::Load(Def({}, R"({"Name": "ODD", "Type": "Gpio", "AppManifestValue": "ISU0"},
                 {"Name": "BIG", "Type": "Gpio", "AppManifestValue": 70000})"),
                         "odd.json", NoImports);
  ASSERT_TRUE(odd) << odd.error().message();
  EXPECT_EQ(ResolveMessage(R"({"Gpio": ["$ODD"]})", *odd),
            "app manifest: Capabilities.Gpio[0]: '$ODD' resolves to 'ISU0': 'ISU0' is neither a "
            "GPIO number nor a '$NAME' constant");
  EXPECT_EQ(ResolveMessage(R"({"Gpio": ["$BIG"]})", *odd),
            "app manifest: Capabilities.Gpio[0]: '$BIG' resolves to 70000: 70000 is out of range "
            "0..65535");
}

struct CompatManifest {
  std::string name;
  AppManifest manifest;
};

std::vector<CompatManifest> CompatManifests() {
  std::vector<CompatManifest> out;
  EXPECT_TRUE(fs::is_directory(kCompatDir)) << "missing compatibility data: " << kCompatDir;
  if (!fs::is_directory(kCompatDir)) return out;
  for (const auto& entry : fs::directory_iterator(kCompatDir)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".json") continue;
    auto m = ParseAppManifest(ReadTestFile(entry.path()));
    EXPECT_TRUE(m) << entry.path() << ": " << m.error().message();
    if (m) out.push_back({entry.path().filename().string(), *m});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

bool HasConstants(const Capabilities& c) {
  for (PeripheralKind kind : kAllPeripheralKinds) {
    for (const PeripheralRef& ref : PeripheralList(c, kind)) {
      if (ref.IsConstant()) return true;
    }
  }
  return false;
}

// The compat manifests whose constants belong to other boards (Avnet kits, gallery projects).
const std::set<std::string> kForeignBoardManifests = {
    "gallery__AzureSphereSquirrel_HLCore_app_manifest.json",
    "gallery__CO2_MonitorHealthySpaces_src_app_manifest.json",
    "gallery__DRAMClickboard_DRAMClickboard_HighLevelApp_app_manifest.json",
    "gallery__IndustrialDeviceController_Software_HighLevelApp_app_manifest.json",
    "gallery__VS1053AudioStreaming_src_app_manifest.json",
    "gallery__WiFiConfigurationViaNfc_src_app_manifest.json",
    "samples__Samples_DeviceToCloud_ExternalMcuLowPower_AzureSphere_HighLevelApp_app_manifest."
    "json",
};

// The compat manifests that name MT3620 (or MT3620 RDB) peripherals directly; the generic Linux
// board has only the sample appliance's names.
const std::set<std::string> kMt3620Manifests = {
    "gallery__Grove_16x2_RGB_LCD_src_app_manifest.json",
    "gallery__HeapTracker_app_manifest.json",
    "gallery__LittleFs_SDCard_src_AzureSphere_SDCard_HighLevelApp_app_manifest.json",
    "gallery__WifiConfigurationViaUart_src_app_manifest.json",
};

TEST(ResolvePeripheralsTest, ResolvesTheCompatManifestsOnTheTestBoards) {
  auto manifests = CompatManifests();
  ASSERT_EQ(manifests.size(), 73u);
  std::set<std::string> off_generic = kForeignBoardManifests;
  off_generic.insert(kMt3620Manifests.begin(), kMt3620Manifests.end());
  for (const auto& [board_file, expected_failures] :
       std::initializer_list<std::pair<const char*, std::set<std::string>>>{
           {"sample_board.json", kForeignBoardManifests},
           {"generic_linux_board.json", off_generic}}) {
    Board board = MustLoadTestBoard(board_file);
    std::set<std::string> failed;
    int with_constants = 0;
    for (const CompatManifest& c : manifests) {
      if (HasConstants(c.manifest.capabilities)) ++with_constants;
      auto resolved = ResolvePeripherals(c.manifest, board);
      if (!resolved) {
        EXPECT_NE(resolved.error().message().find("unknown peripheral '$"), std::string::npos)
            << c.name << ": " << resolved.error().message();
        failed.insert(c.name);
        continue;
      }
      EXPECT_FALSE(HasConstants(resolved->capabilities)) << c.name;
      // Everything but the peripheral lists is untouched.
      AppManifest without_peripherals = c.manifest;
      AppManifest resolved_without = *resolved;
      for (PeripheralKind kind : kAllPeripheralKinds) {
        PeripheralList(without_peripherals.capabilities, kind).clear();
        PeripheralList(resolved_without.capabilities, kind).clear();
      }
      EXPECT_EQ(resolved_without, without_peripherals) << c.name;
      // A resolved manifest is still a valid manifest.
      auto reparsed = ParseAppManifest(DumpJson(ToJson(*resolved)));
      ASSERT_TRUE(reparsed) << c.name << ": " << reparsed.error().message();
      EXPECT_EQ(*reparsed, *resolved) << c.name;
    }
    EXPECT_EQ(failed, expected_failures) << board_file;
    EXPECT_EQ(with_constants, 41) << board_file;
  }
}

TEST(ResolvePeripheralsTest, ResolvesSampleManifestsToKnownPins) {
  Board rdb = MustLoadTestBoard("sample_board.json");
  Board linux_board = MustLoadTestBoard("generic_linux_board.json");
  auto manifests = CompatManifests();
  auto find = [&](std::string_view name) -> const AppManifest& {
    for (const CompatManifest& c : manifests) {
      if (c.name == name) return c.manifest;
    }
    ADD_FAILURE() << "no compat manifest " << name;
    std::abort();
  };
  const AppManifest& gpio = find("samples__Samples_GPIO_GPIO_HighLevelApp_app_manifest.json");
  EXPECT_EQ(ResolvePeripherals(gpio, rdb)->capabilities.gpio,
            (std::vector<PeripheralRef>{{12}, {8}}));
  EXPECT_EQ(ResolvePeripherals(gpio, linux_board)->capabilities.gpio,
            (std::vector<PeripheralRef>{{27}, {17}}));

  const AppManifest& uart = find("samples__Samples_UART_UART_HighLevelApp_app_manifest.json");
  EXPECT_EQ(ResolvePeripherals(uart, rdb)->capabilities.uart,
            std::vector<PeripheralRef>{{std::string("ISU0")}});
  auto grants = ResolvePeripheralGrants(uart, linux_board);
  ASSERT_TRUE(grants);
  ASSERT_EQ(grants->size(), 2u);
  EXPECT_EQ((*grants)[1].linux_device, "/dev/ttyS1");

  const AppManifest& heap = find("gallery__HeapTracker_app_manifest.json");
  EXPECT_EQ(ResolvePeripherals(heap, rdb)->capabilities.gpio, std::vector<PeripheralRef>{{8}});
  EXPECT_EQ(ResolvePeripherals(heap, linux_board).error().message(),
            "app manifest: Capabilities.Gpio[0]: unknown peripheral '$MT3620_GPIO8' (not in "
            "hardware definition 'generic_linux_board.json')");
}

}  // namespace
}  // namespace moat::formats
