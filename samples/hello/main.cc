// The smallest Moat app: prints a line every few seconds, forever, as apps are meant to run.
// Built as a static binary so its sandbox needs no runtime libraries at all.
#include <cstdio>
#include <cstdlib>
#include <unistd.h>

int main(int argc, char** argv) {
  int interval = argc > 1 ? std::atoi(argv[1]) : 5;
  if (interval <= 0) interval = 5;
  for (unsigned n = 0;; ++n) {
    std::printf("hello from a Moat app (%u)\n", n);
    std::fflush(stdout);
    ::sleep(static_cast<unsigned>(interval));
  }
}
