// Measurements over the software key store: which case Open decides on (fresh, resumed,
// unverifiable), that a restart over the same registers extends nothing again, and that the log
// always replays to the register it describes.
#include "device/agent/measurements.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "core/encoding.h"
#include "core/file.h"
#include "device/agent/instance.h"
#include "rot/software_key_store.h"

namespace moat::device::agent {
namespace {

formats::Measurement Os(std::string_view what) {
  return {.pcr = formats::kMoatPcr,
          .kind = formats::MeasurementKind::kOs,
          .name = "moat-linux",
          .version = "1.0",
          .digest = crypto::Sha256(AsBytes(what))};
}

formats::Measurement App(std::string_view component, std::string_view what) {
  return {.pcr = formats::kMoatPcr,
          .kind = formats::MeasurementKind::kApp,
          .name = std::string(component),
          .version = "2.0",
          .digest = crypto::Sha256(AsBytes(what))};
}

constexpr std::string_view kComponent = "2b7e1516-28ae-d2a6-abf7-158809cf4f3c";

// A key store whose Extend fails: either after the register took the value (the TPM's answer
// was lost, e.g. a transport timeout) or before. Everything else goes to `inner`.
class FlakyExtendStore : public rot::KeyStore {
 public:
  enum class Mode { kLoseAnswer, kRefuse };
  FlakyExtendStore(rot::KeyStore& inner, Mode mode) : inner_(inner), mode_(mode) {}
  std::string_view backend() const override { return inner_.backend(); }
  Result<crypto::PublicKey> CreateKey(std::string_view label) override {
    return inner_.CreateKey(label);
  }
  Result<crypto::PublicKey> GetPublicKey(std::string_view label) const override {
    return inner_.GetPublicKey(label);
  }
  Result<std::vector<uint8_t>> SignDigest(std::string_view label,
                                          const crypto::Sha256Digest& digest) override {
    return inner_.SignDigest(label, digest);
  }
  Result<crypto::PrivateKey> TlsKey(std::string_view label) override {
    return inner_.TlsKey(label);
  }
  Result<void> Extend(uint32_t pcr, const crypto::Sha256Digest& digest) override {
    if (mode_ == Mode::kLoseAnswer) MOAT_TRY(inner_.Extend(pcr, digest));
    return Fail(ErrorCode::kUnavailable, "TPM: no answer");
  }
  Result<std::map<uint32_t, crypto::Sha256Digest>> ReadRegisters() const override {
    return inner_.ReadRegisters();
  }
  Result<rot::AttestationProof> Attest(std::span<const uint8_t> signing_input) override {
    return inner_.Attest(signing_input);
  }

 private:
  rot::KeyStore& inner_;
  Mode mode_;
};

class MeasurementsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tmp = TempDir::Create("moat-measure");
    ASSERT_TRUE(tmp);
    tmp_ = std::make_unique<TempDir>(std::move(*tmp));
    file_ = tmp_->path() / "run" / "m123" / "measurements.json";
    keys_ = NewStore();
  }

  // A new store object: its in-memory registers are at their reset value (a reboot).
  std::unique_ptr<rot::KeyStore> NewStore() {
    auto store = rot::SoftwareKeyStore::Open(tmp_->path() / "keys", rot::WarningOutput::kSilent);
    EXPECT_TRUE(store) << store.error().message();
    return std::move(*store);
  }

  crypto::Sha256Digest Register() {
    auto regs = keys_->ReadRegisters();
    EXPECT_TRUE(regs);
    auto it = regs->find(formats::kMoatPcr);
    return it == regs->end() ? crypto::Sha256Digest{} : it->second;
  }

  std::unique_ptr<Measurements> Open() {
    auto m = Measurements::Open(*keys_, file_);
    EXPECT_TRUE(m) << m.error().message();
    return m ? std::move(*m) : nullptr;
  }

  std::unique_ptr<TempDir> tmp_;
  std::filesystem::path file_;
  std::unique_ptr<rot::KeyStore> keys_;
};

