// The app network: names and the generated ruleset (pure), then real sandboxes behind a real
// veth pair and nftables table (root; skipped without `ip`/`nft`). The "outside world" is a
// network namespace the test makes itself: a thread unshares one, and a test-made veth pair links
// it to the host; nothing else on the host is touched, and everything is removed again.
#include "device/sandbox/app_network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/file.h"
#include "device/sandbox/host_tool.h"

namespace moat::device::sandbox {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

Ipv4Address Ip(std::string_view text) { return Ipv4Address::Parse(text).value(); }

TEST(AppNetworkNamesTest, InterfaceNamesFitAndDifferPerInstanceAndApp) {
  std::string name = HostInterfaceName("moat0", "4a1e5e2c-1f5a-4c1b-9d3f-0e2b6b6f1a77");
  EXPECT_EQ(name.size(), 14u);
  EXPECT_LT(name.size(), size_t{IFNAMSIZ});
  EXPECT_THAT(name, StartsWith("mt"));
  EXPECT_EQ(name, HostInterfaceName("moat0", "4a1e5e2c-1f5a-4c1b-9d3f-0e2b6b6f1a77"));
  EXPECT_NE(name, HostInterfaceName("moat1", "4a1e5e2c-1f5a-4c1b-9d3f-0e2b6b6f1a77"));
  EXPECT_NE(HostInterfaceName("ab", "c"), HostInterfaceName("a", "bc"));
  EXPECT_EQ(NftTableName("moat0", "app"), "moat/moat0/app");
}

TEST(AppNetworkRulesetTest, TheRulesetListsExactlyThePolicy) {
  AppNetworkConfig config;
  config.instance_id = "moat0";
  config.app_name = "app";
  config.link = Ipv4Subnet::Parse("10.213.0.4/30").value();
  config.policy.outbound = {{Ip("192.0.2.10"), std::nullopt}, {Ip("198.51.100.7"), 443}};
  config.policy.tcp_server_ports = {8080, 8443};
  config.policy.udp_server_ports = {5683};
  const std::string dev = HostInterfaceName("moat0", "app");
  std::string expected = fmt::format(R"(table inet moat/moat0/app {{}}
delete table inet moat/moat0/app
table inet moat/moat0/app {{
  set outbound_any {{
    type ipv4_addr
    elements = {{ 192.0.2.10 }}
  }}
  set outbound_port {{
    type ipv4_addr . inet_proto . inet_service
    elements = {{ 198.51.100.7 . tcp . 443, 198.51.100.7 . udp . 443 }}
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{0}" jump from_app
    oifname "{0}" jump to_app
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{0}" jump from_app
  }}
  chain output {{
    type filter hook output priority filter; policy accept;
    oifname "{0}" jump to_app
  }}
  chain from_app {{
    ct state established,related accept
    ct state invalid drop
    meta nfproto != ipv4 drop
    ip saddr != 10.213.0.6 drop
    ip daddr @outbound_any accept
    meta l4proto {{ tcp, udp }} ip daddr . meta l4proto . th dport @outbound_port accept
    reject with icmpx admin-prohibited
  }}
  chain to_app {{
    ct state established,related accept
    ct state invalid drop
    meta nfproto != ipv4 drop
    ip daddr != 10.213.0.6 drop
    tcp dport {{ 8080, 8443 }} accept
    udp dport {{ 5683 }} accept
    drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.213.0.6 oifname != "{0}" masquerade
  }}
}}
)",
                                     dev);
  EXPECT_EQ(BuildNftRuleset(config), expected);

  // An empty policy: no sets, no accept rules, everything rejected or dropped.
  config.policy = {};
  std::string empty = BuildNftRuleset(config);
  EXPECT_THAT(empty, Not(HasSubstr("set ")));
  EXPECT_THAT(empty, Not(HasSubstr("dport")));
  EXPECT_THAT(empty, HasSubstr("ip saddr != 10.213.0.6 drop\n    reject with icmpx"));
}

