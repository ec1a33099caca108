#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <string>

namespace moat::log {
namespace {

spdlog::level::level_enum ToSpd(Level level) {
  switch (level) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

void Init(std::string_view program, Level level) {
  auto logger = spdlog::stderr_color_mt(std::string(program));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%-5l%$ %n[%P] %v", spdlog::pattern_time_type::utc);
  logger->set_level(ToSpd(level));
  spdlog::set_default_logger(logger);
}

void SetLevel(Level level) { spdlog::set_level(ToSpd(level)); }

bool ParseLevel(std::string_view text, Level& out) {
  if (text == "debug")
    out = Level::kDebug;
  else if (text == "info")
    out = Level::kInfo;
  else if (text == "warn")
    out = Level::kWarn;
  else if (text == "error")
    out = Level::kError;
  else
    return false;
  return true;
}

}  // namespace moat::log