TEST_F(MeasurementsTest, AFreshLogReplaysToTheRegister) {
  auto m = Open();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->start(), MeasurementStart::kFresh);
  EXPECT_TRUE(m->Log().entries.empty());
  EXPECT_TRUE(std::filesystem::exists(file_));
  EXPECT_EQ(std::filesystem::status(file_).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);

  auto os = m->Record(Os("os image"));
  ASSERT_TRUE(os) << os.error().message();
  EXPECT_TRUE(*os);
  auto app = m->Record(App(kComponent, "package"));
  ASSERT_TRUE(app) << app.error().message();
  EXPECT_TRUE(*app);
  // The same image again (a restart of the app, a rollback to it) is not extended twice.
  auto again = m->Record(App(kComponent, "package"));
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again);

  const formats::MeasurementLog log = m->Log();
  ASSERT_EQ(log.entries.size(), 2u);
  EXPECT_EQ(formats::ReplayMeasurementLog(log).at(formats::kMoatPcr), Register());
  m->WithLog([&](const formats::MeasurementLog& held) { EXPECT_EQ(held, log); });
  EXPECT_EQ(m->Status()["start"], "fresh");
  EXPECT_EQ(m->Status()["replays_from_reset"], true);
  EXPECT_EQ(m->Status()["log"].size(), 2u);
}

TEST_F(MeasurementsTest, ARestartOverTheSameRegistersExtendsNothingAgain) {
  {
    auto m = Open();
    ASSERT_TRUE(m->Record(Os("os image")));
    ASSERT_TRUE(m->Record(App(kComponent, "package v1")));
  }
  const crypto::Sha256Digest before = Register();

  auto m = Open();  // moatd restarted; the registers (same store object) kept their value
  ASSERT_TRUE(m);
  EXPECT_EQ(m->start(), MeasurementStart::kResumed) << m->start_detail();
  EXPECT_EQ(m->Log().entries.size(), 2u);
  auto os = m->Record(Os("os image"));
  ASSERT_TRUE(os);
  EXPECT_FALSE(*os);
  auto app = m->Record(App(kComponent, "package v1"));
  ASSERT_TRUE(app);
  EXPECT_FALSE(*app);
  EXPECT_EQ(Register(), before);

  // What is new is extended, and the log still replays.
  auto v2 = m->Record(App(kComponent, "package v2"));
  ASSERT_TRUE(v2);
  EXPECT_TRUE(*v2);
  EXPECT_NE(Register(), before);
  EXPECT_EQ(formats::ReplayMeasurementLog(m->Log()).at(formats::kMoatPcr), Register());
}

TEST_F(MeasurementsTest, ResetRegistersStartANewLog) {
  {
    auto m = Open();
    ASSERT_TRUE(m->Record(Os("os image")));
  }
  keys_ = NewStore();  // a reboot (or a TPM reset) that did not clear the run directory
  auto m = Open();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->start(), MeasurementStart::kFresh);
  EXPECT_NE(m->start_detail().find("discarded"), std::string::npos) << m->start_detail();
  EXPECT_TRUE(m->Log().entries.empty());
  auto os = m->Record(Os("os image"));
  ASSERT_TRUE(os);
  EXPECT_TRUE(*os);
  EXPECT_EQ(formats::ReplayMeasurementLog(m->Log()).at(formats::kMoatPcr), Register());
}

TEST_F(MeasurementsTest, AnEntrySavedButNeverExtendedIsDropped) {
  {
    auto m = Open();
    ASSERT_TRUE(m->Record(Os("os image")));
  }
  // moatd died between saving the log with a new entry and extending it.
  auto text = ReadFile(file_, kMaxMeasurementFileBytes);
  ASSERT_TRUE(text);
  auto j = ParseJson(*text, "test");
  ASSERT_TRUE(j);
  formats::MeasurementLog longer = *formats::MeasurementLogFromJson((*j)["log"]);
  longer.entries.push_back(App(kComponent, "never extended"));
  (*j)["log"] = formats::ToJson(longer);
  ASSERT_TRUE(AtomicWriteFile(file_, j->dump(), {.mode = 0600}));

  auto m = Open();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->start(), MeasurementStart::kResumed);
  EXPECT_NE(m->start_detail().find("dropped"), std::string::npos) << m->start_detail();
  ASSERT_EQ(m->Log().entries.size(), 1u);
  auto app = m->Record(App(kComponent, "never extended"));
  ASSERT_TRUE(app);
  EXPECT_TRUE(*app);  // measured for real this time
  EXPECT_EQ(formats::ReplayMeasurementLog(m->Log()).at(formats::kMoatPcr), Register());
}

