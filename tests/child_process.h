// A test body that, when broken, would hang or eat the machine's memory (reading /dev/zero to
// its end) runs in a forked child with a time and heap limit, so a regression fails the test
// instead of hanging the test binary.
#pragma once
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <string>

namespace jitattn::test {

// Runs body() in a forked child whose stderr goes to `stderr_file`, which SIGALRM kills after
// `seconds` and whose heap may grow by `heap_bytes` at most. True if body() returned.
inline bool finishes_in_child(const std::string& stderr_file, unsigned seconds, const std::function<void()>& body,
                              size_t heap_bytes = size_t(512) << 20) {
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (!std::freopen(stderr_file.c_str(), "w", stderr)) _exit(3);
    size_t pages = 0, data_pages = 0;
    std::ifstream("/proc/self/statm") >> pages >> pages >> pages >> pages >> pages >> data_pages;  // 6th: data + stack
    const rlim_t limit = rlim_t(data_pages) * rlim_t(sysconf(_SC_PAGESIZE)) + heap_bytes;
    const rlimit rl{limit, limit};
    setrlimit(RLIMIT_DATA, &rl);
    alarm(seconds);
    try {
      body();
    } catch (...) {
      _exit(2);
    }
    std::fflush(stderr);
    _exit(0);  // no gtest teardown in the child
  }
  int status = 0;
  return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// The whole of a file, "" if it cannot be read.
inline std::string file_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace jitattn::test
