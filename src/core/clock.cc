#include "core/clock.h"

#include <ctime>

namespace moat {

SystemTime FakeClock::Now() const {
  std::lock_guard lock(mu_);
  return now_;
}

std::chrono::steady_clock::time_point FakeClock::Monotonic() const {
  std::lock_guard lock(mu_);
  return std::chrono::steady_clock::time_point(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(monotonic_));
}

void FakeClock::Advance(std::chrono::nanoseconds by) {
  std::lock_guard lock(mu_);
  now_ += std::chrono::duration_cast<std::chrono::system_clock::duration>(by);
  monotonic_ += by;
}

void FakeClock::Set(SystemTime to) {
  std::lock_guard lock(mu_);
  if (to > now_) monotonic_ += to - now_;
  now_ = to;
}

std::string FormatRfc3339(SystemTime t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Result<SystemTime> ParseRfc3339(std::string_view text) {
  auto bad = [&] {
    return Fail(ErrorCode::kInvalidArgument,
                "time '{}' is not RFC 3339 UTC (expected YYYY-MM-DDTHH:MM:SSZ)",
                text.substr(0, 64));
  };
  if (text.size() < 20 || text.size() > 40) return bad();
  auto num = [&](size_t pos, size_t len, int& out) {
    out = 0;
    for (size_t i = pos; i < pos + len; ++i) {
      if (text[i] < '0' || text[i] > '9') return false;
      out = out * 10 + (text[i] - '0');
    }
    return true;
  };
  int year, mon, day, hour, min, sec;
  if (!num(0, 4, year) || text[4] != '-' || !num(5, 2, mon) || text[7] != '-' || !num(8, 2, day) ||
      (text[10] != 'T' && text[10] != 't') || !num(11, 2, hour) || text[13] != ':' ||
      !num(14, 2, min) || text[16] != ':' || !num(17, 2, sec)) {
    return bad();
  }
  size_t pos = 19;
  if (text[pos] == '.') {
    ++pos;
    size_t digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') ++pos, ++digits;
    if (digits == 0) return bad();
  }
  if (pos + 1 != text.size() || (text[pos] != 'Z' && text[pos] != 'z')) return bad();
  // SystemTime counts nanoseconds in 64 bits: years outside 1970..9999 are refused here, and
  // years past 2262 (the end of that range) clamp to the largest representable time below.
  if (year < 1970 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 ||
      sec > 60) {
    return bad();
  }
  using namespace std::chrono;
  year_month_day ymd{std::chrono::year(year), month(static_cast<unsigned>(mon)),
                     std::chrono::day(static_cast<unsigned>(day))};
  if (!ymd.ok()) return bad();
  if (year >= 2262) return SystemTime::max();
  return sys_days(ymd) + hours(hour) + minutes(min) + std::chrono::seconds(sec);
}

}  // namespace moat
