// One conformance suite for every KeyStore backend. Each backend adds a factory to
// kBackends (the TPM 2.0 and PKCS#11 stores join when they land); every test runs against
// every backend.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <functional>

#include "core/file.h"
#include "rot/key_store.h"
#include "rot/software_key_store.h"

namespace moat::rot {
namespace {

struct Backend {
  std::string name;
  // Opens a store over `dir` (a fresh private directory each test); reopening the same dir
  // must give the same keys.
  std::function<Result<std::unique_ptr<KeyStore>>(const std::filesystem::path& dir)> open;
};

const Backend kBackends[] = {
    {"software",
     [](const std::filesystem::path& dir) -> Result<std::unique_ptr<KeyStore>> {
       MOAT_ASSIGN_OR_RETURN(auto store, SoftwareKeyStore::Open(dir, WarningOutput::kSilent));
       return std::unique_ptr<KeyStore>(std::move(store));
     }},
};

class KeyStoreConformanceTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    auto tmp = TempDir::Create("moat-keystore");
    ASSERT_TRUE(tmp);
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    dir_ = tmp_->path() / "store";
    auto store = GetParam().open(dir_);
    ASSERT_TRUE(store) << store.error().message();
    store_ = std::move(*store);
  }

  std::unique_ptr<TempDir> tmp_;
  std::filesystem::path dir_;
  std::unique_ptr<KeyStore> store_;
};

TEST_P(KeyStoreConformanceTest, CreatesKeysOnceByLabel) {
  auto created = store_->CreateKey("identity");
  ASSERT_TRUE(created) << created.error().message();
  EXPECT_EQ(created->type(), crypto::KeyType::kEcdsaP256);
  auto again = store_->CreateKey("identity");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
  auto fetched = store_->GetPublicKey("identity");
  ASSERT_TRUE(fetched);
  EXPECT_EQ(*fetched, *created);
  auto ensured = store_->EnsureKey("identity");
  ASSERT_TRUE(ensured);
  EXPECT_EQ(*ensured, *created);
  auto other = store_->EnsureKey("tls-client");
  ASSERT_TRUE(other);
  EXPECT_FALSE(*other == *created);
}

