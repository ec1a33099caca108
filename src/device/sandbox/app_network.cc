// The host side of an app's network. The table goes in first and out last, so the veth never
// carries a packet the rules have not seen. Host-side links and the table are made with `ip` and
// `nft` (posix_spawn, argv vectors: no shell ever sees an app's or instance's name); the app side
// is four ioctls on a socket created inside the sandbox's network namespace, by a thread that
// entered it (the socket stays bound to that namespace, so the caller never moves).
#include "device/sandbox/app_network.h"

#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/file.h"
#include "core/log.h"
#include "core/unique_fd.h"
#include "device/sandbox/host_tool.h"

namespace moat::device::sandbox {
namespace {

// The app's end of the veth pair, as the app sees it.
constexpr char kAppInterface[] = "eth0";

uint64_t Fnv1a64(std::string_view a, std::string_view b) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 0x100000001b3ull;
    }
  };
  mix(a);
  mix(std::string_view("\0", 1));  // ("ab", "c") and ("a", "bc") differ
  mix(b);
  return h;
}

sockaddr_in SockAddr(Ipv4Address a) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(a.value);
  return sa;
}

Result<void> WriteSysctl(const std::filesystem::path& path, std::string_view value) {
  MOAT_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_WRONLY | O_CLOEXEC));
  return WriteAll(fd.get(), std::span(reinterpret_cast<const uint8_t*>(value.data()), value.size()),
                  path.string());
}

// The interface's alias from sysfs ("" if none or unreadable). Read to EOF: sysfs reports every
// attribute as 4096 bytes long.
std::string InterfaceAlias(std::string_view name) {
  const std::filesystem::path path = std::filesystem::path("/sys/class/net") / name / "ifalias";
  auto fd = OpenFile(path, O_RDONLY | O_CLOEXEC);
  if (!fd) return {};
  auto bytes = ReadAll(fd->get(), 4096, path.string());
  if (!bytes) return {};
  std::string text(bytes->begin(), bytes->end());
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

// One ioctl on `sock` for interface `name`; errors name the step.
Result<void> InterfaceIoctl(int sock, unsigned long request, ifreq& req, std::string_view step) {
  if (::ioctl(sock, request, &req) != 0) {
    return Fail(ErrnoError(step, fmt::format("{} in the sandbox", kAppInterface), errno));
  }
  return Ok();
}

}  // namespace

std::string HostInterfaceName(std::string_view instance_id, std::string_view app_name) {
  return fmt::format("mt{:012x}", Fnv1a64(instance_id, app_name) & 0xffffffffffffull);
}

std::string NftTableName(std::string_view instance_id, std::string_view app_name) {
  return fmt::format("moat/{}/{}", instance_id, app_name);
}

bool NetworkInterfaceExists(std::string_view name) {
  return ::if_nametoindex(std::string(name).c_str()) != 0;
}

