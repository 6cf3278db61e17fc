// Makes a file unwritable for this process for a scope, root included: chmod a-w for an
// ordinary user; for root (who writes read-only files) the immutable attribute, which needs
// CAP_LINUX_IMMUTABLE and a filesystem that has it. ok() says whether it worked.
#pragma once
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

namespace jitattn::test {

class ReadOnlyFile {
 public:
  explicit ReadOnlyFile(std::string path) : path_(std::move(path)) {
    if (::geteuid() != 0) {
      ok_ = ::chmod(path_.c_str(), 0444) == 0;
      return;
    }
    ok_ = set_immutable(true);
  }
  ~ReadOnlyFile() {
    if (!ok_) return;
    if (::geteuid() != 0) ::chmod(path_.c_str(), 0644);
    else set_immutable(false);
  }
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
  bool ok() const { return ok_; }

 private:
  bool set_immutable(bool on) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    int flags = 0;
    bool done = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
    flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
    done = done && ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
    ::close(fd);
    return done;
  }

  std::string path_;
  bool ok_ = false;
};

}  // namespace jitattn::test
