// The kernel_src/ files, embedded into the library at build time (cmake/embed_sources.cmake).
#pragma once
#include <string>
#include <vector>

namespace jitattn::jit {

struct EmbeddedFile {
  const char* name;  // file name as #included, e.g. "fwd_mma.cuh"
  const char* text;
};

const std::vector<EmbeddedFile>& kernel_sources();
// 32 hex chars: XXH3-128 over every file's name and text; part of every cache key.
const std::string& kernel_sources_hash();

}  // namespace jitattn::jit
