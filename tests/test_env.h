// A JitRuntime configuration for tests: its own user DB and JITATTN_JIT policy, nothing shipped.
#pragma once
#include <filesystem>

#include "jit/env.h"

namespace jitattn::test {

inline jit::Env env_for(const std::filesystem::path& db, jit::JitPolicy policy) {
  jit::Env e;
  e.cache_path = db.string();
  e.jit = policy;
  return e;
}

}  // namespace jitattn::test
