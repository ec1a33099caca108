#include "core/log.h"

#include <spdlog/pattern_formatter.h>
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

// %* in a pattern: the message as the inside of a JSON string.
class JsonEscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm& /*tm_time*/,
              spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (char c : std::string_view(msg.payload.data(), msg.payload.size())) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        dest.push_back('\\');
        dest.push_back(c);
      } else if (u < 0x20 || u == 0x7f) {
        const char esc[] = {'\\', 'u', '0', '0', kHex[u >> 4], kHex[u & 15]};
        dest.append(esc, esc + sizeof esc);
      } else {
        dest.push_back(c);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscapedMessage>();
  }
};

}  // namespace

void Init(std::string_view program, Level level, Format format) {
  auto logger = spdlog::stderr_color_mt(std::string(program));
  if (format == Format::kJson) {
    // Program names are ours (no escaping needed); the message is escaped by %*.
    auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<JsonEscapedMessage>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","program":"%n","pid":%P,"msg":"%*"})");
    logger->set_formatter(std::move(formatter));
    logger->set_level(ToSpd(level));
    spdlog::set_default_logger(logger);
    return;
  }
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

bool ParseFormat(std::string_view text, Format& out) {
  if (text == "text")
    out = Format::kText;
  else if (text == "json")
    out = Format::kJson;
  else
    return false;
  return true;
}

}  // namespace moat::log
