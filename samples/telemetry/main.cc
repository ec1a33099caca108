// The telemetry sample: a sandboxed app that publishes a reading every few seconds to an MQTT
// broker over mutual TLS, authenticating as its device — without ever holding the device's key.
//
//   telemetry HOST PORT INTERVAL_SECONDS [BROKER_CA]      (BROKER_CA default /etc/broker-ca.pem)
//
// moatd gives the app a device-authentication channel (MOAT_DEVICE_AUTH_FD; docs/supervisor.md,
// "Device authentication") because its manifest names the tenant in DeviceAuthentication. Each
// connection: ask the channel for the certificate chain (the device's client certificate and the
// tenant CA), make a TLS key whose every signature is a "sign <digest>" request on the channel
// (crypto::PrivateKey::FromSigner), connect over TLS 1.3 verifying the broker against BROKER_CA
// (shipped in the app's image) and HOST, then speak minimal MQTT 3.1.1: CONNECT (client ID =
// the device ID from the certificate's urn:moat:device: SAN), CONNACK, a QoS 0 PUBLISH to
// moat/devices/<device ID>/telemetry per interval, PINGREQ when the keep-alive needs one. Any
// failure closes the connection and retries after a growing delay (1 s doubling to 30 s). Logs
// go to stderr; each publish is also a line on stdout.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "core/encoding.h"
#include "core/error.h"
#include "core/file.h"
#include "core/unique_fd.h"
#include "crypto/key.h"
#include "crypto/tls.h"
#include "crypto/x509.h"

namespace {

using moat::Error;
using moat::ErrorCode;
using moat::Fail;
using moat::Ok;
using moat::Result;
using moat::UniqueFd;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

template <typename... Args>
void Log(fmt::format_string<Args...> format, Args&&... args) {
  std::string line = "telemetry: " + fmt::format(format, std::forward<Args>(args)...) + "\n";
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
}

// ---- The device-authentication channel ----

class DeviceAuthChannel {
 public:
  explicit DeviceAuthChannel(int fd) : fd_(fd) {}

