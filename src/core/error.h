// Error values and Result<T>, the return type of every fallible Moat function.
//
// No exceptions cross Moat APIs: a function that can fail returns Result<T>, which holds
// either a T or an Error. An Error carries a small, stable code (callers branch on it)
// and a human message that names the offending input ("manifest: Capabilities.Gpio[2]: ...").
// Libraries return errors; the layer that decides what to do with them logs them.
#pragma once

#include <fmt/format.h>

#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace moat {

enum class ErrorCode {
  kInvalidArgument,     // malformed or out-of-range input
  kNotFound,            // a named thing does not exist
  kAlreadyExists,       // refusing to overwrite or duplicate
  kPermissionDenied,    // the caller may not do this (or a file is too open)
  kUnauthenticated,     // no or bad credentials
  kVerificationFailed,  // a signature, digest, chain or policy check failed
  kLimitExceeded,       // a size, count or depth limit was hit
  kFailedPrecondition,  // the system is not in the state the operation needs
  kUnavailable,         // a peer or resource is temporarily unreachable; retry may help
  kIo,                  // an operating-system call failed
  kInternal,            // a bug or an unexpected library failure
};

// Stable lowercase name of a code, e.g. "invalid-argument"; used in logs and API problem types.
std::string_view ErrorCodeName(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is "<context>: <message>", to add where an error passed.
  Error WithContext(std::string_view context) const {
    return Error(code_, fmt::format("{}: {}", context, message_));
  }

 private:
  ErrorCode code_;
  std::string message_;
};

// Result<T>: a [[nodiscard]] std::expected<T, Error>. Result<void> holds no value.
template <typename T>
class [[nodiscard]] Result : public std::expected<T, Error> {
 public:
  using std::expected<T, Error>::expected;
  Result(const std::expected<T, Error>& e) : std::expected<T, Error>(e) {}
  Result(std::expected<T, Error>&& e) : std::expected<T, Error>(std::move(e)) {}
};

// Builds an error to return: `return Fail(ErrorCode::kNotFound, "no device {}", id);`
template <typename... Args>
std::unexpected<Error> Fail(ErrorCode code, fmt::format_string<Args...> format, Args&&... args) {
  return std::unexpected<Error>(Error(code, fmt::format(format, std::forward<Args>(args)...)));
}

inline std::unexpected<Error> Fail(Error error) { return std::unexpected<Error>(std::move(error)); }

// A successful Result<void>.
inline Result<void> Ok() { return {}; }

}  // namespace moat

template <>
struct fmt::formatter<moat::Error> : fmt::formatter<std::string_view> {
  auto format(const moat::Error& e, format_context& ctx) const {
    return fmt::format_to(ctx.out(), "{} ({})", e.message(), moat::ErrorCodeName(e.code()));
  }
};

#define MOAT_CONCAT_INNER_(a, b) a##b
#define MOAT_CONCAT_(a, b) MOAT_CONCAT_INNER_(a, b)

// Propagates the error of a Result<void> (or any Result) expression.
// (The temporary's name is unique per expansion, so MOAT_TRY may nest, e.g. inside a lambda
// passed to another MOAT_TRY.)
#define MOAT_TRY(expr) MOAT_TRY_IMPL_(MOAT_CONCAT_(moat_try_result_, __COUNTER__), expr)
#define MOAT_TRY_IMPL_(tmp, expr)                        \
  do {                                                   \
    auto&& tmp = (expr);                                 \
    if (!tmp) {                                          \
      return ::std::unexpected(std::move(tmp).error());  \
    }                                                    \
  } while (false)

// `MOAT_ASSIGN_OR_RETURN(auto key, LoadKey(path));` declares `key` from the value or returns
// the error.
#define MOAT_ASSIGN_OR_RETURN(decl, expr) \
  MOAT_ASSIGN_OR_RETURN_IMPL_(MOAT_CONCAT_(moat_result_, __COUNTER__), decl, expr)
#define MOAT_ASSIGN_OR_RETURN_IMPL_(tmp, decl, expr)  \
  auto tmp = (expr);                                  \
  if (!tmp) {                                         \
    return ::std::unexpected(std::move(tmp).error()); \
  }                                                   \
  decl = std::move(*tmp)