TEST(AppNetworkRulesetTest, CreateRefusesBadConfigs) {
  AppNetworkConfig config;
  config.instance_id = "moat0";
  config.app_name = "app";
  config.link = Ipv4Subnet::Parse("10.213.0.0/29").value();
  EXPECT_EQ(AppNetwork::Create(config).error().message(),
            "app network of 'app': the link 10.213.0.0/29 is not a /30");
  config.link = Ipv4Subnet::Parse("10.213.0.0/30").value();
  config.policy.tcp_server_ports = {0};
  EXPECT_EQ(AppNetwork::Create(config).error().message(),
            "app network of 'app': network policy: tcp_server_ports: port 0");
  config.policy = {};
  config.app_name = "a/b";
  EXPECT_EQ(AppNetwork::Create(config).error().code(), ErrorCode::kInvalidArgument);
}

TEST(HostToolTest, RunsWithStdinAndReportsFailures) {
  auto cat = FindHostTool("cat");
  ASSERT_TRUE(cat);
  EXPECT_EQ(RunHostTool({cat->string()}, "to stdin").value_or("?"), "to stdin");
  auto sh = FindHostTool("false");
  ASSERT_TRUE(sh);
  auto failed = RunHostTool({sh->string()});
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code(), ErrorCode::kIo);
  EXPECT_THAT(failed.error().message(), HasSubstr("failed (status 1)"));
  EXPECT_EQ(RunHostTool({"relative"}).error().code(), ErrorCode::kInvalidArgument);
}

// ---- Real kernel ----

// A thread living in a network namespace of its own: sockets it creates stay in that namespace,
// so the test can use them from any thread. The namespace ends with the thread and its sockets.
class NamespaceThread {
 public:
  NamespaceThread() : thread_([this] { Loop(); }) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return tid_ != 0; });
  }
  ~NamespaceThread() {
    Run(nullptr);
    thread_.join();
  }
  bool ok() const { return unshare_errno_ == 0; }
  pid_t tid() const { return tid_; }

  // Runs `fn` on the thread (in its namespace) and waits; nullptr ends the thread.
  void Run(std::function<void()> fn) {
    std::unique_lock lock(mu_);
    task_ = std::move(fn);
    quit_ = !task_;
    pending_ = true;
    cv_.notify_all();
    cv_.wait(lock, [this] { return !pending_; });
  }

 private:
  void Loop() {
    int err = ::unshare(CLONE_NEWNET) == 0 ? 0 : errno;
    std::unique_lock lock(mu_);
    unshare_errno_ = err;
    tid_ = ::gettid();
    cv_.notify_all();
    for (;;) {
      cv_.wait(lock, [this] { return pending_; });
      if (quit_) {
        pending_ = false;
        cv_.notify_all();
        return;
      }
      task_();
      pending_ = false;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> task_;
  bool pending_ = false;
  bool quit_ = false;
  int unshare_errno_ = 0;
  pid_t tid_ = 0;
  std::thread thread_;
};

sockaddr_in SockAddr(std::string_view ip, uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(Ip(ip).value);
  return sa;
}

// Sets an address on `dev` of the caller's namespace (an alias "eth0:1" for a second one).
void SetAddress(int sock, const char* dev, std::string_view ip, std::string_view mask) {
  ifreq req{};
  std::strncpy(req.ifr_name, dev, IFNAMSIZ - 1);
  sockaddr_in a = SockAddr(ip, 0);
  std::memcpy(&req.ifr_addr, &a, sizeof a);
  ASSERT_EQ(::ioctl(sock, SIOCSIFADDR, &req), 0) << dev << ": " << strerror(errno);
  sockaddr_in m = SockAddr(mask, 0);
  std::memcpy(&req.ifr_netmask, &m, sizeof m);
  ASSERT_EQ(::ioctl(sock, SIOCSIFNETMASK, &req), 0) << strerror(errno);
  ASSERT_EQ(::ioctl(sock, SIOCGIFFLAGS, &req), 0) << strerror(errno);
  req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP);
  ASSERT_EQ(::ioctl(sock, SIOCSIFFLAGS, &req), 0) << strerror(errno);
}