  // One request, one answer. The payload after "ok" ("\n<PEM>" or " <hex>\n"); an "error" answer
  // becomes an Error carrying moatd's reason.
  Result<std::string> Ask(std::string_view request) {
    std::lock_guard lock(mu_);  // OpenSSL may sign from inside a handshake; one request at a time
    if (::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      return Fail(ErrorCode::kUnavailable, "device-auth channel: send: {}", std::strerror(errno));
    }
    std::string answer(64 << 10, '\0');
    ssize_t n;
    do {
      n = ::recv(fd_, answer.data(), answer.size(), 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      return Fail(ErrorCode::kUnavailable, "device-auth channel: recv: {}", std::strerror(errno));
    }
    if (n == 0) return Fail(ErrorCode::kUnavailable, "device-auth channel: moatd closed it");
    answer.resize(static_cast<size_t>(n));
    if (answer.starts_with("ok")) return answer.substr(2);
    if (answer.starts_with("error ")) {
      while (answer.ends_with('\n')) answer.pop_back();
      return Fail(ErrorCode::kPermissionDenied, "moatd refused: {}", answer.substr(6));
    }
    return Fail(ErrorCode::kInvalidArgument, "device-auth channel: unexpected answer");
  }

  Result<std::vector<moat::crypto::Certificate>> Chain() {
    MOAT_ASSIGN_OR_RETURN(std::string pem, Ask("chain\n"));
    if (!pem.starts_with("\n")) {
      return Fail(ErrorCode::kInvalidArgument, "device-auth channel: malformed chain answer");
    }
    MOAT_ASSIGN_OR_RETURN(auto chain, moat::crypto::Certificate::ParsePemChain(pem.substr(1), 4));
    if (chain.empty()) return Fail(ErrorCode::kInvalidArgument, "device-auth channel: empty chain");
    return chain;
  }

  Result<std::vector<uint8_t>> Sign(const moat::crypto::Sha256Digest& digest) {
    MOAT_ASSIGN_OR_RETURN(std::string answer, Ask("sign " + moat::HexEncode(digest) + "\n"));
    if (!answer.starts_with(" ") || !answer.ends_with("\n")) {
      return Fail(ErrorCode::kInvalidArgument, "device-auth channel: malformed signature answer");
    }
    return moat::HexDecode(std::string_view(answer).substr(1, answer.size() - 2));
  }

 private:
  int fd_;
  std::mutex mu_;
};

// ---- MQTT 3.1.1, the few packets this app needs ----

void PutLength(std::string& out, size_t length) {  // "remaining length", 7 bits per byte
  do {
    uint8_t byte = length % 128;
    length /= 128;
    if (length > 0) byte |= 0x80;
    out.push_back(static_cast<char>(byte));
  } while (length > 0);
}
void PutString(std::string& out, std::string_view s) {
  out.push_back(static_cast<char>(s.size() >> 8));
  out.push_back(static_cast<char>(s.size() & 0xff));
  out.append(s);
}
std::string Packet(uint8_t type_and_flags, std::string_view body) {
  std::string out(1, static_cast<char>(type_and_flags));
  PutLength(out, body.size());
  out.append(body);
  return out;
}
std::string Connect(std::string_view client_id, uint16_t keep_alive) {
  std::string body;
  PutString(body, "MQTT");
  body.push_back(4);     // protocol level 3.1.1
  body.push_back(0x02);  // clean session; no will, user name or password (the certificate is who)
  body.push_back(static_cast<char>(keep_alive >> 8));
  body.push_back(static_cast<char>(keep_alive & 0xff));
  PutString(body, client_id);
  return Packet(0x10, body);
}
std::string Publish(std::string_view topic, std::string_view payload) {
  std::string body;
  PutString(body, topic);
  body.append(payload);  // QoS 0: no packet identifier
  return Packet(0x30, body);
}

// Reads whole MQTT packets from the connection.
class MqttReader {
 public:
  // The next packet's first byte and body; nullopt when nothing came before `deadline`.
  Result<std::optional<std::pair<uint8_t, std::string>>> Next(moat::crypto::TlsConnection& c,
                                                              Clock::time_point deadline) {
    for (;;) {
      if (auto packet = Take()) return packet;
      if (buffer_.size() > (64 << 10)) {
        return Fail(ErrorCode::kLimitExceeded, "mqtt: a packet of more than 64 KiB");
      }
      const auto left = std::max(milliseconds(0),
                                 std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
      uint8_t chunk[4096];
      MOAT_ASSIGN_OR_RETURN(std::optional<size_t> n, c.Read(chunk, left));
      if (!n) return std::optional<std::pair<uint8_t, std::string>>();
      if (*n == 0) return Fail(ErrorCode::kUnavailable, "the broker closed the connection");
      buffer_.append(reinterpret_cast<const char*>(chunk), *n);
    }
  }

 private:
  std::optional<std::pair<uint8_t, std::string>> Take() {
    size_t length = 0, at = 1;
    for (int shift = 0;; shift += 7, ++at) {
      if (at >= buffer_.size() || shift > 21) return std::nullopt;
      const auto byte = static_cast<uint8_t>(buffer_[at]);
      length |= static_cast<size_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) break;
    }
    if (buffer_.size() < at + 1 + length) return std::nullopt;
    std::pair<uint8_t, std::string> packet{static_cast<uint8_t>(buffer_[0]),
                                           buffer_.substr(at + 1, length)};
    buffer_.erase(0, at + 1 + length);
    return packet;
  }
  std::string buffer_;
};

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

struct Options {
  std::string host;
  uint16_t port = 8883;
  int interval = 5;
  std::string broker_ca = "/etc/broker-ca.pem";
};

Result<UniqueFd> ConnectTcp(const Options& o, milliseconds timeout) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(o.port);
  if (::inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr) != 1) {
    return Fail(ErrorCode::kInvalidArgument, "'{}' is not an IPv4 address", o.host);
  }
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Fail(ErrorCode::kIo, "socket: {}", std::strerror(errno));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 &&
      errno != EINPROGRESS) {
    return Fail(ErrorCode::kUnavailable, "connect to {}:{}: {}", o.host, o.port,
                std::strerror(errno));
  }
  pollfd p{fd.get(), POLLOUT, 0};
  const int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
  int err = 0;
  socklen_t len = sizeof err;
  if (n != 1 || ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
    return Fail(ErrorCode::kUnavailable, "connect to {}:{}: {}", o.host, o.port,
                n == 0 ? "timed out" : std::strerror(err != 0 ? err : errno));
  }
  return fd;
}

std::string Now() {
  const std::time_t t = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return text;
}

