// One compile per key across processes: before compiling, a process claims the key with an
// exclusive flock(2) on DIR/<key>.lock (DIR is the user DB's path + ".locks"), and whoever gets
// the claim after another holder looks in the DB again before compiling. The kernel drops a
// flock when its holder dies, so a killed compiler never leaves a key stuck; the file is removed
// by the holder that finishes, and a claimant that locked a file removed meanwhile tries again.
#pragma once
#include <atomic>
#include <string>

namespace jitattn::cache {

class KeyClaim {
 public:
  // Waits up to `timeout_ms` for the claim. Never throws: when the lock directory cannot be
  // used or the wait runs out (a live holder stuck), held() is false and the caller compiles
  // anyway, which costs a duplicate compile, never a failed call. A wait also ends, not held,
  // once `*abandon` is true (a process at exit does not wait for another's compile).
  KeyClaim(const std::string& lock_dir, const std::string& key, int timeout_ms, const std::atomic<bool>* abandon = nullptr);
  ~KeyClaim();
  KeyClaim(const KeyClaim&) = delete;
  KeyClaim& operator=(const KeyClaim&) = delete;

  bool held() const { return fd_ >= 0; }
  // True when another process held the claim first: the row it compiled may be in the DB now.
  bool waited() const { return waited_; }
  // True when the wait ended because `*abandon` became true.
  bool abandoned() const { return abandoned_; }

 private:
  std::string path_;
  int fd_ = -1;
  bool waited_ = false;
  bool abandoned_ = false;
};

}  // namespace jitattn::cache
