// ls, export, import, merge, verify and gc: see tools/cache_commands.h.
#include "tools/cache_commands.h"
#include "tools/cli_common.h"

#include <CLI/CLI.hpp>

#include <cctype>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "cache/layered_cache.h"
#include "cache/shipping.h"
#include "cache/sqlite_store.h"
#include "jit/env.h"
#include "jit/jit_runtime.h"
#include "jit/kernel_sources.h"
#include "jit/compiler.h"
#include "jitattn/error.h"
#include "tools/manifest.h"
#include "tools/prewarm.h"

namespace jitattn::tools {
namespace {

namespace fs = std::filesystem;
using cache::KernelRecord;
using cache::SqliteStore;

// ---- formatting -------------------------------------------------------------------------

bool exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

// gc deletes rows, so its arguments are read strictly: a value that does not parse, or is out of
// range, is an error, never a size of 0 or an age of 0 (which would empty the cache).
constexpr int64_t kMaxGcBytes = int64_t(1) << 50;  // 1024T: beyond any cache, far from overflow
constexpr double kMaxGcDays = 36500;

// "500M", "2G", "64KiB", "4096" -> bytes (powers of 1024, as du and ls -h count): an integer
// with an optional K, M, G or T suffix (B, KB and KiB alike); no sign, fraction, exponent or inf.
int64_t parse_size(const std::string& text) {
  int64_t n = -1;
  const char* end = text.data() + text.size();
  const auto [rest, ec] = std::from_chars(text.data(), end, n);
  std::string unit(rest, end);
  for (auto& c : unit) c = char(std::toupper(static_cast<unsigned char>(c)));
  const std::pair<const char*, int> units[] = {{"", 0},    {"B", 0},    {"K", 10},   {"KB", 10},  {"KIB", 10},
                                               {"M", 20},  {"MB", 20},  {"MIB", 20}, {"G", 30},   {"GB", 30},
                                               {"GIB", 30}, {"T", 40},  {"TB", 40},  {"TIB", 40}};
  if (ec == std::errc() && n >= 0 && rest != text.data())
    for (const auto& [name, shift] : units)
      if (unit == name && n <= (kMaxGcBytes >> shift)) return n << shift;
  throw Error("--max-size '" + text + "': must be an integer byte count with optional K, M, G or T suffix " +
              "(e.g. 500M, 2G, 1048576), at most 1024T");
}

// "30", "0.5" -> days: a plain decimal number in [0, 36500]; no exponent, inf or nan.
double parse_days(const std::string& text) {
  double days = -1;
  const char* end = text.data() + text.size();
  const auto [rest, ec] = std::from_chars(text.data(), end, days, std::chars_format::fixed);
  const bool plain = text.find_first_not_of("0123456789.") == std::string::npos;  // from_chars takes inf, nan, -
  if (ec == std::errc() && rest == end && plain && days >= 0 && days <= kMaxGcDays) return days;
  throw Error("--older-than '" + text + "': must be a number of days such as 30 or 0.5, at most 36500");
}

// ---- running a command --------------------------------------------------------------------

// Runs a command from its CLI11 callback: prints an error the way the rest of the CLI does, then
// hands the exit code to app.exit() through CLI::RuntimeError (which it does not print).
void finish_command(const std::function<int()>& command) {
  const int rc = guarded(command);
  std::fflush(stdout);
  throw CLI::RuntimeError(rc);
}

// ---- layers -----------------------------------------------------------------------------

// ---- ls ---------------------------------------------------------------------------------

struct LsArgs {
  std::string target, op, bias, name;
};

// Reads a row's op and bias back from its canonical name; rows whose name does not parse
// (written by another jitattn) still match by target and name.
bool matches(const KernelRecord& r, const LsArgs& f) {
  if (!f.target.empty() && r.target != f.target) return false;
  if (!f.name.empty() && r.name.find(f.name) == std::string::npos) return false;
  if (f.op.empty() && f.bias.empty()) return true;
  const auto spec = jit::KernelSpec::parse(r.name);
  if (!spec) return false;
  if (!f.op.empty() && jit::to_string(spec->sig.op) != f.op) return false;
  if (!f.bias.empty() && jit::to_string(spec->sig.bias) != f.bias) return false;
  return true;
}

// Checks and normalizes the filters, so a typo is an error instead of an empty listing.
void check_filters(LsArgs& f) {
  if (!f.target.empty()) {
    const auto arch = jit::Arch::parse(f.target);
    if (!arch) throw Error("--target: \"" + f.target + "\" is not a known target: " + jit::Arch::rule());
    f.target = arch->name();
  }
  if (!f.op.empty() && !jit::parse_op(f.op)) throw Error("--op: \"" + f.op + "\" is not an op (fwd)");
  if (!f.bias.empty() && !jit::parse_bias_kind(f.bias))
    throw Error("--bias: \"" + f.bias + "\" is not one of none, causal, causal_br, tensor");
}

void print_rows(const std::vector<KernelRecord>& rows) {
  size_t w = 4;
  for (const auto& r : rows) w = std::max(w, r.name.size());
  std::printf("  %-*s  %-7s %10s %5s %8s %11s  %s\n", int(w), "name", "target", "size", "regs", "shared", "compile ms",
              "last used");
  for (const auto& r : rows)
    std::printf("  %-*s  %-7s %10s %5d %8d %11.1f  %s\n", int(w), r.name.c_str(), r.target.c_str(),
                human_bytes(double(r.size)).c_str(), r.registers, r.shared_bytes, r.compile_ms,
                date(r.last_used_at).c_str());
}

int cmd_ls(LsArgs f) {
  check_filters(f);
  int64_t total_rows = 0, total_bytes = 0;
  int unreadable = 0;  // layers that exist but could not be listed: exit 1, as verify does
  for (Layer& l : open_layers(jit::Env::get())) {
    if (!l.store) {
      std::printf("%s (%s): %s\n", l.path.c_str(), l.kind(), l.problem.c_str());
      unreadable += !l.absent;
      continue;
    }
    std::vector<KernelRecord> rows;
    int64_t all = 0, bytes = 0;
    for (auto& r : l.store->list()) {
      ++all;
      if (!matches(r, f)) continue;
      bytes += r.size;
      rows.push_back(std::move(r));
    }
    std::printf("%s (%s): %s on disk, %lld rows", l.path.c_str(), l.kind(), human_bytes(double(l.store->file_bytes())).c_str(),
                (long long)all);
    if (int64_t(rows.size()) != all) std::printf(", %zu match", rows.size());
    std::printf("\n");
    if (!rows.empty()) print_rows(rows);
    total_rows += int64_t(rows.size());
    total_bytes += bytes;
  }
  std::printf("total: %lld kernels, %s of binaries\n", (long long)total_rows, human_bytes(double(total_bytes)).c_str());
  if (unreadable) std::printf("ls: %d cache layer%s could not be read (above)\n", unreadable, unreadable == 1 ? "" : "s");
  return unreadable ? 1 : 0;
}

// ---- export, import, merge ----------------------------------------------------------------

void print_skipped(const std::vector<cache::RowProblem>& skipped) {
  for (const auto& p : skipped)
    std::printf("warning: skipped %s (key %s) of %s: %s\n", p.name.c_str(), p.key.c_str(), p.source.c_str(), p.why.c_str());
}

struct ExportArgs {
  std::string out, archs;
  std::vector<std::string> manifests;
  size_t max_kernels = kDefaultMaxKernels;
  bool force = false;
  unsigned jobs = std::max(1u, std::thread::hardware_concurrency());
};

// Every manifest kernel's row, from whichever layer has it or compiled now (prewarm's threads).
// Returns false (after printing why) if any kernel failed: a shipped DB that lacks a kernel its
// manifest promised would only fail later, in a JITATTN_JIT=off deployment.
bool fetch_manifest_rows(const std::vector<jit::KernelSpec>& specs, unsigned jobs, std::vector<KernelRecord>& rows) {
  jit::JitRuntime& rt = jit::JitRuntime::get();
  const PrewarmSummary done = prewarm(rt, specs, jobs, [](const PrewarmResult& r) {
    if (r.outcome == PrewarmResult::Outcome::failed) std::printf("FAILED %s: %s\n", r.name.c_str(), r.detail.c_str());
  });
  std::printf("export: %zu kernels from the manifest, %d compiled now, %d failed\n", specs.size(), done.compiled,
              done.failed);
  if (done.failed > 0) return false;
  rows.clear();
  for (const auto& spec : specs) rows.push_back(rt.binary(spec));  // each is in a cache layer by now
  return true;
}

// export and merge write through cache::ShippedDbWriter, which puts a temporary next to --out
// and renames it over --out. That replaces whatever is there (as root, a device node such as
// /dev/null), creates missing directories (a typo's), and over the user DB loses every row the
// command did not copy: all refused, --force or not, as merge and import refuse to read their own
// destination. `command` names the command in the messages.
void check_out(const std::string& out, const char* command) {
  const std::string cmd = command;
  if (out.empty()) throw Error("--out '': must name the database file to write");
  const fs::path path(out), dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error("--out '" + out + "': " + dir.string() + " is not an existing directory (" + cmd + " creates none)");
  const fs::file_status st = fs::status(path, ec);
  if (fs::exists(st) && !fs::is_regular_file(st))
    throw Error("--out '" + out + "': exists and is not a regular file; " + cmd + " replaces only a database file");
  const std::string& user = jit::Env::get().cache_path;
  std::error_code ec_out, ec_user;
  const fs::path out_abs = fs::weakly_canonical(path, ec_out), user_abs = fs::weakly_canonical(user, ec_user);
  if (fs::equivalent(path, user, ec) || (!ec_out && !ec_user && out_abs == user_abs))
    throw Error("--out '" + out + "' is the user cache (JITATTN_CACHE=" + user + "); " + cmd +
                " writes a new database to ship, never over the live one");
}

int cmd_export(const ExportArgs& a) {
  check_out(a.out, "export");
  const std::vector<jit::Arch> archs = parse_arch_list(a.archs);
  cache::ShippedDbWriter writer(a.out, a.force);  // refuses an existing --out before any work
  int64_t rows = 0, bytes = 0;
  if (!a.manifests.empty()) {
    std::vector<KernelRecord> records;
    if (!fetch_manifest_rows(read_manifests(a.manifests, archs, a.max_kernels), a.jobs, records)) {
      std::string names;
      for (const auto& m : a.manifests) names += (names.empty() ? "" : ", ") + m;
      throw Error("nothing written to " + a.out + ": some kernels of " + names + " failed (listed above)");
    }
    for (const auto& r : records) {
      writer.add(r);
      ++rows;
      bytes += int64_t(r.binary.size());
    }
  } else {
    const std::string& user_path = jit::Env::get().cache_path;
    if (!exists(user_path)) throw Error("no user cache at " + user_path + " to export (prewarm it, or pass --manifest)");
    SqliteStore user(user_path, SqliteStore::Mode::Inspect);
    std::set<std::string> targets;
    for (const auto& arch : archs) targets.insert(arch.name());
    cache::CopyReport rep;
    cache::copy_rows(user, writer.store(), rep,
                     [&](const KernelRecord& r) { return targets.empty() || targets.count(r.target) > 0; },
                     jit::binding_problem);  // a foreign binary is never shipped
    print_skipped(rep.skipped);
    // An empty shipped DB is almost surely a wrong --arch, found only when a deployment misses.
    if (rep.added == 0) throw Error("no sound row of " + user_path + " matches; nothing written to " + a.out);
    rows = rep.added;
    bytes = rep.bytes;
  }
  const int64_t file = writer.finish();
  std::printf("export: wrote %lld kernels (%s of binaries) to %s, %s on disk, sha256 %s (also in %s.sha256); "
              "ship it with JITATTN_CACHE_RO=%s@sha256:%s\n",
              (long long)rows, human_bytes(double(bytes)).c_str(), a.out.c_str(), human_bytes(double(file)).c_str(),
              writer.digest().c_str(), a.out.c_str(), a.out.c_str(), writer.digest().c_str());
  return 0;
}

void print_copy(const char* what, const cache::CopyReport& rep, const std::string& dest) {
  print_skipped(rep.skipped);
  std::printf("%s: %lld kernels added to %s (%s), %lld already there, %zu skipped\n", what, (long long)rep.added,
              dest.c_str(), human_bytes(double(rep.bytes)).c_str(), (long long)rep.already_present, rep.skipped.size());
}

// import and gc write the user DB: only one the runtime would use (cache/layered_cache.h). Rows
// imported into a DB others can write would never be served, and its owner may not want them.
void require_trusted_user_db(const std::string& path, const char* command) {
  if (const std::string why = cache::untrusted_location(path); !why.empty())
    throw Error(std::string(command) + ": not writing user cache " + path + " (" + why +
                "): the runtime does not use it either. Make it yours and writable only by you, or set JITATTN_CACHE");
}

int cmd_import(const std::vector<std::string>& files) {
  require_trusted_user_db(jit::Env::get().cache_path, "import");
  SqliteStore user(jit::Env::get().cache_path, SqliteStore::Mode::ReadWrite);
  print_copy("import", cache::merge_into(user, files, jit::binding_problem), user.path());
  return 0;
}

int cmd_merge(const std::string& out, const std::vector<std::string>& inputs, bool force) {
  check_out(out, "merge");
  cache::ShippedDbWriter writer(out, force);
  const cache::CopyReport rep = cache::merge_into(writer.store(), inputs, jit::binding_problem);
  // As export: an empty shipped DB only fails later, when a deployment misses.
  if (rep.added == 0) {
    print_skipped(rep.skipped);
    throw Error("no sound row in the inputs (" + std::to_string(rep.skipped.size()) + " skipped); nothing written to " + out);
  }
  writer.finish();
  print_copy("merge", rep, out);
  return 0;
}

// ---- verify -----------------------------------------------------------------------------

// What this build would look up: its NVRTC, its kernel_src and its keys. Without NVRTC the
// compiler and the keys cannot be checked; the hashes still are.
cache::CurrentBuild current_build(std::string* note) {
  cache::CurrentBuild cur;
  cur.source_hash = jit::kernel_sources_hash();
  cur.binding = jit::binding_problem;  // needs no compiler: the row's own key names its entry symbol
  // One identity per backend: a DB may hold NVIDIA and AMD rows side by side, each judged by the
  // compiler of its target. A backend whose compiler is unavailable is not checked (noted).
  auto identity_of = [note](jit::Backend b) {
    try {
      return jit::compiler_for(b).identity();
    } catch (const std::exception& e) {
      const std::string what = std::string(b == jit::Backend::hip ? "AMD" : "NVIDIA") + " rows' compilers and keys not checked, " +
                               (b == jit::Backend::hip ? "hiprtc" : "NVRTC") + " is unavailable: " + e.what();
      *note += (note->empty() ? "" : "; ") + what;
      return std::string();
    }
  };
  const auto identities = std::make_shared<std::map<jit::Backend, std::string>>();
  auto backend_of = [](const KernelRecord& r) {
    const auto arch = jit::Arch::parse(r.target);
    return arch ? arch->backend : jit::Backend::cuda;
  };
  // Asked lazily, once per backend a row names: a CUDA-only DB never loads hiprtc.
  auto identity = [identities, identity_of](jit::Backend b) -> const std::string& {
    auto it = identities->find(b);
    if (it == identities->end()) it = identities->emplace(b, identity_of(b)).first;
    return it->second;
  };
  cur.compiler_of = [identity, backend_of](const KernelRecord& r) { return identity(backend_of(r)); };
  cur.expected_key = [identity](const KernelRecord& r) {
    const auto spec = jit::KernelSpec::parse(r.name);
    // A user variant's key hashes its code, which only the process that built it holds: not
    // checkable here (the row's binding to its own key is still checked).
    if (!spec || spec->sig.variant) return std::string();
    const std::string& id = identity(jit::Backend(spec->sig.backend));
    return id.empty() ? std::string() : jit::kernel_key(*spec, id);
  };
  return cur;
}

int cmd_verify(std::vector<std::string> paths) {
  const jit::Env& env = jit::Env::get();
  std::vector<std::string> pins(paths.size());
  // Each DB is read as the runtime reads it: the user DB with its WAL, any other as a shipped
  // layer (immutable, without one; cache::verify).
  std::vector<bool> shipped(paths.size());
  for (size_t i = 0; i < paths.size(); ++i) {
    std::error_code ec;
    shipped[i] = !fs::equivalent(paths[i], env.cache_path, ec);
  }
  if (paths.empty()) {  // every layer that exists, shipped ones against their pinned digests
    paths = env.cache_ro;
    pins = env.cache_ro_sha256;
    shipped.assign(paths.size(), true);
    if (exists(env.cache_path)) {
      paths.push_back(env.cache_path);
      shipped.push_back(false);
    } else {
      std::printf("%s: no user cache yet\n", env.cache_path.c_str());
    }
    pins.resize(paths.size());
  }
  std::string note;  // filled as rows name a backend whose compiler is missing
  cache::CurrentBuild cur = current_build(&note);
  int bad = 0;
  for (size_t i = 0; i < paths.size(); ++i) {
    const std::string& path = paths[i];
    cur.sha256 = pins[i];
    const cache::VerifyReport rep = cache::verify(path, cur, shipped[i]);
    if (!rep.opened) {
      std::printf("%s: BAD: %s\n", path.c_str(), rep.problem.c_str());
      ++bad;
      continue;
    }
    std::printf("%s: schema %lld, %lld rows (%s): %s\n", path.c_str(), (long long)rep.schema_version, (long long)rep.rows,
                human_bytes(double(rep.bytes)).c_str(),
                rep.ok() ? (rep.stale.empty() ? "ok" : "ok, with stale rows") : "BAD");
    if (!rep.problem.empty()) std::printf("  error: %s\n", rep.problem.c_str());
    for (const auto& p : rep.corrupt) std::printf("  CORRUPT %s (key %s): %s\n", p.name.c_str(), p.key.c_str(), p.why.c_str());
    for (const auto& p : rep.stale) std::printf("  warning: stale %s: %s\n", p.name.c_str(), p.why.c_str());
    if (!rep.ok()) ++bad;
  }
  if (!note.empty()) std::printf("note: %s\n", note.c_str());
  if (bad) std::printf("verify: %d of %zu databases failed\n", bad, paths.size());
  return bad ? 1 : 0;
}

// ---- gc ---------------------------------------------------------------------------------

// Exactly one of the two is given. Parsed before the DB is opened: `--max-size ''` used to fall
// through to an age of 0.
int cmd_gc(const std::optional<std::string>& max_size, const std::optional<std::string>& older_than) {
  const int64_t max_bytes = max_size ? parse_size(*max_size) : 0;
  const double older_than_days = max_size ? 0 : parse_days(older_than.value_or(""));
  const std::string& path = jit::Env::get().cache_path;
  if (!exists(path)) {
    std::printf("gc: no user cache at %s, nothing to do\n", path.c_str());
    return 0;
  }
  require_trusted_user_db(path, "gc");
  SqliteStore user(path, SqliteStore::Mode::ReadWrite);
  const cache::GcReport rep =
      max_size ? cache::gc_to_size(user, max_bytes) : cache::gc_older_than(user, older_than_days);
  std::printf("gc: removed %lld rows (%s of binaries) from %s; database %s -> %s\n", (long long)rep.evicted.rows,
              human_bytes(double(rep.evicted.bytes)).c_str(), path.c_str(),
              human_bytes(double(rep.db_bytes_before)).c_str(), human_bytes(double(rep.db_bytes_after)).c_str());
  return 0;
}

}  // namespace

void add_cache_commands(CLI::App& app) {
  auto ls_args = std::make_shared<LsArgs>();
  auto* ls = app.add_subcommand("ls", "the kernels of every cache layer, with sizes");
  ls->add_option("--target", ls_args->target, "only this arch, e.g. sm_90a");
  ls->add_option("--op", ls_args->op, "only this op, e.g. fwd");
  ls->add_option("--bias", ls_args->bias, "only this bias kind: none, causal, causal_br, tensor");
  ls->add_option("--name", ls_args->name, "only names containing this");
  ls->callback([ls_args] { finish_command([&] { return cmd_ls(*ls_args); }); });

  auto ex = std::make_shared<ExportArgs>();
  auto* exp = app.add_subcommand("export", "write a compact read-only DB to ship (JITATTN_CACHE_RO=FILE@sha256:HEX), and FILE.sha256");
  exp->add_option("--out", ex->out, "the DB to write")->required();
  exp->add_option("--manifest,-m", ex->manifests,
                  "exactly these kernels (docs/manifest.md), compiling what no layer has; repeatable");
  add_max_kernels_option(*exp, ex->max_kernels);
  exp->add_option("--arch", ex->archs,
                  "with --manifest: archs for entries without one; without: only rows for these, e.g. sm_80,sm_90a");
  exp->add_flag("--force", ex->force, "replace --out if it exists");
  exp->add_option("--jobs,-j", ex->jobs, "parallel compiles (default: hardware threads)")->check(CLI::PositiveNumber);
  exp->callback([ex] { finish_command([&] { return cmd_export(*ex); }); });

  auto import_files = std::make_shared<std::vector<std::string>>();
  auto* imp = app.add_subcommand("import", "copy the rows of other DBs into the user DB");
  imp->add_option("FILE", *import_files, "DBs to read")->required()->check(CLI::ExistingFile);
  imp->callback([import_files] { finish_command([&] { return cmd_import(*import_files); }); });

  auto merge_out = std::make_shared<std::string>();
  auto merge_in = std::make_shared<std::vector<std::string>>();
  auto merge_force = std::make_shared<bool>(false);
  auto* merge = app.add_subcommand("merge", "combine DBs into a new compact DB");
  merge->add_option("--out", *merge_out, "the DB to write")->required();
  merge->add_option("IN", *merge_in, "DBs to read")->required()->check(CLI::ExistingFile);
  merge->add_flag("--force", *merge_force, "replace --out if it exists");
  merge->callback([=] { finish_command([&] { return cmd_merge(*merge_out, *merge_in, *merge_force); }); });

  auto verify_paths = std::make_shared<std::vector<std::string>>();
  auto* verify = app.add_subcommand("verify", "check schema, every page, pinned digests and every row's binary (exit 1 if any is corrupt)");
  verify->add_option("PATH", *verify_paths, "DBs to check (default: every cache layer)");
  verify->callback([verify_paths] { finish_command([&] { return cmd_verify(*verify_paths); }); });

  auto gc_size = std::make_shared<std::string>();
  auto gc_days = std::make_shared<std::string>();
  auto* gc = app.add_subcommand("gc", "evict least recently used rows of the user DB");
  auto* size_opt = gc->add_option("--max-size", *gc_size, "shrink the DB to at most this, e.g. 500M or 2G (at most 1024T)");
  auto* days_opt = gc->add_option("--older-than", *gc_days, "remove rows not used for this many days (at most 36500)");
  size_opt->excludes(days_opt);
  gc->callback([=] {
    finish_command([&] {
      if (!*size_opt && !*days_opt) throw Error("gc needs --max-size SIZE or --older-than DAYS");
      return *size_opt ? cmd_gc(*gc_size, std::nullopt) : cmd_gc(std::nullopt, *gc_days);
    });
  });
}

}  // namespace jitattn::tools