// A TCP listener (or UDP socket) on ip:port answering each connection (datagram) with
// "server <ip>:<port>" and recording the peer's address. Serves on its own thread.
class Listener {
 public:
  Listener(UniqueFd sock, std::string ip, uint16_t port)
      : sock_(std::move(sock)), name_(fmt::format("{}:{}", ip, port)) {
    int one = 1;
    ::setsockopt(sock_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int type = 0;
    socklen_t type_len = sizeof type;
    ::getsockopt(sock_.get(), SOL_SOCKET, SO_TYPE, &type, &type_len);
    udp_ = type == SOCK_DGRAM;
    sockaddr_in sa = SockAddr(ip, port);
    ok_ = ::bind(sock_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
          (udp_ || ::listen(sock_.get(), 8) == 0);
    stop_.Reset(::eventfd(0, EFD_CLOEXEC));
    thread_ = std::thread([this] { Serve(); });
  }
  ~Listener() {
    uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }
  bool ok() const { return ok_; }
  std::vector<std::string> peers() {
    std::lock_guard lock(mu_);
    return peers_;
  }

 private:
  void Serve() {
    for (;;) {
      pollfd fds[2] = {{sock_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents) return;
      sockaddr_in peer{};
      socklen_t len = sizeof peer;
      std::string line = fmt::format("server {}\n", name_);
      if (udp_) {
        char buf[64];
        if (::recvfrom(sock_.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&peer), &len) <
            0) {
          continue;
        }
        ::sendto(sock_.get(), line.data(), line.size(), 0, reinterpret_cast<sockaddr*>(&peer), len);
      } else {
        UniqueFd c(::accept4(sock_.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC));
        if (!c) continue;
        (void)!::write(c.get(), line.data(), line.size());
      }
      std::lock_guard lock(mu_);
      peers_.push_back(Ipv4Address{ntohl(peer.sin_addr.s_addr)}.ToString());
    }
  }

  UniqueFd sock_;
  std::string name_;
  bool udp_ = false;
  bool ok_ = false;
  UniqueFd stop_;
  std::mutex mu_;
  std::vector<std::string> peers_;
  std::thread thread_;
};

// Connects `sock` to ip:port within `timeout`: "ok <first line>" or the errno name.
std::string ConnectWithin(UniqueFd sock, std::string_view ip, uint16_t port, int timeout_ms) {
  if (!sock) return "no socket";
  int flags = O_NONBLOCK;
  ::ioctl(sock.get(), FIONBIO, &flags);
  sockaddr_in sa = SockAddr(ip, port);
  int err = ::connect(sock.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 ? 0 : errno;
  if (err == EINPROGRESS) {
    pollfd p{sock.get(), POLLOUT, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return "ETIMEDOUT";
    socklen_t len = sizeof err;
    ::getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  }
  if (err != 0) return strerrorname_np(err);
  pollfd p{sock.get(), POLLIN, 0};
  char buf[128] = {0};
  ssize_t n = ::poll(&p, 1, timeout_ms) == 1 ? ::read(sock.get(), buf, sizeof buf - 1) : -1;
  std::string line = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "none";
  while (!line.empty() && line.back() == '\n') line.pop_back();
  return "ok " + line;
}

// Sends "ping" over the UDP socket `sock` to ip:port and waits for an answer: "ok <line>",
// "ETIMEDOUT" or the errno name of an ICMP error.
std::string UdpExchange(UniqueFd sock, std::string_view ip, uint16_t port, int timeout_ms) {
  if (!sock) return "no socket";
  sockaddr_in sa = SockAddr(ip, port);
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::send(sock.get(), "ping", 4, 0) != 4) {
    return strerrorname_np(errno);
  }
  pollfd p{sock.get(), POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return "ETIMEDOUT";
  char buf[128] = {0};
  ssize_t n = ::recv(sock.get(), buf, sizeof buf - 1, 0);
  if (n < 0) return strerrorname_np(errno);
  std::string line(buf, static_cast<size_t>(n));
  while (!line.empty() && line.back() == '\n') line.pop_back();
  return "ok " + line;
}

std::map<std::string, std::string> ParseKeyValues(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

bool NftTableExists(const std::string& table) {
  auto nft = FindHostTool("nft");
  return nft && RunHostTool({nft->string(), "list", "table", "inet", table}).has_value();
}

class AppNetworkTest : public ::testing::Test {
 protected:
  static constexpr uid_t kAppUid = 61234;
  static constexpr gid_t kAppGid = 61235;

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "app network tests need root (CI runs them as root)";
    ip_ = FindHostTool("ip");
    nft_ = FindHostTool("nft");
    if (!ip_ || !nft_) GTEST_SKIP() << "app network tests need `ip` and `nft`";
    auto dir = TempDir::Create("moat-appnet-test");
    ASSERT_TRUE(dir);
    dir_.emplace(std::move(*dir));
    image_ = dir_->path() / "image";
    ASSERT_TRUE(MakeDirectories(image_ / "bin"));
    std::filesystem::copy_file(MOAT_SANDBOX_TEST_APP, image_ / "bin" / "test_app");
    std::filesystem::permissions(image_ / "bin" / "test_app", std::filesystem::perms(0755));
    instance_ = fmt::format("n{}", getpid());
    // Addresses unlikely to clash with another run: the third octet from the pid.
    const int n = getpid() % 250 + 1;
    link_ = Ipv4Subnet::Parse(fmt::format("10.213.{}.4/30", n)).value();
    server_net_ = fmt::format("10.214.{}", n);

    // The outside world: a namespace with two addresses, linked to the host by a test veth.
    world_.emplace();
    ASSERT_TRUE(world_->ok()) << "unshare(CLONE_NEWNET)";
    const std::string world_if = fmt::format("mtw{}", getpid() % 100000);
    ASSERT_TRUE(RunIp({"link", "add", "name", world_if, "type", "veth", "peer", "name", "eth0",
                       "netns", std::to_string(world_->tid())}));
    world_if_ = world_if;  // TearDown removes it from here on
    ASSERT_TRUE(RunIp({"addr", "add", server_net_ + ".1/24", "dev", world_if_}));
    // The uplink must forward too (docs/sandbox.md): this is the test's own interface.
    ASSERT_TRUE(WriteFile(fmt::format("/proc/sys/net/ipv4/conf/{}/forwarding", world_if_), "1"));
    ASSERT_TRUE(RunIp({"link", "set", "dev", world_if_, "up"}));
    world_->Run([&] {
      UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      SetAddress(sock.get(), "eth0", server_net_ + ".2", "255.255.255.0");
      SetAddress(sock.get(), "eth0:1", server_net_ + ".3", "255.255.255.0");
      rtentry route{};
      sockaddr_in any = SockAddr("0.0.0.0", 0), gw = SockAddr(server_net_ + ".1", 0);
      std::memcpy(&route.rt_dst, &any, sizeof any);
      std::memcpy(&route.rt_genmask, &any, sizeof any);
      std::memcpy(&route.rt_gateway, &gw, sizeof gw);
      route.rt_flags = RTF_UP | RTF_GATEWAY;
      EXPECT_EQ(::ioctl(sock.get(), SIOCADDRT, &route), 0) << strerror(errno);
    });
  }

  void TearDown() override {
    if (!world_if_.empty()) {
      EXPECT_TRUE(RunIp({"link", "del", "dev", world_if_}));
    }
    world_.reset();
    if (!instance_.empty()) {
      auto layout = DetectCgroupLayout();
      if (layout) {
        EXPECT_TRUE(RemoveInstanceCgroups(*layout, instance_));
      }
    }
  }

  bool RunIp(std::vector<std::string> args) {
    args.insert(args.begin(), ip_->string());
    auto r = RunHostTool(args);
    EXPECT_TRUE(r) << r.error().message();
    return r.has_value();
  }

  Result<void> WriteFile(const std::string& path, std::string_view value) {
    MOAT_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_WRONLY | O_CLOEXEC));
    return WriteAll(fd.get(),
                    std::span(reinterpret_cast<const uint8_t*>(value.data()), value.size()), path);
  }

  UniqueFd WorldSocket(int type = SOCK_STREAM) {
    UniqueFd sock;
    world_->Run([&] { sock.Reset(::socket(AF_INET, type | SOCK_CLOEXEC, 0)); });
    return sock;
  }

  std::unique_ptr<Listener> WorldListener(const std::string& ip, uint16_t port,
                                          int type = SOCK_STREAM) {
    auto l = std::make_unique<Listener>(WorldSocket(type), ip, port);
    EXPECT_TRUE(l->ok()) << ip << ":" << port;
    return l;
  }

  SandboxSpec Spec(std::string app, std::vector<std::string> args) {
    SandboxSpec spec;
    spec.instance_id = instance_;
    spec.app_name = std::move(app);
    spec.executable = "/bin/test_app";
    spec.args = std::move(args);
    spec.env = {"PATH=/bin"};
    spec.uid = kAppUid;
    spec.gid = kAppGid;
    spec.root_image = image_;
    spec.limits.memory_bytes = 32 << 20;
    spec.limits.pids_max = 16;
    spec.network = NetworkMode::kConfigured;
    spec.stdout_path = dir_->path() / (spec.app_name + ".out");
    spec.stderr_path = dir_->path() / (spec.app_name + ".err");
    return spec;
  }

  std::unique_ptr<AppNetwork> Network(const std::string& app, NetworkPolicy policy) {
    auto net = AppNetwork::Create({instance_, app, link_, std::move(policy)});
    EXPECT_TRUE(net) << net.error().message();
    return net ? std::move(*net) : nullptr;
  }

  // Asserts the app's network is completely gone from the host.
  void ExpectGone(const AppNetwork& net) {
    EXPECT_FALSE(NetworkInterfaceExists(net.host_interface())) << net.host_interface();
    EXPECT_FALSE(NftTableExists(net.table())) << net.table();
  }

  std::string Host() const { return LinkHostAddress(link_).ToString(); }
  std::string App() const { return LinkAppAddress(link_).ToString(); }

  std::optional<std::filesystem::path> ip_, nft_;
  std::optional<TempDir> dir_;
  std::filesystem::path image_;
  std::string instance_;
  Ipv4Subnet link_;
  std::string server_net_;
  std::optional<NamespaceThread> world_;
  std::string world_if_;
};

TEST_F(AppNetworkTest, TheAppReachesOnlyItsListedDestinations) {
  const std::string allowed = server_net_ + ".2", other = server_net_ + ".3";
  auto l1 = WorldListener(allowed, 7000);
  auto l2 = WorldListener(other, 7000);
  auto l3 = WorldListener(other, 7001);
  // A host service on the test's own uplink address: the host is not a destination.
  auto host_listener = std::make_unique<Listener>(
      UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)), server_net_ + ".1", 7002);
  ASSERT_TRUE(host_listener->ok());

