// memory_efficient_attention_partial over S = 1..8 slices of the keys, then merge_attentions,
// against full attention from the fp64 reference; and merge_attentions alone against a host
// merge. Inputs are drawn fresh every run (the seed is printed); every output is poisoned
// (0xFF: NaN) before the calls, so an unwritten element fails the comparison.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>

#include "gpu_support.h"
#include "jitattn/merge.h"
#include "reference.h"

namespace jitattn::test {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

DeviceBuffer upload(const std::vector<unsigned char>& bytes) {
  DeviceBuffer b(std::max<size_t>(bytes.size(), 16));
  if (!bytes.empty()) b.upload(bytes.data(), bytes.size());
  return b;
}

DeviceBuffer poisoned(size_t bytes) {
  DeviceBuffer b(std::max<size_t>(bytes, 16));
  b.fill(0xFF);
  return b;
}

// Dense [d0, ..., dn] strides (elements).
std::vector<int64_t> dense_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> st(shape.size());
  int64_t s = 1;
  for (size_t d = shape.size(); d-- > 0;) st[d] = s, s *= shape[d];
  return st;
}

TensorView view(void* data, DType dt, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
  TensorView t;
  t.data = data;
  t.dtype = dt;
  t.ndim = int(shape.size());
  t.device = 0;
  for (size_t d = 0; d < shape.size(); ++d) t.shape[d] = shape[d], t.stride[d] = strides[d];
  return t;
}

// ---- partial + merge against full attention ---------------------------------------------------

enum class Mask {
  none,
  causal_dense,  // top-left causal with Mq < Mkv plus a random bias, materialized and sliced by columns
  causal_br,     // bottom-right causal: LocalAttentionFromBottomRightMask per slice
};

struct SplitCase {
  DType dtype = DType::bf16;          // q, k, v
  DType partial_dtype = DType::f32;   // partial outputs (options.output_dtype)
  DType out_dtype = DType::f32;       // merged output
  int64_t B = 1, Mq = 1, Mkv = 1, G = 0, H = 1, K = 64, Kv = 64;  // G = 0: 4-D tensors
  int S = 1;
  Mask mask = Mask::none;
  bool stacked = true;
  bool write_lse = true;

  std::string describe() const {
    std::ostringstream os;
    os << to_string(dtype) << " partials " << to_string(partial_dtype) << " -> " << to_string(out_dtype) << " B=" << B
       << " Mq=" << Mq << " Mkv=" << Mkv << " G=" << G << " H=" << H << " K=" << K << " Kv=" << Kv << " S=" << S
       << " mask=" << int(mask) << (stacked ? " stacked" : " list") << " write_lse=" << write_lse;
    return os.str();
  }
};

// S slices [cuts[s], cuts[s+1]) of [0, Mkv]: random boundaries; with S >= 3 one slice is empty;
// under the dense causal mask (Mq < Mkv) the last slice is non-empty and lies past every query's
// diagonal, so it is fully masked.
std::vector<int64_t> random_cuts(const SplitCase& c) {
  std::vector<int64_t> cuts;
  std::uniform_int_distribution<int64_t> any(0, c.Mkv);
  int free = c.S - 1;
  if (c.mask == Mask::causal_dense && free > 0) {
    cuts.push_back(std::uniform_int_distribution<int64_t>(c.Mq, c.Mkv - 1)(rng()));
    --free;
  }
  const bool want_empty = c.S >= 3;
  if (want_empty) --free;
  for (int i = 0; i < free; ++i) cuts.push_back(any(rng()));
  if (want_empty) {
    if (cuts.empty()) cuts.push_back(any(rng()));
    cuts.push_back(cuts[std::uniform_int_distribution<size_t>(0, cuts.size() - 1)(rng())]);  // a repeated cut
  }
  cuts.push_back(0);
  cuts.push_back(c.Mkv);
  std::sort(cuts.begin(), cuts.end());
  return cuts;  // S + 1 entries
}

