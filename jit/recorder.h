// JITATTN_RECORD=FILE: every distinct Signature a process needs is appended to FILE as one
// manifest entry per line (JSON Lines, docs/manifest.md), so `jitattn prewarm --manifest FILE`
// later compiles exactly what the workload used.
//
// Recording happens on the slow path of JitRuntime::kernel() only (the first time a signature is
// needed in a CUDA context), never on the warm hot path. Several processes may append to one
// file: each append takes an exclusive flock, skips a line that is already there and writes the
// line with a single write(). A failure to record warns once and never fails the call; a path
// that is not a regular file (/dev/full, a FIFO) or a file over kMaxManifestBytes stops recording
// for the process.
#pragma once
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_set>

#include "jit/signature.h"

namespace jitattn::jit {

// The largest manifest file jitattn reads (tools/manifest.cpp) or appends to (Recorder): far
// more than any workload records (a line is ~150 bytes), and a bound on what a wrong path such
// as /dev/zero costs.
inline constexpr size_t kMaxManifestBytes = size_t(64) << 20;

// The manifest entry that prewarms exactly `sig`'s kernel, every field explicit and in a fixed
// order, e.g. {"op":"fwd","arch":"sm_90a","dtype":"bf16","out_dtype":"bf16","head_dim":128,
// "head_dim_v":128,"bias":"causal","lse":true,"align":16}. Equal signatures give equal bytes,
// which is what deduplication compares. No trailing newline.
std::string manifest_line(const Signature& sig);

// The manifest entry that produces `spec`: manifest_line(spec.sig) when the tile table would pick
// spec's tile for that signature, else {"name":"<canonical name>"} (a name spells its tile).
std::string manifest_line(const KernelSpec& spec);

class Recorder {
 public:
  // An empty path records nothing.
  explicit Recorder(std::string path);

  // Appends manifest_line(sig) to the file unless this process or the file already has it.
  // Thread-safe; never throws.
  void record(const Signature& sig);

  const std::string& path() const { return path_; }
  bool enabled() const { return !path_.empty(); }

  // The process-wide recorder for `path`, so runtimes that share a file share its dedupe set.
  static Recorder& for_path(const std::string& path);

 private:
  // One locked read-check-append of `line`; throws std::runtime_error on an I/O failure (a
  // StopRecording, defined in recorder.cpp, when retrying could never help).
  void append_locked(const std::string& line);

  std::string path_;
  std::mutex mu_;
  std::unordered_set<std::string> seen_;  // lines known to be in the file
  bool warned_ = false;
  bool stopped_ = false;  // the path can never be recorded to: not a regular file, or too large
};

}  // namespace jitattn::jit