TEST_P(KeyStoreConformanceTest, UnknownAndInvalidLabels) {
  auto missing = store_->GetPublicKey("nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store_->SignDigest("nope", crypto::Sha256("x")).error().code(), ErrorCode::kNotFound);
  for (const char* bad : {"", "../identity", "Identity", ".hidden", "a/b"}) {
    auto r = store_->CreateKey(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << bad;
  }
}

TEST_P(KeyStoreConformanceTest, SignaturesVerifyWithThePublicKeyOnly) {
  auto pub = *store_->CreateKey("signing");
  auto other = *store_->CreateKey("other");
  const std::string message = "firmware manifest";
  auto sig = store_->Sign(
      "signing",
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(message.data()), message.size()));
  ASSERT_TRUE(sig) << sig.error().message();
  EXPECT_TRUE(pub.Verify(message, *sig));
  EXPECT_TRUE(pub.VerifyDigest(crypto::Sha256(message), *sig));
  EXPECT_EQ(other.Verify(message, *sig).error().code(), ErrorCode::kVerificationFailed);
  EXPECT_EQ(pub.Verify("firmware manifesT", *sig).error().code(), ErrorCode::kVerificationFailed);
}

TEST_P(KeyStoreConformanceTest, IdentitySurvivesReopening) {
  auto created = *store_->CreateKey(kIdentityKeyLabel);
  std::string id = DeviceIdOf(created);
  EXPECT_EQ(id.size(), 64u);
  store_.reset();
  auto reopened = GetParam().open(dir_);
  ASSERT_TRUE(reopened) << reopened.error().message();
  auto key = (*reopened)->GetPublicKey(kIdentityKeyLabel);
  ASSERT_TRUE(key);
  EXPECT_EQ(DeviceIdOf(*key), id);
}

TEST_P(KeyStoreConformanceTest, RegistersFollowPcrSemantics) {
  EXPECT_TRUE(store_->ReadRegisters()->empty());
  auto a = crypto::Sha256("os image"), b = crypto::Sha256("app image");
  ASSERT_TRUE(store_->Extend(13, a));
  ASSERT_TRUE(store_->Extend(13, b));
  auto regs = *store_->ReadRegisters();
  std::array<uint8_t, 64> buf{};
  std::copy(a.begin(), a.end(), buf.begin() + 32);
  auto first = crypto::Sha256(buf);
  std::copy(first.begin(), first.end(), buf.begin());
  std::copy(b.begin(), b.end(), buf.begin() + 32);
  EXPECT_EQ(regs.at(13), crypto::Sha256(buf));
  EXPECT_EQ(store_->Extend(24, a).error().code(), ErrorCode::kInvalidArgument);
}

TEST_P(KeyStoreConformanceTest, AttestationIsSignedByTheIdentityKey) {
  auto identity = *store_->CreateKey(kIdentityKeyLabel);
  std::vector<uint8_t> input = {'n', 'o', 'n', 'c', 'e'};
  auto proof = store_->Attest(input);
  ASSERT_TRUE(proof) << proof.error().message();
  EXPECT_TRUE(identity.Verify(input, proof->signature));
  input[0] ^= 1;
  EXPECT_FALSE(identity.Verify(input, proof->signature));
}

TEST_P(KeyStoreConformanceTest, TlsKeyMatchesThePublicKey) {
  auto pub = *store_->CreateKey(kTlsClientKeyLabel);
  auto tls = store_->TlsKey(kTlsClientKeyLabel);
  ASSERT_TRUE(tls) << tls.error().message();
  EXPECT_EQ(tls->public_key(), pub);
  auto sig = *tls->Sign(std::string_view("handshake"));
  EXPECT_TRUE(pub.Verify("handshake", sig));
}

INSTANTIATE_TEST_SUITE_P(AllBackends, KeyStoreConformanceTest, ::testing::ValuesIn(kBackends),
                         [](const auto& param_info) { return param_info.param.name; });

// ---- software store specifics ----

TEST(SoftwareKeyStoreTest, RefusesDirectoriesAndKeysOthersCanRead) {
  auto tmp = *TempDir::Create("moat-keystore");
  auto dir = tmp.path() / "store";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  auto open = SoftwareKeyStore::Open(dir, WarningOutput::kSilent);
  ASSERT_FALSE(open);
  EXPECT_EQ(open.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(open.error().message(),
            dir.string() +
                " has mode 0755; a key store directory must not be accessible to "
                "group or others (chmod 0700 it)");

  ASSERT_EQ(::chmod(dir.c_str(), 0700), 0);
  {
    auto store = SoftwareKeyStore::Open(dir, WarningOutput::kSilent);
    ASSERT_TRUE(store);
    ASSERT_TRUE((*store)->CreateKey("identity"));
  }
  struct stat st {};
  ASSERT_EQ(::stat((dir / "identity.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::chmod((dir / "identity.key").c_str(), 0644), 0);
  auto leaky = SoftwareKeyStore::Open(dir, WarningOutput::kSilent);
  ASSERT_FALSE(leaky);
  EXPECT_EQ(leaky.error().code(), ErrorCode::kPermissionDenied);
}

TEST(SoftwareKeyStoreTest, RegistersResetWithTheProcess) {
  auto tmp = *TempDir::Create("moat-keystore");
  auto dir = tmp.path() / "store";
  {
    auto store = *SoftwareKeyStore::Open(dir, WarningOutput::kSilent);
    ASSERT_TRUE(store->Extend(13, crypto::Sha256("x")));
  }
  auto store = *SoftwareKeyStore::Open(dir, WarningOutput::kSilent);
  EXPECT_TRUE(store->ReadRegisters()->empty());
}

}  // namespace
}  // namespace moat::rot