void run_split_case(const SplitCase& c) {
  SCOPED_TRACE(c.describe());
  const bool five = c.G > 0;
  const int64_t G = five ? c.G : 1, Ht = G * c.H;  // the reference sees G·H heads
  auto bmhk = [&](int64_t m, int64_t d) {
    return five ? std::vector<int64_t>{c.B, m, G, c.H, d} : std::vector<int64_t>{c.B, m, c.H, d};
  };
  auto bhm = [&](int64_t m) { return five ? std::vector<int64_t>{c.B, G, c.H, m} : std::vector<int64_t>{c.B, c.H, m}; };

  // q, k, v contiguous; [B, M, G, H, D] has the memory of [B, M, G·H, D].
  std::vector<double> qv, kv, vv;
  std::vector<unsigned char> qb, kb, vb;
  random_values(rng(), size_t(c.B * c.Mq * Ht * c.K), c.dtype, qv, qb);
  random_values(rng(), size_t(c.B * c.Mkv * Ht * c.K), c.dtype, kv, kb);
  random_values(rng(), size_t(c.B * c.Mkv * Ht * c.Kv), c.dtype, vv, vb);
  DeviceBuffer qd = upload(qb), kd = upload(kb), vd = upload(vb);
  const TensorView q = view(qd.get(), c.dtype, bmhk(c.Mq, c.K), dense_strides(bmhk(c.Mq, c.K)));
  const auto k_shape = bmhk(c.Mkv, c.K), v_shape = bmhk(c.Mkv, c.Kv);
  const auto k_st = dense_strides(k_shape), v_st = dense_strides(v_shape);

  // The full bias [Mq, Mkv] (shared by every batch and head), and its device copy for slicing.
  std::vector<double> bias2(size_t(c.Mq * c.Mkv), 0.0);
  DeviceBuffer bias_d;
  if (c.mask == Mask::causal_dense) {
    std::vector<double> vals;
    std::vector<unsigned char> unused;
    random_values(rng(), bias2.size(), c.dtype, vals, unused);
    for (int64_t i = 0; i < c.Mq; ++i)
      for (int64_t j = 0; j < c.Mkv; ++j) bias2[size_t(i * c.Mkv + j)] = j <= i ? vals[size_t(i * c.Mkv + j)] : -kInf;
    bias_d = upload(encode(bias2, c.dtype));
  } else if (c.mask == Mask::causal_br) {
    for (int64_t i = 0; i < c.Mq; ++i)
      for (int64_t j = 0; j < c.Mkv; ++j)
        if (j > i + c.Mkv - c.Mq) bias2[size_t(i * c.Mkv + j)] = -kInf;
  }

  // Partial outputs and lses: one stacked buffer, or one buffer per split (the odd ones padded:
  // rows of Kv + 8, lse rows of Mq + 3, so each split has its own strides).
  const size_t pes = element_size(c.partial_dtype);
  const std::vector<int64_t> part_shape = bmhk(c.Mq, c.Kv), lse_shape = bhm(c.Mq);
  const int64_t part_numel = c.B * c.Mq * Ht * c.Kv, lse_numel = c.B * Ht * c.Mq;
  std::vector<DeviceBuffer> part_bufs, lse_bufs;
  std::vector<TensorView> parts, lses;
  if (c.stacked) {
    part_bufs.push_back(poisoned(size_t(c.S * part_numel) * pes));
    lse_bufs.push_back(poisoned(size_t(c.S * lse_numel) * 4));
  }
  for (int s = 0; s < c.S; ++s) {
    if (c.stacked) {
      parts.push_back(view(static_cast<char*>(part_bufs[0].get()) + size_t(s * part_numel) * pes, c.partial_dtype,
                           part_shape, dense_strides(part_shape)));
      lses.push_back(view(static_cast<float*>(lse_bufs[0].get()) + s * lse_numel, DType::f32, lse_shape,
                          dense_strides(lse_shape)));
    } else {
      const bool pad = s % 2 == 1;
      auto phys = part_shape;
      phys.back() += pad ? 8 : 0;
      auto lphys = lse_shape;
      lphys.back() += pad ? 3 : 0;
      int64_t n = 1, ln = 1;
      for (int64_t x : phys) n *= x;
      for (int64_t x : lphys) ln *= x;
      part_bufs.push_back(poisoned(size_t(n) * pes));
      lse_bufs.push_back(poisoned(size_t(ln) * 4));
      parts.push_back(view(part_bufs.back().get(), c.partial_dtype, part_shape, dense_strides(phys)));
      lses.push_back(view(lse_bufs.back().get(), DType::f32, lse_shape, dense_strides(lphys)));
    }
  }

  // One partial attention per slice.
  const std::vector<int64_t> cuts = random_cuts(c);
  AttentionOptions opt;
  opt.output_dtype = c.partial_dtype;
  int fully_masked_slice = -1;
  for (int s = 0; s < c.S; ++s) {
    const int64_t a = cuts[size_t(s)], L = cuts[size_t(s) + 1] - a;
    auto ks = k_shape, vs = v_shape;
    ks[1] = vs[1] = L;
    const TensorView k_s = view(static_cast<char*>(kd.get()) + size_t(a * k_st[1]) * element_size(c.dtype), c.dtype, ks, k_st);
    const TensorView v_s = view(static_cast<char*>(vd.get()) + size_t(a * v_st[1]) * element_size(c.dtype), c.dtype, vs, v_st);
    AttnBias bias;
    if (c.mask == Mask::causal_dense) {
      bias = TensorBias{view(static_cast<char*>(bias_d.get()) + size_t(a) * element_size(c.dtype), c.dtype,
                             {1, 1, c.Mq, L}, {c.Mq * c.Mkv, c.Mq * c.Mkv, c.Mkv, 1})};
      if (L > 0 && a >= c.Mq) fully_masked_slice = s;
    } else if (c.mask == Mask::causal_br) {
      bias = LocalAttentionFromBottomRightMask{int32_t(L), int32_t(c.Mkv - (a + L))};
    }
    memory_efficient_attention_partial(q, k_s, v_s, bias, parts[size_t(s)], lses[size_t(s)], opt);
  }
  if (c.mask == Mask::causal_dense && c.S >= 2) EXPECT_GE(fully_masked_slice, 0) << "the test wants a fully masked slice";

  DeviceBuffer out_d = poisoned(size_t(part_numel) * element_size(c.out_dtype));
  DeviceBuffer lse_d = poisoned(size_t(lse_numel) * 4);
  const TensorView out = view(out_d.get(), c.out_dtype, part_shape, dense_strides(part_shape));
  const TensorView lse = c.write_lse ? view(lse_d.get(), DType::f32, lse_shape, dense_strides(lse_shape)) : TensorView{};
  if (c.stacked) {
    auto st = part_shape, lt = lse_shape;
    st.insert(st.begin(), c.S);
    lt.insert(lt.begin(), c.S);
    merge_attentions(view(part_bufs[0].get(), c.partial_dtype, st, dense_strides(st)),
                     view(lse_bufs[0].get(), DType::f32, lt, dense_strides(lt)), out, lse);
  } else {
    merge_attentions(parts, lses, out, lse);
  }
  device_synchronize();

  // A fully masked slice has lse = -inf everywhere (the premise of the test).
  if (fully_masked_slice >= 0) {
    std::vector<unsigned char> raw(size_t(lse_numel) * 4);
    if (c.stacked) lse_bufs[0].download(raw.data(), raw.size(), size_t(fully_masked_slice * lse_numel) * 4);
    else if (fully_masked_slice % 2 == 0) lse_bufs[size_t(fully_masked_slice)].download(raw.data(), raw.size());
    else raw.clear();  // padded layout: skip
    for (double x : decode(raw, DType::f32)) ASSERT_EQ(x, -kInf) << "slice " << fully_masked_slice;
  }

  std::vector<double> bias_full;
  if (c.mask != Mask::none) {
    bias_full.resize(size_t(c.B * Ht * c.Mq * c.Mkv));
    for (int64_t bh = 0; bh < c.B * Ht; ++bh)
      std::copy(bias2.begin(), bias2.end(), bias_full.begin() + bh * c.Mq * c.Mkv);
  }
  const auto ref = reference_attention({c.B, c.Mq, c.Mkv, Ht, c.K, c.Kv}, qv, kv, vv, bias_full, 1.0 / std::sqrt(double(c.K)));
  const auto got = decode(out_d.download(), c.out_dtype);
  const std::vector<double> got_out(got.begin(), got.begin() + part_numel);
  const double t = std::max({dtype_tolerance(c.dtype), dtype_tolerance(c.partial_dtype), dtype_tolerance(c.out_dtype)});
  EXPECT_LE(relative_error(got_out, ref.out), t) << "merged output relative error";
  if (c.write_lse) {
    const auto got_lse = decode(lse_d.download(), DType::f32);
    EXPECT_LE(relative_error(std::vector<double>(got_lse.begin(), got_lse.begin() + lse_numel), ref.lse), 1e-4)
        << "merged lse relative error";
  }
  // A row that sees no key at all is exactly 0.
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < Ht; ++h)
      for (int64_t i = 0; i < c.Mq; ++i)
        if (ref.lse[size_t((b * Ht + h) * c.Mq + i)] == -kInf)
          for (int64_t d = 0; d < c.Kv; ++d)
            ASSERT_EQ(got_out[size_t(((b * c.Mq + i) * Ht + h) * c.Kv + d)], 0.0) << "masked row b=" << b << " i=" << i;
}

