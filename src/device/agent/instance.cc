#include "device/agent/instance.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

#include "core/encoding.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "crypto/digest.h"

namespace moat::device::agent {
namespace fs = std::filesystem;
namespace {

constexpr uint32_t kFirstAppUid = 70000;
constexpr uint32_t kUidsPerSlot = 1000;

// Opens (creating) `path` and takes an flock on it; `blocking` waits for it.
Result<UniqueFd> LockFile(const fs::path& path, bool blocking) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return Fail(ErrnoError("open", path, errno));
  for (;;) {
    if (::flock(fd.get(), LOCK_EX | (blocking ? 0 : LOCK_NB)) == 0) return fd;
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) {
      return Fail(ErrorCode::kAlreadyExists, "{} is locked by another process", path.string());
    }
    return Fail(ErrnoError("flock", path, errno));
  }
}

// The slot's owner, "" if the slot is free.
Result<std::string> SlotOwner(const fs::path& run_dir, uint32_t slot) {
  auto text = ReadFile(run_dir / fmt::format("slot-{}", slot), 256);
  if (!text) {
    if (text.error().code() == ErrorCode::kNotFound) return std::string();
    return Fail(text.error());
  }
  std::string owner = *text;
  while (!owner.empty() && owner.back() == '\n') owner.pop_back();
  return owner;
}

// The slot remembered from the last run, if any.
std::optional<uint32_t> RememberedSlot(const fs::path& state_dir, std::string_view instance) {
  auto text = ReadFile(state_dir / "instance.json", 4096);
  if (!text) return std::nullopt;
  auto j = ParseJson(*text, "instance.json");
  if (!j || !j->is_object() || j->value("instance_id", "") != instance) return std::nullopt;
  auto it = j->find("slot");
  if (it == j->end() || !it->is_number_unsigned() || it->get<uint64_t>() >= kInstanceSlots) {
    return std::nullopt;
  }
  return it->get<uint32_t>();
}

}  // namespace

std::string DefaultInstanceId(const fs::path& state_dir) {
  const std::string path = fs::absolute(state_dir).lexically_normal().string();
  const auto digest = crypto::Sha256(std::string_view(path));
  return "m" + HexEncode(std::span(digest.data(), 5));
}

Result<InstanceClaim> ClaimInstance(const Config& config) {
  InstanceClaim claim;
  claim.instance_id = config.supervisor.instance_id;
  const fs::path& run_dir = config.supervisor.run_dir;
  MOAT_TRY(MakeDirectories(run_dir, 0700));
  const fs::path instance_lock = run_dir / fmt::format("instance-{}.lock", claim.instance_id);
  auto lock = LockFile(instance_lock, /*blocking=*/false);
  if (!lock) {
    if (lock.error().code() == ErrorCode::kAlreadyExists) {
      return Fail(ErrorCode::kAlreadyExists,
                  "another moatd runs as instance '{}' ({} is locked); give each moatd its own "
                  "state_dir or supervisor.instance_id",
                  claim.instance_id, instance_lock.string());
    }
    return Fail(lock.error());
  }
  claim.lock = std::move(*lock);

  // The slot, under the registry lock.
  MOAT_ASSIGN_OR_RETURN(UniqueFd registry, LockFile(run_dir / "slots.lock", /*blocking=*/true));
  std::optional<uint32_t> chosen;
  const std::optional<uint32_t> remembered = RememberedSlot(config.state_dir, claim.instance_id);
  const auto digest = crypto::Sha256(std::string_view(claim.instance_id));
  const uint32_t start = remembered.value_or(digest[0] % kInstanceSlots);
  for (uint32_t i = 0; i < kInstanceSlots && !chosen; ++i) {
    const uint32_t slot = (start + i) % kInstanceSlots;
    MOAT_ASSIGN_OR_RETURN(std::string owner, SlotOwner(run_dir, slot));
    if (owner == claim.instance_id) {
      chosen = slot;
    } else if (owner.empty()) {
      MOAT_TRY(AtomicWriteFile(run_dir / fmt::format("slot-{}", slot), claim.instance_id + "\n",
                               {.mode = 0600}));
      chosen = slot;
    }
  }
  if (!chosen) {
    return Fail(ErrorCode::kLimitExceeded,
                "all {} moatd instance slots in {} are taken (remove the slot-N files of "
                "instances that no longer exist)",
                kInstanceSlots, run_dir.string());
  }
  if (remembered && *remembered != *chosen) {
    log::Warn("moatd instance '{}': slot {} belongs to another instance now; using slot {}",
              claim.instance_id, *remembered, *chosen);
  }
  claim.slot = *chosen;
  if (!config.supervisor.network_pool.empty()) {
    MOAT_ASSIGN_OR_RETURN(claim.network_pool,
                          sandbox::Ipv4Subnet::Parse(config.supervisor.network_pool));
  } else {
    MOAT_ASSIGN_OR_RETURN(claim.network_pool, sandbox::Ipv4Subnet::Parse(
                                                  fmt::format("10.213.{}.0/22", 4 * claim.slot)));
  }
  claim.ids = {.first = kFirstAppUid + kUidsPerSlot * claim.slot, .count = kUidsPerSlot};
  if (remembered != chosen) {
    Json j = {{"instance_id", claim.instance_id}, {"slot", claim.slot}};
    MOAT_TRY(AtomicWriteFile(config.state_dir / "instance.json", DumpJson(j), {.mode = 0600}));
  }
  log::Info("moatd instance '{}': slot {}, app links from {}, app uids {}-{}", claim.instance_id,
            claim.slot, claim.network_pool.ToString(), claim.ids.first,
            claim.ids.first + claim.ids.count - 1);
  return claim;
}

}  // namespace moat::device::agent
