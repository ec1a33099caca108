#include "device/sandbox/network_policy.h"

#include <gtest/gtest.h>

namespace moat::device::sandbox {
namespace {

Ipv4Address Ip(std::string_view text) { return Ipv4Address::Parse(text).value(); }

TEST(Ipv4AddressTest, ParsesDottedDecimalOnly) {
  EXPECT_EQ(Ip("10.213.0.1").value, 0x0ad50001u);
  EXPECT_EQ(Ip("255.255.255.255").ToString(), "255.255.255.255");
  EXPECT_EQ(Ip("0.0.0.0").value, 0u);
  for (std::string_view bad : {"", "1.2.3", "1.2.3.4.5", "1.2.3.256", "01.2.3.4", "1.2.3.4 ",
                               "a.b.c.d", "1..3.4", "::1", "1.2.3.-4"}) {
    auto parsed = Ipv4Address::Parse(bad);
    ASSERT_FALSE(parsed) << bad;
    EXPECT_EQ(parsed.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(parsed.error().message(), fmt::format("'{}' is not an IPv4 address", bad));
  }
}

TEST(Ipv4SubnetTest, ParsesAndRefusesHostBits) {
  auto pool = Ipv4Subnet::Parse("10.213.0.0/16");
  ASSERT_TRUE(pool);
  EXPECT_EQ(pool->ToString(), "10.213.0.0/16");
  EXPECT_EQ(pool->Size(), 65536u);
  EXPECT_TRUE(pool->Contains(Ip("10.213.255.254")));
  EXPECT_FALSE(pool->Contains(Ip("10.214.0.0")));
  EXPECT_TRUE(pool->Overlaps(Ipv4Subnet::Parse("10.0.0.0/8").value()));
  EXPECT_FALSE(pool->Overlaps(Ipv4Subnet::Parse("10.214.0.0/30").value()));
  EXPECT_TRUE(Ipv4Subnet::Parse("0.0.0.0/0"));
  EXPECT_TRUE(Ipv4Subnet::Parse("1.2.3.4/32"));
  EXPECT_EQ(Ipv4Subnet::Parse("10.213.0.1/16").error().message(),
            "'10.213.0.1/16': the address has host bits set");
  EXPECT_EQ(Ipv4Subnet::Parse("10.213.0.0/33").error().message(),
            "'10.213.0.0/33': the prefix length must be 0..32");
  EXPECT_EQ(Ipv4Subnet::Parse("10.213.0.0").error().message(),
            "'10.213.0.0' is not an IPv4 subnet (address/prefix)");
}

TEST(NetworkPolicyTest, ValidatesPortsAndDestinations) {
  NetworkPolicy p;
  EXPECT_TRUE(p.Validate());
  EXPECT_EQ(p.Describe(), "nothing\n");
  p.outbound = {{Ip("192.0.2.10"), 443}, {Ip("198.51.100.7"), std::nullopt}};
  p.tcp_server_ports = {8080};
  p.udp_server_ports = {5353};
  EXPECT_TRUE(p.Validate());
  EXPECT_EQ(p.Describe(),
            "outbound 192.0.2.10 port 443\noutbound 198.51.100.7 any port\ntcp server port 8080\n"
            "udp server port 5353\n");

  for (std::string_view bad : {"127.0.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255"}) {
    NetworkPolicy q = p;
    q.outbound.push_back({Ip(bad), std::nullopt});
    EXPECT_EQ(q.Validate().error().message(),
              fmt::format("network policy: outbound[2]: {} is not a unicast peer address", bad));
  }
  NetworkPolicy q = p;
  q.outbound[0].port = 0;
  EXPECT_EQ(q.Validate().error().message(), "network policy: outbound[0]: port 0");
  q = p;
  q.tcp_server_ports.push_back(8080);
  EXPECT_EQ(q.Validate().error().message(),
            "network policy: tcp_server_ports: port 8080 is listed twice");
  q = p;
  q.udp_server_ports = {0};
  EXPECT_EQ(q.Validate().error().message(), "network policy: udp_server_ports: port 0");
}

TEST(AddressPoolTest, HandsOutDistinctSlash30sAndReusesReleasedOnes) {
  EXPECT_EQ(AddressPool::Create(Ipv4Subnet::Parse("10.0.0.0/31").value()).error().code(),
            ErrorCode::kInvalidArgument);
  auto pool = AddressPool::Create(Ipv4Subnet::Parse("10.213.0.0/28").value());
  ASSERT_TRUE(pool);
  std::vector<Ipv4Subnet> links;
  for (int i = 0; i < 4; ++i) links.push_back(pool->Allocate().value());
  EXPECT_EQ(links[0].ToString(), "10.213.0.0/30");
  EXPECT_EQ(links[3].ToString(), "10.213.0.12/30");
  EXPECT_EQ(LinkHostAddress(links[1]).ToString(), "10.213.0.5");
  EXPECT_EQ(LinkAppAddress(links[1]).ToString(), "10.213.0.6");
  auto full = pool->Allocate();
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(full.error().message(), "app network pool 10.213.0.0/28 is used up (4 links)");
  pool->Release(links[2]);
  pool->Release(Ipv4Subnet::Parse("10.99.0.0/30").value());  // not the pool's: ignored
  EXPECT_EQ(pool->Allocate().value(), links[2]);
}

}  // namespace
}  // namespace moat::device::sandbox
