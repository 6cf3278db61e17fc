#include "cache/layered_cache.h"

#include <iostream>

namespace jitattn::cache {

LayeredCache::LayeredCache(std::vector<std::string> read_only_paths, std::string user_path)
    : ro_paths_(std::move(read_only_paths)), user_path_(std::move(user_path)) {}

void LayeredCache::open_locked() {
  if (opened_) return;
  opened_ = true;
  for (const auto& path : ro_paths_) {
    try {
      ro_.push_back(std::make_unique<SqliteStore>(path, SqliteStore::Mode::ReadOnly));
    } catch (const std::exception& e) {
      std::cerr << "jitattn: skipping shipped cache " << path << ": " << e.what() << "\n";
    }
  }
  try {
    user_ = std::make_unique<SqliteStore>(user_path_, SqliteStore::Mode::ReadWrite);
  } catch (const std::exception& e) {
    std::cerr << "jitattn: user cache unavailable, kernels stay in memory: " << e.what() << "\n";
  }
}

std::optional<LayeredCache::Hit> LayeredCache::find(const std::string& key, bool skip_user) {
  std::lock_guard<std::mutex> lock(mu_);
  open_locked();
  for (auto& store : ro_)
    if (auto rec = store->get(key)) return Hit{std::move(*rec), store->path()};
  if (!skip_user && user_) {
    if (auto rec = user_->get(key)) {
      user_->touch(key);
      return Hit{std::move(*rec), user_->path()};
    }
  }
  return std::nullopt;
}

std::optional<LayeredCache::Hit> LayeredCache::find_by_name(const std::string& name, const std::string& source_hash) {
  std::lock_guard<std::mutex> lock(mu_);
  open_locked();
  std::vector<SqliteStore*> layers;
  for (auto& store : ro_) layers.push_back(store.get());
  if (user_) layers.push_back(user_.get());
  for (SqliteStore* store : layers)
    if (auto rec = store->find_by_name(name); rec && rec->source_hash == source_hash)
      return Hit{std::move(*rec), store->path()};
  return std::nullopt;
}

bool LayeredCache::store(const KernelRecord& record) {
  std::lock_guard<std::mutex> lock(mu_);
  open_locked();
  if (!user_) return false;
  try {
    user_->put(record);
    return true;
  } catch (const std::exception& e) {
    std::cerr << "jitattn: could not store " << record.name << ": " << e.what() << "\n";
    return false;
  }
}

SqliteStore* LayeredCache::user() {
  std::lock_guard<std::mutex> lock(mu_);
  open_locked();
  return user_.get();
}

std::vector<SqliteStore*> LayeredCache::read_only() {
  std::lock_guard<std::mutex> lock(mu_);
  open_locked();
  std::vector<SqliteStore*> out;
  for (auto& s : ro_) out.push_back(s.get());
  return out;
}

}  // namespace jitattn::cache
