// Logging facade. Libraries do not log errors they return; the layer that decides logs.
// SECURITY: never pass key material, nonces used as secrets, or PINs to these functions.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace moat::log {

enum class Level { kDebug, kInfo, kWarn, kError };

// Configures the process-wide logger (stderr). Call once at startup from main().
void Init(std::string_view program, Level level = Level::kInfo);
void SetLevel(Level level);
// Parses "debug", "info", "warn", "error".
bool ParseLevel(std::string_view text, Level& out);

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
