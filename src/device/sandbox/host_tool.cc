#include "device/sandbox/host_tool.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/file.h"
#include "core/unique_fd.h"

namespace moat::device::sandbox {
namespace {

constexpr size_t kMaxOutput = 1 << 20;
constexpr size_t kMaxReported = 4096;

// An anonymous file (memfd) holding `data`, positioned at its start.
Result<UniqueFd> MemoryFile(std::string_view data, std::string_view what) {
  UniqueFd fd(::memfd_create("moat-tool-input", MFD_CLOEXEC));
  if (!fd) return Fail(ErrnoError("memfd_create", what, errno));
  MOAT_TRY(WriteAll(fd.get(), std::span(reinterpret_cast<const uint8_t*>(data.data()), data.size()),
                    what));
  if (::lseek(fd.get(), 0, SEEK_SET) != 0) return Fail(ErrnoError("lseek", what, errno));
  return fd;
}

Result<std::string> ReadToEnd(const UniqueFd& fd, std::string_view what) {
  if (::lseek(fd.get(), 0, SEEK_SET) != 0) return Fail(ErrnoError("lseek", what, errno));
  MOAT_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadAll(fd.get(), kMaxOutput, what));
  return std::string(bytes.begin(), bytes.end());
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (s.size() > kMaxReported) s.resize(kMaxReported);
  return s;
}

}  // namespace

std::optional<std::filesystem::path> FindHostTool(std::string_view name) {
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
    std::filesystem::path path = std::filesystem::path(dir) / name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return std::nullopt;
}

Result<std::string> RunHostTool(const std::vector<std::string>& argv, std::string_view input) {
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/') {
    return Fail(ErrorCode::kInvalidArgument, "host tool: argv[0] must be an absolute path");
  }
  const std::string command = fmt::format("{}", fmt::join(argv, " "));
  // Output goes to memfds too: the tool writes freely and nothing here can block on it.
  MOAT_ASSIGN_OR_RETURN(UniqueFd in, MemoryFile(input, command));
  MOAT_ASSIGN_OR_RETURN(UniqueFd out, MemoryFile({}, command));
  MOAT_ASSIGN_OR_RETURN(UniqueFd err, MemoryFile({}, command));

  posix_spawn_file_actions_t actions;
  if (int rc = posix_spawn_file_actions_init(&actions); rc != 0) {
    return Fail(ErrnoError("posix_spawn_file_actions_init", command, rc));
  }
  int rc = posix_spawn_file_actions_adddup2(&actions, in.get(), 0);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, out.get(), 1);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, err.get(), 2);
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  char* envp[] = {nullptr};
  pid_t pid = -1;
  if (rc == 0) rc = ::posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, cargv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return Fail(ErrnoError("posix_spawn", command, rc));

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Fail(ErrnoError("waitpid", command, errno));
  }
  MOAT_ASSIGN_OR_RETURN(std::string stdout_text, ReadToEnd(out, command));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    auto stderr_text = ReadToEnd(err, command);
    std::string detail = Trim(stderr_text.value_or("") + stdout_text);
    return Fail(ErrorCode::kIo, "{} failed ({}): {}", command,
                WIFEXITED(status) ? fmt::format("status {}", WEXITSTATUS(status))
                                  : fmt::format("signal {}", WTERMSIG(status)),
                detail);
  }
  return stdout_text;
}

}  // namespace moat::device::sandbox
