// Measurements on a TPM (swtpm through Tpm2KeyStore): the OS and an app measured into the Moat
// PCR replay to what the TPM quotes; a moatd restart over the same TPM extends nothing again and
// its log still replays to the quote; a TPM reset (power cycle) starts a new log.
#include <gtest/gtest.h>

#include "core/encoding.h"
#include "core/file.h"
#include "device/agent/agent.h"
#include "device/agent/measurements.h"
#include "rot/testing/swtpm.h"
#include "rot/tpm2_key_store.h"

namespace moat::device::agent {
namespace {

constexpr std::string_view kComponent = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";

class MeasurementsTpmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!rot::testing::Swtpm::Available()) {
      GTEST_SKIP() << "swtpm/swtpm_setup not installed (scripts/install-deps.sh installs them)";
    }
    auto tmp = TempDir::Create("moat-measure-tpm");
    ASSERT_TRUE(tmp);
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    auto tpm = rot::testing::Swtpm::Start(tmp_->path() / "swtpm");
    ASSERT_TRUE(tpm) << tpm.error().message();
    tpm_ = std::make_unique<rot::testing::Swtpm>(std::move(*tpm));
    file_ = tmp_->path() / "run" / "measurements.json";
  }

  // swtpm serves one connection at a time: open a store only while no other is open.
  std::unique_ptr<rot::Tpm2KeyStore> OpenStore() {
    auto store = rot::Tpm2KeyStore::Open({.dir = tmp_->path() / "store", .tcti = tpm_->tcti()});
    EXPECT_TRUE(store) << store.error().message();
    if (!store) return nullptr;
    EXPECT_TRUE((*store)->EnsureKey(rot::kIdentityKeyLabel));
    return std::move(*store);
  }

  // PCR 13 as the TPM quotes it.
  static crypto::Sha256Digest Quoted(rot::Tpm2KeyStore& store) {
    auto proof = store.Attest(AsBytes("signing input"));
    EXPECT_TRUE(proof) << proof.error().message();
    if (!proof || !proof->tpm2_quote) return {};
    return proof->tpm2_quote->pcr_values.at(formats::kMoatPcr);
  }

  static formats::Measurement Os() {
    return {.pcr = formats::kMoatPcr,
            .kind = formats::MeasurementKind::kOs,
            .name = "moat-linux",
            .version = "1.0",
            .digest = crypto::Sha256(AsBytes("os image"))};
  }

  static formats::Measurement App() {
    update::InstalledImage image;
    image.component_id = *formats::Guid::Parse(kComponent);
    image.image_id = HexEncode(crypto::Sha256(AsBytes("app package")));
    image.version = "2.0";
    return *AppMeasurement(image);
  }

  std::unique_ptr<TempDir> tmp_;
  std::unique_ptr<rot::testing::Swtpm> tpm_;
  std::filesystem::path file_;
};

TEST_F(MeasurementsTpmTest, RestartsReuseTheLogAndResetsStartANewOne) {
  formats::MeasurementLog first;
  crypto::Sha256Digest quoted{};
  {
    auto store = OpenStore();
    ASSERT_TRUE(store);
    auto m = Measurements::Open(*store, file_);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ((*m)->start(), MeasurementStart::kFresh) << (*m)->start_detail();
    auto os = (*m)->Record(Os());
    ASSERT_TRUE(os) << os.error().message();
    EXPECT_TRUE(*os);
    auto app = (*m)->Record(App());
    ASSERT_TRUE(app) << app.error().message();
    EXPECT_TRUE(*app);
    first = (*m)->Log();
    ASSERT_EQ(first.entries.size(), 2u);
    quoted = Quoted(*store);
    EXPECT_EQ(formats::ReplayMeasurementLog(first).at(formats::kMoatPcr), quoted);
  }

  // moatd restarts; the TPM does not.
  {
    auto store = OpenStore();
    ASSERT_TRUE(store);
    auto m = Measurements::Open(*store, file_);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ((*m)->start(), MeasurementStart::kResumed) << (*m)->start_detail();
    EXPECT_EQ((*m)->Log(), first);
    auto os = (*m)->Record(Os());
    ASSERT_TRUE(os);
    EXPECT_FALSE(*os);
    auto app = (*m)->Record(App());
    ASSERT_TRUE(app);
    EXPECT_FALSE(*app);
    EXPECT_EQ(Quoted(*store), quoted);
    EXPECT_EQ(formats::ReplayMeasurementLog((*m)->Log()).at(formats::kMoatPcr), Quoted(*store));
  }

  // A power cycle resets the PCRs; the run file survived (swtpm restarted, /run not cleared).
  ASSERT_TRUE(tpm_->Restart());
  {
    auto store = OpenStore();
    ASSERT_TRUE(store);
    auto m = Measurements::Open(*store, file_);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ((*m)->start(), MeasurementStart::kFresh) << (*m)->start_detail();
    EXPECT_TRUE((*m)->Log().entries.empty());
    auto os = (*m)->Record(Os());
    ASSERT_TRUE(os);
    EXPECT_TRUE(*os);
    EXPECT_EQ(formats::ReplayMeasurementLog((*m)->Log()).at(formats::kMoatPcr), Quoted(*store));
  }
}

TEST_F(MeasurementsTpmTest, TheDeviceIdIsTheEndorsementKeys) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  auto id = DeviceId(*store);
  ASSERT_TRUE(id) << id.error().message();
  auto ek = store->GetEndorsementKey();
  ASSERT_TRUE(ek) << ek.error().message();
  EXPECT_EQ(*id, ek->DeviceId());
  EXPECT_NE(*id, rot::DeviceIdOf(*store->GetPublicKey(rot::kIdentityKeyLabel)));
  EXPECT_TRUE(formats::ValidateDeviceId(*id));
}

}  // namespace
}  // namespace moat::device::agent
