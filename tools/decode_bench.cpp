// `jitattn bench --decode`: a decode step's TB/s in the three layouts an inference engine keeps
// its KV cache in, timed as `.gpu/anchors.py --decode` times PyTorch's SDPA so the two can be put
// side by side (issue 11). Only the public API: the library picks the kernel family itself
// (JITATTN_DECODE=off, JITATTN_DECODE_SPLITS=N, JITATTN_DECODE_TILE=m16n64w4s4, JITATTN_DECODE_TMA=off steer it
// from the environment).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "jitattn/attention.h"
#include "jitattn/bias.h"
#include "tools/bench.h"

namespace jitattn::tools {
namespace {

std::string S(int64_t x) { return std::to_string(x); }

// One decode step at KV length N: queries [B, q, Hq, K] and a K/V pool of whole pages. The
// dense and padded layouts read the pool's first B·N rows as [B, N, Hkv, K] (the same bytes);
// the paged one reads it through a shuffled block table.
class DecodeStep {
 public:
  DecodeStep(const DecodeBenchOptions& o, int64_t N)
      : o_(o),
        N_(N),
        max_pages_(o.page_size ? (N + o.page_size - 1) / o.page_size : 0),
        pool_rows_(o.page_size ? o.batch * max_pages_ * o.page_size : o.batch * N),
        q_(q_elems() * element_size(o.dtype)),
        out_(q_elems() * element_size(o.dtype)),
        k_(kv_elems() * element_size(o.dtype)),
        v_(kv_elems() * element_size(o.dtype)) {
    q_.upload(random_normal(q_elems(), o.dtype, 1));
    // Values do not change the time: K and V repeat a few million random ones.
    const size_t pattern = std::min<size_t>(kv_elems(), size_t(1) << 22);
    k_.fill_tiled(random_normal(pattern, o.dtype, 2));
    v_.fill_tiled(random_normal(pattern, o.dtype, 3));
    const std::vector<int32_t> q_lens(size_t(o.batch), int32_t(o.queries)), kv_lens(size_t(o.batch), int32_t(N));
    padded_ = BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(q_lens, int32_t(N), kv_lens);
    if (o.page_size) {
      std::vector<int32_t> table(size_t(o.batch * max_pages_));
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), std::mt19937_64(4));
      paged_ = padded_.make_paged(BlockTables{DeviceInts(std::move(table)), int32_t(max_pages_)}, int32_t(o.page_size));
    }
  }

  // One forward call in `layout`, queued on the legacy default stream.
  void run(const std::string& layout) const {
    const int64_t B = o_.batch, q = o_.queries, Hq = o_.heads, Hkv = o_.kv_heads, K = o_.head_dim;
    if (layout == "dense") {
      memory_efficient_attention_forward(view(q_, {B, q, Hq, K}), view(k_, {B, N_, Hkv, K}), view(v_, {B, N_, Hkv, K}),
                                         AttnBias{}, view(out_, {B, q, Hq, K}));
    } else if (layout == "dense_hm") {  // [B, N, Hkv, K] views of [B, Hkv, N, K] memory, as SDPA's anchor tensors
      auto hm = [&](const DeviceBuffer& b) {
        TensorView t = view(b, {B, N_, Hkv, K});
        const int64_t st[4] = {Hkv * N_ * K, K, N_ * K, 1};
        for (int i = 0; i < 4; ++i) t.stride[i] = st[i];
        return t;
      };
      memory_efficient_attention_forward(view(q_, {B, q, Hq, K}), hm(k_), hm(v_), AttnBias{}, view(out_, {B, q, Hq, K}));
    } else if (layout == "padded") {
      memory_efficient_attention_forward(view(q_, {1, B * q, Hq, K}), view(k_, {1, B * N_, Hkv, K}),
                                         view(v_, {1, B * N_, Hkv, K}), padded_, view(out_, {1, B * q, Hq, K}));
    } else {
      memory_efficient_attention_forward(view(q_, {1, B * q, Hq, K}), view(k_, {1, pool_rows_, Hkv, K}),
                                         view(v_, {1, pool_rows_, Hkv, K}), paged_, view(out_, {1, B * q, Hq, K}));
    }
  }

  // K + V read once: 2·B·N·Hkv·K·element_size (the pages past N and the queries not counted).
  double kv_bytes() const { return 2.0 * double(o_.batch * N_ * o_.kv_heads * o_.head_dim) * double(element_size(o_.dtype)); }

 private:
  TensorView view(const DeviceBuffer& b, std::initializer_list<int64_t> shape) const {
    return TensorView::make(b.get(), o_.dtype, shape);
  }
  size_t q_elems() const { return size_t(o_.batch * o_.queries * o_.heads * o_.head_dim); }
  size_t kv_elems() const { return size_t(pool_rows_ * o_.kv_heads * o_.head_dim); }

  const DecodeBenchOptions& o_;
  int64_t N_, max_pages_, pool_rows_;
  DeviceBuffer q_, out_, k_, v_;
  BlockDiagonalCausalWithOffsetPaddedKeysMask padded_;
  PagedBlockDiagonalCausalWithOffsetPaddedKeysMask paged_;
};

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

}  // namespace

