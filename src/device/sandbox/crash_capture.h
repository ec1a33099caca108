// Crash capture: registers, fault details and a symbolizable stack of an app that dies from a
// signal, taken by the sandbox's init (init_process.h) while the app is stopped.
//
// Why the init traces the app (and not an in-app handler, a core-dump pipe or moatd):
//   - The app is untrusted. A handler inside it runs on its possibly corrupted stack and heap,
//     can be replaced or disabled by the app, and would have to be injected into every binary.
//     Capture from outside cannot be tampered with by the crashing code.
//   - core_pattern ("|helper") is one host-wide setting: moatd would take it over for every
//     process on the machine (and every moatd instance would fight over it), the helper runs in
//     the initial namespaces as root, and a full core is far more than an event needs.
//   - moatd itself as tracer: ptrace belongs to one thread of the tracer, so one supervisor
//     thread would have to wait on every app's every signal, and moatd (root, unconfined) would
//     parse the crashing app's memory. The init is already the app's parent and already waits
//     for it; it runs inside the sandbox (same uid, Landlock domain, mounts, no capabilities),
//     so the code reading untrusted memory is confined too.
// How: the app's process, between fork and execve, calls PTRACE_TRACEME (before its seccomp
// filter, which forbids ptrace to the app itself; TRACEME needs no dumpable flag and nothing
// from the app after execve). The init then sees every signal before the app does. On a fatal
// signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS sent by a process) it reads
// the thread's siginfo and registers, walks the frame-pointer chain with process_vm_readv,
// matches each pc against /proc/<app>/maps and reads each module's GNU build-ID note from the
// app's memory, then lets the signal through. The record goes to the launcher over the status
// pipe after the app's wait status. Costs: each signal the app receives stops it once more (two
// context switches); a seccomp kill (SIGSYS from the filter) has no signal-delivery stop, so it
// is reported with its signal only. The init's own filter allows only the read-only ptrace
// requests it needs (no POKE, no SETREGS): even a compromised init cannot change the app.
//
// Everything child-side here is async-signal-safe: fixed-size buffers, raw syscalls, no
// allocation. The record is a fixed binary layout written by the init and read by the launcher
// (ParseCrashRecord), which treats it as untrusted input: it validates every count and name.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"

namespace moat::device::sandbox {

inline constexpr uint32_t kCrashRecordMagic = 0x3152434d;  // "MCR1"
inline constexpr uint32_t kCrashMaxFrames = 64;
inline constexpr uint32_t kCrashMaxModules = 16;
inline constexpr uint32_t kCrashModuleNameBytes = 64;  // including the NUL
inline constexpr uint32_t kCrashMaxBuildIdBytes = 32;
inline constexpr uint32_t kCrashNoModule = 0xffffffff;

// The wire record (init -> launcher). Plain data; host byte order (same machine).
struct CrashRecordModule {
  char name[kCrashModuleNameBytes];  // basename of the mapped file, or "[vdso]", "[anon]", ...
  uint8_t build_id[kCrashMaxBuildIdBytes];
  uint32_t build_id_size;
  uint32_t reserved;
};
struct CrashRecordFrame {
  uint64_t pc;
  uint64_t offset;  // pc - the module's load bias (see CrashFrame)
  uint32_t module;  // index into modules, or kCrashNoModule
  uint32_t reserved;
};
struct CrashRecord {
  uint32_t magic;
  uint32_t size;  // sizeof(CrashRecord)
  int32_t signo;
  int32_t si_errno;
  int32_t si_code;
  uint32_t flags;  // kCrashHas*
  uint64_t fault_address;
  uint64_t pc;
  uint64_t sp;
  uint64_t lr;
  uint32_t frame_count;
  uint32_t module_count;
  CrashRecordFrame frames[kCrashMaxFrames];
  CrashRecordModule modules[kCrashMaxModules];
};
inline constexpr uint32_t kCrashHasFaultAddress = 1;  // si_addr is meaningful (SIGSEGV, ...)
inline constexpr uint32_t kCrashHasLr = 2;            // the architecture has a link register
inline constexpr uint32_t kCrashHasRegisters = 4;     // pc/sp were read
static_assert(sizeof(CrashRecord) + sizeof(int) <= 4096, "one pipe write, within PIPE_BUF");

// True for the signals whose delivery the init captures.
bool IsCrashSignal(int signo);

// Child-side (the init, while thread `tid` of the app `app_pid` is in a signal-delivery stop
// for `info`): fills `out`. Never fails as a whole: whatever cannot be read is left out (no
// registers, fewer frames, a module without build-ID).
void CaptureCrash(pid_t tid, pid_t app_pid, const siginfo_t& info, CrashRecord* out);

// One frame, as the service needs it to symbolize: `offset` is the pc in the module's own ELF
// address space (pc minus the load bias, so 0x401234 for a non-PIE executable, 0x1234 for a PIE
// or library loaded anywhere): what `nm` and `addr2line -e <module>` use. Frames below the
// top one are return addresses (the instruction after the call).
struct CrashFrame {
  uint64_t pc = 0;
  std::string module;    // file name, "[vdso]", "[anon]" or "[unknown]" (pc not mapped)
  std::string build_id;  // lowercase hex; empty if the module has none
  uint64_t offset = 0;

  bool operator==(const CrashFrame&) const = default;
};

struct CrashReport {
  int signal = 0;
  int error_number = 0;  // si_errno
  int code = 0;          // si_code
  std::optional<uint64_t> fault_address;
  std::optional<uint64_t> pc, sp, lr;  // lr only where the architecture has one (not x86-64)
  std::vector<CrashFrame> frames;      // top first

  bool operator==(const CrashReport&) const = default;
};

// Launcher-side: validates and converts the init's record (kInvalidArgument naming the problem).
Result<CrashReport> ParseCrashRecord(std::span<const uint8_t> bytes);

}  // namespace moat::device::sandbox
