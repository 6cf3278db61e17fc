// Runs the jitattn CLI (JITATTN_CLI, set by tests/CMakeLists.txt) in a fresh process, as a user
// would, capturing what it prints.
#pragma once
#include <sys/wait.h>

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
inline CliRun cli(const std::string& env, const std::string& args, const std::filesystem::path& dir) {
  const std::filesystem::path log = dir / "out.txt";
  const std::string cmd = "env " + env + " " + JITATTN_CLI + " " + args + " > " + log.string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
}

}  // namespace jitattn::test