TEST_F(MeasurementsTest, RegistersNoLogAccountsForAreReportedNotHidden) {
  // Something extended the Moat register, and the run file is gone (or another TPM's).
  ASSERT_TRUE(keys_->Extend(formats::kMoatPcr, crypto::Sha256(AsBytes("unknown"))));
  const crypto::Sha256Digest unknown = Register();
  auto m = Open();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->start(), MeasurementStart::kUnverifiable);
  EXPECT_NE(m->start_detail().find("no record"), std::string::npos) << m->start_detail();
  EXPECT_TRUE(m->Log().entries.empty());  // no invented history
  EXPECT_EQ(m->Status()["replays_from_reset"], false);

  // Measurements still happen (what runs is extended), logged from the unknown value...
  ASSERT_TRUE(m->Record(Os("os image")));
  EXPECT_EQ(Register(), crypto::ExtendPcr(unknown, Os("os image").digest));
  // ... so the log does not replay from reset, and attestation fails until a reboot.
  EXPECT_NE(formats::ReplayMeasurementLog(m->Log()).at(formats::kMoatPcr), Register());

  // A restart in this state resumes that log rather than extending the OS again.
  const crypto::Sha256Digest before = Register();
  m = Open();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->start(), MeasurementStart::kUnverifiable);
  EXPECT_EQ(m->Log().entries.size(), 1u);
  auto os = m->Record(Os("os image"));
  ASSERT_TRUE(os);
  EXPECT_FALSE(*os);
  EXPECT_EQ(Register(), before);

  // A reboot ends it.
  keys_ = NewStore();
  m = Open();
  EXPECT_EQ(m->start(), MeasurementStart::kFresh);
}

TEST_F(MeasurementsTest, ALostRunFileIsRebuiltFromThisStartsMeasurementsWhenTheyReplay) {
  {
    auto m = Open();
    ASSERT_TRUE(m->Record(Os("os image")));
    ASSERT_TRUE(m->Record(App(kComponent, "package")));
  }
  std::filesystem::remove_all(file_.parent_path());
  const crypto::Sha256Digest before = Register();
  const std::vector<formats::Measurement> expected = {Os("os image"), App(kComponent, "package")};
  auto m = Measurements::Open(*keys_, file_, expected);
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ((*m)->start(), MeasurementStart::kResumed) << (*m)->start_detail();
  EXPECT_NE((*m)->start_detail().find("rebuilt"), std::string::npos) << (*m)->start_detail();
  EXPECT_EQ((*m)->Log().entries, expected);
  for (const auto& e : expected) {
    auto r = (*m)->Record(e);
    ASSERT_TRUE(r);
    EXPECT_FALSE(*r);
  }
  EXPECT_EQ(Register(), before);
  EXPECT_TRUE(std::filesystem::exists(file_));

  // An app installed while moatd was down: the prefix (the OS, the old app) replays; the new
  // one is extended as new.
  std::filesystem::remove_all(file_.parent_path());
  const std::vector<formats::Measurement> more = {Os("os image"), App(kComponent, "package"),
                                                  App("other", "new package")};
  m = Measurements::Open(*keys_, file_, more);
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)->start(), MeasurementStart::kResumed);
  EXPECT_EQ((*m)->Log().entries.size(), 2u);
  auto added = (*m)->Record(more[2]);
  ASSERT_TRUE(added);
  EXPECT_TRUE(*added);
  EXPECT_EQ(formats::ReplayMeasurementLog((*m)->Log()).at(formats::kMoatPcr), Register());

  // Other inputs than the register's: not adopted.
  std::filesystem::remove_all(file_.parent_path());
  const std::vector<formats::Measurement> other = {Os("another os image")};
  m = Measurements::Open(*keys_, file_, other);
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)->start(), MeasurementStart::kUnverifiable);
  EXPECT_TRUE((*m)->Log().entries.empty());
}

TEST_F(MeasurementsTest, ASavedLogThatDoesNotReplayIsNotReused) {
  {
    auto m = Open();
    ASSERT_TRUE(m->Record(Os("os image")));
  }
  ASSERT_TRUE(keys_->Extend(formats::kMoatPcr, crypto::Sha256(AsBytes("behind moatd's back"))));
  auto m = Open();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->start(), MeasurementStart::kUnverifiable);
  EXPECT_NE(m->start_detail().find("does not replay"), std::string::npos) << m->start_detail();
  EXPECT_TRUE(m->Log().entries.empty());
}

TEST_F(MeasurementsTest, AMalformedRunFileIsIgnored) {
  ASSERT_TRUE(MakeDirectories(file_.parent_path(), 0700));
  ASSERT_TRUE(AtomicWriteFile(file_, "{\"format\": \"something else\"}", {.mode = 0600}));
  auto m = Open();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->start(), MeasurementStart::kFresh);
  // And rewritten in the right format.
  auto again = Open();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->start(), MeasurementStart::kFresh);
}

