// `jitattn prewarm`: compile every kernel of one or more manifests (docs/manifest.md) into the
// user cache ahead of time, on several threads, with a progress bar on a terminal and one line
// per kernel otherwise. Kernels any cache layer already holds are counted as cached, so a second
// run compiles nothing.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "jit/jit_runtime.h"
#include "jit/signature.h"

namespace CLI {
class App;
}

namespace jitattn::tools {

// What became of one kernel.
struct PrewarmResult {
  enum class Outcome { compiled, cached, failed };
  std::string name;
  Outcome outcome = Outcome::failed;
  std::string detail;  // cached: the layer that holds it; failed: the whole error message
  double ms = 0;
};

struct PrewarmSummary {
  int compiled = 0, cached = 0, failed = 0;
  double seconds = 0;
  std::vector<PrewarmResult> failures;  // in manifest order
};

// Fetches every spec's binary through rt.binary() on `jobs` threads, so what no cache layer holds
// is compiled and stored (as rt's JITATTN_JIT policy allows). on_done is called once per kernel as
// it finishes, never by two threads at once.
PrewarmSummary prewarm(jit::JitRuntime& rt, const std::vector<jit::KernelSpec>& specs, unsigned jobs,
                       const std::function<void(const PrewarmResult&)>& on_done = {});

// The kernels of every manifest file, each once, in order of first appearance (docs/manifest.md).
// Throws jitattn::Error when they stand for more than max_kernels, one entry's product or the
// files together; what prewarm and export --manifest read.
std::vector<jit::KernelSpec> read_manifests(const std::vector<std::string>& manifests,
                                            const std::vector<jit::Arch>& archs, size_t max_kernels);

// Adds `--max-kernels N` (the limit above, default kDefaultMaxKernels) to a subcommand.
void add_max_kernels_option(CLI::App& cmd, size_t& max_kernels);

// The first line of an error message: what a summary shows of an NVRTC log.
std::string first_line(const std::string& message);

// Adds the `prewarm` subcommand to `app`. Call the returned function when it was chosen; it
// returns the exit code and throws jitattn::Error for the CLI to print.
struct Subcommand {
  CLI::App* app = nullptr;
  std::function<int()> run;
};
Subcommand add_prewarm_command(CLI::App& app);

}  // namespace jitattn::tools