class MergeGpu : public ::testing::Test {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

// S = 1..8 × stacked/list × 4-D/5-D; dtypes, masks, output dtype (f32, bf16) and write_lse
// rotate so that each value meets the others.
TEST_F(MergeGpu, PartialOverKeySlicesThenMergeEqualsFullAttention) {
  std::uniform_int_distribution<int64_t> mq(1, 70), mkv(1, 260), b(1, 2), h(1, 3);
  const DType in_types[] = {DType::bf16, DType::f16, DType::f32};
  const Mask masks[] = {Mask::none, Mask::causal_dense, Mask::causal_br};
  const std::pair<int, int> dims[] = {{64, 64}, {128, 128}, {40, 72}};
  int idx = 0;
  for (int S = 1; S <= 8; ++S)
    for (bool stacked : {true, false})
      for (bool five : {false, true}) {
        SplitCase c;
        c.S = S, c.stacked = stacked;
        c.G = five ? 2 : 0;
        c.out_dtype = idx % 2 ? DType::bf16 : DType::f32;
        c.write_lse = (idx / 2) % 2 == 0;
        c.mask = masks[idx % 3];
        c.dtype = in_types[(idx / 3) % 3];
        c.partial_dtype = (idx / 4) % 2 ? c.dtype : DType::f32;
        c.K = dims[(idx / 5) % 3].first, c.Kv = dims[(idx / 5) % 3].second;
        c.B = b(rng()), c.H = h(rng()), c.Mq = mq(rng()), c.Mkv = mkv(rng());
        if (c.mask == Mask::causal_dense && c.Mkv <= c.Mq) c.Mkv = c.Mq + 1 + c.Mkv % 50;  // keys past every query
        run_split_case(c);
        ++idx;
      }
}

TEST_F(MergeGpu, EveryQueryPastTheKeysMergesToZeroAndMinusInfinity) {
  // Bottom-right causal with Mq > Mkv: the first Mq - Mkv rows see no key in any slice.
  for (bool stacked : {true, false}) {
    SplitCase c;
    c.mask = Mask::causal_br, c.stacked = stacked;
    c.B = 2, c.H = 2, c.Mq = 90, c.Mkv = 40, c.S = 4;
    run_split_case(c);
  }
}

TEST_F(MergeGpu, LongKeysInEightSlicesBf16Output) {
  SplitCase c;
  c.S = 8, c.B = 1, c.H = 4, c.Mq = 16, c.Mkv = 2000, c.out_dtype = DType::bf16;
  c.mask = Mask::causal_br;
  run_split_case(c);
  c.G = 2, c.H = 2, c.stacked = false, c.write_lse = false;
  run_split_case(c);
}

// ---- merge alone against a host merge -----------------------------------------------------------

struct SynthCase {
  DType in = DType::f16, out = DType::f32;
  int64_t B = 2, M = 33, G = 0, H = 3, K = 72;
  int S = 5;
  bool stacked = true;
  bool write_lse = true;
  bool misaligned = false;  // partial outputs one element off 16 bytes: the element-wise path
  std::string describe() const {
    std::ostringstream os;
    os << to_string(in) << " -> " << to_string(out) << " B=" << B << " M=" << M << " G=" << G << " H=" << H
       << " K=" << K << " S=" << S << (stacked ? " stacked" : " list") << " write_lse=" << write_lse
       << " misaligned=" << misaligned;
    return os.str();
  }
};

// lse values in [-30, 30] with -inf sprinkled in, some rows -inf in every split; the partial
// output of a -inf (split, row) is NaN, which the merge must not read.
void run_synthetic(const SynthCase& c) {
  SCOPED_TRACE(c.describe());
  const bool five = c.G > 0;
  const int64_t G = five ? c.G : 1, Ht = G * c.H, rows = c.B * c.M * Ht;
  const size_t es = element_size(c.in);
  std::uniform_real_distribution<double> u(-30, 30);
  std::bernoulli_distribution masked(0.2), dead_row(0.1);
  // Logical values: part[s][b, m, gh, k], lse[s][b, gh, m].
  std::vector<std::vector<double>> part(size_t(c.S)), lsev(size_t(c.S));
  std::vector<bool> dead(static_cast<size_t>(rows));
  for (auto&& d : dead) d = dead_row(rng());
  for (int s = 0; s < c.S; ++s) {
    std::vector<unsigned char> unused;
    random_values(rng(), size_t(rows * c.K), c.in, part[size_t(s)], unused);
    lsev[size_t(s)].resize(size_t(rows));
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < Ht; ++h)
        for (int64_t m = 0; m < c.M; ++m) {
          const int64_t r = (b * c.M + m) * Ht + h;  // row index in [b, m, gh] order
          double& l = lsev[size_t(s)][size_t((b * Ht + h) * c.M + m)];
          l = dead[size_t(r)] || masked(rng()) ? -kInf : double(float(u(rng())));
          if (l == -kInf)
            for (int64_t d = 0; d < c.K; ++d) part[size_t(s)][size_t(r * c.K + d)] = std::nan("");
        }
  }
  // Host merge in fp64.
  std::vector<double> want(size_t(rows * c.K), 0.0), want_lse(size_t(rows), -kInf);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < Ht; ++h)
      for (int64_t m = 0; m < c.M; ++m) {
        const int64_t r = (b * c.M + m) * Ht + h, lr = (b * Ht + h) * c.M + m;
        double mx = -kInf;
        for (int s = 0; s < c.S; ++s) mx = std::max(mx, lsev[size_t(s)][size_t(lr)]);
        if (mx == -kInf) continue;
        double sum = 0;
        for (int s = 0; s < c.S; ++s) {
          const double l = lsev[size_t(s)][size_t(lr)];
          if (l == -kInf) continue;
          const double w = std::exp(l - mx);
          sum += w;
          for (int64_t d = 0; d < c.K; ++d) want[size_t(r * c.K + d)] += w * part[size_t(s)][size_t(r * c.K + d)];
        }
        for (int64_t d = 0; d < c.K; ++d) want[size_t(r * c.K + d)] /= sum;
        want_lse[size_t(lr)] = mx + std::log(sum);
      }

  auto bmhk = [&](int64_t d) { return five ? std::vector<int64_t>{c.B, c.M, G, c.H, d} : std::vector<int64_t>{c.B, c.M, c.H, d}; };
  auto bhm = [&] { return five ? std::vector<int64_t>{c.B, G, c.H, c.M} : std::vector<int64_t>{c.B, c.H, c.M}; };
  const int64_t off = c.misaligned ? 1 : 0;
  std::vector<DeviceBuffer> bufs;
  std::vector<TensorView> parts, lses;
  TensorView stacked_out, stacked_lse;
  if (c.stacked) {
    // Physically [B, M, S, G·H, K] (the split dimension inside): a split stride of G·H·K.
    // lses physically [S, B, G·H, M + 5].
    std::vector<unsigned char> host(size_t(off + rows * c.S * c.K) * es, 0xFF), lhost(size_t(c.S * c.B * Ht * (c.M + 5)) * 4, 0xFF);
    for (int s = 0; s < c.S; ++s) {
      const auto enc = encode(part[size_t(s)], c.in);
      for (int64_t bm = 0; bm < c.B * c.M; ++bm)
        std::memcpy(&host[size_t(off + ((bm * c.S + s) * Ht) * c.K) * es], &enc[size_t(bm * Ht * c.K) * es],
                    size_t(Ht * c.K) * es);
      const auto lenc = encode(lsev[size_t(s)], DType::f32);
      for (int64_t bh = 0; bh < c.B * Ht; ++bh)
        std::memcpy(&lhost[size_t((s * c.B * Ht + bh) * (c.M + 5)) * 4], &lenc[size_t(bh * c.M) * 4], size_t(c.M) * 4);
    }
    bufs.push_back(upload(host));
    bufs.push_back(upload(lhost));
    auto shape = bmhk(c.K), lshape = bhm();
    shape.insert(shape.begin(), c.S);
    lshape.insert(lshape.begin(), c.S);
    std::vector<int64_t> st = five ? std::vector<int64_t>{Ht * c.K, c.M * c.S * Ht * c.K, c.S * Ht * c.K, c.H * c.K, c.K, 1}
                                   : std::vector<int64_t>{Ht * c.K, c.M * c.S * Ht * c.K, c.S * Ht * c.K, c.K, 1};
    std::vector<int64_t> lst = five ? std::vector<int64_t>{c.B * Ht * (c.M + 5), Ht * (c.M + 5), c.H * (c.M + 5), c.M + 5, 1}
                                    : std::vector<int64_t>{c.B * Ht * (c.M + 5), Ht * (c.M + 5), c.M + 5, 1};
    stacked_out = view(static_cast<char*>(bufs[0].get()) + off * es, c.in, shape, st);
    stacked_lse = view(bufs[1].get(), DType::f32, lshape, lst);
  } else {
    for (int s = 0; s < c.S; ++s) {
      auto enc = encode(part[size_t(s)], c.in);
      enc.insert(enc.begin(), size_t(off) * es, 0xFF);
      bufs.push_back(upload(enc));
      parts.push_back(view(static_cast<char*>(bufs.back().get()) + off * es, c.in, bmhk(c.K), dense_strides(bmhk(c.K))));
      bufs.push_back(upload(encode(lsev[size_t(s)], DType::f32)));
      lses.push_back(view(bufs.back().get(), DType::f32, bhm(), dense_strides(bhm())));
    }
  }
  DeviceBuffer out_d = poisoned(size_t(rows * c.K) * element_size(c.out)), lse_d = poisoned(size_t(rows) * 4);
  const TensorView out = view(out_d.get(), c.out, bmhk(c.K), dense_strides(bmhk(c.K)));
  const TensorView lse = c.write_lse ? view(lse_d.get(), DType::f32, bhm(), dense_strides(bhm())) : TensorView{};
  device_synchronize();  // uploads and fills before a merge on another stream
  Stream stream;
  if (c.stacked) merge_attentions(stacked_out, stacked_lse, out, lse, stream.get());
  else merge_attentions(parts, lses, out, lse, stream.get());
  stream.synchronize();

  const auto got = decode(out_d.download(), c.out);
  const double t = c.out == DType::f32 ? 1e-5 : c.out == DType::f16 ? 1e-3 : 5e-3;
  EXPECT_LE(relative_error(std::vector<double>(got.begin(), got.begin() + rows * c.K), want), t);
  for (int64_t r = 0; r < rows; ++r)
    if (dead[size_t(r)])
      for (int64_t d = 0; d < c.K; ++d) ASSERT_EQ(got[size_t(r * c.K + d)], 0.0) << "dead row " << r;
  if (c.write_lse) {
    const auto gl = decode(lse_d.download(), DType::f32);
    EXPECT_LE(relative_error(std::vector<double>(gl.begin(), gl.begin() + rows), want_lse), 1e-6);
  } else {
    for (unsigned char x : lse_d.download()) ASSERT_EQ(x, 0xFF) << "write_lse off must leave lse alone";
  }
}

