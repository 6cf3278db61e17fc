#include "tools/cli_common.h"

#include <cstdio>
#include <ctime>
#include <filesystem>

#include "cache/layered_cache.h"
#include "jitattn/error.h"

namespace jitattn::tools {

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
  return buf;
}

std::string date(int64_t unix_seconds) {
  if (unix_seconds <= 0) return "-";
  const std::time_t t = std::time_t(unix_seconds);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

int guarded(const std::function<int()>& command) {
  try {
    return command();
  } catch (const Error& e) {
    for (const auto& reason : e.reasons()) std::fprintf(stderr, "jitattn: error: %s\n", reason.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "jitattn: error: %s\n", e.what());
  }
  return 1;
}

std::vector<Layer> open_layers(const jit::Env& env) {
  using Mode = cache::SqliteStore::Mode;
  std::vector<Layer> layers;
  auto open = [&](const std::string& path, bool shipped, const std::string& pin) {
    Layer l{path, shipped, nullptr, "", false};
    std::error_code ec;
    std::string untrusted;
    if (!shipped && !std::filesystem::exists(path, ec)) {
      l.problem = "not created yet (the first compile creates it)";
      l.absent = true;
    } else if (!shipped && !(untrusted = cache::untrusted_location(path)).empty()) {
      // The runtime's rule (cache/layered_cache.h): a user DB others could write is not used, so
      // what it holds is not what calls would get.
      l.problem = "not used (" + untrusted + "); calls run without a user cache. Make it yours and writable only by you";
    } else {
      try {
        // A shipped layer as the runtime opens it, its pinned digest checked (cache/layered_cache.h).
        l.store = shipped ? cache::open_shipped(path, pin) : std::make_unique<cache::SqliteStore>(path, Mode::Inspect);
      } catch (const std::exception& e) {
        l.problem = e.what();
      }
    }
    layers.push_back(std::move(l));
  };
  for (size_t i = 0; i < env.cache_ro.size(); ++i)
    open(env.cache_ro[i], true, i < env.cache_ro_sha256.size() ? env.cache_ro_sha256[i] : "");
  open(env.cache_path, false, "");
  return layers;
}

}  // namespace jitattn::tools
