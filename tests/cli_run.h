// Runs the jitattn CLI (JITATTN_CLI, set by tests/CMakeLists.txt) in a fresh process, as a user
// would, capturing what it prints.
#pragma once
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace jitattn::test {

struct CliRun {
  int rc;
  std::string output;  // stdout and stderr together
};

// Runs `jitattn ARGS` with `env` (VAR=value ...) prepended; the output goes through a file in `dir`.
// With max_file_bytes, the process runs under RLIMIT_FSIZE = max_file_bytes with SIGXFSZ ignored,
// so a write that would make any file larger fails with EFBIG, as on a full disk (root included).
inline CliRun cli(const std::string& env, const std::string& args, const std::filesystem::path& dir,
                  uint64_t max_file_bytes = 0) {
  const std::filesystem::path log = dir / "out.txt";
  const std::string cmd = "env " + env + " " + JITATTN_CLI + " " + args + " > " + log.string() + " 2>&1";
  int status = -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (max_file_bytes) {
      std::signal(SIGXFSZ, SIG_IGN);  // kept across exec
      const rlimit lim{rlim_t(max_file_bytes), rlim_t(max_file_bytes)};
      if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(126);
    }
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  if (pid > 0) ::waitpid(pid, &status, 0);
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  return {pid > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
}

}  // namespace jitattn::test
