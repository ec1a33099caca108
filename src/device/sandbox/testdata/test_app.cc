// A hostile and probing app for the sandbox tests, run inside real sandboxes by launcher_test.cc.
//
// Usage: test_app <mode> [args...]. Each mode either reports what it saw as "key=value" lines on
// stdout, or tries one forbidden thing: if the sandbox lets the attempt return at all, the app
// prints "returned=<rc> errno=<name>" and exits 3, so the test sees the difference between being
// killed by seccomp (SIGSYS) and merely failing.
//
// Written in plain C-style C++ with no Moat libraries: it is linked statically and copied into a
// temporary app image.
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <initializer_list>

namespace {

const char* ErrName(int err) {
  const char* name = strerrorname_np(err);
  return name ? name : "?";
}

// For attempts seccomp must kill: reaching this line at all is a failure of the sandbox.
int Returned(long rc) {
  printf("returned=%ld errno=%s\n", rc, rc < 0 ? ErrName(errno) : "0");
  fflush(stdout);
  return 3;
}

void PrintStatusLine(const char* key) {
  FILE* f = fopen("/proc/self/status", "r");
  if (!f) {
    printf("%s=open-failed:%s\n", key, ErrName(errno));
    return;
  }
  char line[256];
  size_t klen = strlen(key);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
      char* v = line + klen + 1;
      while (*v == ' ' || *v == '\t') ++v;
      v[strcspn(v, "\n")] = '\0';
      printf("%s=%s\n", key, v);
    }
  }
  fclose(f);
}

int Probe() {
  printf("uid=%d\neuid=%d\ngid=%d\negid=%d\n", getuid(), geteuid(), getgid(), getegid());
  printf("groups=%d\n", getgroups(0, nullptr));
  for (const char* key : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
                          "Cpus_allowed_list"}) {
    PrintStatusLine(key);
  }
  struct utsname u;
  uname(&u);
  printf("hostname=%s\n", u.nodename);
  printf("pid=%d\nppid=%d\n", getpid(), getppid());
  // Every process this app can see in /proc.
  DIR* d = opendir("/proc");
  printf("proc_pids=");
  if (d) {
    bool first = true;
    while (struct dirent* e = readdir(d)) {
      if (e->d_name[0] >= '1' && e->d_name[0] <= '9') {
        printf("%s%s", first ? "" : ",", e->d_name);
        first = false;
      }
    }
    closedir(d);
  }
  printf("\n");
  char buf[512] = {0};
  int fd = open("/proc/self/cgroup", O_RDONLY);
  if (fd >= 0) {
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n > 0) buf[n] = '\0';
    close(fd);
    for (char* p = buf; *p; ++p) {
      if (*p == '\n') *p = ';';
    }
  }
  printf("cgroup=%s\n", buf);
  struct rlimit core, nofile, memlock;
  getrlimit(RLIMIT_CORE, &core);
  getrlimit(RLIMIT_NOFILE, &nofile);
  getrlimit(RLIMIT_MEMLOCK, &memlock);
  printf("rlimit_core=%llu\nrlimit_nofile=%llu\nrlimit_memlock=%llu\n",
         (unsigned long long)core.rlim_max, (unsigned long long)nofile.rlim_max,
         (unsigned long long)memlock.rlim_max);
  char cwd[256];
  printf("cwd=%s\n", getcwd(cwd, sizeof cwd) ? cwd : "?");
  printf("env=");
  for (char** e = environ; *e; ++e) printf("%s%s", e == environ ? "" : ",", *e);
  printf("\n");
  // Open descriptors besides stdio.
  d = opendir("/proc/self/fd");
  int fds = 0;
  if (d) {
    while (struct dirent* e = readdir(d)) {
      if (e->d_name[0] >= '0' && e->d_name[0] <= '9') ++fds;
    }
    closedir(d);
  }
  printf("open_fds=%d\n", fds - 1);  // minus the directory's own descriptor
  return 0;
}

int TryWrite(const char* path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    printf("write=%s\n", ErrName(errno));
    return 1;
  }
  if (write(fd, "x", 1) != 1) {
    printf("write=%s\n", ErrName(errno));
    return 1;
  }
  close(fd);
  printf("write=ok\n");
  return 0;
}