  NetworkPolicy policy;
  policy.outbound = {{Ip(allowed), std::nullopt}, {Ip(other), 7001}};
  auto net = Network("client", policy);
  ASSERT_TRUE(net);
  std::vector<std::string> targets = {allowed + ":7000", other + ":7001", other + ":7000",
                                      server_net_ + ".1:7002", Host() + ":7002"};
  // Generous: the refusals arrive at once, and a first connect under load may wait for ARP.
  std::vector<std::string> args = {"connect_within", "2000"};
  args.insert(args.end(), targets.begin(), targets.end());
  auto spec = Spec("client", args);
  LaunchOptions options;
  options.network_hook = net->Hook();
  auto process = Launch(spec, std::move(options));
  ASSERT_TRUE(process) << process.error().message();
  EXPECT_TRUE(NetworkInterfaceExists(net->host_interface()));
  EXPECT_TRUE(NftTableExists(net->table()));
  EXPECT_EQ(process->Wait().value_or(ExitStatus::Exited(-1)), ExitStatus::Exited(1));
  auto kv = ParseKeyValues(ReadFile(spec.stdout_path, 1 << 16).value_or(""));
  EXPECT_EQ(kv[targets[0]], fmt::format("ok reply=server {}:7000", allowed));
  EXPECT_EQ(kv[targets[1]], fmt::format("ok reply=server {}:7001", other));
  // Everything else is rejected at once (admin-prohibited -> EHOSTUNREACH), not refused by a
  // peer: the firewall answered, not the host or the server.
  EXPECT_EQ(kv[targets[2]], "EHOSTUNREACH");
  EXPECT_EQ(kv[targets[3]], "EHOSTUNREACH");
  EXPECT_EQ(kv[targets[4]], "EHOSTUNREACH");
  // The server saw the host's uplink address (masquerade), and only the allowed connections.
  EXPECT_EQ(l1->peers(), std::vector<std::string>{server_net_ + ".1"});
  EXPECT_EQ(l3->peers(), std::vector<std::string>{server_net_ + ".1"});
  EXPECT_TRUE(l2->peers().empty());
  EXPECT_TRUE(host_listener->peers().empty());

