// A fresh directory under the system temp dir, removed with everything in it at scope exit.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>

namespace jitattn::test {

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix) {
    path = std::filesystem::temp_directory_path() /
           (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(path);
    // Only the owner may write it, whatever the umask: a user cache in a directory others can
    // write is not used (cache/layered_cache.h).
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

}  // namespace jitattn::test