int TryRead(const char* path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) {
    printf("read=%s\n", ErrName(errno));
    return 1;
  }
  char buf[256];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n < 0) {
    printf("read=%s\n", ErrName(errno));
    return 1;
  }
  buf[n] = '\0';
  buf[strcspn(buf, "\n")] = '\0';
  printf("read=ok\ncontent=%s\n", buf);
  return 0;
}

int Ls(const char* path) {
  DIR* d = opendir(path);
  if (!d) {
    printf("ls=%s\n", ErrName(errno));
    return 1;
  }
  printf("ls=");
  bool first = true;
  while (struct dirent* e = readdir(d)) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    printf("%s%s", first ? "" : ",", e->d_name);
    first = false;
  }
  printf("\n");
  closedir(d);
  return 0;
}

int Alloc(long mib) {
  for (long i = 0; i < mib; ++i) {
    char* p = static_cast<char*>(malloc(1 << 20));
    if (!p) {
      printf("alloc=ENOMEM after %ld MiB\n", i);
      return 1;
    }
    memset(p, 0x5a, 1 << 20);
  }
  printf("alloc=ok\n");
  return 0;
}

int ForkBomb(long max) {
  long forks = 0;
  int err = 0;
  while (forks < max) {
    pid_t pid = fork();
    if (pid < 0) {
      err = errno;
      break;
    }
    if (pid == 0) {
      pause();
      _exit(0);
    }
    ++forks;
  }
  printf("forks=%ld\nerrno=%s\n", forks, err ? ErrName(err) : "0");
  return 0;
}

int Fill(const char* path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    printf("fill=%s\n", ErrName(errno));
    return 1;
  }
  char chunk[1024];
  memset(chunk, 'z', sizeof chunk);
  long total = 0;
  int err = 0;
  for (;;) {
    ssize_t n = write(fd, chunk, sizeof chunk);
    if (n < 0) {
      err = errno;
      break;
    }
    total += n;
    if (total > (64L << 20)) break;
  }
  if (err == 0 && fsync(fd) != 0) err = errno;
  close(fd);
  printf("bytes=%ld\nerrno=%s\n", total, err ? ErrName(err) : "0");
  return 0;
}

// Writes a small executable script (interpreted by this very app) to `path` and tries to run it:
// on a noexec mount, execve must fail.
int WriteExec(const char* path) {
  int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
  static const char kScript[] = "#!/bin/test_app hello\n";
  if (out < 0 || write(out, kScript, sizeof kScript - 1) != sizeof kScript - 1) {
    printf("copy=%s\n", ErrName(errno));
    return 1;
  }
  close(out);
  char* args[] = {const_cast<char*>(path), nullptr};
  execve(path, args, environ);
  printf("exec=%s\n", ErrName(errno));
  return 1;
}

int Connect(const char* ip, int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) {
    printf("connect=%s\n", ErrName(errno));
    return 1;
  }
  struct sockaddr_in addr {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, ip, &addr.sin_addr);
  int rc = connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  printf("connect=%s\n", rc == 0 ? "ok" : ErrName(errno));
  close(s);
  return rc == 0 ? 0 : 1;
}

// Connects to `target` ("ip:port") within `timeout_ms` and reads one line; prints
// "<target>=ok reply=<line>" or "<target>=<errno name>" (ETIMEDOUT when the attempt took too long,
// e.g. a dropped SYN).
int ConnectWithin(const char* target, int timeout_ms) {
  char ip[64] = {0};
  const char* colon = strrchr(target, ':');
  if (!colon || colon - target >= static_cast<long>(sizeof ip)) {
    printf("%s=bad-target\n", target);
    return 1;
  }
  memcpy(ip, target, static_cast<size_t>(colon - target));
  int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (s < 0) {
    printf("%s=%s\n", target, ErrName(errno));
    return 1;
  }
  struct sockaddr_in addr {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(atoi(colon + 1)));
  inet_pton(AF_INET, ip, &addr.sin_addr);
  int rc = connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int err = rc == 0 ? 0 : errno;
  if (err == EINPROGRESS) {
    struct pollfd p {
      s, POLLOUT, 0
    };
    if (poll(&p, 1, timeout_ms) != 1) {
      err = ETIMEDOUT;
    } else {
      socklen_t len = sizeof err;
      getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
    }
  }
  if (err != 0) {
    printf("%s=%s\n", target, ErrName(err));
    close(s);
    return 1;
  }
  char buf[128] = {0};
  struct pollfd p {
    s, POLLIN, 0
  };
  ssize_t n = poll(&p, 1, timeout_ms) == 1 ? read(s, buf, sizeof buf - 1) : -1;
  if (n > 0) buf[strcspn(buf, "\n")] = '\0';
  printf("%s=ok reply=%s\n", target, n > 0 ? buf : "none");
  close(s);
  return 0;
}

