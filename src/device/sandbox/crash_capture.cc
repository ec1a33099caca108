#include "device/sandbox/crash_capture.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace moat::device::sandbox {
namespace {

// ---- Child-side helpers (async-signal-safe: no allocation, no locks, raw syscalls) ----

// Reads `size` bytes of the tracee's memory at `addr`; false unless all were read.
bool ReadRemote(pid_t tid, uint64_t addr, void* buf, size_t size) {
  iovec local{buf, size};
  iovec remote{reinterpret_cast<void*>(addr), size};
  ssize_t n = ::syscall(SYS_process_vm_readv, tid, &local, 1, &remote, 1, 0);
  return n == static_cast<ssize_t>(size);
}

// One line of /proc/<pid>/maps, reduced to what matching needs.
struct MapEntry {
  uint64_t start;
  uint64_t end;
  uint64_t file_offset;
  uint64_t dev;  // major << 32 | minor
  uint64_t inode;
  bool exec;
  char name[kCrashModuleNameBytes];  // basename, "[vdso]"..., "" for an anonymous mapping
};

constexpr size_t kMaxMaps = 1024;
// Static, not on the stack: the init runs on a copy of a launcher thread's stack, whose size
// it does not control. Only the init (a single-threaded process) touches these.
MapEntry g_maps[kMaxMaps];
size_t g_map_count = 0;
char g_maps_buffer[8192];

bool ParseHex(const char*& p, const char* end, uint64_t& out) {
  out = 0;
  const char* start = p;
  while (p < end) {
    char c = *p;
    uint64_t d;
    if (c >= '0' && c <= '9') {
      d = static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<uint64_t>(c - 'a' + 10);
    } else {
      break;
    }
    out = (out << 4) | d;
    ++p;
  }
  return p > start;
}

bool ParseDec(const char*& p, const char* end, uint64_t& out) {
  out = 0;
  const char* start = p;
  while (p < end && *p >= '0' && *p <= '9') out = out * 10 + static_cast<uint64_t>(*p++ - '0');
  return p > start;
}

bool Expect(const char*& p, const char* end, char c) {
  if (p >= end || *p != c) return false;
  ++p;
  return true;
}

void SkipSpaces(const char*& p, const char* end) {
  while (p < end && *p == ' ') ++p;
}

// "start-end perms offset major:minor inode [path]"
void ParseMapLine(const char* p, const char* end) {
  if (g_map_count >= kMaxMaps) return;
  MapEntry e{};
  uint64_t major = 0, minor = 0;
  if (!ParseHex(p, end, e.start) || !Expect(p, end, '-') || !ParseHex(p, end, e.end) ||
      !Expect(p, end, ' ') || end - p < 5) {
    return;
  }
  e.exec = p[2] == 'x';
  p += 4;
  if (!Expect(p, end, ' ') || !ParseHex(p, end, e.file_offset) || !Expect(p, end, ' ') ||
      !ParseHex(p, end, major) || !Expect(p, end, ':') || !ParseHex(p, end, minor) ||
      !Expect(p, end, ' ') || !ParseDec(p, end, e.inode)) {
    return;
  }
  e.dev = (major << 32) | minor;
  SkipSpaces(p, end);
  // The basename: after the last '/', or the whole "[name]".
  const char* name = p;
  for (const char* q = p; q < end; ++q) {
    if (*q == '/') name = q + 1;
  }
  size_t len = static_cast<size_t>(end - name);
  // " (deleted)" and other suffixes stay: they are part of what the kernel reports.
  if (len >= kCrashModuleNameBytes) len = kCrashModuleNameBytes - 1;
  std::memcpy(e.name, name, len);
  e.name[len] = '\0';
  g_maps[g_map_count++] = e;
}

void ReadMaps(pid_t pid) {
  g_map_count = 0;
  // "/proc/<pid>/maps" without snprintf.
  char path[32] = "/proc/";
  size_t at = 6;
  char digits[12];
  size_t nd = 0;
  for (unsigned v = static_cast<unsigned>(pid); nd == 0 || v != 0; v /= 10) {
    digits[nd++] = static_cast<char>('0' + v % 10);
  }
  while (nd > 0) path[at++] = digits[--nd];
  std::memcpy(path + at, "/maps", 6);
  int fd = static_cast<int>(::syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC));
  if (fd < 0) return;
  size_t used = 0;
  bool skipping = false;  // inside a line longer than the buffer
  for (;;) {
    ssize_t n = ::read(fd, g_maps_buffer + used, sizeof g_maps_buffer - used);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    used += static_cast<size_t>(n);
    size_t line_start = 0;
    for (size_t i = 0; i < used; ++i) {
      if (g_maps_buffer[i] != '\n') continue;
      if (!skipping) ParseMapLine(g_maps_buffer + line_start, g_maps_buffer + i);
      skipping = false;
      line_start = i + 1;
    }
    std::memmove(g_maps_buffer, g_maps_buffer + line_start, used - line_start);
    used -= line_start;
    if (used == sizeof g_maps_buffer) {
      used = 0;
      skipping = true;
    }
  }
  ::close(fd);
}

