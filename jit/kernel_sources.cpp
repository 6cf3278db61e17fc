#include "jit/kernel_sources.h"

#include <string>

#include "cache/sqlite_store.h"

namespace jitattn::jit {

const std::string& kernel_sources_hash() {
  static const std::string hash = [] {
    std::string all;
    for (const EmbeddedFile& f : kernel_sources()) {
      all += f.name;
      all += '\0';
      all += f.text;
      all += '\0';
    }
    return cache::hash_hex(all);
  }();
  return hash;
}

}  // namespace jitattn::jit
