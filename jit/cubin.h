// What a stored binary must be before the driver ever sees it, checked without a GPU: an ELF64
// cubin (EM_CUDA) — or, for an AMD target, an AMDGPU code object (EM_AMDGPU) whose header flags
// name that target — whose symbol table defines the function `entry` (jit/codegen.h
// kernel_entry, which carries the row's key). A blob compiled for another key, another target,
// another file, or nothing at all fails here and is treated as a corrupt row.
#pragma once
#include <string>

#include "jit/signature.h"

namespace jitattn::jit {

// "" when `binary` is a CUDA ELF defining the function `entry`, else why not.
std::string cubin_problem(const std::string& binary, const std::string& entry);
// The same for `arch`'s backend: a CUDA cubin, or an AMDGPU code object for arch's gfx target.
std::string binary_problem(const std::string& binary, const std::string& entry, const Arch& arch);

}  // namespace jitattn::jit
