#include "rot/testing/tls_peer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "core/file.h"
#include "rot/testing/swtpm.h"

extern char** environ;

namespace moat::rot::testing {
namespace {

using namespace std::chrono_literals;

crypto::CertificateProfile Profile(crypto::CertificateProfile::Kind kind, std::string cn) {
  crypto::CertificateProfile p;
  p.kind = kind;
  p.common_name = std::move(cn);
  p.not_before = std::chrono::system_clock::now() - 1h;
  p.not_after = std::chrono::system_clock::now() + 24h;
  return p;
}

Result<int> Connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(ErrnoError("socket", "", errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    return Fail(ErrnoError("connect", "127.0.0.1:" + std::to_string(port), err));
  }
  return fd;
}

std::string SslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<OpenSslServer>> OpenSslServer::Start(const std::filesystem::path& dir) {
  auto server = std::unique_ptr<OpenSslServer>(new OpenSslServer());
  MOAT_TRY(MakeDirectories(dir, 0700));
  MOAT_ASSIGN_OR_RETURN(server->ca_,
                        crypto::SelfSignCertificate(
                            Profile(crypto::CertificateProfile::Kind::kRootCa, "rot test CA"),
                            server->ca_key_));
  MOAT_ASSIGN_OR_RETURN(auto server_key, crypto::PrivateKey::Generate(crypto::KeyType::kEcdsaP256));
  auto profile = Profile(crypto::CertificateProfile::Kind::kServer, "localhost");
  profile.san_ips = {"127.0.0.1"};
  MOAT_ASSIGN_OR_RETURN(auto server_cert,
                        crypto::IssueCertificate(profile, server_key.public_key(), *server->ca_,
                                                 server->ca_key_));
  MOAT_ASSIGN_OR_RETURN(auto key_pem, server_key.ToPem());
  MOAT_TRY(AtomicWriteFile(dir / "ca.pem", server->ca_->ToPem()));
  MOAT_TRY(AtomicWriteFile(dir / "server.pem", server_cert.ToPem()));
  MOAT_TRY(AtomicWriteFile(dir / "server.key", key_pem.view(), {.mode = 0600}));

  // A free port: bind to 0, read it, release it for s_server.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    return Fail(ErrnoError("bind", "127.0.0.1:0", errno));
  }
  ::close(fd);
  server->port_ = ntohs(addr.sin_port);

  std::string openssl = FindTool("openssl");
  if (openssl.empty()) return Fail(ErrorCode::kUnavailable, "openssl command not found");
  std::vector<std::string> args = {openssl,
                                   "s_server",
                                   "-accept",
                                   "127.0.0.1:" + std::to_string(server->port_),
                                   "-cert",
                                   (dir / "server.pem").string(),
                                   "-key",
                                   (dir / "server.key").string(),
                                   "-CAfile",
                                   (dir / "ca.pem").string(),
                                   "-Verify",
                                   "1",
                                   "-verify_return_error",
                                   "-tls1_3",
                                   "-www",
                                   "-quiet"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, (dir / "s_server.log").c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  int rc = ::posix_spawn(&server->pid_, openssl.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    server->pid_ = -1;
    return Fail(ErrnoError("posix_spawn", openssl, rc));
  }
  // Ready when it accepts (this probe is one failed handshake, which s_server shrugs off).
  for (int i = 0; i < 500; ++i) {
    auto probe = Connect(server->port_);
    if (probe) {
      ::close(*probe);
      return server;
    }
    std::this_thread::sleep_for(10ms);
  }
  return Fail(ErrorCode::kUnavailable, "openssl s_server did not listen within 5 s");
}

OpenSslServer::~OpenSslServer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

Result<std::shared_ptr<crypto::TlsClientContext>> OpenSslServer::ClientFor(
    const crypto::PrivateKey& key) {
  MOAT_ASSIGN_OR_RETURN(
      auto cert, crypto::IssueCertificate(Profile(crypto::CertificateProfile::Kind::kClient,
                                                  "rot test device"),
                                          key.public_key(), *ca_, ca_key_));
  crypto::TlsClientConfig config;
  config.server_roots = {*ca_};
  config.certificate = cert;
  config.key = key;
  return crypto::TlsClientContext::Create(config);
}

Result<void> OpenSslServer::Handshake(const crypto::TlsClientContext& client) {
  MOAT_ASSIGN_OR_RETURN(SSL_CTX * raw_ctx, client.NewNative());
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(raw_ctx, SSL_CTX_free);
  MOAT_ASSIGN_OR_RETURN(int fd, Connect(port_));
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) {
    ::close(fd);
    return Fail(ErrorCode::kInternal, "SSL_new: {}", SslErrors());
  }
  Result<void> result = Ok();
  if (SSL_connect(ssl.get()) != 1) {
    result = Fail(ErrorCode::kVerificationFailed, "TLS handshake failed: {}", SslErrors());
  } else {
    static constexpr char kRequest[] = "GET / HTTP/1.0\r\n\r\n";
    std::string answer;
    if (SSL_write(ssl.get(), kRequest, sizeof kRequest - 1) <= 0) {
      result = Fail(ErrorCode::kVerificationFailed, "TLS write failed: {}", SslErrors());
    } else {
      char buf[4096];
      int n;
      while (answer.size() < 64 * 1024 && (n = SSL_read(ssl.get(), buf, sizeof buf)) > 0) {
        answer.append(buf, static_cast<size_t>(n));
      }
      if (answer.find("200 ok") == std::string::npos) {
        result = Fail(ErrorCode::kVerificationFailed,
                      "s_server did not answer (refused the client certificate?): {}",
                      SslErrors());
      }
    }
    SSL_shutdown(ssl.get());
  }
  ERR_clear_error();
  ::close(fd);
  return result;
}

}  // namespace moat::rot::testing