const MapEntry* FindMapping(uint64_t pc) {
  for (size_t i = 0; i < g_map_count; ++i) {
    if (pc >= g_maps[i].start && pc < g_maps[i].end) return &g_maps[i];
  }
  return nullptr;
}

// Per module of the record: the key it was found by and its load bias.
struct ModuleInfo {
  uint64_t dev;
  uint64_t inode;
  uint64_t start;  // for anonymous/special mappings: the mapping itself
  uint64_t bias;
};
ModuleInfo g_module_info[kCrashMaxModules];

// Reads the ELF header and program headers at `base` (the mapping of file offset 0) in the
// tracee: the load bias, and the GNU build-ID note into `module`.
void ReadElfIdentity(pid_t tid, uint64_t base, uint64_t& bias, CrashRecordModule& module) {
  bias = base;
  Elf64_Ehdr ehdr;
  if (!ReadRemote(tid, base, &ehdr, sizeof ehdr)) return;
  if (std::memcmp(ehdr.e_ident, ELFMAG, SELFMAG) != 0 || ehdr.e_ident[EI_CLASS] != ELFCLASS64 ||
      ehdr.e_phentsize != sizeof(Elf64_Phdr) || ehdr.e_phnum == 0 || ehdr.e_phnum > 64) {
    return;
  }
  Elf64_Phdr phdrs[64];
  if (!ReadRemote(tid, base + ehdr.e_phoff, phdrs, ehdr.e_phnum * sizeof(Elf64_Phdr))) return;
  // The first PT_LOAD maps file offset p_offset at bias + p_vaddr; our mapping of offset 0
  // starts at bias + (p_vaddr - p_offset) (congruent modulo the page size by ELF's rules).
  for (unsigned i = 0; i < ehdr.e_phnum; ++i) {
    if (phdrs[i].p_type == PT_LOAD) {
      bias = base - (phdrs[i].p_vaddr - phdrs[i].p_offset);
      break;
    }
  }
  for (unsigned i = 0; i < ehdr.e_phnum; ++i) {
    if (phdrs[i].p_type != PT_NOTE) continue;
    uint8_t notes[1024];
    size_t size = phdrs[i].p_filesz < sizeof notes ? phdrs[i].p_filesz : sizeof notes;
    if (!ReadRemote(tid, bias + phdrs[i].p_vaddr, notes, size)) continue;
    size_t at = 0;
    while (at + sizeof(Elf64_Nhdr) <= size) {
      Elf64_Nhdr nh;
      std::memcpy(&nh, notes + at, sizeof nh);
      size_t name_at = at + sizeof nh;
      size_t desc_at = name_at + ((nh.n_namesz + 3u) & ~3u);
      size_t next = desc_at + ((nh.n_descsz + 3u) & ~3u);
      if (next > size || next <= at) break;
      if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
          std::memcmp(notes + name_at, "GNU", 4) == 0 && nh.n_descsz > 0 &&
          nh.n_descsz <= kCrashMaxBuildIdBytes) {
        std::memcpy(module.build_id, notes + desc_at, nh.n_descsz);
        module.build_id_size = nh.n_descsz;
        return;
      }
      at = next;
    }
  }
}

