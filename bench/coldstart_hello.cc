// The app of the cold-start bench (sandbox_coldstart.cc): a static binary whose main, first
// thing, writes its CLOCK_MONOTONIC time (int64 nanoseconds, native endian) to stdout, which the
// bench makes a pipe. CLOCK_MONOTONIC is system-wide (no launcher here uses a time namespace),
// so the bench subtracts its own start time from this value. Only libc, built -static.
#include <time.h>
#include <unistd.h>

#include <cstdint>

int main() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t ns = int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  return write(STDOUT_FILENO, &ns, sizeof ns) == static_cast<ssize_t>(sizeof ns) ? 0 : 1;
}
