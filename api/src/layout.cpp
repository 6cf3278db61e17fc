#include "layout.h"

#include <algorithm>
#include <cstdio>

namespace jitattn::detail {

namespace {

// Σ (size - 1) · stride + 1, in elements: how far the last element is from the first, plus one.
int64_t span(const Strided& x) {
  int64_t n = 1;
  for (int i = 0; i < x.n; ++i) n += (x.size[i] - 1) * x.stride[i];
  return n;
}

// Dimension indices of x by stride, largest first.
struct Order {
  int dim[kMaxDims];
  int n;
};
Order by_stride_desc(const Strided& x) {
  Order o{{}, std::clamp(x.n, 0, kMaxDims)};
  for (int i = 0; i < o.n; ++i) {  // insertion sort: at most kMaxDims entries
    int k = i;
    for (; k > 0 && x.stride[o.dim[k - 1]] < x.stride[i]; --k) o.dim[k] = o.dim[k - 1];
    o.dim[k] = i;
  }
  return o;
}

// Whether r = Σ c_i · stride_i for integers |c_i| < size_i over order.dim[from..]: the offsets at
// which two copies of one non-self-overlapping layout meet. The dimensions below one of stride s
// reach less than s (no self-overlap), so only floor(r / s) and the next integer can work.
bool difference_reachable(const Strided& x, const Order& order, int from, int64_t r) {
  if (from == order.n) return r == 0;
  const int i = order.dim[from];
  const int64_t s = x.stride[i], lim = x.size[i] - 1;
  int64_t c = r / s;
  if (r % s != 0 && r < 0) --c;  // floor
  for (int64_t cand : {c, c + 1})
    if (cand >= -lim && cand <= lim && difference_reachable(x, order, from + 1, r - cand * s)) return true;
  return false;
}

bool same_layout(const Strided& a, const Strided& b) {
  if (a.elem != b.elem || a.n != b.n) return false;
  for (int i = 0; i < a.n; ++i)
    if (a.size[i] != b.size[i] || a.stride[i] != b.stride[i]) return false;
  return true;
}

}  // namespace

Strided Strided::of(const TensorView& t) {
  Strided x;
  x.base = reinterpret_cast<uintptr_t>(t.data);
  x.elem = int64_t(element_size(t.dtype));
  for (int i = 0; i < std::clamp(t.ndim, 0, kMaxDims); ++i) {
    if (t.shape[i] == 1) continue;
    x.size[x.n] = t.shape[i], x.stride[x.n] = t.stride[i];
    ++x.n;
  }
  return x;
}

Strided Strided::of(const void* data, DType dtype, std::initializer_list<std::pair<int64_t, int64_t>> dims) {
  Strided x;
  x.base = reinterpret_cast<uintptr_t>(data);
  x.elem = int64_t(element_size(dtype));
  for (auto [size, stride] : dims) {
    if (size == 1 || x.n == kMaxDims) continue;
    x.size[x.n] = size, x.stride[x.n] = stride;
    ++x.n;
  }
  return x;
}

bool Strided::empty() const {
  for (int i = 0; i < n; ++i)
    if (size[i] == 0) return true;
  return false;
}

bool contiguous(const TensorView& t) {
  int64_t expect = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    if (t.shape[i] != 1 && t.stride[i] != expect) return false;
    expect *= t.shape[i];
  }
  return true;
}

void check_layout(const TensorView& t, const std::string& name, std::vector<std::string>& R) {
  if (t.ndim < 0 || t.ndim > kMaxDims) {
    R.push_back(name + ".ndim=" + std::to_string(t.ndim) + " is not in [0, " + std::to_string(kMaxDims) + "]");
    return;
  }
  bool ok = true;
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] < 0) R.push_back(name + ".shape[" + std::to_string(i) + "]=" + std::to_string(t.shape[i]) + " is negative"), ok = false;
    if (t.stride[i] < 0)
      R.push_back(name + ".stride[" + std::to_string(i) + "]=" + std::to_string(t.stride[i]) + " is negative"), ok = false;
  }
  if (!ok) return;
  // The element count and the byte offset of the last element must fit in int64.
  int64_t count = 1, last = 0;
  bool empty = false;
  for (int i = 0; i < t.ndim; ++i) empty |= t.shape[i] == 0;
  for (int i = 0; i < t.ndim && !empty; ++i) {
    int64_t step = 0;
    ok = ok && !__builtin_mul_overflow(count, t.shape[i], &count);
    ok = ok && !__builtin_mul_overflow(t.shape[i] - 1, t.stride[i], &step);
    ok = ok && !__builtin_add_overflow(last, step, &last);
  }
  const int64_t es = int64_t(element_size(t.dtype));
  ok = ok && !__builtin_mul_overflow(last + 1, es, &last);
  if (!ok) {
    R.push_back(name + ": shape " + t.shape_string() + " with its strides addresses more than 2^63 bytes");
    return;
  }
  if (reinterpret_cast<uintptr_t>(t.data) % uintptr_t(es) != 0) {
    char addr[32];
    std::snprintf(addr, sizeof addr, "%p", t.data);
    R.push_back(name + ".data=" + addr + " is not aligned to its element size (" + std::to_string(es) + " bytes for " +
                to_string(t.dtype) + ")");
  }
}

bool self_overlaps(const Strided& x) {
  if (x.empty()) return false;
  const Order order = by_stride_desc(x);
  int64_t reach = 1;  // elements spanned by the dimensions of smaller stride
  for (int k = order.n - 1; k >= 0; --k) {
    const int i = order.dim[k];
    if (x.stride[i] < reach) return true;
    reach += (x.size[i] - 1) * x.stride[i];
  }
  return false;
}

bool overlaps(const Strided& a, const Strided& b) {
  if (a.empty() || b.empty()) return false;
  const uintptr_t a_end = a.base + uintptr_t(span(a) * a.elem), b_end = b.base + uintptr_t(span(b) * b.elem);
  if (a_end <= b.base || b_end <= a.base) return false;
  if (!same_layout(a, b) || self_overlaps(a)) return true;
  const int64_t delta = b.base >= a.base ? int64_t(b.base - a.base) : -int64_t(a.base - b.base);
  if (delta % a.elem != 0) return true;
  return difference_reachable(a, by_stride_desc(a), 0, delta / a.elem);
}

void check_no_overlap(const Named* outputs, int n_outputs, const Named* inputs, int n_inputs, std::vector<std::string>& R) {
  for (int i = 0; i < n_outputs; ++i) {
    const Named& o = outputs[i];
    if (self_overlaps(o.mem))
      R.push_back(std::string(o.name) + " has elements that share memory (a stride 0 over a dimension of size > 1, or "
                                        "strides that interleave): an output must not overlap itself");
    for (int j = i + 1; j < n_outputs; ++j)
      if (overlaps(o.mem, outputs[j].mem))
        R.push_back(std::string(o.name) + " and " + outputs[j].name + " overlap: outputs must not share memory");
    for (int j = 0; j < n_inputs; ++j)
      if (overlaps(o.mem, inputs[j].mem))
        R.push_back(std::string(o.name) + " overlaps " + inputs[j].name + ": an output must not share memory with an input");
  }
}

}  // namespace jitattn::detail