// The record's module for `m` (added on first use), or kCrashNoModule when the table is full.
uint32_t ModuleFor(pid_t tid, const MapEntry& m, CrashRecord* out) {
  const bool file = m.inode != 0;
  for (uint32_t i = 0; i < out->module_count; ++i) {
    const ModuleInfo& info = g_module_info[i];
    if (file ? (info.dev == m.dev && info.inode == m.inode) : info.start == m.start) return i;
  }
  if (out->module_count >= kCrashMaxModules) return kCrashNoModule;
  uint32_t index = out->module_count++;
  CrashRecordModule& module = out->modules[index];
  std::memset(&module, 0, sizeof module);
  ModuleInfo& info = g_module_info[index];
  info = ModuleInfo{m.dev, m.inode, m.start, m.start - m.file_offset};
  std::memcpy(module.name, m.name[0] ? m.name : "[anon]", kCrashModuleNameBytes);
  module.name[kCrashModuleNameBytes - 1] = '\0';
  if (!file) return index;
  // The file's first mapping (offset 0) holds its ELF and program headers.
  const MapEntry* base = nullptr;
  for (size_t i = 0; i < g_map_count; ++i) {
    const MapEntry& e = g_maps[i];
    if (e.dev == m.dev && e.inode == m.inode && e.file_offset == 0 &&
        (base == nullptr || e.start < base->start)) {
      base = &e;
    }
  }
  if (base != nullptr) ReadElfIdentity(tid, base->start, info.bias, module);
  return index;
}

void AddFrame(pid_t tid, uint64_t pc, CrashRecord* out) {
  CrashRecordFrame& f = out->frames[out->frame_count++];
  f.pc = pc;
  f.module = kCrashNoModule;
  f.offset = pc;
  const MapEntry* m = FindMapping(pc);
  if (m == nullptr) return;
  f.module = ModuleFor(tid, *m, out);
  if (f.module != kCrashNoModule) f.offset = pc - g_module_info[f.module].bias;
}

// The registers of the stopped thread: pc, sp, frame pointer, link register.
struct Registers {
  uint64_t pc, sp, fp, lr;
  bool has_lr;
};

bool ReadRegisters(pid_t tid, Registers& r) {
#if defined(__x86_64__)
  user_regs_struct regs;
  iovec iov{&regs, sizeof regs};
  if (::syscall(SYS_ptrace, PTRACE_GETREGSET, tid, NT_PRSTATUS, &iov) != 0) return false;
  r = Registers{regs.rip, regs.rsp, regs.rbp, 0, false};
  return true;
#elif defined(__aarch64__)
  user_regs_struct regs;  // regs[31], sp, pc, pstate
  iovec iov{&regs, sizeof regs};
  if (::syscall(SYS_ptrace, PTRACE_GETREGSET, tid, NT_PRSTATUS, &iov) != 0) return false;
  r = Registers{regs.pc, regs.sp, regs.regs[29], regs.regs[30], true};
  return true;
#else
  (void)tid;
  (void)r;
  return false;
#endif
}

}  // namespace

bool IsCrashSignal(int signo) {
  switch (signo) {
    case SIGSEGV:
    case SIGBUS:
    case SIGILL:
    case SIGFPE:
    case SIGABRT:
    case SIGTRAP:
    case SIGSYS:
      return true;
    default:
      return false;
  }
}

void CaptureCrash(pid_t tid, pid_t app_pid, const siginfo_t& info, CrashRecord* out) {
  std::memset(out, 0, sizeof *out);
  out->magic = kCrashRecordMagic;
  out->size = sizeof *out;
  out->signo = info.si_signo;
  out->si_errno = info.si_errno;
  out->si_code = info.si_code;
  // si_addr is the faulting address for kernel-generated SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGTRAP
  // (si_code > 0); for a signal sent by a process the union holds the sender's pid instead.
  if (info.si_code > 0 && info.si_signo != SIGABRT && info.si_signo != SIGSYS) {
    out->flags |= kCrashHasFaultAddress;
    out->fault_address = reinterpret_cast<uint64_t>(info.si_addr);
  }
  Registers regs{};
  if (!ReadRegisters(tid, regs)) return;
  out->flags |= kCrashHasRegisters;
  out->pc = regs.pc;
  out->sp = regs.sp;
  if (regs.has_lr) {
    out->flags |= kCrashHasLr;
    out->lr = regs.lr;
  }
  ReadMaps(app_pid);

  AddFrame(tid, regs.pc, out);
#if defined(__x86_64__)
  // Where the top function has no frame of its own, the frame pointer is still its caller's and
  // the caller's return address is the word at sp: a call through a bad pointer (pc unmapped),
  // or a leaf function (GCC gives leaves no frame even with -fno-omit-frame-pointer). For a
  // mapped pc, the word at sp counts only if it follows a direct call (E8 rel32) whose target
  // is at most 64 KiB before pc, and is not the return address of the frame at fp.
  uint64_t ret = 0;
  const MapEntry* caller = ReadRemote(tid, regs.sp, &ret, sizeof ret) ? FindMapping(ret) : nullptr;
  if (caller != nullptr && caller->exec) {
    bool leaf_call = FindMapping(regs.pc) == nullptr;
    uint8_t call[5];
    uint64_t frame_ret = 0;
    if (!leaf_call && ret >= 5 && ReadRemote(tid, ret - 5, call, sizeof call) && call[0] == 0xe8) {
      int32_t rel;
      std::memcpy(&rel, call + 1, sizeof rel);
      const uint64_t target = ret + static_cast<uint64_t>(static_cast<int64_t>(rel));
      const bool same_as_frame = regs.fp != 0 &&
                                 ReadRemote(tid, regs.fp + 8, &frame_ret, sizeof frame_ret) &&
                                 frame_ret == ret;
      leaf_call = target <= regs.pc && regs.pc - target < (64u << 10) && !same_as_frame;
    }
    if (leaf_call) AddFrame(tid, ret, out);
  }
#endif
  // The frame-pointer chain: at fp, {caller's fp, return address} on x86-64 and aarch64 alike.
  // It must climb strictly (the stack grows down) and stay aligned; it ends at a zero or
  // unreadable record, which is where code built without frame pointers breaks it.
  uint64_t fp = regs.fp;
  while (out->frame_count < kCrashMaxFrames && fp != 0 && fp % 8 == 0) {
    uint64_t record[2];
    if (!ReadRemote(tid, fp, record, sizeof record)) break;
    const MapEntry* code = record[1] == 0 ? nullptr : FindMapping(record[1]);
    if (code == nullptr || !code->exec) break;
    AddFrame(tid, record[1], out);
    if (record[0] <= fp) break;
    fp = record[0];
  }
}