// Serves on 0.0.0.0:<port> for each port in the comma-separated list, with TCP (SOCK_STREAM)
// or UDP (SOCK_DGRAM); prints "listening", then answers every connection or datagram with
// "hello from <port>" and prints "accepted=<port>" (TCP) or "udp_got=<port>" (UDP), forever.
int Serve(const char* ports, int type) {
  struct pollfd fds[8];
  int listen_ports[8];
  int n = 0;
  for (const char* p = ports; *p && n < 8; ++n) {
    listen_ports[n] = atoi(p);
    int s = socket(AF_INET, type, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr {};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(listen_ports[n]));
    if (s < 0 || bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        (type == SOCK_STREAM && listen(s, 8) != 0)) {
      printf("listen=%s\n", ErrName(errno));
      return 1;
    }
    fds[n] = {s, POLLIN, 0};
    const char* comma = strchr(p, ',');
    p = comma ? comma + 1 : p + strlen(p);
  }
  printf("listening\n");
  for (;;) {
    if (poll(fds, n, -1) < 0) continue;
    for (int i = 0; i < n; ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      char line[64];
      int len = snprintf(line, sizeof line, "hello from %d\n", listen_ports[i]);
      if (type == SOCK_DGRAM) {
        char buf[64];
        struct sockaddr_in peer {};
        socklen_t plen = sizeof peer;
        if (recvfrom(fds[i].fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&peer), &plen) < 0)
          continue;
        sendto(fds[i].fd, line, static_cast<size_t>(len), 0, reinterpret_cast<sockaddr*>(&peer),
               plen);
        printf("udp_got=%d\n", listen_ports[i]);
        continue;
      }
      int c = accept(fds[i].fd, nullptr, nullptr);
      if (c < 0) continue;
      (void)!write(c, line, static_cast<size_t>(len));
      close(c);
      printf("accepted=%d\n", listen_ports[i]);
    }
  }
}

// Sends "ping" to `target` ("ip:port") over UDP and waits `timeout_ms` for an answer; prints
// "<target>=ok reply=<line>" or "<target>=<errno name>" (ETIMEDOUT: no answer; EHOSTUNREACH: an
// ICMP error came back on the connected socket).
int UdpWithin(const char* target, int timeout_ms) {
  char ip[64] = {0};
  const char* colon = strrchr(target, ':');
  if (!colon || colon - target >= static_cast<long>(sizeof ip)) {
    printf("%s=bad-target\n", target);
    return 1;
  }
  memcpy(ip, target, static_cast<size_t>(colon - target));
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in addr {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(atoi(colon + 1)));
  inet_pton(AF_INET, ip, &addr.sin_addr);
  if (s < 0 || connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      send(s, "ping", 4, 0) != 4) {
    printf("%s=%s\n", target, ErrName(errno));
    return 1;
  }
  struct pollfd p {
    s, POLLIN, 0
  };
  char buf[128] = {0};
  if (poll(&p, 1, timeout_ms) != 1) {
    printf("%s=ETIMEDOUT\n", target);
    close(s);
    return 1;
  }
  ssize_t n = recv(s, buf, sizeof buf - 1, 0);
  if (n < 0) {
    printf("%s=%s\n", target, ErrName(errno));
    close(s);
    return 1;
  }
  buf[strcspn(buf, "\n")] = '\0';
  printf("%s=ok reply=%s\n", target, buf);
  close(s);
  return 0;
}

