// The C API (api/include/jitattn/c_api.h): each function reads the caller's structs, calls the
// C++ API inside guarded(), which turns every exception into a status and the thread's reasons.
// Bias descriptions are converted in c_api_bias.cpp.
#include "jitattn/c_api.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "c_api_internal.h"
#include "jitattn/swiglu.h"
#include "jit/env.h"
#include "jit/jit_runtime.h"
#include "jit/signature.h"
#include "jitattn/attention.h"
#include "jitattn/merge.h"

#ifndef JITATTN_VERSION_STRING
#error "CMakeLists.txt defines JITATTN_VERSION_STRING and its numbers for this file"
#endif

namespace jitattn::capi {

namespace {

// The last call's outcome on this thread.
struct LastError {
  jitattn_status status = JITATTN_OK;
  std::vector<std::string> reasons;
  std::string message;
};
thread_local LastError t_last;

jitattn_status fail(jitattn_status status, std::vector<std::string> reasons) noexcept {
  try {
    if (reasons.empty()) reasons.push_back(jitattn_status_name(status));
    std::string message;
    for (const auto& r : reasons) message += (message.empty() ? "" : "; ") + r;
    t_last.reasons = std::move(reasons);
    t_last.message = std::move(message);
  } catch (...) {  // no memory for the reasons: the status still tells
    t_last.reasons.clear();
    t_last.message.clear();
  }
  t_last.status = status;
  return status;
}

// The status of a jitattn::Error thrown after the inputs were validated (by the compile and
// cache path or the driver): its kind() says which.
jitattn_status status_of(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::invalid_argument: return JITATTN_ERROR_INVALID_ARGUMENT;
    case ErrorKind::unsupported: return JITATTN_ERROR_UNSUPPORTED;
    case ErrorKind::compile: return JITATTN_ERROR_COMPILE;
    case ErrorKind::cuda: return JITATTN_ERROR_CUDA;
    case ErrorKind::out_of_memory: return JITATTN_ERROR_OUT_OF_MEMORY;
    case ErrorKind::cache_miss: return JITATTN_ERROR_CACHE_MISS;
    case ErrorKind::internal: return JITATTN_ERROR_INTERNAL;
  }
  return JITATTN_ERROR_INTERNAL;
}

// Runs `body`; no exception leaves. CallError carries its status; a jitattn::Error the call
// throws is classified by `refused`: when the inputs would be refused anyway (the reasons are
// its not_supported_reasons) it is JITATTN_ERROR_UNSUPPORTED, else a runtime failure.
template <class Body, class Refused>
jitattn_status guarded(Body&& body, Refused&& refused) noexcept {
  t_last = LastError{};
  try {
    try {
      body();
      return JITATTN_OK;
    } catch (const Error& e) {
      if (refused()) return fail(JITATTN_ERROR_UNSUPPORTED, e.reasons());
      return fail(status_of(e.kind()), e.reasons());
    }
  } catch (const CallError& e) {
    return fail(e.status, e.reasons);
  } catch (const std::bad_alloc&) {
    return fail(JITATTN_ERROR_OUT_OF_MEMORY, {"out of host memory"});
  } catch (const Error& e) {  // thrown by `refused` itself
    return fail(JITATTN_ERROR_INTERNAL, e.reasons());
  } catch (const std::exception& e) {
    return fail(JITATTN_ERROR_INTERNAL, {e.what()});
  } catch (...) {
    return fail(JITATTN_ERROR_INTERNAL, {"unknown exception"});
  }
}
// For calls whose jitattn::Errors all mean one status (validation only, no GPU work).
template <class Body>
jitattn_status guarded_as(jitattn_status status, Body&& body) noexcept {
  return guarded(
      [&] {
        try {
          body();
        } catch (const Error& e) {
          throw CallError{status, e.reasons()};
        }
      },
      [] { return false; });
}
// A not_supported_reasons result as a status.
jitattn_status reasons_status(const std::vector<std::string>& reasons) {
  if (reasons.empty()) return JITATTN_OK;
  throw CallError{JITATTN_ERROR_UNSUPPORTED, reasons};
}

constexpr size_t kTensorFieldEnds[] = {
    JITATTN_FIELD_END(jitattn_tensor, struct_size), JITATTN_FIELD_END(jitattn_tensor, data),
    JITATTN_FIELD_END(jitattn_tensor, dtype),       JITATTN_FIELD_END(jitattn_tensor, ndim),
    JITATTN_FIELD_END(jitattn_tensor, shape),       JITATTN_FIELD_END(jitattn_tensor, stride),
    JITATTN_FIELD_END(jitattn_tensor, device)};
constexpr size_t kOptionsFieldEnds[] = {
    JITATTN_FIELD_END(jitattn_attention_options, struct_size), JITATTN_FIELD_END(jitattn_attention_options, scale),
    JITATTN_FIELD_END(jitattn_attention_options, has_scale),   JITATTN_FIELD_END(jitattn_attention_options, output_dtype),
    JITATTN_FIELD_END(jitattn_attention_options, p),           JITATTN_FIELD_END(jitattn_attention_options, seed),
    JITATTN_FIELD_END(jitattn_attention_options, offset),      JITATTN_FIELD_END(jitattn_attention_options, variant),
    JITATTN_FIELD_END(jitattn_attention_options, num_capture_values),
    JITATTN_FIELD_END(jitattn_attention_options, capture_values), JITATTN_FIELD_END(jitattn_attention_options, block_map)};
constexpr size_t kBackwardOptionsFieldEnds[] = {
    JITATTN_FIELD_END(jitattn_backward_options, struct_size), JITATTN_FIELD_END(jitattn_backward_options, scale),
    JITATTN_FIELD_END(jitattn_backward_options, has_scale),   JITATTN_FIELD_END(jitattn_backward_options, deterministic),
    JITATTN_FIELD_END(jitattn_backward_options, p),           JITATTN_FIELD_END(jitattn_backward_options, seed),
    JITATTN_FIELD_END(jitattn_backward_options, offset),      JITATTN_FIELD_END(jitattn_backward_options, workspace),
    JITATTN_FIELD_END(jitattn_backward_options, variant),     JITATTN_FIELD_END(jitattn_backward_options, num_capture_values),
    JITATTN_FIELD_END(jitattn_backward_options, capture_values), JITATTN_FIELD_END(jitattn_backward_options, block_map)};
constexpr size_t kBlockMapFieldEnds[] = {
    JITATTN_FIELD_END(jitattn_block_map, struct_size), JITATTN_FIELD_END(jitattn_block_map, cells),
    JITATTN_FIELD_END(jitattn_block_map, cell_size),   JITATTN_FIELD_END(jitattn_block_map, reserved0),
    JITATTN_FIELD_END(jitattn_block_map, mq),          JITATTN_FIELD_END(jitattn_block_map, mkv),
    JITATTN_FIELD_END(jitattn_block_map, variant_id),  JITATTN_FIELD_END(jitattn_block_map, spans)};
constexpr size_t kCaptureDeclFieldEnds[] = {
    JITATTN_FIELD_END(jitattn_capture_decl, struct_size), JITATTN_FIELD_END(jitattn_capture_decl, name),
    JITATTN_FIELD_END(jitattn_capture_decl, kind), JITATTN_FIELD_END(jitattn_capture_decl, type),
    JITATTN_FIELD_END(jitattn_capture_decl, rank)};
constexpr size_t kVariantDescFieldEnds[] = {
    JITATTN_FIELD_END(jitattn_variant_desc, struct_size), JITATTN_FIELD_END(jitattn_variant_desc, mask_mod),
    JITATTN_FIELD_END(jitattn_variant_desc, score_mod),   JITATTN_FIELD_END(jitattn_variant_desc, score_grad),
    JITATTN_FIELD_END(jitattn_variant_desc, additive),    JITATTN_FIELD_END(jitattn_variant_desc, num_captures),
    JITATTN_FIELD_END(jitattn_variant_desc, captures)};
constexpr size_t kCaptureValueFieldEnds[] = {
    JITATTN_FIELD_END(jitattn_capture_value, struct_size), JITATTN_FIELD_END(jitattn_capture_value, data),
    JITATTN_FIELD_END(jitattn_capture_value, shape), JITATTN_FIELD_END(jitattn_capture_value, stride),
    JITATTN_FIELD_END(jitattn_capture_value, value)};

// Element i of a caller's array of versioned structs: elements are caller-sized (the first one's
// struct_size, which every element must repeat), so an older or newer caller's array is read
// where its elements are. `n` is checked against `max` before anything is read.
template <class T>
const T& array_element(const T* base, int32_t n, int32_t i, int32_t max, const std::string& name) {
  if (n > max) invalid(name + ": " + std::to_string(n) + " elements; at most " + std::to_string(max));
  const size_t stride = base[0].struct_size;
  if (stride < sizeof(size_t) || stride > 4096)
    invalid(name + "[0].struct_size=" + std::to_string(stride) + " must be sizeof the element struct");
  const T& e = *reinterpret_cast<const T*>(reinterpret_cast<const unsigned char*>(base) + size_t(i) * stride);
  if (e.struct_size != stride)
    invalid(name + "[" + std::to_string(i) + "].struct_size=" + std::to_string(e.struct_size) +
            " differs from element 0's " + std::to_string(stride));
  return e;
}
constexpr int32_t kMaxCaptures = Variant::kMaxTensors + 2 * Variant::kMaxScalars;

// What a call's options point to, kept for the call.
struct CallExtras {
  Variant variant;
  BlockMap map;
};

// The call's variant: the handle's, copied (its code stays prepared), with this call's values.
// Returns null without a variant; `store` keeps the copy for the call.
const Variant* call_variant(const jitattn_variant* h, int32_t n, const jitattn_capture_value* values, const char* name,
                            Variant& store) {
  if (!h) {
    if (n != 0) invalid(std::string(name) + ".num_capture_values=" + std::to_string(n) + " without a variant");
    return nullptr;
  }
  store = h->variant;
  const auto& caps = store.captures();
  if (n != int32_t(caps.size()))
    invalid(std::string(name) + ".num_capture_values=" + std::to_string(n) + " but the variant declares " +
            std::to_string(caps.size()) + " captures");
  if (n > 0 && !values) invalid(std::string(name) + ".capture_values is NULL");
  for (int32_t i = 0; i < n; ++i) {
    const std::string item = std::string(name) + ".capture_values[" + std::to_string(i) + "]";
    const jitattn_capture_value v =
        read_struct(array_element(values, n, i, kMaxCaptures, std::string(name) + ".capture_values"), item.c_str(),
                    kCaptureValueFieldEnds);
    const Variant::Capture& c = caps[size_t(i)];
    switch (c.kind) {
      case Variant::Capture::Kind::tensor: {
        CaptureTensor t = c.tensor;
        t.data = v.data;
        for (int d = 0; d < 4; ++d) t.shape[d] = v.shape[d], t.stride[d] = v.stride[d];
        store.capture(c.name, t);
        break;
      }
      case Variant::Capture::Kind::f32: store.capture(c.name, float(v.value)); break;
      case Variant::Capture::Kind::i32:
        if (!(v.value >= INT32_MIN && v.value <= INT32_MAX) || v.value != double(int32_t(v.value)))
          invalid(item + ".value=" + std::to_string(v.value) + " is not an int32 (capture '" + c.name + "')");
        store.capture(c.name, int32_t(v.value));
        break;
    }
  }
  return &store;
}
constexpr size_t kStatsFieldEnds[] = {
    JITATTN_FIELD_END(jitattn_jit_stats, struct_size), JITATTN_FIELD_END(jitattn_jit_stats, compiles),
    JITATTN_FIELD_END(jitattn_jit_stats, memory_hits), JITATTN_FIELD_END(jitattn_jit_stats, db_hits),
    JITATTN_FIELD_END(jitattn_jit_stats, loads),       JITATTN_FIELD_END(jitattn_jit_stats, claim_hits)};

// The call's block map, kept in `store`; null without one.
const BlockMap* call_block_map(const jitattn_block_map* m, BlockMap& store) {
  if (!m) return nullptr;
  const jitattn_block_map c = read_struct(*m, "options.block_map", kBlockMapFieldEnds);
  if (c.reserved0 != 0) invalid("options.block_map.reserved0=" + std::to_string(c.reserved0) + " must be 0");
  store.cells = to_tensor(&c.cells, "options.block_map.cells");
  if (c.spans.struct_size != 0 || c.spans.data) store.spans = to_tensor(&c.spans, "options.block_map.spans");
  store.cell_size = c.cell_size, store.mq = c.mq, store.mkv = c.mkv, store.variant = c.variant_id;
  return &store;
}

AttentionOptions to_options(const jitattn_attention_options* o, CallExtras& x) {
  Variant& variant = x.variant;
  AttentionOptions opt;
  if (!o) return opt;
  const jitattn_attention_options c = read_struct(*o, "jitattn_attention_options", kOptionsFieldEnds);
  if (c.has_scale) opt.scale = c.scale;
  if (c.output_dtype != JITATTN_DTYPE_UNSET) opt.output_dtype = to_dtype(c.output_dtype, "options.output_dtype");
  opt.p = c.p, opt.seed = c.seed, opt.offset = c.offset;
  opt.variant = call_variant(c.variant, c.num_capture_values, c.capture_values, "options", variant);
  opt.block_map = call_block_map(c.block_map, x.map);
  return opt;
}

BackwardOptions to_options(const jitattn_backward_options* o, CallExtras& x) {
  Variant& variant = x.variant;
  BackwardOptions opt;
  if (!o) return opt;
  const jitattn_backward_options c = read_struct(*o, "jitattn_backward_options", kBackwardOptionsFieldEnds);
  if (c.has_scale) opt.scale = c.scale;
  opt.deterministic = c.deterministic != 0;
  opt.p = c.p, opt.seed = c.seed, opt.offset = c.offset;
  opt.workspace = c.workspace;
  opt.variant = call_variant(c.variant, c.num_capture_values, c.capture_values, "options", variant);
  opt.block_map = call_block_map(c.block_map, x.map);
  return opt;
}

// A required tensor argument.
TensorView tensor_arg(const jitattn_tensor* t, const char* name) { return to_tensor(&required(t, name), name); }

std::vector<TensorView> tensor_list(const jitattn_tensor* const* ts, size_t n, const char* name) {
  if (!ts) invalid(std::string(name) + " is NULL");
  std::vector<TensorView> out;
  for (size_t i = 0; i < n; ++i) {
    const std::string item = std::string(name) + "[" + std::to_string(i) + "]";
    out.push_back(tensor_arg(ts[i], item.c_str()));
  }
  return out;
}

// ---- one implementation per entry point, for both bias forms ------------------------------------
struct FwdArgs {
  TensorView q, k, v, out, lse;
  AttentionOptions opt;
  std::shared_ptr<CallExtras> extras;  // what opt points to (shared, so copies keep it valid)
};
FwdArgs fwd_args(const jitattn_tensor* q, const jitattn_tensor* k, const jitattn_tensor* v, const jitattn_tensor* out,
                 const jitattn_tensor* lse, bool lse_required, const jitattn_attention_options* o) {
  FwdArgs a{tensor_arg(q, "query"), tensor_arg(k, "key"), tensor_arg(v, "value"), tensor_arg(out, "out"),
            lse_required ? tensor_arg(lse, "lse") : to_tensor(lse, "lse"), {}, std::make_shared<CallExtras>()};
  a.opt = to_options(o, *a.extras);
  return a;
}

template <class GetBias>
jitattn_status forward(const jitattn_tensor* q, const jitattn_tensor* k, const jitattn_tensor* v, GetBias&& get_bias,
                       const jitattn_tensor* out, const jitattn_tensor* lse, bool with_lse,
                       const jitattn_attention_options* o, void* stream) {
  FwdArgs a;
  AttnBias local;
  const AttnBias* bias = nullptr;
  return guarded(
      [&] {
        a = fwd_args(q, k, v, out, lse, with_lse, o);
        bias = &get_bias(local);
        if (with_lse) memory_efficient_attention_forward_requires_grad(a.q, a.k, a.v, *bias, a.out, a.lse, a.opt, stream);
        else memory_efficient_attention_forward(a.q, a.k, a.v, *bias, a.out, a.opt, stream);
      },
      [&] { return bias && !not_supported_reasons(a.q, a.k, a.v, *bias, a.out, a.lse, a.opt).empty(); });
}

template <class GetBias>
jitattn_status partial(const jitattn_tensor* q, const jitattn_tensor* k, const jitattn_tensor* v, GetBias&& get_bias,
                       const jitattn_tensor* out, const jitattn_tensor* lse, const jitattn_attention_options* o,
                       void* stream) {
  FwdArgs a;
  AttnBias local;
  const AttnBias* bias = nullptr;
  return guarded(
      [&] {
        a = fwd_args(q, k, v, out, lse, true, o);
        bias = &get_bias(local);
        memory_efficient_attention_partial(a.q, a.k, a.v, *bias, a.out, a.lse, a.opt, stream);
      },
      [&] { return bias && (a.opt.p != 0.0 || !not_supported_reasons(a.q, a.k, a.v, *bias, a.out, a.lse, a.opt).empty()); });
}

template <class GetBias>
jitattn_status forward_reasons(const jitattn_tensor* q, const jitattn_tensor* k, const jitattn_tensor* v,
                               GetBias&& get_bias, const jitattn_tensor* out, const jitattn_tensor* lse,
                               const jitattn_attention_options* o) {
  return guarded_as(JITATTN_ERROR_UNSUPPORTED, [&] {
    const FwdArgs a = fwd_args(q, k, v, out, lse, false, o);
    AttnBias local;
    reasons_status(not_supported_reasons(a.q, a.k, a.v, get_bias(local), a.out, a.lse, a.opt));
  });
}

struct BwdArgs {
  TensorView grad, out, lse, q, k, v, dq, dk, dv, dbias;
  BackwardOptions opt;
  std::shared_ptr<CallExtras> extras;  // what opt points to
};
BwdArgs bwd_args(const jitattn_tensor* grad, const jitattn_tensor* out, const jitattn_tensor* lse,
                 const jitattn_tensor* q, const jitattn_tensor* k, const jitattn_tensor* v, const jitattn_tensor* dq,
                 const jitattn_tensor* dk, const jitattn_tensor* dv, const jitattn_tensor* dbias,
                 const jitattn_backward_options* o) {
  BwdArgs a{tensor_arg(grad, "grad"), tensor_arg(out, "out"), tensor_arg(lse, "lse"), tensor_arg(q, "query"),
            tensor_arg(k, "key"),     tensor_arg(v, "value"), tensor_arg(dq, "dq"),   tensor_arg(dk, "dk"),
            tensor_arg(dv, "dv"),     to_tensor(dbias, "dbias"), {}, std::make_shared<CallExtras>()};
  a.opt = to_options(o, *a.extras);
  return a;
}
std::vector<std::string> bwd_reasons(const BwdArgs& a, const AttnBias& bias) {
  return backward_not_supported_reasons(a.grad, a.out, a.lse, a.q, a.k, a.v, bias, a.dq, a.dk, a.dv, a.dbias, a.opt);
}

template <class GetBias>
jitattn_status backward(const jitattn_tensor* grad, const jitattn_tensor* out, const jitattn_tensor* lse,
                        const jitattn_tensor* q, const jitattn_tensor* k, const jitattn_tensor* v, GetBias&& get_bias,
                        const jitattn_tensor* dq, const jitattn_tensor* dk, const jitattn_tensor* dv,
                        const jitattn_tensor* dbias, const jitattn_backward_options* o, void* stream, bool run) {
  BwdArgs a;
  AttnBias local;
  const AttnBias* bias = nullptr;
  return guarded(
      [&] {
        a = bwd_args(grad, out, lse, q, k, v, dq, dk, dv, dbias, o);
        bias = &get_bias(local);
        if (!run) return (void)reasons_status(bwd_reasons(a, *bias));
        memory_efficient_attention_backward(a.grad, a.out, a.lse, a.q, a.k, a.v, *bias, a.dq, a.dk, a.dv, a.dbias, a.opt,
                                            stream);
      },
      [&] { return bias && !bwd_reasons(a, *bias).empty(); });
}

template <class GetBias>
jitattn_status workspace_bytes(const jitattn_tensor* q, const jitattn_tensor* k, const jitattn_tensor* v,
                               GetBias&& get_bias, const jitattn_backward_options* o, size_t* bytes) {
  return guarded_as(JITATTN_ERROR_UNSUPPORTED, [&] {
    size_t& result = required(bytes, "bytes");
    AttnBias local;
    CallExtras extras;
    result = memory_efficient_attention_backward_workspace_bytes(tensor_arg(q, "query"), tensor_arg(k, "key"),
                                                                 tensor_arg(v, "value"), get_bias(local),
                                                                 to_options(o, extras));
  });
}

jitattn_status materialize_into(const AttnBias& bias, int64_t B, int64_t H, int64_t Mq, int64_t Mkv, double* out,
                                size_t out_count) {
  if (!out) invalid("out is NULL");
  const std::vector<double> mask = materialize(bias, B, H, Mq, Mkv);
  if (out_count < mask.size())
    invalid("out holds " + std::to_string(out_count) + " doubles, the [B, H, Mq, Mkv] mask needs " +
            std::to_string(mask.size()));
  std::copy(mask.begin(), mask.end(), out);
  return JITATTN_OK;
}

// bias_name of every AttnBias alternative, in order.
template <size_t... I>
std::vector<const char*> bias_names(std::index_sequence<I...>) {
  return {bias_name(AttnBias(std::in_place_index<I>))...};
}

// How a call gets its bias: converted from a description, or a handle's.
auto from_desc(const jitattn_bias* d) {
  return [d](AttnBias& local) -> const AttnBias& { return local = to_bias(d); };
}
auto from_handle(const jitattn_bias_handle* h) {
  return [h](AttnBias&) -> const AttnBias& { return handle_bias(h); };
}

}  // namespace