TEST_F(MeasurementsTest, WithoutARunFileTheLogIsInMemoryOnly) {
  auto m = Measurements::Open(*keys_, {});
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ((*m)->start(), MeasurementStart::kFresh);
  ASSERT_TRUE((*m)->Record(Os("os image")));
  EXPECT_FALSE(std::filesystem::exists(file_.parent_path()));
  // A restart cannot resume it: the register is accounted for by nothing.
  auto again = Measurements::Open(*keys_, {});
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)->start(), MeasurementStart::kUnverifiable);
}

TEST_F(MeasurementsTest, AnUnwritableRunDirectoryIsAnError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes anywhere";
  ASSERT_TRUE(MakeDirectories(tmp_->path() / "ro", 0500));
  auto m = Measurements::Open(*keys_, tmp_->path() / "ro" / "x" / "measurements.json");
  EXPECT_FALSE(m);
}

TEST_F(MeasurementsTest, OnlyTheMoatPcr) {
  auto m = Open();
  formats::Measurement boot = Os("firmware");
  boot.pcr = 0;
  auto r = m->Record(boot);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
}

TEST(AppMeasurementTest, IsWhatTheServiceRegistersForTheImage) {
  // fleet_api.cc: reference value (app, component ID, image ID = hex SHA-256 of the package).
  const std::string package = "signed package bytes";
  update::InstalledImage image;
  image.component_id = *formats::Guid::Parse(kComponent);
  image.image_id = HexEncode(crypto::Sha256(AsBytes(package)));
  image.version = "3.1";
  auto measured = AppMeasurement(image);
  ASSERT_TRUE(measured) << measured.error().message();
  const formats::Measurement& m = *measured;
  EXPECT_EQ(m.pcr, formats::kMoatPcr);
  EXPECT_EQ(m.kind, formats::MeasurementKind::kApp);
  EXPECT_EQ(m.name, std::string(kComponent));
  EXPECT_EQ(m.version, "3.1");
  EXPECT_EQ(m.digest, crypto::Sha256(AsBytes(package)));

  image.image_id = "not hex";
  auto bad = AppMeasurement(image);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
}

TEST(MeasurementFileTest, IsPerInstanceUnderTheRunDirectory) {
  Config config;
  config.state_dir = "/var/lib/moat";
  config.supervisor.run_dir = "/run/moat";
  config.supervisor.instance_id = "dev1";
  EXPECT_EQ(MeasurementFile(config), "/run/moat/dev1/measurements.json");
  config.supervisor.instance_id.clear();
  EXPECT_EQ(MeasurementFile(config), std::filesystem::path("/run/moat") /
                                         DefaultInstanceId("/var/lib/moat") / "measurements.json");
}

// A failed extend asks the register what happened: if the value went in (the answer was lost),
// the entry is kept and the log still replays; if it did not, the entry is dropped, the run file
// too, and a later Record extends it once.
TEST_F(MeasurementsTest, AFailedExtendKeepsTheLogTrueToTheRegister) {
  {
    FlakyExtendStore lost(*keys_, FlakyExtendStore::Mode::kLoseAnswer);
    auto m = Measurements::Open(lost, file_);
    ASSERT_TRUE(m) << m.error().message();
    auto recorded = (*m)->Record(Os("os image"));
    ASSERT_TRUE(recorded) << recorded.error().message();
    EXPECT_TRUE(*recorded);
    ASSERT_EQ((*m)->Log().entries.size(), 1u);
    EXPECT_EQ(formats::ReplayMeasurementLog((*m)->Log()).at(formats::kMoatPcr), Register());
  }
  const crypto::Sha256Digest after_os = Register();
  {
    FlakyExtendStore refusing(*keys_, FlakyExtendStore::Mode::kRefuse);
    auto m = Measurements::Open(refusing, file_);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_EQ((*m)->start(), MeasurementStart::kResumed);
    EXPECT_FALSE((*m)->Record(App(kComponent, "package")).has_value());
    EXPECT_EQ((*m)->Log().entries.size(), 1u);
    EXPECT_EQ(Register(), after_os);
  }
  // The run file was put back: a restart resumes the one-entry log and extends the app once.
  auto m = Open();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->start(), MeasurementStart::kResumed);
  ASSERT_EQ(m->Log().entries.size(), 1u);
  auto app = m->Record(App(kComponent, "package"));
  ASSERT_TRUE(app) << app.error().message();
  EXPECT_TRUE(*app);
  EXPECT_EQ(formats::ReplayMeasurementLog(m->Log()).at(formats::kMoatPcr), Register());
}

}  // namespace
}  // namespace moat::device::agent
