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

// Expands every entry into the product of its listed values, builds each KernelSpec with
// make_spec, checks it with validate_spec and drops duplicates (first occurrence wins, order is
// kept). Entries without "arch" take `default_archs`. Throws jitattn::Error with one reason per
// bad entry, each naming the entry's index ("kernels[2]: ...").
std::vector<jit::KernelSpec> parse_manifest(const nlohmann::json& manifest, const std::vector<jit::Arch>& default_archs);

// A manifest file's text in either form: a JSON document as above, else JSON Lines (blank lines
// and lines starting with '#' skipped). Reasons name the line ("m.jsonl:3: ...") for JSON Lines;
// `source` is the file name used in them.
std::vector<jit::KernelSpec> parse_manifest_text(const std::string& text, const std::vector<jit::Arch>& default_archs,
                                                 const std::string& source = "manifest");

// parse_manifest_text on a file's contents; throws jitattn::Error when it cannot be read.
std::vector<jit::KernelSpec> read_manifest(const std::string& path, const std::vector<jit::Arch>& default_archs);

// "sm_80,sm_90a" -> archs (spaces and empty items ignored); throws jitattn::Error on a bad name.
std::vector<jit::Arch> parse_arch_list(const std::string& list);

}  // namespace jitattn::tools