std::string BuildNftRuleset(const AppNetworkConfig& config) {
  const std::string table = NftTableName(config.instance_id, config.app_name);
  const std::string dev = HostInterfaceName(config.instance_id, config.app_name);
  const std::string app = LinkAppAddress(config.link).ToString();
  std::string any_port, with_port;
  for (const NetworkDestination& d : config.policy.outbound) {
    if (d.port) {
      with_port += fmt::format("{}{} . tcp . {}, {} . udp . {}", with_port.empty() ? "" : ", ",
                               d.address.ToString(), *d.port, d.address.ToString(), *d.port);
    } else {
      any_port += fmt::format("{}{}", any_port.empty() ? "" : ", ", d.address.ToString());
    }
  }
  auto port_list = [](const std::vector<uint16_t>& ports) {
    std::string out;
    for (uint16_t p : ports) out += fmt::format("{}{}", out.empty() ? "" : ", ", p);
    return out;
  };

  std::string s;
  // Create-then-delete makes the replacement one transaction whether or not a table existed.
  s += fmt::format("table inet {0} {{}}\ndelete table inet {0}\n", table);
  s += fmt::format("table inet {} {{\n", table);
  if (!any_port.empty()) {
    s += fmt::format("  set outbound_any {{\n    type ipv4_addr\n    elements = {{ {} }}\n  }}\n",
                     any_port);
  }
  if (!with_port.empty()) {
    s += fmt::format(
        "  set outbound_port {{\n    type ipv4_addr . inet_proto . inet_service\n"
        "    elements = {{ {} }}\n  }}\n",
        with_port);
  }
  // The base chains accept by default: they exist to send this app's packets to the two decision
  // chains, and must not change anything for the rest of the host.
  s += fmt::format(
      "  chain forward {{\n"
      "    type filter hook forward priority filter; policy accept;\n"
      "    iifname \"{0}\" jump from_app\n"
      "    oifname \"{0}\" jump to_app\n"
      "  }}\n"
      "  chain input {{\n"
      "    type filter hook input priority filter; policy accept;\n"
      "    iifname \"{0}\" jump from_app\n"
      "  }}\n"
      "  chain output {{\n"
      "    type filter hook output priority filter; policy accept;\n"
      "    oifname \"{0}\" jump to_app\n"
      "  }}\n",
      dev);
  s += fmt::format(
      "  chain from_app {{\n"
      "    ct state established,related accept\n"
      "    ct state invalid drop\n"
      "    meta nfproto != ipv4 drop\n"
      "    ip saddr != {} drop\n",
      app);
  if (!any_port.empty()) s += "    ip daddr @outbound_any accept\n";
  if (!with_port.empty()) {
    s += "    meta l4proto { tcp, udp } ip daddr . meta l4proto . th dport @outbound_port accept\n";
  }
  s += "    reject with icmpx admin-prohibited\n  }\n";
  s += fmt::format(
      "  chain to_app {{\n"
      "    ct state established,related accept\n"
      "    ct state invalid drop\n"
      "    meta nfproto != ipv4 drop\n"
      "    ip daddr != {} drop\n",
      app);
  if (!config.policy.tcp_server_ports.empty()) {
    s += fmt::format("    tcp dport {{ {} }} accept\n", port_list(config.policy.tcp_server_ports));
  }
  if (!config.policy.udp_server_ports.empty()) {
    s += fmt::format("    udp dport {{ {} }} accept\n", port_list(config.policy.udp_server_ports));
  }
  s += "    drop\n  }\n";
  s += fmt::format(
      "  chain postrouting {{\n"
      "    type nat hook postrouting priority srcnat; policy accept;\n"
      "    ip saddr {} oifname != \"{}\" masquerade\n"
      "  }}\n"
      "}}\n",
      app, dev);
  return s;
}

Result<std::unique_ptr<AppNetwork>> AppNetwork::Create(AppNetworkConfig config) {
  if (!IsValidSandboxName(config.instance_id) || !IsValidSandboxName(config.app_name)) {
    return Fail(ErrorCode::kInvalidArgument, "app network: invalid instance or app name '{}/{}'",
                config.instance_id, config.app_name);
  }
  if (config.link.prefix_len != 30) {
    return Fail(ErrorCode::kInvalidArgument, "app network of '{}': the link {} is not a /30",
                config.app_name, config.link.ToString());
  }
  if (auto valid = config.policy.Validate(); !valid) {
    return Fail(valid.error().WithContext(fmt::format("app network of '{}'", config.app_name)));
  }
  auto ip = FindHostTool("ip");
  auto nft = FindHostTool("nft");
  if (!ip || !nft) {
    return Fail(ErrorCode::kFailedPrecondition,
                "app network of '{}': needs `{}` on the host (iproute2 and nftables)",
                config.app_name, !ip ? "ip" : "nft");
  }
  return std::unique_ptr<AppNetwork>(new AppNetwork(std::move(config), *ip, *nft));
}

AppNetwork::AppNetwork(AppNetworkConfig config, std::string ip, std::string nft)
    : config_(std::move(config)),
      ip_(std::move(ip)),
      nft_(std::move(nft)),
      host_if_(HostInterfaceName(config_.instance_id, config_.app_name)),
      alias_(NftTableName(config_.instance_id, config_.app_name)),
      table_(alias_) {}

AppNetwork::~AppNetwork() {
  if (auto r = Teardown(); !r) log::Warn("{}", r.error().message());
}

NetworkHook AppNetwork::Hook() {
  return [this](pid_t sandbox_pid) { return Attach(sandbox_pid); };
}

Result<void> AppNetwork::RemoveLeftoverInterface() {
  if (!NetworkInterfaceExists(host_if_)) return Ok();
  // SECURITY: only an interface marked as this app's is removed. Another name's hash colliding
  // with ours must not let one app take down another's link.
  if (std::string alias = InterfaceAlias(host_if_); alias != alias_) {
    return Fail(ErrorCode::kAlreadyExists,
                "app network of '{}': interface {} exists and is not this app's (alias '{}')",
                config_.app_name, host_if_, alias);
  }
  log::Warn("app network of '{}': removing leftover interface {}", config_.app_name, host_if_);
  auto removed = RunHostTool({ip_, "link", "del", "dev", host_if_});
  if (!removed && NetworkInterfaceExists(host_if_)) return Fail(removed.error());
  return Ok();
}

