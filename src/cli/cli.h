// The `moat` command-line tool. Offline commands (keys, image packages, manifests) work
// without a service; online commands (later) talk to moat-service over mutual TLS.
//
// Exit codes: 0 success, 1 the operation failed (bad input, failed verification, I/O),
// 2 usage error (unknown command or option, missing argument).
#pragma once

#include <iosfwd>

namespace moat::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Runs `moat` with the given arguments, writing results to `out` and diagnostics to `err`.
int Main(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace moat::cli
