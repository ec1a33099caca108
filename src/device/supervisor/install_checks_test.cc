// Peripheral ownership and app id allocation.
#include "device/supervisor/install_checks.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "device/supervisor/test_data.h"

namespace moat::device::supervisor {
namespace {

using ::testing::HasSubstr;
using namespace ::moat::device::supervisor::testing;

formats::Guid G(std::string_view text) { return *formats::Guid::Parse(text); }

class OwnershipTest : public ::testing::Test {
 protected:
  formats::Board board_ = LoadBoard("generic_linux_board.json");
  formats::AppManifest hello_ = Compat("samples__Samples_HelloWorld_HelloWorld_HighLevelApp");
  formats::AppManifest uart_ = Compat("samples__Samples_UART_UART_HighLevelApp");
  formats::AppManifest i2c_ = Compat("samples__Samples_I2C_I2C_LSM6DS3_HighLevelApp");
  formats::AppManifest spi_ = Compat("samples__Samples_SPI_SPI_LSM6DS3_HighLevelApp");
};

TEST_F(OwnershipTest, AppsWithDisjointPeripheralsCoexist) {
  std::vector<formats::AppManifest> installed = {hello_, i2c_};
  EXPECT_TRUE(CheckPeripheralOwnership(installed, spi_, board_));
  EXPECT_TRUE(CheckPeripheralOwnership({}, hello_, board_));
}

TEST_F(OwnershipTest, ASecondAppAskingForAHeldPinIsRefusedNamingBothAppsAndThePin) {
  formats::AppManifest blink = hello_;
  blink.name = "Blink";
  blink.component_id = G("0b0b0b0b-0000-4000-8000-000000000001");
  // Written differently: the raw line number the constant stands for.
  blink.capabilities.gpio = {{int64_t{17}}};
  std::vector<formats::AppManifest> installed = {uart_, hello_};
  auto r = CheckPeripheralOwnership(installed, blink, board_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(r.error().message(),
            "peripheral Gpio 17 requested by app 'Blink' (0b0b0b0b-0000-4000-8000-000000000001) "
            "is already held by app 'HelloWorld_HighLevelApp' "
            "(1689d8b2-c835-2e27-27ad-e894d6d15fa9)");

  // And the other way round, with the constant named.
  std::vector<formats::AppManifest> blink_installed = {blink};
  auto back = CheckPeripheralOwnership(blink_installed, hello_, board_);
  ASSERT_FALSE(back);
  EXPECT_THAT(back.error().message(),
              HasSubstr("peripheral Gpio 17 ('$SAMPLE_LED') requested by app "
                        "'HelloWorld_HighLevelApp'"));
  EXPECT_THAT(back.error().message(), HasSubstr("already held by app 'Blink'"));
}

TEST_F(OwnershipTest, ANewVersionOfTheSameAppReplacesItsOwnClaims) {
  std::vector<formats::AppManifest> installed = {hello_};
  EXPECT_TRUE(CheckPeripheralOwnership(installed, hello_, board_));
}

TEST_F(OwnershipTest, TwoGpioLinesOfOneChipBelongToTwoApps) {
  formats::AppManifest other = hello_;
  other.component_id = G("0b0b0b0b-0000-4000-8000-000000000002");
  other.capabilities.gpio = {{int64_t{5}}};  // also on /dev/gpiochip0
  std::vector<formats::AppManifest> installed = {hello_};
  EXPECT_TRUE(CheckPeripheralOwnership(installed, other, board_));
}

TEST_F(OwnershipTest, ADeviceNodeOtherThanAGpioChipIsHeldByOneApp) {
  // The same UART node reached through a different capability and name.
  auto board = formats::Board::Load(
      R"({"Metadata": {"Type": "Azure Sphere Hardware Definition", "Version": 1},
          "Peripherals": [
            {"Name": "UART_A", "Type": "Uart", "AppManifestValue": "UART-A", "LinuxDevice": "/dev/ttyS1"},
            {"Name": "UART_B", "Type": "Uart", "AppManifestValue": "UART-B", "LinuxDevice": "/dev/ttyS1"}]})",
      "two_names.json", [](std::string_view) -> Result<std::string> {
        return Fail(ErrorCode::kNotFound, "no imports");
      });
  ASSERT_TRUE(board) << board.error().message();
  formats::AppManifest a = uart_;
  a.capabilities.gpio.clear();
  a.capabilities.uart = {{std::string("$UART_A")}};
  formats::AppManifest b = a;
  b.name = "B";
  b.component_id = G("0b0b0b0b-0000-4000-8000-000000000003");
  b.capabilities.uart = {{std::string("$UART_B")}};
  std::vector<formats::AppManifest> installed = {a};
  auto r = CheckPeripheralOwnership(installed, b, *board);
  ASSERT_FALSE(r);
  EXPECT_EQ(
      r.error().message(),
      "peripheral Uart UART-B ('$UART_B') requested by app 'B' "
      "(0b0b0b0b-0000-4000-8000-000000000003) is already held by app 'UART_HighLevelApp' "
      "(4f2d9823-dbbd-4740-a7dd-198c32ba34fe) (both use /dev/ttyS1: Uart UART-A ('$UART_A'))");
}

TEST_F(OwnershipTest, AnUnresolvableCandidateIsAnError) {
  auto heap = Compat("gallery__HeapTracker");
  auto r = CheckPeripheralOwnership({}, heap, board_);
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message(), HasSubstr("unknown peripheral '$MT3620_GPIO8'"));
}

TEST(AppIdsTest, AllocatesTheLowestFreeIdAndKeepsExistingOnes) {
  std::map<formats::Guid, AppIds> allocated;
  const formats::Guid a = G("0b0b0b0b-0000-4000-8000-00000000000a");
  const formats::Guid b = G("0b0b0b0b-0000-4000-8000-00000000000b");
  const formats::Guid c = G("0b0b0b0b-0000-4000-8000-00000000000c");
  IdRange range{.first = 5000, .count = 3};
  auto ida = AllocateAppIds(allocated, a, range);
  ASSERT_TRUE(ida);
  EXPECT_EQ(*ida, (AppIds{5000, 5000}));
  allocated[a] = *ida;
  EXPECT_EQ(*AllocateAppIds(allocated, a, range), (AppIds{5000, 5000})) << "stable";
  allocated[b] = *AllocateAppIds(allocated, b, range);
  EXPECT_EQ(allocated[b], (AppIds{5001, 5001}));
  // A gid in use blocks that number too.
  allocated[b].gid = 5002;
  auto full = AllocateAppIds(allocated, c, range);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(full.error().message(),
            "no free app id left in 5000..5002 for component 0b0b0b0b-0000-4000-8000-00000000000c");
  // A removed app frees its id.
  allocated.erase(a);
  EXPECT_EQ(*AllocateAppIds(allocated, c, range), (AppIds{5000, 5000}));
}

TEST(AppIdsTest, RefusesRangesWithRootOrTheUnsetId) {
  const formats::Guid a = G("0b0b0b0b-0000-4000-8000-00000000000a");
  EXPECT_EQ(AllocateAppIds({}, a, {.first = 0, .count = 10}).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(AllocateAppIds({}, a, {.first = 1, .count = 0}).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(AllocateAppIds({}, a, {.first = 0xfffffff0u, .count = 0x10}).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(*AllocateAppIds({}, a, {.first = 0xfffffff0u, .count = 0xf}),
            (AppIds{0xfffffff0u, 0xfffffff0u}));
}

}  // namespace
}  // namespace moat::device::supervisor
