// The device-authentication channel's parser (untrusted app input: every malformed shape gets
// its own error) and its server over a real socketpair (no sandbox; the sandboxed app is in
// supervisor_test.cc): answers, refusals passed through, the rate limit, and an app that never
// reads its answers.
#include "device/supervisor/device_auth.h"

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/encoding.h"
#include "crypto/digest.h"
#include "crypto/key.h"

namespace moat::device::supervisor {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

const formats::Guid kTenant = *formats::Guid::Parse("7d3a1c2e-1111-4222-8333-444455556666");
const formats::Guid kOther = *formats::Guid::Parse("00000000-aaaa-4bbb-8ccc-dddddddddddd");
const formats::Guid kApp = *formats::Guid::Parse("aaaaaaaa-0000-4000-8000-000000000001");

std::string HexOf(const std::array<uint8_t, 32>& d) { return HexEncode(d); }

TEST(DeviceAuthRequestTest, ParsesChainAndSign) {
  auto chain = formats::ParseDeviceAuthRequest("chain\n");
  ASSERT_TRUE(chain) << chain.error().message();
  EXPECT_EQ(chain->kind, formats::DeviceAuthRequest::Kind::kChain);
  ASSERT_TRUE(formats::ParseDeviceAuthRequest("chain"));  // the final newline is optional
  crypto::Sha256Digest d = crypto::Sha256(std::string_view("hello"));
  auto sign = formats::ParseDeviceAuthRequest("sign " + HexEncode(d) + "\n");
  ASSERT_TRUE(sign) << sign.error().message();
  EXPECT_EQ(sign->kind, formats::DeviceAuthRequest::Kind::kSign);
  EXPECT_EQ(HexOf(sign->digest), HexEncode(d));
}

TEST(DeviceAuthRequestTest, RefusesEveryMalformedShape) {
  const std::string hex(64, 'a');
  struct Case {
    std::string message;
    ErrorCode code;
    std::string error;
  };
  const Case cases[] = {
      {"", ErrorCode::kInvalidArgument, "unknown request (no word)"},
      {"\n", ErrorCode::kInvalidArgument, "unknown request (no word)"},
      {"chain\n\n", ErrorCode::kInvalidArgument, "unknown request 'chain'"},
      {"CHAIN", ErrorCode::kInvalidArgument, "unknown request (no word)"},
      {"chain ", ErrorCode::kInvalidArgument, "unknown request 'chain'"},
      {" chain", ErrorCode::kInvalidArgument, "unknown request (no word)"},
      {std::string("chain\0", 6), ErrorCode::kInvalidArgument, "unknown request 'chain'"},
      {"key", ErrorCode::kInvalidArgument, "unknown request 'key'"},
      {"sign", ErrorCode::kInvalidArgument, "unknown request 'sign'"},
      {"sign ", ErrorCode::kInvalidArgument, "(0 characters given)"},
      {"sign " + hex.substr(1), ErrorCode::kInvalidArgument, "(63 characters given)"},
      {"sign " + hex + "a", ErrorCode::kInvalidArgument, "(65 characters given)"},
      {"sign " + std::string(64, 'A'), ErrorCode::kInvalidArgument, "64 lower-case hex digits"},
      {"sign " + std::string(63, 'a') + "g", ErrorCode::kInvalidArgument, "64 lower-case hex"},
      {"sign  " + hex, ErrorCode::kInvalidArgument, "(65 characters given)"},
      {"sign " + hex + " ", ErrorCode::kInvalidArgument, "(65 characters given)"},
      {"sign " + hex + "\r\n", ErrorCode::kInvalidArgument, "(65 characters given)"},
      {"sign " + std::string(63, 'a') + std::string("\0", 1), ErrorCode::kInvalidArgument,
       "64 lower-case hex"},
      {std::string(formats::kMaxDeviceAuthRequest + 1, 'a'), ErrorCode::kLimitExceeded,
       "request of 129 bytes (at most 128)"},
  };
  for (const Case& c : cases) {
    auto r = formats::ParseDeviceAuthRequest(c.message);
    ASSERT_FALSE(r) << "accepted: '" << c.message << "'";
    EXPECT_EQ(r.error().code(), c.code) << c.message;
    EXPECT_THAT(r.error().message(), HasSubstr(c.error)) << c.message;
  }
}

// An authority with a real P-256 key; the device "belongs" to kTenant.
class FakeAuthority : public DeviceAuthority {
 public:
  FakeAuthority() : key_(*crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256)) {}
  Result<std::string> CertificateChainPem(const formats::Guid& tenant) override {
    MOAT_TRY(Check(tenant));
    return std::string("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
  }
  Result<std::vector<uint8_t>> SignDigest(const formats::Guid& tenant,
                                          const std::array<uint8_t, 32>& digest) override {
    MOAT_TRY(Check(tenant));
    ++signatures;
    return key_.SignDigest(digest);
  }
  Result<void> Check(const formats::Guid& tenant) const {
    if (!has_certificate) {
      return Fail(ErrorCode::kFailedPrecondition, "the device has no valid client certificate");
    }
    if (tenant != kTenant) {
      return Fail(ErrorCode::kPermissionDenied, "the device does not belong to tenant {}",
                  tenant.ToString());
    }
    return Ok();
  }
  crypto::PublicKey public_key() const { return key_.public_key(); }
  std::atomic<bool> has_certificate = true;
  std::atomic<int> signatures = 0;

 private:
  crypto::PrivateKey key_;
};

class DeviceAuthServerTest : public ::testing::Test {
 protected:
  void Start(DeviceAuthLimits limits = {}) {
    auto server = DeviceAuthServer::Create(authority_, limits);
    ASSERT_TRUE(server) << server.error().message();
    server_ = std::move(*server);
  }
  // A channel for kApp with `tenant`; returns the app's end.
  UniqueFd Attach(const formats::Guid& tenant) {
    int pair[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
    server_->Attach(kApp, tenant, UniqueFd(pair[0]));
    return UniqueFd(pair[1]);
  }
  static std::string Ask(const UniqueFd& fd, std::string_view request) {
    EXPECT_EQ(::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) return "(no answer)";
    std::string answer(formats::kMaxDeviceAuthAnswer, '\0');
    ssize_t n = ::recv(fd.get(), answer.data(), answer.size(), 0);
    answer.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return answer;
  }

  std::shared_ptr<FakeAuthority> authority_ = std::make_shared<FakeAuthority>();
  std::unique_ptr<DeviceAuthServer> server_;
};

TEST_F(DeviceAuthServerTest, AnswersChainAndSignaturesThatVerify) {
  Start();
  UniqueFd app = Attach(kTenant);
  EXPECT_EQ(Ask(app, "chain\n"),
            "ok\n-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
  crypto::Sha256Digest d = crypto::Sha256(std::string_view("TLS 1.3, client CertificateVerify"));
  std::string answer = Ask(app, "sign " + HexEncode(d) + "\n");
  ASSERT_THAT(answer, StartsWith("ok "));
  ASSERT_TRUE(answer.ends_with("\n"));
  auto signature = HexDecode(answer.substr(3, answer.size() - 4));
  ASSERT_TRUE(signature);
  EXPECT_TRUE(authority_->public_key().VerifyDigest(d, *signature));
}

TEST_F(DeviceAuthServerTest, PassesRefusalsOnAndAnswersMalformedRequests) {
  Start();
  UniqueFd app = Attach(kOther);
  EXPECT_EQ(Ask(app, "chain"),
            "error the device does not belong to tenant " + kOther.ToString() + "\n");
  EXPECT_EQ(Ask(app, "sign " + std::string(64, '0')),
            "error the device does not belong to tenant " + kOther.ToString() + "\n");
  app = Attach(kTenant);  // a new run replaces the old channel
  authority_->has_certificate = false;
  EXPECT_EQ(Ask(app, "chain"), "error the device has no valid client certificate\n");
  authority_->has_certificate = true;
  EXPECT_THAT(Ask(app, "sign 12"), StartsWith("error malformed request: 'sign' needs"));
  EXPECT_EQ(Ask(app, std::string(500, 'x')),
            "error malformed request: request of 500 bytes (at most 128)\n");
  EXPECT_EQ(Ask(app, "give me the key"),
            "error malformed request: unknown request 'give' (chain, "
            "sign <digest>)\n");
  EXPECT_EQ(authority_->signatures, 0);
  EXPECT_THAT(Ask(app, "chain"), StartsWith("ok\n"));  // still served
}

TEST_F(DeviceAuthServerTest, RateLimitsRequestsWithoutReachingTheAuthority) {
  // A refill so slow that the test's own duration cannot add a token.
  Start({.burst = 3, .per_second = 0.001});
  UniqueFd app = Attach(kTenant);
  const std::string sign = "sign " + std::string(64, 'b');
  for (int i = 0; i < 3; ++i) EXPECT_THAT(Ask(app, sign), StartsWith("ok ")) << i;
  EXPECT_EQ(Ask(app, sign), "error rate limit exceeded: too many requests; retry later\n");
  EXPECT_EQ(Ask(app, "chain"), "error rate limit exceeded: too many requests; retry later\n");
  EXPECT_EQ(authority_->signatures, 3);
}

TEST_F(DeviceAuthServerTest, AnAppThatNeverReadsIsCutOffAndDetachCloses) {
  Start();
  UniqueFd app = Attach(kTenant);
  // Requests without reading: the answers fill the app's receive buffer, then the server's send
  // would block and it closes the channel instead of buffering.
  const std::string chain = "chain";
  bool closed = false;
  for (int i = 0; i < 100000 && !closed; ++i) {
    if (::send(app.get(), chain.data(), chain.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
      if (errno == EAGAIN) {
        pollfd p{app.get(), POLLOUT, 0};
        ::poll(&p, 1, 100);
        continue;
      }
      closed = true;  // EPIPE: the server closed its end
    }
    if (server_->ChannelCount() == 0) closed = true;
  }
  EXPECT_TRUE(closed);
  // Detach of a live channel: the app reads EOF.
  UniqueFd second = Attach(kTenant);
  ASSERT_EQ(server_->ChannelCount(), 1u);
  server_->Detach(kApp);
  pollfd p{second.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1);
  char byte;
  EXPECT_EQ(::recv(second.get(), &byte, 1, 0), 0);
}

}  // namespace
}  // namespace moat::device::supervisor
