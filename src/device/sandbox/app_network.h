// AppNetwork: the host side of one sandboxed app's network, enforced in the kernel.
//
//   host (moatd's network namespace)                 the sandbox's network namespace
//   ---------------------------------                ------------------------------
//   nftables table inet "moat/<instance>/<app>"      lo (brought up by the child)
//   veth <host_if>  10.213.x.1/30  ◄──────────────►  veth eth0  10.213.x.2/30
//     forwarding on, IPv6 off, alias "moat/..."        default route via 10.213.x.1
//
// The table is the only thing standing between the app and anything else, so it is installed
// before the link exists and removed after it is gone. It hooks only packets whose input or output
// interface is <host_if>, so it changes nothing for the rest of the host:
//   from the app (forward and input hooks): replies (ct established/related) pass; new
//     connections pass only to the policy's destinations (address, or address + port for TCP and
//     UDP); everything else — the host itself included — is rejected (icmpx admin-prohibited, so
//     the app fails fast with EHOSTUNREACH rather than timing out); non-IPv4 and a spoofed source
//     address are dropped.
//   to the app (forward and output hooks): replies pass; new connections only to its TCP and UDP
//     server ports; everything else is dropped.
//   postrouting (nat): the app's traffic leaving by another interface is masqueraded.
// BuildNftRuleset() prints the exact script (docs/sandbox.md shows one).
//
// Requirements: root (CAP_NET_ADMIN), `ip` (iproute2) and `nft` (nftables; tested with 1.0.6;
// kernel nf_tables with inet nat, Linux >= 5.2). For forwarded traffic the uplink interface must
// forward too (net.ipv4.conf.<uplink>.forwarding=1): that is the device's network configuration,
// which moatd does not change; only the app's own interface is switched on here.
//
// Threading: an AppNetwork is used by one thread at a time. Attach() starts one short-lived thread
// (to enter the sandbox's network namespace without moving the caller).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "device/sandbox/launcher.h"
#include "device/sandbox/network_policy.h"

namespace moat::device::sandbox {

struct AppNetworkConfig {
  std::string instance_id;  // SandboxSpec::instance_id
  std::string app_name;     // SandboxSpec::app_name
  Ipv4Subnet link;          // a /30 from the instance's AddressPool
  NetworkPolicy policy;
};

// The host-side interface name: "mt" + 12 hex digits of a hash of instance and app (14 chars;
// IFNAMSIZ allows 15). The interface's alias, "moat/<instance>/<app>", says whose it is, so a name
// collision is detected rather than taken for a leftover.
std::string HostInterfaceName(std::string_view instance_id, std::string_view app_name);

// The nftables table: "moat/<instance>/<app>" ('/' cannot occur in either name).
std::string NftTableName(std::string_view instance_id, std::string_view app_name);

// The complete `nft -f -` script: it creates the table if missing, deletes it and creates it
// anew, all in one transaction (so it also replaces a crashed run's leftover atomically).
// Expects a validated config.
std::string BuildNftRuleset(const AppNetworkConfig& config);

class AppNetwork {
 public:
  // Validates the config (a /30 link, the policy) and finds `ip` and `nft` (kFailedPrecondition
  // if either is missing). Touches nothing.
  static Result<std::unique_ptr<AppNetwork>> Create(AppNetworkConfig config);

  // Teardown(), logging a failure.
  ~AppNetwork();
  AppNetwork(const AppNetwork&) = delete;
  AppNetwork& operator=(const AppNetwork&) = delete;

  // The network hook (launcher.h): sets up the table, the veth pair, addresses, forwarding and
  // routes for the sandbox whose init is `sandbox_pid`, in that order. A leftover of the same name
  // (a crashed moatd) is removed first; an interface of that name that belongs to another app is
  // kAlreadyExists. On failure whatever was made is removed again. Call once.
  Result<void> Attach(pid_t sandbox_pid);

  // A NetworkHook calling Attach on this object, which must outlive the launch.
  NetworkHook Hook();

  // Removes the veth pair (if the sandbox's namespace has not taken it down already) and the
  // table. Idempotent; call after the sandbox has ended (or its launch failed).
  Result<void> Teardown();

  const AppNetworkConfig& config() const { return config_; }
  const std::string& host_interface() const { return host_if_; }
  const std::string& table() const { return table_; }

 private:
  AppNetwork(AppNetworkConfig config, std::string ip, std::string nft);
  Result<void> RemoveLeftoverInterface();
  Result<void> ConfigureInside(pid_t sandbox_pid);

  AppNetworkConfig config_;
  std::string ip_;   // path of `ip`
  std::string nft_;  // path of `nft`
  std::string host_if_;
  std::string alias_;
  std::string table_;
  bool attached_ = false;  // something may exist on the host
};

// True if a network interface of this name exists in the caller's network namespace.
bool NetworkInterfaceExists(std::string_view name);

// What a moatd instance has on the host's network: interfaces whose alias is
// "moat/<instance>/<app>" and nftables tables named "moat/<instance>/<app>" (each sorted).
struct InstanceNetwork {
  std::vector<std::string> interfaces;
  std::vector<std::string> tables;
};
// Lists them (without `nft` on the host, interfaces only: no app network can have been made).
Result<InstanceNetwork> ListInstanceNetwork(std::string_view instance_id);
// Removes every interface and table of moatd instance `instance_id` (what a moatd killed with
// SIGKILL left behind; moatd calls it at start, before any app runs). Only exact
// "moat/<instance>/" prefixes are touched, so another instance's are never removed. Returns what
// it removed.
Result<InstanceNetwork> RemoveInstanceNetwork(std::string_view instance_id);

}  // namespace moat::device::sandbox