Result<void> AppNetwork::Attach(pid_t sandbox_pid) {
  if (attached_) {
    return Fail(ErrorCode::kFailedPrecondition, "app network of '{}': already attached",
                config_.app_name);
  }
  MOAT_TRY(RemoveLeftoverInterface());
  attached_ = true;
  auto steps = [&]() -> Result<void> {
    // 1. The rules, before the link exists.
    MOAT_TRY(RunHostTool({nft_, "-f", "-"}, BuildNftRuleset(config_)));
    // 2. The veth pair, its app end created directly in the sandbox's namespace.
    MOAT_TRY(RunHostTool({ip_, "link", "add", "name", host_if_, "type", "veth", "peer", "name",
                          kAppInterface, "netns", std::to_string(sandbox_pid)}));
    MOAT_TRY(RunHostTool({ip_, "link", "set", "dev", host_if_, "alias", alias_}));
    // 3. Host end: no IPv6 (not even link-local: the app must not reach the host over it), the
    //    IPv4 link address, forwarding for this interface only, then up.
    const std::filesystem::path conf = "/proc/sys/net";
    MOAT_TRY(WriteSysctl(conf / "ipv6/conf" / host_if_ / "disable_ipv6", "1"));
    MOAT_TRY(RunHostTool({ip_, "addr", "add",
                          fmt::format("{}/30", LinkHostAddress(config_.link).ToString()), "dev",
                          host_if_}));
    MOAT_TRY(WriteSysctl(conf / "ipv4/conf" / host_if_ / "forwarding", "1"));
    MOAT_TRY(RunHostTool({ip_, "link", "set", "dev", host_if_, "up"}));
    // 4. App end: address, up, default route via the host end.
    return ConfigureInside(sandbox_pid);
  };
  if (auto r = steps(); !r) {
    Error error = r.error().WithContext(fmt::format("app network of '{}'", config_.app_name));
    if (auto undone = Teardown(); !undone) log::Warn("{}", undone.error().message());
    return Fail(std::move(error));
  }
  return Ok();
}

Result<void> AppNetwork::ConfigureInside(pid_t sandbox_pid) {
  MOAT_ASSIGN_OR_RETURN(
      UniqueFd ns, OpenFile(fmt::format("/proc/{}/ns/net", sandbox_pid), O_RDONLY | O_CLOEXEC));
  Result<void> result = Ok();
  // setns(CLONE_NEWNET) moves only the calling thread, so a throwaway thread enters the sandbox's
  // namespace; the caller (maybe moatd's supervisor thread) stays where it is.
  std::thread worker;
  auto body = [&] {
    result = [&]() -> Result<void> {
      if (::setns(ns.get(), CLONE_NEWNET) != 0) {
        return Fail(ErrnoError("setns", "the sandbox's network namespace", errno));
      }
      UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      if (!sock) return Fail(ErrnoError("socket", "the sandbox's network namespace", errno));
      ifreq req{};
      std::memcpy(req.ifr_name, kAppInterface, sizeof kAppInterface);
      sockaddr_in addr = SockAddr(LinkAppAddress(config_.link));
      std::memcpy(&req.ifr_addr, &addr, sizeof addr);
      MOAT_TRY(InterfaceIoctl(sock.get(), SIOCSIFADDR, req, "SIOCSIFADDR"));
      sockaddr_in mask = SockAddr(Ipv4Address{~0u << 2});
      std::memcpy(&req.ifr_netmask, &mask, sizeof mask);
      MOAT_TRY(InterfaceIoctl(sock.get(), SIOCSIFNETMASK, req, "SIOCSIFNETMASK"));
      MOAT_TRY(InterfaceIoctl(sock.get(), SIOCGIFFLAGS, req, "SIOCGIFFLAGS"));
      req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP);
      MOAT_TRY(InterfaceIoctl(sock.get(), SIOCSIFFLAGS, req, "SIOCSIFFLAGS"));
      rtentry route{};
      sockaddr_in any = SockAddr(Ipv4Address{0});
      sockaddr_in gateway = SockAddr(LinkHostAddress(config_.link));
      std::memcpy(&route.rt_dst, &any, sizeof any);
      std::memcpy(&route.rt_genmask, &any, sizeof any);
      std::memcpy(&route.rt_gateway, &gateway, sizeof gateway);
      route.rt_flags = RTF_UP | RTF_GATEWAY;
      char dev[sizeof kAppInterface];
      std::memcpy(dev, kAppInterface, sizeof dev);
      route.rt_dev = dev;
      if (::ioctl(sock.get(), SIOCADDRT, &route) != 0) {
        return Fail(
            ErrnoError("SIOCADDRT default route", "the sandbox's network namespace", errno));
      }
      return Ok();
    }();
  };
  try {
    worker = std::thread(body);
  } catch (const std::system_error& e) {
    return Fail(ErrorCode::kIo, "app network of '{}': starting a thread: {}", config_.app_name,
                e.what());
  }
  worker.join();
  return result;
}

