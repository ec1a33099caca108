// The crash sample: a sensor app with a bug, and (built with MOAT_CRASH_FIXED) its fix.
//
// Version 1.0.0 reads its "calibration" through a pointer that is null when no calibration was
// stored, a few seconds after start: a SIGSEGV that moatd's supervisor catches, reports as an
// AppCrash failure event (pc, sp, the stack with this binary's build-ID) and restarts the app
// with a growing delay. Version 1.0.1 checks the pointer and uses a default. Both are built with
// frame pointers so the crash's stack walk sees the named functions.
#include <unistd.h>
#include <cstdio>
#include <cstdlib>

namespace {

struct Calibration {
  int offset_millidegrees;
};

// Where a calibration would come from: this device never had one stored.
Calibration* StoredCalibration() {
  static volatile bool stored = false;
  static Calibration calibration{150};
  return stored ? &calibration : nullptr;
}

// THE BUG (1.0.0): dereferences the calibration without checking that there is one.
__attribute__((noinline)) int ReadCalibratedTemperature(int raw_millidegrees) {
  Calibration* calibration = StoredCalibration();
#ifdef MOAT_CRASH_FIXED
  if (calibration == nullptr) return raw_millidegrees;  // the fix: no calibration, no offset
#endif
  return raw_millidegrees + calibration->offset_millidegrees;
}

}  // namespace

int main(int argc, char** argv) {
  const int crash_after = argc > 1 ? std::atoi(argv[1]) : 3;
#ifdef MOAT_CRASH_FIXED
  std::printf("crash sample 1.0.1 (fixed) started\n");
#else
  std::printf("crash sample 1.0.0 started; reading the calibration in %d s\n", crash_after);
#endif
  std::fflush(stdout);
  ::sleep(static_cast<unsigned>(crash_after > 0 ? crash_after : 3));
  for (int n = 0;; ++n) {
    std::printf("temperature %d m°C\n", ReadCalibratedTemperature(21000 + n % 7 * 100));
    std::fflush(stdout);
    ::sleep(5);
  }
}
