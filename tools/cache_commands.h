// The jitattn commands that read and move kernel caches (issue 5, "Shipping"):
//   ls      every row of every layer, filtered by target/op/bias/name, with sizes
//   export  a compact read-only DB for deployment (JITATTN_CACHE_RO), from a manifest or the user DB
//   import  rows of other DBs into the user DB
//   merge   rows of several DBs into a new compact DB
//   verify  schema, every page, pinned digests, every row's binary (size, SHA-256, entry symbol);
//           stale rows (other compiler or kernel_src) as warnings
//   gc      evict least recently used rows of the user DB, by size or by age
// The library side is cache/shipping.h.
#pragma once

namespace CLI {
class App;
}

namespace jitattn::tools {

// Adds the commands above to `app`. Each runs from its CLI11 callback and ends the parse with
// CLI::RuntimeError(exit code), which `app.exit()` turns into that code without printing; errors
// are printed as `jitattn: error: ...` with exit code 1.
void add_cache_commands(CLI::App& app);

}  // namespace jitattn::tools
