// NetworkPolicy: what a sandboxed app may reach on the network and which ports it may serve, as
// plain, printable values; and the per-app address allocation. The host side that enforces a
// policy in the kernel (veth pair + nftables) is app_network.h.
//
// A policy holds addresses, never host names: the supervisor's caller (moatd) resolves the
// manifest's host names before the launch, and the rules are fixed for the life of the sandbox
// (a host whose address changes needs a restart of the app; re-resolution is not done).
//
// IPv4 only. The app's link is an IPv4 /30; IPv6 destinations are refused by the policy builder
// (device_supervisor) rather than silently unreachable. Forwarding IPv6 would need the host-wide
// net.ipv6.conf.all.forwarding switch, which also changes how every host interface treats router
// advertisements.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace moat::device::sandbox {

// An IPv4 address, `value` in host byte order.
struct Ipv4Address {
  uint32_t value = 0;

  // Dotted decimal, four parts 0..255, no leading zeros ("10.0.0.1"). kInvalidArgument.
  static Result<Ipv4Address> Parse(std::string_view text);
  std::string ToString() const;
  auto operator<=>(const Ipv4Address&) const = default;
};

// An IPv4 network: `base` with the host bits zero, and its prefix length (0..32).
struct Ipv4Subnet {
  Ipv4Address base;
  uint8_t prefix_len = 32;

  // "10.213.0.0/16"; host bits set in the address are an error (kInvalidArgument).
  static Result<Ipv4Subnet> Parse(std::string_view text);
  std::string ToString() const;
  uint64_t Size() const { return uint64_t{1} << (32 - prefix_len); }
  bool Contains(Ipv4Address a) const;
  bool Overlaps(const Ipv4Subnet& other) const;
  auto operator<=>(const Ipv4Subnet&) const = default;
};

// False for addresses that can never be a peer behind the app's link: "this network" (0/8),
// loopback (127/8: the app has its own lo), multicast and reserved/broadcast (224/3).
bool IsUnicastDestination(Ipv4Address a);

// One allowed outbound destination: an address, and a port (TCP and UDP) or any port.
struct NetworkDestination {
  Ipv4Address address;
  std::optional<uint16_t> port;  // nullopt: any port

  auto operator<=>(const NetworkDestination&) const = default;
};

// Everything an app's network grants. Anything not listed is denied: no other destination (the
// host itself included: no DNS, no moatd API, nothing), no other inbound port.
struct NetworkPolicy {
  std::vector<NetworkDestination> outbound;  // the app may open connections (TCP, UDP) to these
  std::vector<uint16_t> tcp_server_ports;    // peers may connect to the app on these
  std::vector<uint16_t> udp_server_ports;    // peers may send datagrams to the app on these

  // Ports are 1..65535; destinations are unicast (not 0.0.0.0/8, 127/8, multicast, broadcast).
  // Errors are kInvalidArgument and name the field.
  Result<void> Validate() const;
  // One line per grant, e.g. "outbound 192.0.2.10 port 443", "tcp server port 8080".
  std::string Describe() const;
  bool operator==(const NetworkPolicy&) const = default;
};

// The pool moatd takes app links from unless configured otherwise. Several moatd instances on one
// host must be given disjoint pools.
inline constexpr std::string_view kDefaultAppNetworkPool = "10.213.0.0/16";

// Hands out /30 app links from a pool. Not thread-safe. The first address of each /30 is the
// network, the second the host side, the third the app, the last broadcast.
class AddressPool {
 public:
  // The pool must be /8../30 (kInvalidArgument otherwise).
  static Result<AddressPool> Create(Ipv4Subnet pool);

  // The lowest free /30; kLimitExceeded when the pool is used up.
  Result<Ipv4Subnet> Allocate();
  // Returns a /30 this pool handed out; anything else is ignored.
  void Release(const Ipv4Subnet& link);
  const Ipv4Subnet& pool() const { return pool_; }

 private:
  explicit AddressPool(Ipv4Subnet pool) : pool_(pool), used_(pool.Size() / 4, false) {}
  Ipv4Subnet pool_;
  std::vector<bool> used_;  // one per /30
};

// The host's and the app's address on a /30 link.
inline Ipv4Address LinkHostAddress(const Ipv4Subnet& link) { return {link.base.value + 1}; }
inline Ipv4Address LinkAppAddress(const Ipv4Subnet& link) { return {link.base.value + 2}; }

}  // namespace moat::device::sandbox