// One connection: returns when it fails (the caller waits and reconnects). `published` counts
// across connections.
Result<void> RunConnection(const Options& o, DeviceAuthChannel& channel,
                           const moat::crypto::Certificate& broker_ca, uint64_t& published,
                           bool& connected_once) {
  MOAT_ASSIGN_OR_RETURN(std::vector<moat::crypto::Certificate> chain, channel.Chain());
  MOAT_ASSIGN_OR_RETURN(std::string device_id, moat::crypto::DeviceIdFromCertificate(chain[0]));
  MOAT_ASSIGN_OR_RETURN(moat::crypto::PrivateKey key,
                        moat::crypto::PrivateKey::FromSigner(
                            chain[0].public_key(), [&channel](const moat::crypto::Sha256Digest& d) {
                              return channel.Sign(d);
                            }));
  moat::crypto::TlsClientConfig config;
  config.server_roots = {broker_ca};
  config.certificate = chain[0];
  config.chain.assign(chain.begin() + 1, chain.end());
  config.key = key;
  config.server_name = o.host;
  MOAT_ASSIGN_OR_RETURN(auto context, moat::crypto::TlsClientContext::Create(config));
  MOAT_ASSIGN_OR_RETURN(UniqueFd socket, ConnectTcp(o, seconds(10)));
  MOAT_ASSIGN_OR_RETURN(
      auto tls, moat::crypto::TlsConnection::Connect(*context, std::move(socket), seconds(15)));
  const uint16_t keep_alive = static_cast<uint16_t>(std::clamp(o.interval * 3, 30, 3600));
  MOAT_TRY(tls->Write(Bytes(Connect(device_id, keep_alive)), seconds(10)));
  MqttReader reader;
  // In TLS 1.3 the broker checks the client certificate after the client finished its half of
  // the handshake: a refusal shows up here, as the alert the broker sent.
  MOAT_ASSIGN_OR_RETURN(auto connack, reader.Next(*tls, Clock::now() + seconds(15)));
  if (!connack) return Fail(ErrorCode::kUnavailable, "no CONNACK within 15 s");
  if (connack->first != 0x20 || connack->second.size() != 2) {
    return Fail(ErrorCode::kInvalidArgument, "expected CONNACK, got packet type {}",
                connack->first >> 4);
  }
  if (connack->second[1] != 0) {
    return Fail(ErrorCode::kPermissionDenied, "the broker refused the connection (CONNACK code {})",
                static_cast<int>(connack->second[1]));
  }
  Log("connected to {}:{} as device {} (TLS 1.3, client certificate {})", o.host, o.port, device_id,
      chain[0].SubjectCommonName());
  connected_once = true;
  const std::string topic = fmt::format("moat/devices/{}/telemetry", device_id);
  std::mt19937 random(static_cast<unsigned>(std::time(nullptr)));
  auto last_sent = Clock::now();
  auto next_publish = Clock::now();
  bool ping_outstanding = false;
  for (;;) {
    const auto now = Clock::now();
    if (now >= next_publish) {
      ++published;
      const std::string reading =
          fmt::format(R"({{"device":"{}","seq":{},"temperature_c":{}.{},"at":"{}"}})", device_id,
                      published, 20 + random() % 3, random() % 10, Now());
      MOAT_TRY(tls->Write(Bytes(Publish(topic, reading)), seconds(10)));
      std::printf("published %s %s\n", topic.c_str(), reading.c_str());
      std::fflush(stdout);
      last_sent = now;
      next_publish = now + seconds(o.interval);
    }
    // A keep-alive ping when nothing was sent for half the keep-alive (never with the default
    // intervals, which publish more often than that).
    if (!ping_outstanding && Clock::now() - last_sent >= seconds(keep_alive) / 2) {
      MOAT_TRY(tls->Write(Bytes(Packet(0xc0, "")), seconds(10)));
      last_sent = Clock::now();
      ping_outstanding = true;
    }
    MOAT_ASSIGN_OR_RETURN(
        auto packet,
        reader.Next(*tls, std::min(next_publish, last_sent + seconds(keep_alive) / 2)));
    if (packet) {
      if (packet->first == 0xd0) {
        ping_outstanding = false;  // PINGRESP
      } else {
        Log("ignoring an MQTT packet of type {}", packet->first >> 4);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);  // a broker that hangs up is an error, not a signal
  if (argc < 4 || argc > 5) {
    Log("usage: telemetry HOST PORT INTERVAL_SECONDS [BROKER_CA]");
    return 2;
  }
  Options o;
  o.host = argv[1];
  const int port = std::atoi(argv[2]);
  o.interval = std::atoi(argv[3]);
  if (argc == 5) o.broker_ca = argv[4];
  if (port <= 0 || port > 65535 || o.interval <= 0 || o.interval > 3600) {
    Log("PORT must be 1..65535 and INTERVAL_SECONDS 1..3600");
    return 2;
  }
  o.port = static_cast<uint16_t>(port);
  const char* fd_text = std::getenv("MOAT_DEVICE_AUTH_FD");
  if (fd_text == nullptr) {
    Log("no MOAT_DEVICE_AUTH_FD: moatd gives the device-authentication channel only to apps "
        "whose manifest names the device's tenant in Capabilities.DeviceAuthentication");
    return 1;
  }
  auto ca_pem = moat::ReadFile(o.broker_ca, 64 << 10);
  auto broker_ca = ca_pem ? moat::crypto::Certificate::FromPem(*ca_pem)
                          : Result<moat::crypto::Certificate>(Fail(ca_pem.error()));
  if (!broker_ca) {
    Log("the broker CA {}: {}", o.broker_ca, broker_ca.error().message());
    return 1;
  }
  DeviceAuthChannel channel(std::atoi(fd_text));
  Log("publishing to {}:{} every {} s (broker CA {})", o.host, o.port, o.interval, o.broker_ca);
  uint64_t published = 0;
  milliseconds backoff(1000);
  for (;;) {
    bool connected = false;
    auto ended = RunConnection(o, channel, *broker_ca, published, connected);
    if (connected) backoff = milliseconds(1000);
    Log("{}; retrying in {} s", ended ? std::string("connection ended") : ended.error().message(),
        backoff.count() / 1000);
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, milliseconds(30000));
  }
}