// ---- Launcher-side ----

Result<CrashReport> ParseCrashRecord(std::span<const uint8_t> bytes) {
  auto bad = [](std::string_view why) {
    return Fail(ErrorCode::kInvalidArgument, "crash record: {}", why);
  };
  if (bytes.size() != sizeof(CrashRecord)) {
    return bad(fmt::format("{} bytes, expected {}", bytes.size(), sizeof(CrashRecord)));
  }
  CrashRecord r;
  std::memcpy(&r, bytes.data(), sizeof r);
  if (r.magic != kCrashRecordMagic || r.size != sizeof r) return bad("bad magic or size");
  if (r.signo < 1 || r.signo > 64) return bad(fmt::format("signal {} out of range", r.signo));
  if (r.frame_count > kCrashMaxFrames || r.module_count > kCrashMaxModules) {
    return bad("too many frames or modules");
  }
  std::vector<std::string> names(r.module_count);
  std::vector<std::string> build_ids(r.module_count);
  for (uint32_t i = 0; i < r.module_count; ++i) {
    const CrashRecordModule& m = r.modules[i];
    size_t len = strnlen(m.name, sizeof m.name);
    if (len == 0 || len == sizeof m.name) return bad(fmt::format("module {}: bad name", i));
    std::string name(m.name, len);
    for (char c : name) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '/') {
        return bad(fmt::format("module {}: bad name", i));
      }
    }
    if (name == "." || name == "..") return bad(fmt::format("module {}: bad name", i));
    if (m.build_id_size > kCrashMaxBuildIdBytes) return bad("build-ID too long");
    names[i] = std::move(name);
    for (uint32_t b = 0; b < m.build_id_size; ++b) {
      build_ids[i] += fmt::format("{:02x}", m.build_id[b]);
    }
  }
  CrashReport report;
  report.signal = r.signo;
  report.error_number = r.si_errno;
  report.code = r.si_code;
  if (r.flags & kCrashHasFaultAddress) report.fault_address = r.fault_address;
  if (r.flags & kCrashHasRegisters) {
    report.pc = r.pc;
    report.sp = r.sp;
    if (r.flags & kCrashHasLr) report.lr = r.lr;
  }
  for (uint32_t i = 0; i < r.frame_count; ++i) {
    const CrashRecordFrame& f = r.frames[i];
    CrashFrame frame;
    frame.pc = f.pc;
    frame.offset = f.offset;
    if (f.module == kCrashNoModule) {
      frame.module = "[unknown]";
      frame.offset = f.pc;
    } else if (f.module < r.module_count) {
      frame.module = names[f.module];
      frame.build_id = build_ids[f.module];
    } else {
      return bad(fmt::format("frame {}: module {} out of range", i, f.module));
    }
    report.frames.push_back(std::move(frame));
  }
  return report;
}

}  // namespace moat::device::sandbox
