// The JIT runtime's cache path without a GPU: compile → store → a fresh process (runtime) is
// served from SQLite with zero compiles; a corrupted row is recompiled; JITATTN_JIT=off refuses.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "cache/claim.h"
#include "cache/sqlite_store.h"
#include "jit/compiler.h"
#include "jit/cuda_driver.h"
#include "jit/jit_runtime.h"
#include "jit/nvrtc_compiler.h"
#include "jitattn/attention.h"
#include "jitattn/bias.h"
#include "jitattn/error.h"
#include "temp_dir.h"
#include "test_env.h"

namespace jitattn::jit {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

KernelSpec small_spec() {
  Signature s;
  s.dtype = s.out_dtype = DType::f16;
  s.head_dim = s.head_dim_v = 32;
  s.bias = BiasKind::causal;
  s.arch_sm = 80;
  s.lse = 1;
  s.align = 16;
  return make_spec(s);
}

using test::env_for;

TEST(Runtime, CompilesOnceThenServesFromSqlite) {
  TempDir dir("jitattn_runtime_test");
  const fs::path db = dir.path / "kernels.sqlite";
  const KernelSpec spec = small_spec();
  std::string served;
  {
    JitRuntime rt(env_for(db, JitPolicy::on));
    const auto rec = rt.binary(spec, &served);
    EXPECT_EQ(served, "nvrtc");
    EXPECT_EQ(rt.stats().compiles.load(), 1);
    EXPECT_GT(rec.registers, 0);
    EXPECT_EQ(rec.shared_bytes, spec.smem_bytes());
  }
  JitRuntime fresh(env_for(db, JitPolicy::on));
  const auto rec = fresh.binary(spec, &served);
  EXPECT_EQ(served, db.string());
  EXPECT_EQ(fresh.stats().compiles.load(), 0);
  EXPECT_EQ(rec.name, spec.name());
}

// The backward's prefetch: the missing binaries of a call, each once, side by side; nothing
// when fewer than two are missing or when a compile would not be stored; an invalid signature
// among them is left for kernel() to refuse.
TEST(Runtime, PrefetchCompilesTheMissingKernelsOfACallOnce) {
  TempDir dir("jitattn_runtime_test");
  const fs::path db = dir.path / "kernels.sqlite";
  Signature pre = small_spec().sig, post = pre, post64 = pre, bad = pre;
  pre.op = Op::bwd_pre, post.op = Op::bwd_post, post64.op = Op::bwd_post;
  post64.head_dim = post64.head_dim_v = 64;
  bad.head_dim = 12;  // not a multiple of 8
  const ContextInfo no_gpu{};
  {
    JitRuntime readonly(env_for(db, JitPolicy::readonly));
    EXPECT_EQ(readonly.prefetch({pre, post}, no_gpu), 0);
    EXPECT_EQ(readonly.stats().compiles.load(), 0);
    std::ofstream(dir.path / "a_file") << "not a directory";
    JitRuntime no_db(env_for(dir.path / "a_file" / "kernels.sqlite", JitPolicy::on));  // no user DB to keep them
    EXPECT_EQ(no_db.prefetch({pre, post}, no_gpu), 0);
    EXPECT_EQ(no_db.stats().compiles.load(), 0);
  }
  JitRuntime rt(env_for(db, JitPolicy::on));
  EXPECT_EQ(rt.prefetch({pre}, no_gpu), 0);  // one missing kernel: kernel() compiles it as before
  EXPECT_EQ(rt.stats().compiles.load(), 0);
  EXPECT_EQ(rt.prefetch({pre, post, pre, bad, post64}, no_gpu), 4);
  EXPECT_EQ(rt.stats().compiles.load(), 3);
  JitRuntime fresh(env_for(db, JitPolicy::off));  // a later process finds all three stored
  for (const Signature& s : {pre, post, post64}) {
    std::string served;
    EXPECT_NO_THROW(fresh.binary(make_spec(s), &served));
    EXPECT_EQ(served, db.string());
  }
  EXPECT_EQ(fresh.stats().compiles.load(), 0);
}

// The forward's prefetch of its backward: started without waiting, each kernel once however
// often it is asked for (one missing kernel is enough), joined when the runtime goes; a call
// for one of them meanwhile waits for that compile instead of starting another.
TEST(Runtime, PrefetchAsyncCompilesInTheBackgroundOnce) {
  TempDir dir("jitattn_runtime_test");
  const fs::path db = dir.path / "kernels.sqlite";
  Signature pre = small_spec().sig, post = pre, bad = pre;
  pre.op = Op::bwd_pre, post.op = Op::bwd_post;
  bad.head_dim = 12;  // not a multiple of 8: refused by validate_spec, never compiled
  const ContextInfo no_gpu{};
  {
    JitRuntime readonly(env_for(db, JitPolicy::readonly));
    EXPECT_EQ(readonly.prefetch_async({pre, post}, no_gpu), 0);
  }
  {
    JitRuntime rt(env_for(db, JitPolicy::on));
    EXPECT_EQ(rt.prefetch_async({pre}, no_gpu), 1);
    EXPECT_EQ(rt.prefetch_async({pre, post, bad}, no_gpu), 2);  // pre was asked for already
    EXPECT_EQ(rt.prefetch_async({pre, post, bad}, no_gpu), 0);
    for (const Signature& s : {pre, post})  // each waits for its background compile, or finds its row
      EXPECT_EQ(rt.binary(make_spec(s)).name, make_spec(s).name());
    EXPECT_EQ(rt.stats().compiles.load(), 2);
  }  // joined here
  JitRuntime fresh(env_for(db, JitPolicy::off));
  for (const Signature& s : {pre, post}) {
    std::string served;
    EXPECT_NO_THROW(fresh.binary(make_spec(s), &served));
    EXPECT_EQ(served, db.string());
  }
  EXPECT_EQ(fresh.stats().compiles.load(), 0);
}

// At exit (or when the runtime goes) a background thread waiting for another process's claim on
// its key gives the kernel up instead of holding the exit for up to kClaimTimeoutMs (300 s).
TEST(Runtime, ExitDoesNotWaitForAnotherProcessesCompile) {
  TempDir dir("jitattn_runtime_test");
  const fs::path db = dir.path / "kernels.sqlite";
  Signature pre = small_spec().sig;
  pre.op = Op::bwd_pre;
  const KernelSpec spec = make_spec(pre);
  const std::string key = kernel_key(spec, compiler_for(Backend::cuda).identity());
  const auto t0 = std::chrono::steady_clock::now();
  {
    cache::KeyClaim other(db.string() + ".locks", key, 1000);  // as another process compiling it would
    ASSERT_TRUE(other.held());
    JitRuntime rt(env_for(db, JitPolicy::on));
    EXPECT_EQ(rt.prefetch_async({pre}, ContextInfo{}), 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let it start waiting (it gives up either way)
  }  // rt is joined here, before `other` lets go
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(60));
  JitRuntime fresh(env_for(db, JitPolicy::off));  // nothing was compiled or stored
  try {
    (void)fresh.binary(spec);
    ADD_FAILURE() << "the abandoned kernel is in the DB";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::cache_miss) << e.what();
  }
}

