// moat-service as a whole: the data directory, the database, the PKI and the HTTPS server.
#pragma once

#include <chrono>
#include <filesystem>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/random.h"
#include "service/pki.h"

namespace moat::service {

struct InitOptions {
  std::filesystem::path data_dir;
  std::string service_name = "Moat";
  std::vector<std::string> server_dns = {"localhost"};
  std::vector<std::string> server_ips = {"127.0.0.1"};
  std::string listen_address = "127.0.0.1";
  uint16_t port = 8443;
  std::string admin_name = "admin";
  std::filesystem::path admin_config;  // default: <data_dir>/admin.moat.json
};

// Creates a data directory: PKI, database, service.json and the first administrator's
// operator config (mode 0600). Refuses if `data_dir` exists and is not empty. Progress lines
// go to `out`.
Result<void> InitDataDir(const InitOptions& options, const Clock& clock, Random& random,
                         std::ostream& out);

struct RunOptions {
  std::filesystem::path data_dir;
  // Empty / 0: what service.json says.
  std::string listen_address;
  uint16_t port = 0;
  int threads = 0;  // 0: one per core
  // The HTTP body limit for every route; 0: FleetApi::kMaxImagePackageBytes (image uploads).
  size_t max_body_bytes = 0;
};

class Service {
 public:
  // Loads the data directory, opens the database (applying migrations), and starts serving.
  static Result<std::unique_ptr<Service>> Start(const RunOptions& options, const Clock& clock,
                                                Random& random);
  ~Service();

  uint16_t port() const;
  // Graceful: stop accepting, finish requests in flight (up to `grace`), close.
  void Shutdown(std::chrono::milliseconds grace);

  // Runs one housekeeping pass now, at the injected clock's time: tenant CA successors that are
  // due, repositories device groups lack, and device group timestamps with less than half their
  // lifetime left (re-signed). The service does this on start and every hour by itself; tests
  // call it after moving a FakeClock.
  void RunHousekeeping();

  struct State;  // public so housekeeping helpers in service.cc can name it

 private:
  explicit Service(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace moat::service
