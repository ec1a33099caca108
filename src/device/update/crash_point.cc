#include "device/update/crash_point.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>

namespace moat::device::update {

void CrashPoint(std::string_view step) {
  // Read on every call (cheap), so a test may set it in a forked child.
  const char* target = std::getenv("MOAT_TEST_CRASH_AT");
  if (target == nullptr || step != target) return;
  static constexpr char kMsg[] = "MOAT_TEST_CRASH_AT: killing the process (test hook)\n";
  (void)!write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
  kill(getpid(), SIGKILL);
  _exit(137);  // not reached
}

}  // namespace moat::device::update
