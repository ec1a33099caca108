#include "rot/open_key_store.h"

#include <gtest/gtest.h>

#include "core/file.h"
#include "rot/testing/swtpm.h"

namespace moat::rot {
namespace {

TEST(OpenKeyStoreTest, ChoosesTheBackendByName) {
  auto tmp = *TempDir::Create("moat-open");
  auto software = OpenKeyStore({.backend = "software", .path = tmp.path() / "sw"},
                               WarningOutput::kSilent);
  ASSERT_TRUE(software) << software.error().message();
  EXPECT_EQ((*software)->backend(), "software");

  auto unknown = OpenKeyStore({.backend = "hsm", .path = tmp.path() / "x"});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().message(), "key_store.backend 'hsm' is not one of software, tpm2, pkcs11");
  EXPECT_EQ(OpenKeyStore({.backend = "tpm2"}).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(OpenKeyStore({.backend = "pkcs11"}).error().code(), ErrorCode::kInvalidArgument);

  if (testing::Swtpm::Available()) {
    auto tpm = testing::Swtpm::Start(tmp.path() / "swtpm");
    ASSERT_TRUE(tpm) << tpm.error().message();
    KeyStoreConfig config{.backend = "tpm2", .path = tmp.path() / "tpm"};
    config.tpm2.tcti = tpm->tcti();
    auto store = OpenKeyStore(config);
    ASSERT_TRUE(store) << store.error().message();
    EXPECT_EQ((*store)->backend(), "tpm2");
  }
  if (testing::SoftHsmAvailable()) {
    auto token = testing::InitSoftHsm(tmp.path() / "softhsm");
    ASSERT_TRUE(token) << token.error().message();
    KeyStoreConfig config{.backend = "pkcs11"};
    config.pkcs11 = {.module = token->module, .token_label = token->label,
                     .pin_file = token->pin_file};
    auto store = OpenKeyStore(config);
    ASSERT_TRUE(store) << store.error().message();
    EXPECT_EQ((*store)->backend(), "pkcs11");
  }
}

}  // namespace
}  // namespace moat::rot
