// Injectable time. Everything that reads the time takes a Clock& so tests can move it.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "core/error.h"

namespace moat {

using SystemTime = std::chrono::system_clock::time_point;
using Seconds = std::chrono::seconds;

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time (certificate validity, expiry dates, reports).
  virtual SystemTime Now() const = 0;
  // Monotonic time for timeouts and backoff; never jumps.
  virtual std::chrono::steady_clock::time_point Monotonic() const = 0;
};

class SystemClock final : public Clock {
 public:
  SystemTime Now() const override { return std::chrono::system_clock::now(); }
  std::chrono::steady_clock::time_point Monotonic() const override {
    return std::chrono::steady_clock::now();
  }
};

// A clock that only moves when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(SystemTime start) : now_(start) {}
  SystemTime Now() const override;
  std::chrono::steady_clock::time_point Monotonic() const override;
  void Advance(std::chrono::nanoseconds by);
  void Set(SystemTime to);

 private:
  mutable std::mutex mu_;
  SystemTime now_;
  std::chrono::nanoseconds monotonic_{0};
};

// RFC 3339 UTC with seconds precision, e.g. "2026-11-27T19:46:27Z".
std::string FormatRfc3339(SystemTime t);
// Parses "YYYY-MM-DDTHH:MM:SSZ" (optionally with fractional seconds, which are dropped).
Result<SystemTime> ParseRfc3339(std::string_view text);

}  // namespace moat
