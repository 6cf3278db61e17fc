// The prewarm manifest (docs/manifest.md): a list of kernel variants to compile ahead of time, so
// a deployment with JITATTN_JIT=off finds every kernel it needs in its cache. A manifest file is
// one JSON document (an array of entries, or {"kernels": [...]}) or JSON Lines (one entry per
// line), which is what JITATTN_RECORD writes (jit/recorder.h).
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "jit/signature.h"

namespace jitattn::tools {

// What a manifest may ask for (docs/manifest.md, "Limits"): a manifest is the user's own file,
// but a typo in it must not compile for a week, read forever or crash the reader.
inline constexpr size_t kDefaultMaxKernels = 4096;  // per run; `prewarm --max-kernels` raises it
inline constexpr int kMaxJsonDepth = 32;             // nesting of arrays and objects; a manifest needs 4
// A file larger than jit::kMaxManifestBytes (jit/recorder.h) is refused.

// Expands every entry into the product of its listed values, builds each KernelSpec with
// make_spec, checks it with validate_spec and drops duplicates (first occurrence wins, order is
// kept). Entries without "arch" take `default_archs`. Throws jitattn::Error with one reason per
// bad entry, each naming the entry's index ("kernels[2]: ..."), and when the kernels (or one
// entry's product) number more than `max_kernels`. Combinations the API never asks for (dbias on
// the forward, dropout with paged keys, ...) are errors.
std::vector<jit::KernelSpec> parse_manifest(const nlohmann::json& manifest, const std::vector<jit::Arch>& default_archs,
                                            size_t max_kernels = kDefaultMaxKernels);

// A manifest file's text in either form: a JSON document as above, else JSON Lines (blank lines
// and lines starting with '#' skipped). Reasons name the line ("m.jsonl:3: ...") for JSON Lines;
// `source` is the file name used in them. JSON nested deeper than kMaxJsonDepth and a key given
// twice in one object are errors; values echoed in errors are clipped.
std::vector<jit::KernelSpec> parse_manifest_text(const std::string& text, const std::vector<jit::Arch>& default_archs,
                                                 const std::string& source = "manifest",
                                                 size_t max_kernels = kDefaultMaxKernels);

// parse_manifest_text on a file's contents; throws jitattn::Error when it cannot be read, is a
// directory or is larger than jit::kMaxManifestBytes (so /dev/zero is refused, not read forever).
std::vector<jit::KernelSpec> read_manifest(const std::string& path, const std::vector<jit::Arch>& default_archs,
                                           size_t max_kernels = kDefaultMaxKernels);

// "sm_80,sm_90a" -> archs (spaces and empty items ignored); throws jitattn::Error on a bad name.
std::vector<jit::Arch> parse_arch_list(const std::string& list);

}  // namespace jitattn::tools
