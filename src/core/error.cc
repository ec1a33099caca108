#include "core/error.h"

namespace moat {

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid-argument";
    case ErrorCode::kNotFound:
      return "not-found";
    case ErrorCode::kAlreadyExists:
      return "already-exists";
    case ErrorCode::kPermissionDenied:
      return "permission-denied";
    case ErrorCode::kUnauthenticated:
      return "unauthenticated";
    case ErrorCode::kVerificationFailed:
      return "verification-failed";
    case ErrorCode::kLimitExceeded:
      return "limit-exceeded";
    case ErrorCode::kFailedPrecondition:
      return "failed-precondition";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kIo:
      return "io";
    case ErrorCode::kInternal:
      return "internal";
  }
  return "unknown";
}

}  // namespace moat
