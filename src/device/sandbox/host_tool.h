// Running a host tool (ip, nft) for the launcher's host-side set-up: posix_spawn with an argv
// vector, never a shell; an empty environment; stdin from a memfd holding `input` (so a tool that
// exits early cannot raise SIGPIPE in moatd, and a large input cannot deadlock against its output).
//
// Tools are looked up in a fixed list of system directories, never through $PATH.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace moat::device::sandbox {

// The absolute path of `name` in /usr/sbin, /sbin, /usr/bin or /bin; nullopt if missing.
std::optional<std::filesystem::path> FindHostTool(std::string_view name);

// Runs argv[0] (an absolute path) with `input` on stdin; waits for it. Returns its stdout; a spawn
// failure, a signal or a non-zero exit is kIo naming the command and holding the first 4 KiB of
// its stderr and stdout. Thread-safe; reaps only its own child.
Result<std::string> RunHostTool(const std::vector<std::string>& argv, std::string_view input = {});

}  // namespace moat::device::sandbox