DType to_dtype(int32_t dtype, const char* name) {
  switch (dtype) {
    case JITATTN_DTYPE_F16: return DType::f16;
    case JITATTN_DTYPE_BF16: return DType::bf16;
    case JITATTN_DTYPE_F32: return DType::f32;
    case JITATTN_DTYPE_U8: return DType::u8;
    case JITATTN_DTYPE_I32: return DType::i32;
    default:
      invalid(std::string(name) + "=" + std::to_string(dtype) +
              " is not JITATTN_DTYPE_F16 (1), JITATTN_DTYPE_BF16 (2), JITATTN_DTYPE_F32 (3), JITATTN_DTYPE_U8 (4) or "
              "JITATTN_DTYPE_I32 (5)");
  }
}

TensorView to_tensor(const jitattn_tensor* t, const char* name) {
  if (!t) return TensorView{};
  const std::string n(name);
  const jitattn_tensor c = read_struct(*t, "jitattn_tensor", kTensorFieldEnds);
  TensorView v;
  // Undefined (the C++ API names it where it is required), unless an empty tensor of some shape:
  // those need no data (c_api.h), and an empty batch or sequence is a valid call.
  bool empty = false;
  for (int d = 0; d < c.ndim && d < JITATTN_MAX_DIMS; ++d) empty |= c.shape[d] == 0;
  if (!c.data && !(c.ndim >= 1 && c.ndim <= JITATTN_MAX_DIMS && empty)) return v;
  v.data = c.data;
  v.dtype = to_dtype(c.dtype, (n + ".dtype").c_str());
  if (c.ndim < 0 || c.ndim > JITATTN_MAX_DIMS)
    invalid(n + ".ndim=" + std::to_string(c.ndim) + " is not in [0, " + std::to_string(JITATTN_MAX_DIMS) + "]");
  v.ndim = c.ndim;
  for (int d = 0; d < c.ndim; ++d) v.shape[d] = c.shape[d], v.stride[d] = c.stride[d];
  v.device = c.device;
  return v;
}

}  // namespace jitattn::capi

