#include "cache/layered_cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>

#include "cache/digest.h"
#include "jitattn/error.h"

namespace jitattn::cache {
namespace {

namespace fs = std::filesystem;

// "" when `path` (which must exist) is owned by this user or root and not group/other-writable.
std::string unsafe_owner_or_mode(const std::string& path, const struct stat& st) {
  if (st.st_uid != ::geteuid() && st.st_uid != 0)
    return path + " is owned by uid " + std::to_string(st.st_uid) + ", not this user";
  if (st.st_mode & (S_IWGRP | S_IWOTH)) return path + " is writable by group or others";
  return "";
}

}  // namespace

std::string untrusted_location(const std::string& db_path) {
  const fs::path parent = fs::absolute(fs::path(db_path)).parent_path();
  struct stat st {};
  // A directory that does not exist yet is created by this process, and so is ours.
  if (::stat(parent.c_str(), &st) == 0)
    if (std::string why = unsafe_owner_or_mode(parent.string(), st); !why.empty()) return why;
  if (::lstat(db_path.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) return db_path + " is a symbolic link";
    if (std::string why = unsafe_owner_or_mode(db_path, st); !why.empty()) return why;
  }
  return "";
}

LayeredCache::LayeredCache(std::vector<std::string> read_only_paths, std::string user_path,
                           std::vector<std::string> read_only_sha256, RowCheck row_check)
    : ro_paths_(std::move(read_only_paths)),
      ro_sha256_(std::move(read_only_sha256)),
      user_path_(std::move(user_path)),
      row_check_(std::move(row_check)) {
  ro_sha256_.resize(ro_paths_.size());
}

std::unique_ptr<SqliteStore> open_shipped(const std::string& path, const std::string& pin) {
  // A pinned layer costs one SHA-256 pass over the file, read through the handle SQLite goes on
  // reading it with (SqliteStore's pinned constructor): checking the path before and after the
  // hash could not see a file renamed over it and back in between. Both refuse what is not a
  // regular file, which would hang the open or the hash.
  return std::make_unique<SqliteStore>(path, SqliteStore::Mode::ReadOnly, pin);
}

void LayeredCache::open_locked() {
  if (opened_) return;
  opened_ = true;
  for (size_t i = 0; i < ro_paths_.size(); ++i) {
    try {
      ro_.push_back(open_shipped(ro_paths_[i], ro_sha256_[i]));
    } catch (const std::exception& e) {
      std::cerr << "jitattn: skipping shipped cache " << ro_paths_[i] << ": " << e.what() << "\n";
    }
  }
  if (const std::string why = untrusted_location(user_path_); !why.empty()) {
    std::cerr << "jitattn: not using user cache " << user_path_ << " (" << why
              << "); kernels stay in memory. Make it yours and writable only by you, or set JITATTN_CACHE\n";
    return;
  }
  try {
    user_ = std::make_unique<SqliteStore>(user_path_, SqliteStore::Mode::ReadWrite);
  } catch (const std::exception& e) {
    std::cerr << "jitattn: user cache unavailable, kernels stay in memory: " << e.what() << "\n";
  }
}

void LayeredCache::recover_user_locked(const std::string& why) {
  const std::string damage = user_->integrity_problem();
  const SqliteStore::FileId damaged = user_->file_id();
  user_.reset();
  if (damage.empty()) {
    std::cerr << "jitattn: user cache " << user_path_ << " failed (" << why << "); kernels stay in memory\n";
    return;
  }
  try {
    // Other processes may meet the same damage: move_aside() moves the file only if it is still
    // the one this process found damaged, and then reopens whatever is at the path.
    SqliteStore::move_aside(user_path_, damaged, damage);
    user_ = std::make_unique<SqliteStore>(user_path_, SqliteStore::Mode::ReadWrite);
  } catch (const std::exception& e) {
    std::cerr << "jitattn: user cache unavailable, kernels stay in memory: " << e.what() << "\n";
  }
}

void LayeredCache::drop_shipped_locked(SqliteStore* store, const std::string& why) {
  std::cerr << "jitattn: skipping shipped cache " << store->path() << " from now on: " << why << "\n";
  ro_dropped_.push_back(store);
}

std::vector<SqliteStore*> LayeredCache::layers_locked(bool with_user) {
  std::vector<SqliteStore*> out;
  for (auto& s : ro_)
    if (std::find(ro_dropped_.begin(), ro_dropped_.end(), s.get()) == ro_dropped_.end()) out.push_back(s.get());
  if (with_user && user_) out.push_back(user_.get());
  return out;
}

std::optional<LayeredCache::Hit> LayeredCache::find(const std::string& key, bool skip_user) {
  std::lock_guard<std::mutex> lock(mu_);
  open_locked();
  for (SqliteStore* store : layers_locked(!skip_user)) {
    if (rejected_.count({store->path(), key})) continue;
    try {
      if (auto rec = store->get(key, row_check_)) {
        store->touch(key);  // best effort; a no-op on shipped DBs
        return Hit{std::move(*rec), store->path()};
      }
    } catch (const std::exception& e) {
      if (store == user_.get()) recover_user_locked(e.what());
      else drop_shipped_locked(store, e.what());
    }
  }
  return std::nullopt;
}

std::optional<LayeredCache::Hit> LayeredCache::find_by_name(const std::string& name, const std::string& source_hash,
                                                            const RowCheck& extra) {
  std::lock_guard<std::mutex> lock(mu_);
  open_locked();
  const RowCheck check = [&](const KernelRecord& r) {
    if (r.source_hash != source_hash) return std::string("compiled from another kernel_src");
    std::string why = row_check_ ? row_check_(r) : std::string();
    if (why.empty() && extra) why = extra(r);
    return why;
  };
  for (SqliteStore* store : layers_locked(true)) {
    try {
      if (auto rec = store->find_by_name(name, check); rec && !rejected_.count({store->path(), rec->key}))
        return Hit{std::move(*rec), store->path()};
    } catch (const std::exception& e) {
      if (store == user_.get()) recover_user_locked(e.what());
      else drop_shipped_locked(store, e.what());
    }
  }
  return std::nullopt;
}

bool LayeredCache::store(const KernelRecord& record, std::string* why) {
  std::lock_guard<std::mutex> lock(mu_);
  open_locked();
  const char* problem = !user_ ? "there is no usable user cache" : !user_->writable() ? "the user cache is read-only" : nullptr;
  if (problem) {
    if (why) *why = std::string(problem) + " (" + user_path_ + ")";
    return false;
  }
  try {
    user_->put(record);
    return true;
  } catch (const std::exception& e) {
    std::cerr << "jitattn: could not store " << record.name << ": " << e.what() << "\n";
    if (why) *why = e.what();
    return false;
  }
}

void LayeredCache::reject(const Hit& hit, const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  std::cerr << "jitattn: kernel cache " << hit.layer << ": " << hit.record.name << " (key " << hit.record.key
            << ") cannot be loaded (" << why << "); treating the row as corrupt\n";
  rejected_.insert({hit.layer, hit.record.key});
  if (user_ && user_->path() == hit.layer && user_->writable()) {
    try {
      user_->remove(hit.record.key);
      rejected_.erase({hit.layer, hit.record.key});  // gone; a recompiled row may take its place
    } catch (const std::exception&) {
    }
  }
}

std::unique_ptr<KeyClaim> LayeredCache::claim(const std::string& key, int timeout_ms, const std::atomic<bool>* abandon) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    open_locked();
    if (!user_ || !user_->writable()) return nullptr;
  }
  return std::make_unique<KeyClaim>(user_path_ + ".locks", key, timeout_ms, abandon);
}

SqliteStore* LayeredCache::user() {
  std::lock_guard<std::mutex> lock(mu_);
  open_locked();
  return user_.get();
}

std::vector<SqliteStore*> LayeredCache::read_only() {
  std::lock_guard<std::mutex> lock(mu_);
  open_locked();
  return layers_locked(false);
}

}  // namespace jitattn::cache
