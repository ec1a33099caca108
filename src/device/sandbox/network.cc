#include "device/sandbox/network.h"

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace moat::device::sandbox {

StepStatus BringUpLoopback() {
  int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return StepStatus::FromErrno();
  struct ifreq req;
  std::memset(&req, 0, sizeof req);
  std::memcpy(req.ifr_name, "lo", 3);
  StepStatus status;
  if (::ioctl(sock, SIOCGIFFLAGS, &req) != 0) {
    status = StepStatus::FromErrno();
  } else {
    req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP | IFF_RUNNING);
    if (::ioctl(sock, SIOCSIFFLAGS, &req) != 0) status = StepStatus::FromErrno();
  }
  ::close(sock);
  return status;
}

}  // namespace moat::device::sandbox
