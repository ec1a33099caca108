// Test helper: runs a shell command and captures what it prints. Tests use it to cross-check
// Moat against independent implementations (the openssl and curl command lines).
#pragma once

#include <string>

namespace moat::test_support {

struct CommandResult {
  int status = -1;     // the exit status, or -1 if the command did not exit normally
  std::string output;  // stdout and stderr, interleaved
};

CommandResult RunShell(const std::string& command);

}  // namespace moat::test_support