  ASSERT_TRUE(net->Teardown());
  ExpectGone(*net);
}

TEST_F(AppNetworkTest, OnlyTheServerPortsReachTheApp) {
  NetworkPolicy policy;
  policy.tcp_server_ports = {8080};
  auto net = Network("server", policy);
  ASSERT_TRUE(net);
  auto spec = Spec("server", {"serve_tcp", "8080,8081"});
  LaunchOptions options;
  options.network_hook = net->Hook();
  auto process = Launch(spec, std::move(options));
  ASSERT_TRUE(process) << process.error().message();
  for (int i = 0; i < 200 && ReadFile(spec.stdout_path, 4096).value_or("").empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(ReadFile(spec.stdout_path, 4096).value_or(""), "listening\n");

  // From the outside world (routed through the host) and from the host itself.
  EXPECT_EQ(ConnectWithin(WorldSocket(), App(), 8080, 1000), "ok hello from 8080");
  EXPECT_EQ(ConnectWithin(WorldSocket(), App(), 8081, 300), "ETIMEDOUT");
  EXPECT_EQ(
      ConnectWithin(UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)), App(), 8080, 1000),
      "ok hello from 8080");
  EXPECT_EQ(
      ConnectWithin(UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)), App(), 8081, 300),
      "ETIMEDOUT");
  // The server app may answer, but not open connections of its own: it lists no destinations.
  EXPECT_EQ(process->Stop(std::chrono::milliseconds(1000)).value_or(ExitStatus::Exited(-1)),
            ExitStatus::Killed(SIGTERM));
  auto kv = ParseKeyValues(ReadFile(spec.stdout_path, 4096).value_or(""));
  EXPECT_EQ(kv["accepted"], "8080");
  EXPECT_THAT(ReadFile(spec.stdout_path, 4096).value_or(""), Not(HasSubstr("accepted=8081")));

  ASSERT_TRUE(net->Teardown());
  ExpectGone(*net);
  EXPECT_TRUE(net->Teardown());  // idempotent
}

