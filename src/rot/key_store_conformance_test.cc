// One conformance suite for every KeyStore backend: software, TPM 2.0 (on a swtpm each test
// starts for itself) and PKCS#11 (on a SoftHSM2 token each test initialises). Every test runs
// against every backend; a backend whose simulator is not installed is skipped, saying so.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <functional>

#include "core/file.h"
#include "rot/key_store.h"
#include "rot/pkcs11_key_store.h"
#include "rot/software_key_store.h"
#include "rot/testing/swtpm.h"
#include "rot/tpm2_key_store.h"
#include "rot/tpm2_quote.h"

namespace moat::rot {
namespace {

// What a backend needs besides its directory (a running swtpm, a token); lives for one test.
class BackendEnv {
 public:
  virtual ~BackendEnv() = default;
  // Opens a store over `dir`; reopening the same dir must give the same keys.
  virtual Result<std::unique_ptr<KeyStore>> Open(const std::filesystem::path& dir) = 0;
};

class SoftwareEnv final : public BackendEnv {
 public:
  Result<std::unique_ptr<KeyStore>> Open(const std::filesystem::path& dir) override {
    MOAT_ASSIGN_OR_RETURN(auto store, SoftwareKeyStore::Open(dir, WarningOutput::kSilent));
    return std::unique_ptr<KeyStore>(std::move(store));
  }
};

class Tpm2Env final : public BackendEnv {
 public:
  explicit Tpm2Env(testing::Swtpm tpm) : tpm_(std::move(tpm)) {}
  Result<std::unique_ptr<KeyStore>> Open(const std::filesystem::path& dir) override {
    MOAT_ASSIGN_OR_RETURN(auto store, Tpm2KeyStore::Open({.dir = dir, .tcti = tpm_.tcti()}));
    return std::unique_ptr<KeyStore>(std::move(store));
  }

 private:
  testing::Swtpm tpm_;
};

class Pkcs11Env final : public BackendEnv {
 public:
  explicit Pkcs11Env(testing::SoftHsmToken token) : token_(std::move(token)) {}
  // A token has no directory: `dir` names nothing, the token holds the keys.
  Result<std::unique_ptr<KeyStore>> Open(const std::filesystem::path&) override {
    MOAT_ASSIGN_OR_RETURN(auto store,
                          Pkcs11KeyStore::Open({.module = token_.module,
                                                .token_label = token_.label,
                                                .pin_file = token_.pin_file}));
    return std::unique_ptr<KeyStore>(std::move(store));
  }

 private:
  testing::SoftHsmToken token_;
};

struct Backend {
  std::string name;
  // Why the backend cannot run here (its simulator is not installed), or "".
  std::function<std::string()> missing;
  std::function<Result<std::unique_ptr<BackendEnv>>(const std::filesystem::path& tmp)> prepare;
};

void PrintTo(const Backend& backend, std::ostream* os) { *os << backend.name; }

const Backend kBackends[] = {
    {"software", [] { return std::string(); },
     [](const std::filesystem::path&) -> Result<std::unique_ptr<BackendEnv>> {
       return std::unique_ptr<BackendEnv>(new SoftwareEnv());
     }},
    {"tpm2",
     [] {
       return testing::Swtpm::Available()
                  ? std::string()
                  : std::string("swtpm/swtpm_setup not installed (scripts/install-deps.sh)");
     },
     [](const std::filesystem::path& tmp) -> Result<std::unique_ptr<BackendEnv>> {
       MOAT_ASSIGN_OR_RETURN(auto tpm, testing::Swtpm::Start(tmp / "swtpm"));
       return std::unique_ptr<BackendEnv>(new Tpm2Env(std::move(tpm)));
     }},
    {"pkcs11",
     [] {
       return testing::SoftHsmAvailable()
                  ? std::string()
                  : std::string("softhsm2 not installed (scripts/install-deps.sh)");
     },
     [](const std::filesystem::path& tmp) -> Result<std::unique_ptr<BackendEnv>> {
       MOAT_ASSIGN_OR_RETURN(auto token, testing::InitSoftHsm(tmp / "softhsm"));
       return std::unique_ptr<BackendEnv>(new Pkcs11Env(std::move(token)));
     }},
};

class KeyStoreConformanceTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (std::string missing = GetParam().missing(); !missing.empty()) {
      GTEST_SKIP() << GetParam().name << " backend skipped: " << missing;
    }
    auto tmp = TempDir::Create("moat-keystore");
    ASSERT_TRUE(tmp);
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    auto env = GetParam().prepare(tmp_->path());
    ASSERT_TRUE(env) << env.error().message();
    env_ = std::move(*env);
    dir_ = tmp_->path() / "store";
    auto store = env_->Open(dir_);
    ASSERT_TRUE(store) << store.error().message();
    store_ = std::move(*store);
  }
  void TearDown() override {
    store_.reset();
    env_.reset();
  }

  std::unique_ptr<TempDir> tmp_;
  std::unique_ptr<BackendEnv> env_;
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
  auto reopened = env_->Open(dir_);
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
  if (proof->tpm2_quote) {
    EXPECT_TRUE(VerifyTpm2Quote(*proof->tpm2_quote, input));
  }
  input[0] ^= 1;
  EXPECT_FALSE(identity.Verify(input, proof->signature));
  if (proof->tpm2_quote) {
    EXPECT_EQ(VerifyTpm2Quote(*proof->tpm2_quote, input).error().code(),
              ErrorCode::kVerificationFailed);
  }
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