using namespace jitattn;
using namespace jitattn::capi;
static_assert(JITATTN_BIAS_KIND_COUNT == std::variant_size_v<AttnBias>, "one JITATTN_BIAS_* per AttnBias alternative");
static_assert(JITATTN_MAX_DIMS == kMaxDims && JITATTN_DEVICE_HOST == TensorView::kHost, "c_api.h mirrors tensor.h");

extern "C" {

// ---- errors and version ----------------------------------------------------------------------------
const char* jitattn_status_name(jitattn_status status) {
  switch (status) {
    case JITATTN_OK: return "JITATTN_OK";
    case JITATTN_ERROR_INVALID_ARGUMENT: return "JITATTN_ERROR_INVALID_ARGUMENT";
    case JITATTN_ERROR_UNSUPPORTED: return "JITATTN_ERROR_UNSUPPORTED";
    case JITATTN_ERROR_COMPILE: return "JITATTN_ERROR_COMPILE";
    case JITATTN_ERROR_CUDA: return "JITATTN_ERROR_CUDA";
    case JITATTN_ERROR_OUT_OF_MEMORY: return "JITATTN_ERROR_OUT_OF_MEMORY";
    case JITATTN_ERROR_INTERNAL: return "JITATTN_ERROR_INTERNAL";
    case JITATTN_ERROR_CACHE_MISS: return "JITATTN_ERROR_CACHE_MISS";
  }
  return "unknown";
}

size_t jitattn_last_error_count(void) { return t_last.reasons.size(); }
const char* jitattn_last_error_reason(size_t i) { return i < t_last.reasons.size() ? t_last.reasons[i].c_str() : nullptr; }
const char* jitattn_last_error_message(void) { return t_last.message.c_str(); }
jitattn_status jitattn_last_error_status(void) { return t_last.status; }

const char* jitattn_version(void) { return JITATTN_VERSION_STRING; }
void jitattn_version_numbers(int32_t* major, int32_t* minor, int32_t* patch) {
  if (major) *major = JITATTN_VERSION_MAJOR;
  if (minor) *minor = JITATTN_VERSION_MINOR;
  if (patch) *patch = JITATTN_VERSION_PATCH;
}
int32_t jitattn_c_api_version(void) { return JITATTN_C_API_VERSION; }

// ---- biases --------------------------------------------------------------------------------------
const char* jitattn_bias_kind_name(int32_t kind) {
  static const std::vector<const char*> names = bias_names(std::make_index_sequence<std::variant_size_v<AttnBias>>{});
  return kind >= 0 && size_t(kind) < names.size() ? names[size_t(kind)] : nullptr;
}

jitattn_status jitattn_swiglu_forward(const jitattn_tensor* x12, const jitattn_tensor* h, void* stream) {
  TensorView x, out;
  return guarded(
      [&] {
        x = tensor_arg(x12, "x12"), out = tensor_arg(h, "h");
        swiglu_gate_forward(x, out, stream);
      },
      [&] { return !swiglu_gate_not_supported_reasons(x, out).empty(); });
}

jitattn_status jitattn_swiglu_backward(const jitattn_tensor* x12, const jitattn_tensor* dh, const jitattn_tensor* dx12,
                                       void* stream) {
  TensorView x, g, dx;
  return guarded(
      [&] {
        x = tensor_arg(x12, "x12"), g = tensor_arg(dh, "dh"), dx = tensor_arg(dx12, "dx12");
        swiglu_gate_backward(x, g, dx, stream);
      },
      [&] { return !swiglu_gate_not_supported_reasons(x, g, dx).empty(); });
}

jitattn_status jitattn_variant_create(const jitattn_variant_desc* desc, jitattn_variant** variant) {
  return guarded_as(JITATTN_ERROR_INVALID_ARGUMENT, [&] {
    jitattn_variant*& out = required(variant, "variant");
    out = nullptr;
    const jitattn_variant_desc d = read_struct(required(desc, "desc"), "jitattn_variant_desc", kVariantDescFieldEnds);
    auto h = std::make_unique<jitattn_variant>();
    Variant& v = h->variant;
    if (d.mask_mod) v.mask_mod(d.mask_mod);
    if (d.score_mod) v.score_mod(d.score_mod, d.score_grad ? d.score_grad : "");
    else if (d.score_grad) v.score_mod("", d.score_grad);
    v.additive_score(d.additive != 0);
    if (d.num_captures < 0) invalid("desc.num_captures=" + std::to_string(d.num_captures) + " is negative");
    if (d.num_captures > kMaxCaptures)
      invalid("desc.num_captures=" + std::to_string(d.num_captures) + ": at most " + std::to_string(kMaxCaptures) +
              " (8 tensors, 8 floats, 8 ints)");
    if (d.num_captures > 0 && !d.captures) invalid("desc.captures is NULL");
    for (int32_t i = 0; i < d.num_captures; ++i) {
      const std::string item = "desc.captures[" + std::to_string(i) + "]";
      const jitattn_capture_decl c =
          read_struct(array_element(d.captures, d.num_captures, i, kMaxCaptures, "desc.captures"), item.c_str(),
                      kCaptureDeclFieldEnds);
      if (!c.name) invalid(item + ".name is NULL");
      for (const auto& prev : v.captures())
        if (prev.name == c.name) invalid(item + ".name='" + c.name + "' is declared twice");
      switch (c.kind) {
        case JITATTN_CAPTURE_TENSOR: {
          if (c.type < JITATTN_CAPTURE_TYPE_F32 || c.type > JITATTN_CAPTURE_TYPE_U8)
            invalid(item + ".type=" + std::to_string(c.type) + " is not a JITATTN_CAPTURE_TYPE_*");
          CaptureTensor t;
          t.data = reinterpret_cast<const void*>(uintptr_t(1));  // a placeholder: each call gives the value
          t.type = CaptureType(c.type);
          t.rank = c.rank;
          v.capture(c.name, t);
          break;
        }
        case JITATTN_CAPTURE_F32: v.capture(c.name, 0.f); break;
        case JITATTN_CAPTURE_I32: v.capture(c.name, int32_t(0)); break;
        default: invalid(item + ".kind=" + std::to_string(c.kind) + " is not a JITATTN_CAPTURE_*");
      }
    }
    const std::vector<std::string> reasons = v.reasons();
    if (!reasons.empty()) throw CallError{JITATTN_ERROR_INVALID_ARGUMENT, reasons};
    out = h.release();
  });
}

void jitattn_variant_destroy(jitattn_variant* variant) { delete variant; }

uint64_t jitattn_variant_id(const jitattn_variant* variant) { return variant ? variant->variant.code_id() : 0; }

jitattn_status jitattn_block_map_build(const jitattn_variant* variant, int32_t num_capture_values,
                                       const jitattn_capture_value* capture_values, int64_t mq, int64_t mkv,
                                       int32_t cell_size, const jitattn_tensor* cells, jitattn_block_map* map,
                                       void* stream) {
  return jitattn_block_map_build_spans(variant, num_capture_values, capture_values, mq, mkv, cell_size, cells, nullptr,
                                       map, stream);
}

jitattn_status jitattn_block_map_build_spans(const jitattn_variant* variant, int32_t num_capture_values,
                                             const jitattn_capture_value* capture_values, int64_t mq, int64_t mkv,
                                             int32_t cell_size, const jitattn_tensor* cells, const jitattn_tensor* spans,
                                             jitattn_block_map* map, void* stream) {
  return guarded_as(JITATTN_ERROR_INVALID_ARGUMENT, [&] {
    jitattn_block_map& out = required(map, "map");
    Variant v;
    const Variant* call = call_variant(&required(variant, "variant"), num_capture_values, capture_values, "variant", v);
    const BlockMap m = build_block_map(*call, mq, mkv, tensor_arg(cells, "cells"),
                                       spans ? tensor_arg(spans, "spans") : TensorView{}, cell_size, stream);
    out = jitattn_block_map{};
    out.struct_size = sizeof(jitattn_block_map);
    out.cells = *cells;
    if (spans) out.spans = *spans;
    out.cell_size = m.cell_size, out.mq = m.mq, out.mkv = m.mkv, out.variant_id = m.variant;
  });
}

jitattn_status jitattn_variant_materialize(const jitattn_variant* variant, int32_t num_capture_values,
                                           const jitattn_capture_value* capture_values, const jitattn_tensor* out,
                                           void* stream) {
  return guarded_as(JITATTN_ERROR_INVALID_ARGUMENT, [&] {
    Variant v;
    const Variant* call = call_variant(&required(variant, "variant"), num_capture_values, capture_values, "variant", v);
    materialize(*call, tensor_arg(out, "out"), stream);
  });
}

jitattn_status jitattn_bias_create(const jitattn_bias* desc, jitattn_bias_handle** handle) {
  return guarded_as(JITATTN_ERROR_INVALID_ARGUMENT, [&] {
    jitattn_bias_handle*& result = required(handle, "handle");
    result = nullptr;
    AttnBias bias = to_bias(&required(desc, "desc"));
    result = new jitattn_bias_handle{std::move(bias)};
  });
}
void jitattn_bias_destroy(jitattn_bias_handle* handle) { delete handle; }

jitattn_status jitattn_materialize(const jitattn_bias* bias, int64_t B, int64_t H, int64_t Mq, int64_t Mkv, double* out,
                                   size_t out_count) {
  return guarded_as(JITATTN_ERROR_INVALID_ARGUMENT, [&] { materialize_into(to_bias(bias), B, H, Mq, Mkv, out, out_count); });
}
jitattn_status jitattn_materialize_h(const jitattn_bias_handle* bias, int64_t B, int64_t H, int64_t Mq, int64_t Mkv,
                                     double* out, size_t out_count) {
  return guarded_as(JITATTN_ERROR_INVALID_ARGUMENT,
                    [&] { materialize_into(handle_bias(bias), B, H, Mq, Mkv, out, out_count); });
}

// ---- attention -------------------------------------------------------------------------------------
jitattn_status jitattn_forward(const jitattn_tensor* query, const jitattn_tensor* key, const jitattn_tensor* value,
                               const jitattn_bias* bias, const jitattn_tensor* out,
                               const jitattn_attention_options* options, void* stream) {
  return forward(query, key, value, from_desc(bias), out, nullptr, false, options, stream);
}
jitattn_status jitattn_forward_h(const jitattn_tensor* query, const jitattn_tensor* key, const jitattn_tensor* value,
                                 const jitattn_bias_handle* bias, const jitattn_tensor* out,
                                 const jitattn_attention_options* options, void* stream) {
  return forward(query, key, value, from_handle(bias), out, nullptr, false, options, stream);
}
jitattn_status jitattn_forward_requires_grad(const jitattn_tensor* query, const jitattn_tensor* key,
                                             const jitattn_tensor* value, const jitattn_bias* bias,
                                             const jitattn_tensor* out, const jitattn_tensor* lse,
                                             const jitattn_attention_options* options, void* stream) {
  return forward(query, key, value, from_desc(bias), out, lse, true, options, stream);
}
jitattn_status jitattn_forward_requires_grad_h(const jitattn_tensor* query, const jitattn_tensor* key,
                                               const jitattn_tensor* value, const jitattn_bias_handle* bias,
                                               const jitattn_tensor* out, const jitattn_tensor* lse,
                                               const jitattn_attention_options* options, void* stream) {
  return forward(query, key, value, from_handle(bias), out, lse, true, options, stream);
}
jitattn_status jitattn_not_supported_reasons(const jitattn_tensor* query, const jitattn_tensor* key,
                                             const jitattn_tensor* value, const jitattn_bias* bias,
                                             const jitattn_tensor* out, const jitattn_tensor* lse,
                                             const jitattn_attention_options* options) {
  return forward_reasons(query, key, value, from_desc(bias), out, lse, options);
}
jitattn_status jitattn_not_supported_reasons_h(const jitattn_tensor* query, const jitattn_tensor* key,
                                               const jitattn_tensor* value, const jitattn_bias_handle* bias,
                                               const jitattn_tensor* out, const jitattn_tensor* lse,
                                               const jitattn_attention_options* options) {
  return forward_reasons(query, key, value, from_handle(bias), out, lse, options);
}

jitattn_status jitattn_backward(const jitattn_tensor* grad, const jitattn_tensor* out, const jitattn_tensor* lse,
                                const jitattn_tensor* query, const jitattn_tensor* key, const jitattn_tensor* value,
                                const jitattn_bias* bias, const jitattn_tensor* dq, const jitattn_tensor* dk,
                                const jitattn_tensor* dv, const jitattn_tensor* dbias,
                                const jitattn_backward_options* options, void* stream) {
  return backward(grad, out, lse, query, key, value, from_desc(bias), dq, dk, dv, dbias, options, stream, true);
}
jitattn_status jitattn_backward_h(const jitattn_tensor* grad, const jitattn_tensor* out, const jitattn_tensor* lse,
                                  const jitattn_tensor* query, const jitattn_tensor* key, const jitattn_tensor* value,
                                  const jitattn_bias_handle* bias, const jitattn_tensor* dq, const jitattn_tensor* dk,
                                  const jitattn_tensor* dv, const jitattn_tensor* dbias,
                                  const jitattn_backward_options* options, void* stream) {
  return backward(grad, out, lse, query, key, value, from_handle(bias), dq, dk, dv, dbias, options, stream, true);
}
jitattn_status jitattn_backward_not_supported_reasons(const jitattn_tensor* grad, const jitattn_tensor* out,
                                                      const jitattn_tensor* lse, const jitattn_tensor* query,
                                                      const jitattn_tensor* key, const jitattn_tensor* value,
                                                      const jitattn_bias* bias, const jitattn_tensor* dq,
                                                      const jitattn_tensor* dk, const jitattn_tensor* dv,
                                                      const jitattn_tensor* dbias,
                                                      const jitattn_backward_options* options) {
  return backward(grad, out, lse, query, key, value, from_desc(bias), dq, dk, dv, dbias, options, nullptr, false);
}
jitattn_status jitattn_backward_not_supported_reasons_h(const jitattn_tensor* grad, const jitattn_tensor* out,
                                                        const jitattn_tensor* lse, const jitattn_tensor* query,
                                                        const jitattn_tensor* key, const jitattn_tensor* value,
                                                        const jitattn_bias_handle* bias, const jitattn_tensor* dq,
                                                        const jitattn_tensor* dk, const jitattn_tensor* dv,
                                                        const jitattn_tensor* dbias,
                                                        const jitattn_backward_options* options) {
  return backward(grad, out, lse, query, key, value, from_handle(bias), dq, dk, dv, dbias, options, nullptr, false);
}
jitattn_status jitattn_backward_workspace_bytes(const jitattn_tensor* query, const jitattn_tensor* key,
                                                const jitattn_tensor* value, const jitattn_bias* bias,
                                                const jitattn_backward_options* options, size_t* bytes) {
  return workspace_bytes(query, key, value, from_desc(bias), options, bytes);
}
jitattn_status jitattn_backward_workspace_bytes_h(const jitattn_tensor* query, const jitattn_tensor* key,
                                                  const jitattn_tensor* value, const jitattn_bias_handle* bias,
                                                  const jitattn_backward_options* options, size_t* bytes) {
  return workspace_bytes(query, key, value, from_handle(bias), options, bytes);
}

// ---- split keys ------------------------------------------------------------------------------------
jitattn_status jitattn_partial(const jitattn_tensor* query, const jitattn_tensor* key, const jitattn_tensor* value,
                               const jitattn_bias* bias, const jitattn_tensor* out, const jitattn_tensor* lse,
                               const jitattn_attention_options* options, void* stream) {
  return partial(query, key, value, from_desc(bias), out, lse, options, stream);
}
jitattn_status jitattn_partial_h(const jitattn_tensor* query, const jitattn_tensor* key, const jitattn_tensor* value,
                                 const jitattn_bias_handle* bias, const jitattn_tensor* out, const jitattn_tensor* lse,
                                 const jitattn_attention_options* options, void* stream) {
  return partial(query, key, value, from_handle(bias), out, lse, options, stream);
}

jitattn_status jitattn_merge_attentions(const jitattn_tensor* outputs, const jitattn_tensor* lses,
                                        const jitattn_tensor* out, const jitattn_tensor* lse, void* stream) {
  TensorView o, l, dst, dst_lse;
  return guarded(
      [&] {
        o = tensor_arg(outputs, "outputs"), l = tensor_arg(lses, "lses"), dst = tensor_arg(out, "out");
        dst_lse = to_tensor(lse, "lse");
        merge_attentions(o, l, dst, dst_lse, stream);
      },
      [&] { return !merge_not_supported_reasons(o, l, dst, dst_lse).empty(); });
}
jitattn_status jitattn_merge_attentions_list(const jitattn_tensor* const* outputs, const jitattn_tensor* const* lses,
                                             size_t num_splits, const jitattn_tensor* out, const jitattn_tensor* lse,
                                             void* stream) {
  std::vector<TensorView> o, l;
  TensorView dst, dst_lse;
  return guarded(
      [&] {
        o = tensor_list(outputs, num_splits, "outputs"), l = tensor_list(lses, num_splits, "lses");
        dst = tensor_arg(out, "out"), dst_lse = to_tensor(lse, "lse");
        merge_attentions(o, l, dst, dst_lse, stream);
      },
      [&] { return !merge_not_supported_reasons(o, l, dst, dst_lse).empty(); });
}
jitattn_status jitattn_merge_not_supported_reasons(const jitattn_tensor* outputs, const jitattn_tensor* lses,
                                                   const jitattn_tensor* out, const jitattn_tensor* lse) {
  return guarded_as(JITATTN_ERROR_UNSUPPORTED, [&] {
    reasons_status(merge_not_supported_reasons(tensor_arg(outputs, "outputs"), tensor_arg(lses, "lses"),
                                               tensor_arg(out, "out"), to_tensor(lse, "lse")));
  });
}
jitattn_status jitattn_merge_list_not_supported_reasons(const jitattn_tensor* const* outputs,
                                                        const jitattn_tensor* const* lses, size_t num_splits,
                                                        const jitattn_tensor* out, const jitattn_tensor* lse) {
  return guarded_as(JITATTN_ERROR_UNSUPPORTED, [&] {
    reasons_status(merge_not_supported_reasons(tensor_list(outputs, num_splits, "outputs"),
                                               tensor_list(lses, num_splits, "lses"), tensor_arg(out, "out"),
                                               to_tensor(lse, "lse")));
  });
}

// ---- kernel cache ----------------------------------------------------------------------------------
jitattn_status jitattn_cache_path(const char** path) {
  return guarded_as(JITATTN_ERROR_INVALID_ARGUMENT, [&] {  // a malformed JITATTN_* variable
    const char*& result = required(path, "path");
    result = jit::Env::get().cache_path.c_str();
  });
}

jitattn_status jitattn_get_jit_stats(jitattn_jit_stats* stats) {
  return guarded_as(JITATTN_ERROR_INVALID_ARGUMENT, [&] {
    jitattn_jit_stats& caller = required(stats, "stats");
    read_struct(caller, "jitattn_jit_stats", kStatsFieldEnds);  // checks struct_size
    const jit::JitStats& s = jit::JitRuntime::get().stats();
    jitattn_jit_stats full{};
    full.struct_size = caller.struct_size;
    full.compiles = s.compiles, full.memory_hits = s.memory_hits, full.db_hits = s.db_hits, full.loads = s.loads;
    full.claim_hits = s.claim_hits;
    size_t written = sizeof(size_t);
    for (size_t end : kStatsFieldEnds)
      if (end <= caller.struct_size) written = std::max(written, end);
    std::memcpy(static_cast<void*>(&caller), &full, written);
  });
}

jitattn_status jitattn_prewarm(const char* kernel_name, const char* arch, int32_t* compiled) {
  return guarded(
      [&] {
        if (!kernel_name) invalid("kernel_name is NULL");
        const std::string name = kernel_name;
        std::optional<jit::KernelSpec> spec = jit::KernelSpec::parse(name);
        if (!spec) invalid("kernel_name \"" + name + "\" is not a canonical kernel name (`jitattn ls` prints them)");
        if (arch && *arch) {
          const std::optional<jit::Arch> a = jit::Arch::parse(arch);
          if (!a) invalid(std::string("arch \"") + arch + "\" is not a known target: " + jit::Arch::rule());
          jit::Signature sig = spec->sig;
          sig.set_arch(*a);
          spec = jit::make_spec(sig);
        }
        const std::string problem = jit::validate_spec(*spec);
        if (!problem.empty()) invalid(spec->name() + ": " + problem);
        std::string served_by;
        jit::JitRuntime::get().binary(*spec, &served_by);
        if (compiled) *compiled = jit::is_compiled(served_by) ? 1 : 0;
      },
      [] { return false; });
}

}  // extern "C"