// Sends a datagram to itself over 127.0.0.1: works only if lo is up.
int UdpLoopback() {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in addr {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (s < 0 || bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      sendto(s, "ping", 4, 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 4) {
    printf("udp_lo=%s\n", ErrName(errno));
    return 1;
  }
  char buf[8];
  ssize_t n = recv(s, buf, sizeof buf, 0);
  printf("udp_lo=%s\n", n == 4 ? "ok" : ErrName(errno));
  return n == 4 ? 0 : 1;
}

int Forbidden(const char* what) {
  if (!strcmp(what, "ptrace")) return Returned(ptrace(PTRACE_ATTACH, 1, nullptr, nullptr));
  if (!strcmp(what, "mount")) return Returned(mount("none", "/tmp", "tmpfs", 0, nullptr));
  if (!strcmp(what, "umount")) return Returned(umount2("/proc", MNT_DETACH));
  if (!strcmp(what, "bpf")) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    return Returned(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
  }
  if (!strcmp(what, "keyctl"))
    return Returned(syscall(SYS_keyctl, 0 /*KEYCTL_GET_KEYRING_ID*/, -3, 0));
  if (!strcmp(what, "add_key")) {
    return Returned(syscall(SYS_add_key, "user", "moat", "x", 1, -3 /*session keyring*/));
  }
  if (!strcmp(what, "finit_module")) return Returned(syscall(SYS_finit_module, 0, "", 0));
  if (!strcmp(what, "init_module")) return Returned(syscall(SYS_init_module, nullptr, 0, ""));
  if (!strcmp(what, "delete_module")) return Returned(syscall(SYS_delete_module, "loop", 0));
  if (!strcmp(what, "kexec_load")) return Returned(syscall(SYS_kexec_load, 0, 0, nullptr, 0));
  if (!strcmp(what, "perf_event_open")) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    return Returned(syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
  }
  if (!strcmp(what, "userfaultfd")) return Returned(syscall(SYS_userfaultfd, 0));
  if (!strcmp(what, "raw_socket")) return Returned(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
  if (!strcmp(what, "packet_socket")) return Returned(socket(AF_PACKET, SOCK_RAW, 0));
  if (!strcmp(what, "sctp_socket")) return Returned(socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP));
  if (!strcmp(what, "unshare_user")) return Returned(unshare(CLONE_NEWUSER));
  if (!strcmp(what, "clone_newuser")) {
    return Returned(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
  }
  if (!strcmp(what, "setns")) return Returned(setns(0, 0));
  if (!strcmp(what, "pivot_root")) return Returned(syscall(SYS_pivot_root, "/tmp", "/tmp"));
  if (!strcmp(what, "chroot")) return Returned(chroot("/tmp"));
  if (!strcmp(what, "reboot")) return Returned(syscall(SYS_reboot, 0, 0, 0, nullptr));
  if (!strcmp(what, "swapon")) return Returned(syscall(SYS_swapon, "/tmp/swap", 0));
  if (!strcmp(what, "io_uring_setup")) return Returned(syscall(SYS_io_uring_setup, 1, nullptr));
  if (!strcmp(what, "tiocsti")) {
    char c = 'x';
    return Returned(ioctl(0, TIOCSTI, &c));
  }
  if (!strcmp(what, "tiocsti_high_bits")) {
    char c = 'x';
    return Returned(syscall(SYS_ioctl, 0, (1UL << 32) | TIOCSTI, &c));
  }
  if (!strcmp(what, "process_vm_readv")) {
    char buf[8];
    struct iovec local {
      buf, sizeof buf
    }, remote{buf, sizeof buf};
    return Returned(syscall(SYS_process_vm_readv, 1, &local, 1, &remote, 1, 0));
  }
  if (!strcmp(what, "open_by_handle_at"))
    return Returned(syscall(SYS_open_by_handle_at, 0, nullptr, 0));
  if (!strcmp(what, "personality")) return Returned(personality(READ_IMPLIES_EXEC));
  if (!strcmp(what, "setuid")) return Returned(syscall(SYS_setuid, 0));
  if (!strcmp(what, "fork_realtime")) return Returned(fork());
  if (!strcmp(what, "inet_socket")) return Returned(socket(AF_INET, SOCK_STREAM, 0));
  printf("unknown forbidden attempt %s\n", what);
  return 2;
}

// The supervisor's event socket (MOAT_EVENTS_FD): prints each notification and answers it per
// `answer`: "defer" (600 s), "ok" or "none" (reads, never answers).
int Events(const char* answer) {
  const char* env = getenv("MOAT_EVENTS_FD");
  if (!env) {
    printf("events=none\n");
    return 1;
  }
  int fd = atoi(env);
  printf("events fd=%d\n", fd);
  char buf[256];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return 0;
    buf[n] = '\0';
    unsigned seq = 0;
    long long deadline = 0;
    if (sscanf(buf, "update-pending %u %lld", &seq, &deadline) != 2) {
      printf("unexpected %s", buf);
      continue;
    }
    printf("got update-pending %u %lld\n", seq, deadline);
    char reply[64];
    int len = 0;
    if (!strcmp(answer, "defer")) len = snprintf(reply, sizeof reply, "defer %u 600\n", seq);
    if (!strcmp(answer, "ok")) len = snprintf(reply, sizeof reply, "ok %u\n", seq);
    if (len > 0 && send(fd, reply, static_cast<size_t>(len), 0) != len) {
      printf("send=%s\n", ErrName(errno));
    }
  }
}

// App connections (MOAT_APP_CONNECTIONS = "<guid>=<fd>,..."): sends "hello from <name>" on
// each, then prints the first message from each (waiting up to 10 s).
int Peer(const char* name) {
  const char* env = getenv("MOAT_APP_CONNECTIONS");
  printf("connections=%s\n", env ? env : "none");
  if (!env) return 0;
  char list[1024];
  snprintf(list, sizeof list, "%s", env);
  int fds[16];
  char* peers[16];
  int count = 0;
  for (char *save = nullptr, *item = strtok_r(list, ",", &save); item && count < 16;
       item = strtok_r(nullptr, ",", &save)) {
    char* eq = strchr(item, '=');
    if (!eq) continue;
    *eq = '\0';
    peers[count] = item;
    fds[count++] = atoi(eq + 1);
  }
  char msg[128];
  int len = snprintf(msg, sizeof msg, "hello from %s", name);
  for (int i = 0; i < count; ++i) {
    if (send(fds[i], msg, static_cast<size_t>(len), MSG_NOSIGNAL) != len) {
      printf("send to %s=%s\n", peers[i], ErrName(errno));
    }
  }
  for (int i = 0; i < count; ++i) {
    struct pollfd p {
      fds[i], POLLIN, 0
    };
    if (poll(&p, 1, 10000) != 1) {
      printf("from %s: nothing\n", peers[i]);
      continue;
    }
    char buf[128];
    ssize_t n = recv(fds[i], buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    printf("from %s: %s\n", peers[i], buf);
  }
  for (;;) pause();
}

// The device-authentication channel (MOAT_DEVICE_AUTH_FD): sends each argument as one request
// ("chain", "sign <hex>", or anything malformed; "LONG" sends 200 bytes) and prints
// "<request word> -> <first line of the answer>", plus "pem-lines=<n>" after an "ok" chain.
// Then waits (the test removes it).
int DeviceAuth(int argc, char** argv) {
  const char* env = getenv("MOAT_DEVICE_AUTH_FD");
  printf("auth fd=%s\n", env ? env : "none");
  if (!env) return 1;
  int fd = atoi(env);
  for (int i = 2; i < argc; ++i) {
    char request[256];
    size_t len = 0;
    if (!strcmp(argv[i], "LONG")) {
      memset(request, 'a', 200);
      len = 200;
    } else {
      len = static_cast<size_t>(snprintf(request, sizeof request, "%s\n", argv[i]));
    }
    if (send(fd, request, len, MSG_NOSIGNAL) != static_cast<ssize_t>(len)) {
      printf("send=%s\n", ErrName(errno));
      continue;
    }
    static char answer[70000];
    ssize_t n = recv(fd, answer, sizeof answer - 1, 0);
    if (n <= 0) {
      printf("%.8s -> closed\n", argv[i]);
      continue;
    }
    answer[n] = '\0';
    char* nl = strchr(answer, '\n');
    if (nl) *nl = '\0';
    printf("%.8s -> %s\n", argv[i], answer);
    if (!strcmp(answer, "ok") && nl) {
      int lines = 0;
      for (char* q = nl + 1; *q; ++q) lines += *q == '\n';
      printf("pem-lines=%d\n", lines);
    }
  }
  printf("done\n");
  for (;;) pause();
}

}  // namespace

// The crash of the crash tests: recognizable names (not inlined, C linkage) that the tests find
// in this binary's symbol table, to check that the captured top frame lies inside the first and
// the next one inside the second. noipa: no inlining and no clones such as .constprop.
extern "C" __attribute__((noipa)) int moat_test_crash_here(volatile int* p) {
  *p = 42;  // p is null: SIGSEGV, si_addr 0
  return *p;
}

extern "C" __attribute__((noipa)) int moat_test_crash_caller(volatile int* p) {
  int r = moat_test_crash_here(p);
  asm volatile("" ::: "memory");  // keeps the call from becoming a tail call
  return r + 1;
}

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc < 2) {
    printf("usage: test_app <mode> [args]\n");
    return 2;
  }
  const char* mode = argv[1];
  const char* arg = argc > 2 ? argv[2] : "";
  if (!strcmp(mode, "hello")) {
    printf("hello from the sandbox");
    for (int i = 2; i < argc; ++i) printf(" %s", argv[i]);
    printf("\n");
    fprintf(stderr, "this is stderr\n");
    return 0;
  }
  if (!strcmp(mode, "exit")) return atoi(arg);
  if (!strcmp(mode, "device_auth")) return DeviceAuth(argc, argv);
  if (!strcmp(mode, "probe")) return Probe();
  if (!strcmp(mode, "write")) return TryWrite(arg);
  if (!strcmp(mode, "read")) return TryRead(arg);
  if (!strcmp(mode, "ls")) return Ls(arg);
  if (!strcmp(mode, "alloc")) return Alloc(atol(arg));
  if (!strcmp(mode, "forkbomb")) return ForkBomb(atol(arg));
  if (!strcmp(mode, "fill")) return Fill(arg);
  if (!strcmp(mode, "write_exec")) return WriteExec(arg);
  if (!strcmp(mode, "connect")) return Connect(arg, argc > 3 ? atoi(argv[3]) : 80);
  if (!strcmp(mode, "connect_within")) {
    // connect_within <timeout ms> <ip:port>...: one line per attempt.
    int failures = 0;
    for (int i = 3; i < argc; ++i) failures += ConnectWithin(argv[i], atoi(arg));
    return failures == 0 ? 0 : 1;
  }
  if (!strcmp(mode, "udp_within")) {
    // udp_within <timeout ms> <ip:port>...: one line per attempt.
    int failures = 0;
    for (int i = 3; i < argc; ++i) failures += UdpWithin(argv[i], atoi(arg));
    return failures == 0 ? 0 : 1;
  }
  if (!strcmp(mode, "serve_tcp")) return Serve(arg, SOCK_STREAM);
  if (!strcmp(mode, "serve_udp")) return Serve(arg, SOCK_DGRAM);
  if (!strcmp(mode, "udp_lo")) return UdpLoopback();
  if (!strcmp(mode, "sleep")) {
    printf("sleeping\n");
    for (;;) pause();
  }
  if (!strcmp(mode, "ignore_term")) {
    signal(SIGTERM, SIG_IGN);
    printf("ignoring SIGTERM\n");
    for (;;) pause();
  }
  if (!strcmp(mode, "crash")) {
    volatile int* p = nullptr;
    return moat_test_crash_caller(p);
  }
  if (!strcmp(mode, "abort")) abort();
  if (!strcmp(mode, "crash_thread")) {
    // The crash in a second thread: the capture must follow the app's threads.
    pthread_t thread;
    if (pthread_create(
            &thread, nullptr,
            [](void*) -> void* {
              volatile int* p = nullptr;
              moat_test_crash_caller(p);
              return nullptr;
            },
            nullptr) != 0) {
      return 1;
    }
    pthread_join(thread, nullptr);
    return 0;
  }
  if (!strcmp(mode, "events")) return Events(arg);
  if (!strcmp(mode, "peer")) return Peer(arg);
  if (!strcmp(mode, "forbidden")) return Forbidden(arg);
  printf("unknown mode %s\n", mode);
  return 2;
}
