#include "device/sandbox/child_fds.h"

#include <fcntl.h>
#include <unistd.h>

#include <climits>

namespace moat::device::sandbox {

StepStatus ArrangeChildFds(const int (&stdio)[3], std::span<int> keep) {
  // Everything we need is first duplicated above 2, so installing 0..2 cannot clobber it (the
  // launcher may itself run with 0..2 closed, making one of our pipes descriptor 0).
  int moved_stdio[3];
  for (int i = 0; i < 3; ++i) {
    moved_stdio[i] = ::fcntl(stdio[i], F_DUPFD_CLOEXEC, 3);
    if (moved_stdio[i] < 0) return StepStatus::FromErrno(static_cast<uint32_t>(i));
  }
  for (int& fd : keep) {
    fd = ::fcntl(fd, F_DUPFD_CLOEXEC, kFirstPrivateFd);
    if (fd < 0) return StepStatus::FromErrno(3);
  }
  for (int i = 0; i < 3; ++i) {
    if (::dup2(moved_stdio[i], i) < 0) return StepStatus::FromErrno(static_cast<uint32_t>(i));
  }
  // Close all descriptors >= 3 except `keep`: sort a copy (small, no allocation) and close the
  // gaps.
  int sorted[16];
  size_t n = keep.size() < 16 ? keep.size() : 16;
  for (size_t i = 0; i < n; ++i) {
    int v = keep[i];
    size_t j = i;
    while (j > 0 && sorted[j - 1] > v) {
      sorted[j] = sorted[j - 1];
      --j;
    }
    sorted[j] = v;
  }
  unsigned next = 3;
  for (size_t i = 0; i < n; ++i) {
    unsigned fd = static_cast<unsigned>(sorted[i]);
    if (fd > next && ::close_range(next, fd - 1, 0) != 0) return StepStatus::FromErrno(4);
    next = fd + 1;
  }
  if (::close_range(next, UINT_MAX, 0) != 0) return StepStatus::FromErrno(4);
  return {};
}

}  // namespace moat::device::sandbox