TEST_F(AppNetworkTest, UdpFollowsTheSamePolicyBothWays) {
  const std::string allowed = server_net_ + ".2", other = server_net_ + ".3";
  auto l1 = WorldListener(allowed, 7000, SOCK_DGRAM);
  auto l2 = WorldListener(other, 7000, SOCK_DGRAM);
  auto l3 = WorldListener(other, 7001, SOCK_DGRAM);
  NetworkPolicy policy;
  policy.outbound = {{Ip(allowed), std::nullopt}, {Ip(other), 7001}};
  policy.udp_server_ports = {9000};
  {
    auto net = Network("udpclient", policy);
    ASSERT_TRUE(net);
    const std::vector<std::string> targets = {allowed + ":7000", other + ":7001", other + ":7000"};
    // Allowed replies get 2 s (a loaded CI machine delayed one past 500 ms); refused
    // destinations fail at once with EHOSTUNREACH, so this costs nothing when all is well.
    auto spec = Spec("udpclient", {"udp_within", "2000", targets[0], targets[1], targets[2]});
    LaunchOptions options;
    options.network_hook = net->Hook();
    auto process = Launch(spec, std::move(options));
    ASSERT_TRUE(process) << process.error().message();
    EXPECT_EQ(process->Wait().value_or(ExitStatus::Exited(-1)), ExitStatus::Exited(1));
    auto kv = ParseKeyValues(ReadFile(spec.stdout_path, 1 << 16).value_or(""));
    EXPECT_EQ(kv[targets[0]], fmt::format("ok reply=server {}", targets[0]));
    EXPECT_EQ(kv[targets[1]], fmt::format("ok reply=server {}", targets[1]));
    EXPECT_EQ(kv[targets[2]], "EHOSTUNREACH");
    EXPECT_TRUE(l2->peers().empty());
    ASSERT_TRUE(net->Teardown());
    ExpectGone(*net);
  }

  auto net = Network("udpserver", policy);
  ASSERT_TRUE(net);
  auto spec = Spec("udpserver", {"serve_udp", "9000,9001"});
  LaunchOptions options;
  options.network_hook = net->Hook();
  auto process = Launch(spec, std::move(options));
  ASSERT_TRUE(process) << process.error().message();
  for (int i = 0; i < 200 && ReadFile(spec.stdout_path, 4096).value_or("").empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(ReadFile(spec.stdout_path, 4096).value_or(""), "listening\n");
  EXPECT_EQ(UdpExchange(WorldSocket(SOCK_DGRAM), App(), 9000, 1000), "ok hello from 9000");
  EXPECT_EQ(UdpExchange(WorldSocket(SOCK_DGRAM), App(), 9001, 300), "ETIMEDOUT");
  EXPECT_EQ(process->Stop(std::chrono::milliseconds(1000)).value_or(ExitStatus::Exited(-1)),
            ExitStatus::Killed(SIGTERM));
  EXPECT_EQ(ReadFile(spec.stdout_path, 4096).value_or(""), "listening\nudp_got=9000\n");
  ASSERT_TRUE(net->Teardown());
  ExpectGone(*net);
}

TEST_F(AppNetworkTest, ALeftoverOfACrashedRunIsReplacedAndAForeignInterfaceIsNot) {
  auto net = Network("leftover", {});
  ASSERT_TRUE(net);
  // What a crashed moatd leaves: our interface (marked as ours) and our table.
  ASSERT_TRUE(RunIp({"link", "add", "name", net->host_interface(), "type", "veth", "peer", "name",
                     net->host_interface() + "p"}));
  ASSERT_TRUE(RunIp({"link", "set", "dev", net->host_interface(), "alias", net->table()}));
  ASSERT_TRUE(RunHostTool({nft_->string(), "add", "table", "inet", net->table()}));
  // 2 s: the refusal is immediate; the margin is for a loaded machine (300 ms once failed).
  auto spec = Spec("leftover", {"connect_within", "2000", server_net_ + ".2:7000"});
  LaunchOptions options;
  options.network_hook = net->Hook();
  auto process = Launch(spec, std::move(options));
  ASSERT_TRUE(process) << process.error().message();
  EXPECT_EQ(process->Wait().value_or(ExitStatus::Exited(-1)), ExitStatus::Exited(1));
  EXPECT_EQ(ParseKeyValues(ReadFile(spec.stdout_path, 4096).value_or(""))[server_net_ + ".2:7000"],
            "EHOSTUNREACH");
  ASSERT_TRUE(net->Teardown());
  ExpectGone(*net);

  // An interface of the same name that is not this app's is never taken over (or removed).
  ASSERT_TRUE(RunIp({"link", "add", "name", net->host_interface(), "type", "veth", "peer", "name",
                     net->host_interface() + "p"}));
  auto foreign = Network("leftover", {});
  auto spec2 = Spec("leftover", {"hello"});
  LaunchOptions options2;
  options2.network_hook = foreign->Hook();
  auto refused = Launch(spec2, std::move(options2));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_THAT(
      refused.error().message(),
      HasSubstr(fmt::format("interface {} exists and is not this app's", net->host_interface())));
  EXPECT_TRUE(foreign->Teardown());
  EXPECT_TRUE(NetworkInterfaceExists(net->host_interface()));
  EXPECT_FALSE(NftTableExists(net->table()));
  EXPECT_TRUE(RunIp({"link", "del", "dev", net->host_interface()}));
}

TEST_F(AppNetworkTest, AFailedAttachLeavesNothing) {
  auto net = Network("failing", {});
  ASSERT_TRUE(net);
  // No such process: the veth cannot be created in its namespace.
  auto attached = net->Attach(0x3fffffff);
  ASSERT_FALSE(attached);
  EXPECT_THAT(attached.error().message(), StartsWith("app network of 'failing': "));
  ExpectGone(*net);
}

TEST_F(AppNetworkTest, NetworkNoneStillHasOnlyLoopback) {
  auto listener = WorldListener(server_net_ + ".2", 7000);
  auto spec = Spec("none", {"connect_within", "2000", server_net_ + ".2:7000"});
  spec.network = NetworkMode::kNone;
  auto process = Launch(spec);
  ASSERT_TRUE(process) << process.error().message();
  EXPECT_EQ(process->Wait().value_or(ExitStatus::Exited(-1)), ExitStatus::Exited(1));
  EXPECT_EQ(ParseKeyValues(ReadFile(spec.stdout_path, 4096).value_or(""))[server_net_ + ".2:7000"],
            "ENETUNREACH");
  EXPECT_TRUE(listener->peers().empty());
}

// What a moatd killed with SIGKILL leaves (interfaces marked moat/<instance>/..., tables named
// so) is listed and removed by instance; another instance's — even one whose ID starts with ours —
// is not touched.
TEST(InstanceNetworkTest, RemovesExactlyOneInstancesInterfacesAndTables) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (CI runs it as root)";
  auto ip = FindHostTool("ip");
  auto nft = FindHostTool("nft");
  if (!ip || !nft) GTEST_SKIP() << "needs `ip` and `nft`";
  const std::string ours = fmt::format("lo{}", getpid()), theirs = ours + "0";
  auto make = [&](const std::string& instance, const std::string& dev) {
    ASSERT_TRUE(RunHostTool({ip->string(), "link", "add", "name", dev, "type", "veth", "peer",
                             "name", dev + "p"}));
    ASSERT_TRUE(RunHostTool(
        {ip->string(), "link", "set", "dev", dev, "alias", fmt::format("moat/{}/app", instance)}));
    ASSERT_TRUE(RunHostTool({nft->string(), "-f", "-"},
                            fmt::format("table inet moat/{}/app {{}}\n", instance)));
  };
  const std::string our_dev = fmt::format("mtl{}", getpid() % 1000000);
  const std::string their_dev = fmt::format("mtm{}", getpid() % 1000000);
  make(ours, our_dev);
  make(theirs, their_dev);
  auto listed = ListInstanceNetwork(ours);
  ASSERT_TRUE(listed) << listed.error().message();
  EXPECT_EQ(listed->interfaces, std::vector<std::string>{our_dev});
  EXPECT_EQ(listed->tables, std::vector<std::string>{fmt::format("moat/{}/app", ours)});

  auto removed = RemoveInstanceNetwork(ours);
  ASSERT_TRUE(removed) << removed.error().message();
  EXPECT_EQ(removed->interfaces, listed->interfaces);
  EXPECT_FALSE(NetworkInterfaceExists(our_dev));
  EXPECT_FALSE(NftTableExists(fmt::format("moat/{}/app", ours)));
  auto after = ListInstanceNetwork(ours);
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->interfaces.empty() && after->tables.empty());
  // The other instance's are still there; then they go too.
  EXPECT_TRUE(NetworkInterfaceExists(their_dev));
  EXPECT_TRUE(NftTableExists(fmt::format("moat/{}/app", theirs)));
  ASSERT_TRUE(RemoveInstanceNetwork(theirs));
  EXPECT_FALSE(NetworkInterfaceExists(their_dev));
  EXPECT_FALSE(NftTableExists(fmt::format("moat/{}/app", theirs)));
  EXPECT_FALSE(RemoveInstanceNetwork("a/b"));  // not an instance ID
}

}  // namespace
}  // namespace moat::device::sandbox