void check_decode_options(const DecodeBenchOptions& o) {
  std::vector<std::string> r;
  if (o.batch < 1) r.push_back("--batch " + S(o.batch) + " must be >= 1");
  if (o.heads < 1) r.push_back("--heads " + S(o.heads) + " must be >= 1");
  if (o.kv_heads < 1) r.push_back("--kv-heads " + S(o.kv_heads) + " must be >= 1");
  else if (o.heads % o.kv_heads != 0)
    r.push_back("--heads " + S(o.heads) + " is not a multiple of --kv-heads " + S(o.kv_heads) +
                " (each KV head serves heads / kv_heads query heads)");
  if (o.head_dim < 8 || o.head_dim > 256 || o.head_dim % 8 != 0)
    r.push_back("--head-dim " + S(o.head_dim) + " must be a multiple of 8 in [8, 256]");
  if (o.queries < 1) r.push_back("--queries " + S(o.queries) + " must be >= 1");
  if (o.kv_lens.empty()) r.push_back("--kv-lens is empty");
  for (int64_t N : o.kv_lens)
    if (N < 1 || N > INT32_MAX) r.push_back("--kv-lens: " + S(N) + " must be in [1, 2^31)");
  if (o.page_size < 0 || o.page_size > INT32_MAX) r.push_back("--page-size " + S(o.page_size) + " must be >= 0 (0: no paged layout)");
  if (o.batch >= 1 && o.queries >= 1 && o.batch * o.queries > INT32_MAX)
    r.push_back("--batch times --queries must be below 2^31 (the padded layout's query rows)");
  for (const std::string& l : o.layouts)
    if (l != "dense" && l != "dense_hm" && l != "padded" && l != "paged")
      r.push_back("--layouts: '" + l + "' is not dense, dense_hm, padded or paged");
  if (o.page_size == 0 && std::find(o.layouts.begin(), o.layouts.end(), "paged") != o.layouts.end() && o.layouts.size() == 1)
    r.push_back("--layouts paged needs --page-size >= 1");
  if (o.reps < 1) r.push_back("--reps " + S(o.reps) + " must be >= 1");
  if (!r.empty()) throw Error(ErrorKind::invalid_argument, r);
}

int run_decode_bench(const DecodeBenchOptions& o) {
  check_decode_options(o);
  std::unique_ptr<FreshCache> fresh;
  if (o.cold) fresh = std::make_unique<FreshCache>();
  std::string why;
  if (!gpu_available(&why)) {
    std::fprintf(stderr, "jitattn bench needs a CUDA GPU, and this machine has none usable: %s\n", why.c_str());
    return 1;
  }
  std::vector<std::string> layouts;
  for (const std::string& l : o.layouts)
    if (l != "paged" || o.page_size) layouts.push_back(l);
  const std::string arch = device_arch(0).name(), decode_env = env_or("JITATTN_DECODE", "(unset)"),
                    splits_env = env_or("JITATTN_DECODE_SPLITS", "(unset)"), tile_env = env_or("JITATTN_DECODE_TILE", "(unset)"),
                    tma_env = env_or("JITATTN_DECODE_TMA", "(unset)");
  std::printf("jitattn decode bench on %s (%s): %s, K=%lld; median of >= %d calls (each after an L2 flush, "
              "as triton.testing.do_bench); JITATTN_DECODE=%s JITATTN_DECODE_SPLITS=%s JITATTN_DECODE_TILE=%s "
              "JITATTN_DECODE_TMA=%s\n",
              device_name().c_str(), arch.c_str(), to_string(o.dtype), (long long)o.head_dim, o.reps, decode_env.c_str(),
              splits_env.c_str(), tile_env.c_str(), tma_env.c_str());
  nlohmann::json doc = {{"impl", "jitattn"}, {"mode", "decode"}, {"device", device_name()}, {"arch", arch},
                        {"dtype", to_string(o.dtype)}, {"K", o.head_dim}, {"min_reps", o.reps},
                        {"env", {{"JITATTN_DECODE", decode_env}, {"JITATTN_DECODE_SPLITS", splits_env},
                                 {"JITATTN_DECODE_TILE", tile_env}, {"JITATTN_DECODE_TMA", tma_env}}},
                        {"fresh_cache", o.cold}, {"rows", nlohmann::json::array()}, {"first_calls", nlohmann::json::array()}};
  bool first = true;
  for (int64_t N : o.kv_lens) {
    const DecodeStep step(o, N);
    for (const std::string& layout : layouts) {
      const int64_t page = layout == "paged" ? o.page_size : 0;
      if (first) {  // each layout's first call in this process: with --cold, its compile
        std::string what;
        const double ms = first_call_ms([&] { step.run(layout); }, &what);
        std::printf("first call (%s N=%lld%s): %.1f ms (%s)\n", layout.c_str(), (long long)N, o.cold ? ", fresh cache" : "",
                    ms, what.c_str());
        doc["first_calls"].push_back({{"layout", layout}, {"N", N}, {"ms", ms}, {"what", what}});
      }
      int calls = 0;
      const double ms = flushed_median_ms([&] { step.run(layout); }, o.reps, &calls);
      const double us = ms * 1e3, tbps = step.kv_bytes() / (ms * 1e-3) / 1e12;
      std::printf("jitattn   decode %-6s B=%lld Hq=%lld Hkv=%lld q=%lld N=%6lld page=%3lld %8.1f us %5.2f TB/s\n",
                  layout.c_str(), (long long)o.batch, (long long)o.heads, (long long)o.kv_heads, (long long)o.queries,
                  (long long)N, (long long)page, us, tbps);
      std::fflush(stdout);
      doc["rows"].push_back({{"layout", layout}, {"B", o.batch}, {"Hq", o.heads}, {"Hkv", o.kv_heads}, {"q", o.queries},
                             {"N", N}, {"page", page}, {"K", o.head_dim}, {"us", us}, {"TBps", tbps}, {"calls", calls}});
    }
    first = false;
  }
  if (!o.json_path.empty()) write_json(o.json_path, doc);
  return 0;
}

}  // namespace jitattn::tools
