// Logging facade. Libraries do not log errors they return; the layer that decides logs.
// SECURITY: never pass key material, nonces used as secrets, or PINs to these functions.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace moat::log {

enum class Level { kDebug, kInfo, kWarn, kError };
// kText: "2026-11-27T19:46:27.123Z info  moatd[42] message" for people.
// kJson: one JSON object per line for log collectors:
//   {"time":"2026-11-27T19:46:27.123Z","level":"info","program":"moatd","pid":42,"msg":"..."}
//   (the message is JSON-escaped, so a hostile string in it cannot forge fields or lines).
enum class Format { kText, kJson };

// Configures the process-wide logger (stderr). Call once at startup from main().
void Init(std::string_view program, Level level = Level::kInfo, Format format = Format::kText);
void SetLevel(Level level);
// Parses "debug", "info", "warn", "error".
bool ParseLevel(std::string_view text, Level& out);
// Parses "text", "json".
bool ParseFormat(std::string_view text, Format& out);

template <typename... Args>
void Debug(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  spdlog::debug(fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void Info(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  spdlog::info(fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void Warn(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  spdlog::warn(fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void Error(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  spdlog::error(fmt, std::forward<Args>(args)...);
}

}  // namespace moat::log