TEST(Runtime, ConcurrentFirstCallsCompileOnce) {
  TempDir dir("jitattn_runtime_test");
  JitRuntime rt(env_for(dir.path / "kernels.sqlite", JitPolicy::on));
  const KernelSpec spec = small_spec();
  std::vector<std::string> hashes(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { hashes[size_t(i)] = rt.binary(spec).binary_hash; });
  for (auto& t : threads) t.join();
  EXPECT_EQ(rt.stats().compiles.load(), 1);
  for (const auto& h : hashes) EXPECT_EQ(h, hashes[0]);
  EXPECT_EQ(hashes[0].size(), 64u);  // SHA-256
}

TEST(Runtime, CorruptedBinaryIsRecompiledAndReplaced) {
  TempDir dir("jitattn_runtime_test");
  const fs::path db = dir.path / "kernels.sqlite";
  const KernelSpec spec = small_spec();
  { JitRuntime(env_for(db, JitPolicy::on)).binary(spec); }
  {  // flip one byte of the stored cubin
    sqlite3* h = nullptr;
    ASSERT_EQ(sqlite3_open(db.string().c_str(), &h), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(h, "UPDATE kernels SET binary = CAST(X'00' || substr(binary, 2) AS BLOB)", nullptr,
                           nullptr, nullptr), SQLITE_OK);
    sqlite3_close(h);
  }
  JitRuntime rt(env_for(db, JitPolicy::on));
  std::string served;
  const auto rec = rt.binary(spec, &served);
  EXPECT_EQ(served, "nvrtc");
  EXPECT_EQ(rt.stats().compiles.load(), 1);
  JitRuntime again(env_for(db, JitPolicy::on));
  again.binary(spec, &served);
  EXPECT_EQ(served, db.string());
  EXPECT_EQ(again.stats().compiles.load(), 0);
}