Result<void> AppNetwork::Teardown() {
  if (!attached_) return Ok();
  Result<void> result = Ok();
  // The sandbox's namespace takes its veth end (and so the pair) down when it is destroyed, but
  // that happens asynchronously; remove it now if it is still there and still ours.
  if (NetworkInterfaceExists(host_if_) && InterfaceAlias(host_if_) == alias_) {
    auto removed = RunHostTool({ip_, "link", "del", "dev", host_if_});
    if (!removed && NetworkInterfaceExists(host_if_)) result = Fail(removed.error());
  }
  // Create-then-delete: succeeds whether or not the table exists.
  auto deleted = RunHostTool({nft_, "-f", "-"},
                             fmt::format("table inet {0} {{}}\ndelete table inet {0}\n", table_));
  if (!deleted && result) result = Fail(deleted.error());
  if (!result) {
    return Fail(
        result.error().WithContext(fmt::format("app network of '{}': teardown", config_.app_name)));
  }
  attached_ = false;
  return Ok();
}

Result<InstanceNetwork> ListInstanceNetwork(std::string_view instance_id) {
  if (instance_id.empty() || instance_id.find('/') != std::string_view::npos) {
    return Fail(ErrorCode::kInvalidArgument, "'{}' is not a valid instance id", instance_id);
  }
  const std::string prefix = fmt::format("moat/{}/", instance_id);
  InstanceNetwork out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/sys/class/net", ec)) {
    const std::string name = entry.path().filename().string();
    if (InterfaceAlias(name).starts_with(prefix)) out.interfaces.push_back(name);
  }
  if (ec) return Fail(ErrorCode::kIo, "listing /sys/class/net: {}", ec.message());
  auto nft = FindHostTool("nft");
  if (!nft) {
    // Without nft no app network was ever made here (AppNetwork::Create needs it): no tables.
    std::sort(out.interfaces.begin(), out.interfaces.end());
    return out;
  }
  MOAT_ASSIGN_OR_RETURN(std::string tables, RunHostTool({nft->string(), "list", "tables"}));
  // One "table <family> <name>" per line.
  for (size_t pos = 0; pos < tables.size();) {
    size_t end = tables.find('\n', pos);
    if (end == std::string::npos) end = tables.size();
    std::string_view line(tables.data() + pos, end - pos);
    pos = end + 1;
    constexpr std::string_view kInet = "table inet ";
    if (line.starts_with(kInet) && line.substr(kInet.size()).starts_with(prefix)) {
      out.tables.emplace_back(line.substr(kInet.size()));
    }
  }
  std::sort(out.interfaces.begin(), out.interfaces.end());
  std::sort(out.tables.begin(), out.tables.end());
  return out;
}

Result<InstanceNetwork> RemoveInstanceNetwork(std::string_view instance_id) {
  MOAT_ASSIGN_OR_RETURN(InstanceNetwork found, ListInstanceNetwork(instance_id));
  if (found.interfaces.empty() && found.tables.empty()) return found;
  auto ip = FindHostTool("ip");
  auto nft = FindHostTool("nft");  // found: there are tables
  if (!ip && !found.interfaces.empty()) {
    return Fail(ErrorCode::kFailedPrecondition,
                "ip (iproute2) is not installed: cannot remove interfaces {}",
                fmt::join(found.interfaces, ", "));
  }
  for (const std::string& dev : found.interfaces) {
    log::Warn("removing interface {} left by an earlier run of moatd instance '{}'", dev,
              instance_id);
    auto removed = RunHostTool({ip->string(), "link", "del", "dev", dev});
    if (!removed && NetworkInterfaceExists(dev)) return Fail(removed.error());
  }
  for (const std::string& table : found.tables) {
    log::Warn("removing nftables table {} left by an earlier run of moatd instance '{}'", table,
              instance_id);
    MOAT_TRY(RunHostTool({nft->string(), "-f", "-"},
                         fmt::format("table inet {0} {{}}\ndelete table inet {0}\n", table)));
  }
  return found;
}

}  // namespace moat::device::sandbox
