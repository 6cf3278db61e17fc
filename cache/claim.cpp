#include "cache/claim.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

namespace jitattn::cache {

KeyClaim::KeyClaim(const std::string& lock_dir, const std::string& key, int timeout_ms, const std::atomic<bool>* abandon)
    : path_(lock_dir + "/" + key + ".lock") {
  if (::mkdir(lock_dir.c_str(), 0700) != 0 && errno != EEXIST) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (int attempt = 0;; ++attempt) {
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return;
    // Polled rather than blocking, so that a holder that is alive but stuck costs a duplicate
    // compile after the timeout instead of a hang.
    bool locked = false;
    while (!(locked = ::flock(fd, LOCK_EX | LOCK_NB) == 0) && errno == EWOULDBLOCK &&
           std::chrono::steady_clock::now() < deadline) {
      waited_ = true;
      if (abandon && abandon->load(std::memory_order_relaxed)) {
        abandoned_ = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!locked) {
      ::close(fd);
      return;
    }
    // The file we locked must still be the one at the path: a finishing holder unlinks it, and
    // a lock on an unlinked file excludes nobody.
    struct stat held {}, now {};
    if (::fstat(fd, &held) == 0 && ::stat(path_.c_str(), &now) == 0 && held.st_dev == now.st_dev &&
        held.st_ino == now.st_ino) {
      fd_ = fd;
      return;
    }
    ::close(fd);
    if (std::chrono::steady_clock::now() >= deadline || attempt > 1000) return;
  }
}

KeyClaim::~KeyClaim() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // while still locked, so no one can lock this file and believe it current
  ::close(fd_);
}

}  // namespace jitattn::cache
