// What every `moat` command shares: where it writes, and how a failure becomes exit status 1.
#pragma once

#include <ostream>
#include <string_view>

#include "cli/cli.h"
#include "core/error.h"

namespace moat::cli {

// Where a command writes: results to `out`, progress and errors to `err`.
struct Streams {
  std::ostream& out;
  std::ostream& err;
};

// Runs `body`; on error prints "moat <command>: <message>" and sets exit code 1.
template <typename Fn>
void Run(Streams s, int& exit_code, std::string_view command, Fn&& body) {
  Result<void> r = body();
  if (!r) {
    s.err << "moat " << command << ": " << r.error().message() << "\n";
    exit_code = kExitFailure;
  }
}

}  // namespace moat::cli