TEST(Runtime, PolicyOffTurnsAMissIntoAnErrorNamingTheKernel) {
  TempDir dir("jitattn_runtime_test");
  JitRuntime rt(env_for(dir.path / "kernels.sqlite", JitPolicy::off));
  const KernelSpec spec = small_spec();
  try {
    rt.binary(spec);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::cache_miss) << e.what();
    EXPECT_NE(std::string(e.what()).find("JITATTN_JIT=off"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(spec.name()), std::string::npos) << e.what();
  }
  EXPECT_EQ(rt.stats().compiles.load(), 0);
}

// Each ErrorKind where it is thrown, so the C API maps statuses from kind() instead of messages
// (the missing NVRTC and JITATTN_JIT=off statuses are checked in tests/c_api_test.c's children).
template <class F>
ErrorKind kind_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.kind();
  }
  ADD_FAILURE() << "expected a jitattn::Error";
  return ErrorKind::internal;
}

TEST(Runtime, ErrorsSayTheirKind) {
  EXPECT_STREQ(to_string(Error("x").kind()), "unsupported");  // the default: what validation throws
  // A compile failure: NVRTC rejects the source.
  EXPECT_EQ(kind_of([] { NvrtcCompiler::get().compile(small_spec(), "this is not CUDA;"); }), ErrorKind::compile);
  // The driver: an out-of-memory result, any other result, and no driver at all (this machine).
  EXPECT_EQ(kind_of([] { check_cuda(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc"); }), ErrorKind::out_of_memory);
  EXPECT_EQ(kind_of([] { check_cuda(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel"); }), ErrorKind::cuda);
  if (!CudaDriver::get().available) EXPECT_EQ(kind_of([] { CudaDriver::require(); }), ErrorKind::cuda);
  // A bias that breaks its constructor's rules; inputs the call refuses.
  EXPECT_EQ(kind_of([] { AlibiSlopes::geometric(0); }), ErrorKind::invalid_argument);
  EXPECT_EQ(kind_of([] {
              const auto q = TensorView::make(reinterpret_cast<void*>(256), DType::f16, {1, 16, 1, 100});
              memory_efficient_attention_forward(q, q, q, AttnBias{}, q, {}, nullptr);
            }),
            ErrorKind::unsupported);
  // The cache's own failures.
  TempDir dir("jitattn_runtime_test");
  EXPECT_EQ(kind_of([&] { cache::SqliteStore(dir.path.string(), cache::SqliteStore::Mode::ReadWrite); }),
            ErrorKind::internal);
}

TEST(Runtime, ReadonlyCompilesButNeverWrites) {
  TempDir dir("jitattn_runtime_test");
  const fs::path db = dir.path / "kernels.sqlite";
  JitRuntime rt(env_for(db, JitPolicy::readonly));
  rt.binary(small_spec());
  EXPECT_EQ(rt.stats().compiles.load(), 1);
  JitRuntime fresh(env_for(db, JitPolicy::on));
  std::string served;
  fresh.binary(small_spec(), &served);
  EXPECT_EQ(served, "nvrtc");
}

TEST(Runtime, RedoRecompilesEvenWhenCached) {
  TempDir dir("jitattn_runtime_test");
  const fs::path db = dir.path / "kernels.sqlite";
  { JitRuntime(env_for(db, JitPolicy::on)).binary(small_spec()); }
  JitRuntime rt(env_for(db, JitPolicy::redo));
  std::string served;
  rt.binary(small_spec(), &served);
  EXPECT_EQ(served, "nvrtc");
  EXPECT_EQ(rt.stats().compiles.load(), 1);
}

TEST(Runtime, ShippedReadOnlyLayerServesFirst) {
  TempDir dir("jitattn_runtime_test");
  const fs::path shipped = dir.path / "shipped.sqlite";
  { JitRuntime(env_for(shipped, JitPolicy::on)).binary(small_spec()); }
  Env e = env_for(dir.path / "user.sqlite", JitPolicy::off);
  e.cache_ro = {shipped.string()};
  JitRuntime rt(e);
  std::string served;
  rt.binary(small_spec(), &served);
  EXPECT_EQ(served, shipped.string());
  EXPECT_EQ(rt.stats().compiles.load(), 0);
}

}  // namespace
}  // namespace jitattn::jit
