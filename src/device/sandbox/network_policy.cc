#include "device/sandbox/network_policy.h"

#include <charconv>
#include <set>

#include <fmt/format.h>

namespace moat::device::sandbox {

Result<Ipv4Address> Ipv4Address::Parse(std::string_view text) {
  uint32_t value = 0;
  std::string_view rest = text;
  for (int part = 0; part < 4; ++part) {
    size_t end = rest.find('.');
    std::string_view digits = rest.substr(0, end);
    if ((part < 3) == (end == std::string_view::npos)) {
      return Fail(ErrorCode::kInvalidArgument, "'{}' is not an IPv4 address", text);
    }
    unsigned n = 0;
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (digits.empty() || digits.size() > 3 || ec != std::errc() ||
        ptr != digits.data() + digits.size() || n > 255 ||
        (digits.size() > 1 && digits[0] == '0')) {
      return Fail(ErrorCode::kInvalidArgument, "'{}' is not an IPv4 address", text);
    }
    value = (value << 8) | n;
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
  }
  return Ipv4Address{value};
}

std::string Ipv4Address::ToString() const {
  return fmt::format("{}.{}.{}.{}", value >> 24, (value >> 16) & 0xff, (value >> 8) & 0xff,
                     value & 0xff);
}

Result<Ipv4Subnet> Ipv4Subnet::Parse(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    return Fail(ErrorCode::kInvalidArgument, "'{}' is not an IPv4 subnet (address/prefix)", text);
  }
  MOAT_ASSIGN_OR_RETURN(Ipv4Address base, Ipv4Address::Parse(text.substr(0, slash)));
  std::string_view len_text = text.substr(slash + 1);
  unsigned len = 0;
  auto [ptr, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
  if (len_text.empty() || ec != std::errc() || ptr != len_text.data() + len_text.size() ||
      len > 32) {
    return Fail(ErrorCode::kInvalidArgument, "'{}': the prefix length must be 0..32", text);
  }
  Ipv4Subnet subnet{base, static_cast<uint8_t>(len)};
  uint32_t host_bits = len == 0 ? ~0u : ~(~0u << (32 - len));
  if ((base.value & host_bits) != 0) {
    return Fail(ErrorCode::kInvalidArgument, "'{}': the address has host bits set", text);
  }
  return subnet;
}

std::string Ipv4Subnet::ToString() const {
  return fmt::format("{}/{}", base.ToString(), prefix_len);
}

bool Ipv4Subnet::Contains(Ipv4Address a) const {
  if (prefix_len == 0) return true;
  uint32_t mask = ~0u << (32 - prefix_len);
  return (a.value & mask) == (base.value & mask);
}

bool Ipv4Subnet::Overlaps(const Ipv4Subnet& other) const {
  return Contains(other.base) || other.Contains(base);
}

bool IsUnicastDestination(Ipv4Address a) {
  uint32_t first = a.value >> 24;
  return first != 0 && first != 127 && first < 224;
}

namespace {

Result<void> CheckPorts(const std::vector<uint16_t>& ports, std::string_view field) {
  std::set<uint16_t> seen;
  for (uint16_t port : ports) {
    if (port == 0) return Fail(ErrorCode::kInvalidArgument, "network policy: {}: port 0", field);
    if (!seen.insert(port).second) {
      return Fail(ErrorCode::kInvalidArgument, "network policy: {}: port {} is listed twice", field,
                  port);
    }
  }
  return Ok();
}

}  // namespace

Result<void> NetworkPolicy::Validate() const {
  for (size_t i = 0; i < outbound.size(); ++i) {
    const NetworkDestination& d = outbound[i];
    if (!IsUnicastDestination(d.address)) {
      return Fail(ErrorCode::kInvalidArgument,
                  "network policy: outbound[{}]: {} is not a unicast peer address", i,
                  d.address.ToString());
    }
    if (d.port && *d.port == 0) {
      return Fail(ErrorCode::kInvalidArgument, "network policy: outbound[{}]: port 0", i);
    }
  }
  MOAT_TRY(CheckPorts(tcp_server_ports, "tcp_server_ports"));
  MOAT_TRY(CheckPorts(udp_server_ports, "udp_server_ports"));
  return Ok();
}

std::string NetworkPolicy::Describe() const {
  std::string out;
  for (const NetworkDestination& d : outbound) {
    out += d.port ? fmt::format("outbound {} port {}\n", d.address.ToString(), *d.port)
                  : fmt::format("outbound {} any port\n", d.address.ToString());
  }
  for (uint16_t p : tcp_server_ports) out += fmt::format("tcp server port {}\n", p);
  for (uint16_t p : udp_server_ports) out += fmt::format("udp server port {}\n", p);
  if (out.empty()) out = "nothing\n";
  return out;
}

Result<AddressPool> AddressPool::Create(Ipv4Subnet pool) {
  if (pool.prefix_len < 8 || pool.prefix_len > 30) {
    return Fail(ErrorCode::kInvalidArgument,
                "app network pool {}: the prefix length must be 8..30 (each app takes a /30)",
                pool.ToString());
  }
  return AddressPool(pool);
}

Result<Ipv4Subnet> AddressPool::Allocate() {
  for (size_t i = 0; i < used_.size(); ++i) {
    if (!used_[i]) {
      used_[i] = true;
      return Ipv4Subnet{{pool_.base.value + static_cast<uint32_t>(i * 4)}, 30};
    }
  }
  return Fail(ErrorCode::kLimitExceeded, "app network pool {} is used up ({} links)",
              pool_.ToString(), used_.size());
}

void AddressPool::Release(const Ipv4Subnet& link) {
  if (link.prefix_len != 30 || !pool_.Contains(link.base)) return;
  used_[(link.base.value - pool_.base.value) / 4] = false;
}

}  // namespace moat::device::sandbox