TEST_F(MergeGpu, MatchesAHostMergeOnSyntheticInputs) {
  int idx = 0;
  for (DType in : {DType::f16, DType::bf16, DType::f32})
    for (DType out : {DType::f16, DType::bf16, DType::f32})
      for (bool stacked : {true, false}) {
        SynthCase c;
        c.in = in, c.out = out, c.stacked = stacked;
        c.G = idx % 2 ? 2 : 0;
        c.write_lse = idx % 3 != 1;
        c.misaligned = idx % 4 == 3;
        c.K = idx % 3 == 0 ? 8 : idx % 3 == 1 ? 72 : 256;
        c.S = 1 + idx % 9;
        run_synthetic(c);
        ++idx;
      }
}

TEST_F(MergeGpu, StackedFormTakesMoreSplitsThanTheListCap) {
  SynthCase c;
  c.S = 77, c.in = DType::bf16, c.out = DType::bf16, c.G = 3, c.H = 2, c.K = 128;
  run_synthetic(c);
  c.misaligned = true, c.write_lse = false;
  run_synthetic(c);
}

TEST_F(MergeGpu, ListFormAtTheCap) {
  SynthCase c;
  c.S = kMaxMergeSplitsList, c.stacked = false, c.in = DType::f32, c.out = DType::f32, c.K = 64;
  run_synthetic(c);
}

}  // namespace
}  // namespace jitattn::test
