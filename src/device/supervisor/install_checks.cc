#include "device/supervisor/install_checks.h"

#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace moat::device::supervisor {
namespace {

std::string ValueText(const formats::PeripheralValue& v) {
  if (const auto* n = std::get_if<int64_t>(&v)) return std::to_string(*n);
  return std::get<std::string>(v);
}

std::string AppText(const formats::AppManifest& m) {
  return fmt::format("app '{}' ({})", m.name, m.component_id.ToString());
}

std::string GrantText(const formats::PeripheralGrant& g) {
  std::string text = fmt::format("{} {}", formats::PeripheralKindName(g.kind), ValueText(g.value));
  if (g.written.IsConstant()) text += fmt::format(" ('{}')", g.written.ToString());
  return text;
}

bool Clash(const formats::PeripheralGrant& a, const formats::PeripheralGrant& b) {
  // A GPIO number and a bus name never compare equal (int vs string), so comparing values across
  // capabilities only ever matches one hardware block named in two roles (an ISU as UART or I2C).
  if (a.value == b.value) return true;
  // GPIO lines of one chip share its node; everything else is one peripheral per node.
  bool both_gpio =
      a.kind == formats::PeripheralKind::kGpio && b.kind == formats::PeripheralKind::kGpio;
  return !both_gpio && a.linux_device && a.linux_device == b.linux_device;
}

}  // namespace

Result<void> CheckPeripheralOwnership(std::span<const formats::AppManifest> installed,
                                      const formats::AppManifest& candidate,
                                      const formats::Board& board) {
  MOAT_ASSIGN_OR_RETURN(std::vector<formats::PeripheralGrant> wanted,
                        formats::ResolvePeripheralGrants(candidate, board));
  if (wanted.empty()) return Ok();
  for (const formats::AppManifest& other : installed) {
    if (other.component_id == candidate.component_id) continue;  // an update replaces it
    auto held = formats::ResolvePeripheralGrants(other, board);
    if (!held) {
      // An installed app that no longer resolves (the board changed) still owns what it named;
      // refuse rather than guess.
      return Fail(held.error().WithContext(
          fmt::format("checking peripherals against installed {}", AppText(other))));
    }
    for (const formats::PeripheralGrant& w : wanted) {
      for (const formats::PeripheralGrant& h : *held) {
        if (!Clash(w, h)) continue;
        std::string how = w.value == h.value
                              ? std::string()
                              : fmt::format(" (both use {}: {})", *w.linux_device, GrantText(h));
        return Fail(ErrorCode::kAlreadyExists,
                    "peripheral {} requested by {} is already held by {}{}", GrantText(w),
                    AppText(candidate), AppText(other), how);
      }
    }
  }
  return Ok();
}

Result<AppIds> AllocateAppIds(const std::map<formats::Guid, AppIds>& allocated,
                              const formats::Guid& component, const IdRange& range) {
  if (auto it = allocated.find(component); it != allocated.end()) return it->second;
  // SECURITY: 0 is root and (uid_t)-1 means "unchanged" to set*id; neither may be handed out.
  const uint64_t last = uint64_t{range.first} + range.count;  // one past the end
  if (range.first == 0 || range.count == 0 || last > uint64_t{static_cast<uid_t>(-1)}) {
    return Fail(ErrorCode::kInvalidArgument,
                "app id range {}+{} must be non-empty and contain neither 0 nor {}", range.first,
                range.count, static_cast<uid_t>(-1));
  }
  std::set<uint64_t> used;
  for (const auto& [id, ids] : allocated) {
    used.insert(ids.uid);
    used.insert(ids.gid);
  }
  for (uint64_t id = range.first; id < last; ++id) {
    if (!used.contains(id)) {
      return AppIds{static_cast<uid_t>(id), static_cast<gid_t>(id)};
    }
  }
  return Fail(ErrorCode::kLimitExceeded, "no free app id left in {}..{} for component {}",
              range.first, last - 1, component.ToString());
}

}  // namespace moat::device::supervisor
