// Pkcs11KeyStore specifics on a SoftHSM2 token each test initialises: no export, PIN sources,
// TLS with a token-held key against openssl s_server.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cstdlib>

#include "core/encoding.h"
#include "core/file.h"
#include "rot/pkcs11_key_store.h"
#include "rot/testing/swtpm.h"
#include "rot/testing/tls_peer.h"

namespace moat::rot {
namespace {

class Pkcs11KeyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::SoftHsmAvailable()) {
      GTEST_SKIP() << "softhsm2 not installed (scripts/install-deps.sh installs it)";
    }
    auto tmp = TempDir::Create("moat-pkcs11");
    ASSERT_TRUE(tmp);
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    auto token = testing::InitSoftHsm(tmp_->path() / "softhsm");
    ASSERT_TRUE(token) << token.error().message();
    token_ = *token;
  }

  Pkcs11Options Options() const {
    return {.module = token_.module, .token_label = token_.label, .pin_file = token_.pin_file};
  }

  std::unique_ptr<TempDir> tmp_;
  testing::SoftHsmToken token_;
};

TEST_F(Pkcs11KeyStoreTest, PrivateKeysCannotBeExported) {
  auto store = *Pkcs11KeyStore::Open(Options());
  ASSERT_TRUE(store->CreateKey(kIdentityKeyLabel));
  auto exported = store->TryExportPrivateKey(kIdentityKeyLabel);
  ASSERT_FALSE(exported);
  EXPECT_EQ(exported.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(exported.error().message().find("CKR_ATTRIBUTE_SENSITIVE"), std::string::npos)
      << exported.error().message();
  EXPECT_FALSE(store->TlsKey(kIdentityKeyLabel)->ToPem());
}

TEST_F(Pkcs11KeyStoreTest, PinSources) {
  // From an environment variable.
  auto bytes = ReadFile(token_.pin_file, 64);
  std::string pin = bytes->substr(0, bytes->find('\n'));
  ASSERT_EQ(::setenv("MOAT_TEST_TOKEN_PIN", pin.c_str(), 1), 0);
  Pkcs11Options env = Options();
  env.pin_file.clear();
  env.pin_env = "MOAT_TEST_TOKEN_PIN";
  auto store = Pkcs11KeyStore::Open(env);
  ASSERT_TRUE(store) << store.error().message();
  store->reset();

  // A wrong PIN is an authentication failure, and the message does not contain the PIN.
  ASSERT_EQ(::setenv("MOAT_TEST_TOKEN_PIN", "999999", 1), 0);
  auto wrong = Pkcs11KeyStore::Open(env);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(wrong.error().message().find("999999"), std::string::npos);

  // Neither, or both, is a configuration error; so is a PIN file others can read.
  Pkcs11Options none = Options();
  none.pin_file.clear();
  EXPECT_EQ(Pkcs11KeyStore::Open(none).error().code(), ErrorCode::kInvalidArgument);
  ASSERT_EQ(::chmod(token_.pin_file.c_str(), 0644), 0);
  EXPECT_EQ(Pkcs11KeyStore::Open(Options()).error().code(), ErrorCode::kPermissionDenied);

  Pkcs11Options no_token = Options();
  ASSERT_EQ(::chmod(token_.pin_file.c_str(), 0600), 0);
  no_token.token_label = "absent";
  EXPECT_EQ(Pkcs11KeyStore::Open(no_token).error().code(), ErrorCode::kUnavailable);
  Pkcs11Options no_module = Options();
  no_module.module = "/nonexistent/libp11.so";
  EXPECT_EQ(Pkcs11KeyStore::Open(no_module).error().code(), ErrorCode::kUnavailable);
}

TEST_F(Pkcs11KeyStoreTest, TlsHandshakeWithATokenKeyAgainstOpenSslServer) {
  auto server = testing::OpenSslServer::Start(tmp_->path() / "s_server");
  ASSERT_TRUE(server) << server.error().message();
  auto store = *Pkcs11KeyStore::Open(Options());
  ASSERT_TRUE(store->CreateKey(kTlsClientKeyLabel));
  auto key = store->TlsKey(kTlsClientKeyLabel);
  ASSERT_TRUE(key) << key.error().message();
  auto client = (*server)->ClientFor(*key);
  ASSERT_TRUE(client) << client.error().message();
  auto done = (*server)->Handshake(**client);
  EXPECT_TRUE(done) << done.error().message();
}

TEST_F(Pkcs11KeyStoreTest, TwoStoresShareTheModule) {
  auto a = *Pkcs11KeyStore::Open(Options());
  auto b = Pkcs11KeyStore::Open(Options());
  ASSERT_TRUE(b) << b.error().message();
  auto pub = *a->CreateKey("shared");
  EXPECT_EQ(*(*b)->GetPublicKey("shared"), pub);
  a.reset();  // must not finalise the module under b
  auto sig = (*b)->Sign("shared", AsBytes("still here"));
  ASSERT_TRUE(sig) << sig.error().message();
  EXPECT_TRUE(pub.Verify("still here", *sig));
}

}  // namespace
}  // namespace moat::rot
