/* The stable C API of jitattn: every entry point of the C++ API (attention.h, merge.h, bias.h),
 * plus version and cache controls, callable from C11 and from any language with a C FFI.
 *
 * ABI rules
 *  - Every function returns a jitattn_status (0 = JITATTN_OK) unless it is an accessor that
 *    cannot fail (version, last-error accessors, names) or jitattn_bias_destroy. No C++ exception
 *    crosses the boundary.
 *  - On failure the reasons (each naming the argument and the rule, as the C++ API's
 *    jitattn::Error::reasons()) are kept per thread: jitattn_last_error_count(),
 *    jitattn_last_error_reason(i), jitattn_last_error_message() (joined with "; "). Every call
 *    that returns a jitattn_status clears them first; the strings stay valid until the next such
 *    call on the same thread.
 *  - Every struct the caller passes in starts with `size_t struct_size`, which the caller sets to
 *    sizeof(the struct) as its header declared it. The library reads a field only when it lies
 *    wholly inside struct_size; fields past it take their documented defaults (zero unless said
 *    otherwise), so a caller built against an older header works with a newer library. A
 *    struct_size below sizeof(size_t) (0 included) is JITATTN_ERROR_INVALID_ARGUMENT. A
 *    struct_size larger than this library knows (a newer caller) is accepted when every byte
 *    past the known struct is zero, and refused (INVALID_ARGUMENT, naming the struct) otherwise:
 *    a field this library does not understand is never silently ignored. Structs the library
 *    fills (jitattn_jit_stats) follow the same rule: only fields inside struct_size are written.
 *  - New fields are only ever appended; enum values are fixed-width int32_t and never renumbered.
 *  - Zero-initialized structs mean "defaults": dtype 0 is "unset", has_scale 0 is "K^-0.5".
 *  - NULL for a required pointer is JITATTN_ERROR_INVALID_ARGUMENT naming the argument; NULL
 *    for an optional one (options, bias, dbias, lse of the plain forward/merge) means "none".
 *  - Tensors are views of caller-owned memory (device memory, except for materialize's tensor
 *    bias); shapes and strides in elements, as jitattn::TensorView. Streams are CUstreams as
 *    void* (NULL: the legacy default stream); calls queue work and return without synchronizing.
 *  - Calls taking a bias come in two forms: with a jitattn_bias description (converted on every
 *    call; its device arrays are then uploaded by every call and freed as it returns, as those of
 *    a temporary C++ bias) and, named with the suffix _h, with a jitattn_bias_handle from
 *    jitattn_bias_create, which keeps the converted bias and its uploads alive across calls. Under
 *    CUDA graph capture, where nothing may be uploaded, use a handle already used once outside
 *    the capture, or the description's *_device pointers. A NULL bias or handle means no bias.
 *  - Thread safety: as the C++ API (calls may run concurrently; a bias handle may be shared by
 *    concurrent calls and must not be destroyed while one uses it).
 */
#ifndef JITATTN_C_API_H
#define JITATTN_C_API_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define JITATTN_C_EXPORT
#else
#define JITATTN_C_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when functions, struct fields or status codes are added (never for other changes). */
#define JITATTN_C_API_VERSION 4  /* 2: JITATTN_ERROR_CACHE_MISS; 3: block maps, BLOCK_SPARSE, JITATTN_DTYPE_U8; 4: row spans */

/* ---- status codes --------------------------------------------------------------------------- */
typedef int32_t jitattn_status;
#define JITATTN_OK 0
#define JITATTN_ERROR_INVALID_ARGUMENT 1 /* NULL, bad struct_size or enum, a bias that breaks its constructor's rules, a too small buffer */
#define JITATTN_ERROR_UNSUPPORTED 2      /* the call's inputs are refused: the reasons are its not_supported_reasons */
#define JITATTN_ERROR_COMPILE 3          /* no kernel: NVRTC missing or failed */
#define JITATTN_ERROR_CUDA 4             /* no CUDA driver or device, a device/context mismatch, a CUDA driver error */
#define JITATTN_ERROR_OUT_OF_MEMORY 5    /* host allocation failed, or CUDA_ERROR_OUT_OF_MEMORY */
#define JITATTN_ERROR_INTERNAL 6         /* anything else */
#define JITATTN_ERROR_CACHE_MISS 7       /* JITATTN_JIT=off and no cache layer holds the kernel (the reason gives its manifest line) */

/* "JITATTN_OK", "JITATTN_ERROR_UNSUPPORTED", ...; "unknown" for other values. */
JITATTN_C_EXPORT const char* jitattn_status_name(jitattn_status status);

/* The reasons of the last failed call on this thread (0 after a successful one). */
JITATTN_C_EXPORT size_t jitattn_last_error_count(void);
/* Reason i (< count), or NULL. */
JITATTN_C_EXPORT const char* jitattn_last_error_reason(size_t i);
/* Every reason joined with "; "; "" when the last call succeeded. */
JITATTN_C_EXPORT const char* jitattn_last_error_message(void);
/* The status the last call on this thread returned. */
JITATTN_C_EXPORT jitattn_status jitattn_last_error_status(void);

/* ---- version -------------------------------------------------------------------------------- */
/* The library's version, e.g. "0.1.0". */
JITATTN_C_EXPORT const char* jitattn_version(void);
/* Its numbers; any pointer may be NULL. */
JITATTN_C_EXPORT void jitattn_version_numbers(int32_t* major, int32_t* minor, int32_t* patch);
/* The JITATTN_C_API_VERSION the library was built with (>= the caller's for every function it calls). */
JITATTN_C_EXPORT int32_t jitattn_c_api_version(void);

/* ---- tensors -------------------------------------------------------------------------------- */
#define JITATTN_DTYPE_UNSET 0 /* invalid for a tensor; "default" for options.output_dtype */
#define JITATTN_DTYPE_F16 1
#define JITATTN_DTYPE_BF16 2
#define JITATTN_DTYPE_F32 3
#define JITATTN_DTYPE_U8 4 /* bytes of masks only: BlockSparseMask's layout, a block map's cells */
#define JITATTN_DTYPE_I32 5 /* a block map's row spans only */
#define JITATTN_DEVICE_HOST (-1)
#define JITATTN_MAX_DIMS 6

/* jitattn::TensorView. data NULL: an undefined tensor (as an optional argument: none), except a
   tensor of ndim >= 1 with no elements (a shape entry 0), which needs no data: an empty tensor
   (torch's data_ptr() of an empty tensor is 0). */
typedef struct jitattn_tensor {
  size_t struct_size;
  void* data;
  int32_t dtype; /* JITATTN_DTYPE_* */
  int32_t ndim;  /* 0..JITATTN_MAX_DIMS */
  int64_t shape[JITATTN_MAX_DIMS];
  int64_t stride[JITATTN_MAX_DIMS]; /* elements; only the last must be 1 */
  int32_t device;                   /* CUDA ordinal, or JITATTN_DEVICE_HOST; default 0 */
} jitattn_tensor;

/* ---- biases --------------------------------------------------------------------------------- */
/* One value per jitattn::AttnBias alternative, in its order (the xFormers class names). */
#define JITATTN_BIAS_NONE 0
#define JITATTN_BIAS_TENSOR 1                                                  /* tensor */
#define JITATTN_BIAS_LOWER_TRIANGULAR 2
#define JITATTN_BIAS_LOWER_TRIANGULAR_WITH_TENSOR_BIAS 3                       /* tensor */
#define JITATTN_BIAS_LOWER_TRIANGULAR_FROM_BOTTOM_RIGHT 4
#define JITATTN_BIAS_LOWER_TRIANGULAR_FROM_BOTTOM_RIGHT_LOCAL_ATTENTION 5      /* window_size */
#define JITATTN_BIAS_LOCAL_ATTENTION_FROM_BOTTOM_RIGHT 6                       /* window_left, window_right */
#define JITATTN_BIAS_BLOCK_DIAGONAL 7                                          /* q_seqlen, kv_seqlen? */
#define JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL 8                                   /* q_seqlen, kv_seqlen? */
#define JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_FROM_BOTTOM_RIGHT 9                 /* q_seqlen, kv_seqlen? */
#define JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_LOCAL_ATTENTION 10                  /* q_seqlen, kv_seqlen?, window_size */
#define JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_LOCAL_ATTENTION_FROM_BOTTOM_RIGHT 11 /* q_seqlen, kv_seqlen?, window_size */
#define JITATTN_BIAS_BLOCK_DIAGONAL_PADDED_KEYS 12                             /* q_seqlen, kv_padding, kv_seqlen */
#define JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_WITH_OFFSET_PADDED_KEYS 13          /* q_seqlen, kv_padding, kv_seqlen */
#define JITATTN_BIAS_BLOCK_DIAGONAL_LOCAL_ATTENTION_PADDED_KEYS 14             /* ... + window_left, window_right */
#define JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_LOCAL_ATTENTION_PADDED_KEYS 15      /* ... + window_size */
#define JITATTN_BIAS_BLOCK_DIAGONAL_GAPPY_KEYS 16                              /* q_seqlen, kv_seqstarts, kv_seqlen */
#define JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_WITH_OFFSET_GAPPY_KEYS 17           /* q_seqlen, kv_seqstarts, kv_seqlen */
#define JITATTN_BIAS_PAGED_BLOCK_DIAGONAL_PADDED_KEYS 18                       /* padded + block_tables, max_pages, page_size */
#define JITATTN_BIAS_PAGED_BLOCK_DIAGONAL_CAUSAL_WITH_OFFSET_PADDED_KEYS 19    /* same */
#define JITATTN_BIAS_PAGED_BLOCK_DIAGONAL_CAUSAL_LOCAL_PADDED_KEYS 20          /* same + window_size */
#define JITATTN_BIAS_PAGED_BLOCK_DIAGONAL_GAPPY_KEYS 21                        /* gappy + block_tables, max_pages, page_size */
#define JITATTN_BIAS_PAGED_BLOCK_DIAGONAL_CAUSAL_WITH_OFFSET_GAPPY_KEYS 22     /* same */
#define JITATTN_BIAS_ALIBI 23                                                  /* slopes */
#define JITATTN_BIAS_LOWER_TRIANGULAR_WITH_ALIBI 24                            /* slopes */
#define JITATTN_BIAS_BLOCK_DIAGONAL_WITH_ALIBI 25                              /* q_seqlen, kv_seqlen?, slopes */
#define JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_WITH_ALIBI 26                       /* q_seqlen, kv_seqlen?, slopes */
#define JITATTN_BIAS_BLOCK_SPARSE 27                                           /* tensor (u8 layout), block_size, block_sparse_causal */
#define JITATTN_BIAS_KIND_COUNT 28

/* A bias, described as its xFormers constructor takes it (BlockDiagonalMask.from_seqlens,
 * make_paged, ...); the conversion runs those constructors, so every check they make applies
 * and its reasons come back as INVALID_ARGUMENT. Fields a kind does not use are ignored, except
 * the *_device pointers: one given for an array the kind does not have is an error.
 * Host arrays are read during the call only (the library copies them). */
typedef struct jitattn_bias {
  size_t struct_size;
  int32_t kind;     /* JITATTN_BIAS_*; default NONE */
  int32_t num_seqs; /* B: entries of q_seqlen and kv_seqlen, rows of block_tables */
  const int32_t* q_seqlen;     /* [num_seqs] */
  const int32_t* kv_seqlen;    /* [num_seqs]; NULL for the BLOCK_DIAGONAL* kinds: the same as q_seqlen */
  const int32_t* kv_seqstarts; /* gappy kinds: [num_seqs + 1], as xFormers (the last is the key count) */
  int32_t kv_padding;          /* padded kinds; paged kinds ignore it (make_paged uses max_pages * page_size) */
  int32_t window_size;         /* causal local kinds: keys each query sees (>= 1) */
  int32_t window_left, window_right; /* LOCAL_ATTENTION_FROM_BOTTOM_RIGHT, BLOCK_DIAGONAL_LOCAL_ATTENTION_PADDED_KEYS (>= 0) */
  const jitattn_tensor* tensor; /* TENSOR and LOWER_TRIANGULAR_WITH_TENSOR_BIAS: the dense bias */
  const int32_t* block_tables;  /* paged kinds: [num_seqs, max_pages] row-major */
  int32_t max_pages;
  int32_t page_size;
  /* ALiBi kinds: alibi_slopes[alibi_num_slopes] (one per query head), or, with alibi_slopes
   * NULL, AlibiSlopes::geometric(alibi_num_slopes): 2^(-8(h+1)/H). */
  const float* alibi_slopes;
  int32_t alibi_num_slopes;
  int32_t reserved0; /* 0 */
  /* Optional device copies the kernels read instead of uploading the host arrays (so that a
   * captured CUDA graph can be replayed with new lengths or tables). Each must hold what the
   * host arrays stand for, as jitattn::DeviceArray describes:
   *   q_seqstart_device:   [num_seqs + 1] prefix sums of q_seqlen (block-diagonal kinds);
   *   kv_seqstart_device:  [num_seqs + 1] non-paged kinds only: prefix sums of kv_seqlen
   *                        (BLOCK_DIAGONAL*), b * kv_padding (padded), kv_seqstarts (gappy);
   *   kv_seqlen_device:    [num_seqs] kv_seqlen (padded, gappy and paged kinds);
   *   block_tables_device: [num_seqs * max_pages] (paged kinds);
   *   alibi_slopes_device: [alibi_num_slopes] (ALiBi kinds). */
  const int32_t* q_seqstart_device;
  const int32_t* kv_seqstart_device;
  const int32_t* kv_seqlen_device;
  const int32_t* block_tables_device;
  const float* alibi_slopes_device;
  /* BLOCK_SPARSE: `tensor` is the layout [H or 1, ceil(Mq / block_size), ceil(Mkv / block_size)] u8;
   * block_size a power of two in [16, 256]; block_sparse_causal != 0 adds LowerTriangularMask. */
  int32_t block_size;
  int32_t block_sparse_causal;
} jitattn_bias;

/* "BlockDiagonalCausalMask" for JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL; NULL for an unknown kind. */
JITATTN_C_EXPORT const char* jitattn_bias_kind_name(int32_t kind);

/* A converted bias kept alive across calls (its device arrays are uploaded once, on first use). */
typedef struct jitattn_bias_handle jitattn_bias_handle;
JITATTN_C_EXPORT jitattn_status jitattn_bias_create(const jitattn_bias* desc, jitattn_bias_handle** handle);
/* NULL is allowed. Must not race with a call using the handle. */
JITATTN_C_EXPORT void jitattn_bias_destroy(jitattn_bias_handle* handle);

/* xFormers' materialize(): the bias as a dense [B, H, Mq, Mkv] row-major fp64 array written to
 * out[0 .. B*H*Mq*Mkv). out_count is the number of doubles `out` holds; fewer than needed is
 * INVALID_ARGUMENT. A tensor bias must be host memory (device = JITATTN_DEVICE_HOST). */
JITATTN_C_EXPORT jitattn_status jitattn_materialize(const jitattn_bias* bias, int64_t B, int64_t H, int64_t Mq,
                                                    int64_t Mkv, double* out, size_t out_count);
JITATTN_C_EXPORT jitattn_status jitattn_materialize_h(const jitattn_bias_handle* bias, int64_t B, int64_t H,
                                                      int64_t Mq, int64_t Mkv, double* out, size_t out_count);

/* ---- SwiGLU's gate (jitattn/swiglu.h) ---------------------------------------------------------- */
/* h = silu(x12[:, :H]) * x12[:, H:]; x12 [N, 2H], h [N, H]. */
JITATTN_C_EXPORT jitattn_status jitattn_swiglu_forward(const jitattn_tensor* x12, const jitattn_tensor* h, void* stream);
/* dx12 = the gradient of that through x12, given dh [N, H]. */
JITATTN_C_EXPORT jitattn_status jitattn_swiglu_backward(const jitattn_tensor* x12, const jitattn_tensor* dh,
                                                        const jitattn_tensor* dx12, void* stream);

/* ---- user variants (jitattn/variant.h) -------------------------------------------------------- */
#define JITATTN_CAPTURE_TENSOR 0
#define JITATTN_CAPTURE_F32 1
#define JITATTN_CAPTURE_I32 2
/* Element types of captured tensors (jitattn::CaptureType), read as float, int, long long or
 * unsigned char by the snippets. */
#define JITATTN_CAPTURE_TYPE_F32 0
#define JITATTN_CAPTURE_TYPE_F16 1
#define JITATTN_CAPTURE_TYPE_BF16 2
#define JITATTN_CAPTURE_TYPE_I32 3
#define JITATTN_CAPTURE_TYPE_I64 4
#define JITATTN_CAPTURE_TYPE_U8 5

/* A capture as declared: what the code is compiled for. */
typedef struct jitattn_capture_decl {
  size_t struct_size;
  const char* name;
  int32_t kind; /* JITATTN_CAPTURE_* */
  int32_t type; /* tensors: JITATTN_CAPTURE_TYPE_* */
  int32_t rank; /* tensors: 1..4 */
} jitattn_capture_decl;

/* A variant's code: snippets (NULL or "" for none) and its captures' declarations. */
typedef struct jitattn_variant_desc {
  size_t struct_size;
  const char* mask_mod;
  const char* score_mod;
  const char* score_grad;
  int32_t additive; /* != 0: score_mod's gradient is 1 */
  int32_t num_captures;
  const jitattn_capture_decl* captures;
} jitattn_variant_desc;

/* A capture's value for one call, in declaration order: tensors use data/shape/stride (elements,
 * device memory of the call's device), scalars `value` (converted to float or int32). */
typedef struct jitattn_capture_value {
  size_t struct_size;
  const void* data;
  int64_t shape[4];
  int64_t stride[4];
  double value;
} jitattn_capture_value;

/* A checked, registered variant (its code is hashed once). INVALID_ARGUMENT with the reasons when
 * the code is wrong (names, ranks, counts); a snippet that does not compile fails at the first
 * call with JITATTN_ERROR_COMPILE and NVRTC's messages at the snippet's lines. */
typedef struct jitattn_variant jitattn_variant;
JITATTN_C_EXPORT jitattn_status jitattn_variant_create(const jitattn_variant_desc* desc, jitattn_variant** variant);
/* NULL is allowed. Must not race with a call using it. */
JITATTN_C_EXPORT void jitattn_variant_destroy(jitattn_variant* variant);
/* The code's id (the "+u<16 hex>" of kernel names). */
JITATTN_C_EXPORT uint64_t jitattn_variant_id(const jitattn_variant* variant);

/* A variant's block map (jitattn::BlockMap), filled by jitattn_block_map_build and passed to the
 * calls of that variant through the options. */
typedef struct jitattn_block_map {
  size_t struct_size;
  jitattn_tensor cells; /* u8 [B or 1, H or 1, ceil(mq / cell_size), ceil(mkv / cell_size)], device memory */
  int32_t cell_size;    /* a power of two in [16, 256] */
  int32_t reserved0;    /* 0 */
  int64_t mq, mkv;      /* queries and keys per sequence it covers */
  uint64_t variant_id;  /* jitattn_variant_id of the variant it was built from */
  jitattn_tensor spans; /* i32 [B or 1, H or 1, mq, 2] (jitattn::BlockMap::spans), or all zero: none (version 4) */
} jitattn_block_map;

/* jitattn::build_block_map: evaluates the variant's mask_mod (with these capture values) over
 * every (b, h, q_idx, kv_idx) the cells cover and writes them; fills *map. Queued on `stream`. */
JITATTN_C_EXPORT jitattn_status jitattn_block_map_build(const jitattn_variant* variant, int32_t num_capture_values,
                                                        const jitattn_capture_value* capture_values, int64_t mq,
                                                        int64_t mkv, int32_t cell_size, const jitattn_tensor* cells,
                                                        jitattn_block_map* map, void* stream);
/* The same, and each query row's key span into `spans` (i32 [cells B, cells H, mq, 2], last two
 * dimensions contiguous), after the cells: jitattn::build_block_map with spans (version 4). */
JITATTN_C_EXPORT jitattn_status jitattn_block_map_build_spans(const jitattn_variant* variant, int32_t num_capture_values,
                                                              const jitattn_capture_value* capture_values, int64_t mq,
                                                              int64_t mkv, int32_t cell_size, const jitattn_tensor* cells,
                                                              const jitattn_tensor* spans, jitattn_block_map* map,
                                                              void* stream);
/* jitattn::materialize(variant): the variant as an additive f32 bias out [B, H, Mq, Mkv] (device). */
JITATTN_C_EXPORT jitattn_status jitattn_variant_materialize(const jitattn_variant* variant, int32_t num_capture_values,
                                                            const jitattn_capture_value* capture_values,
                                                            const jitattn_tensor* out, void* stream);

/* ---- options -------------------------------------------------------------------------------- */
/* jitattn::AttentionOptions. NULL: all defaults. */
typedef struct jitattn_attention_options {
  size_t struct_size;
  double scale;          /* used when has_scale != 0; default K^-0.5 */
  int32_t has_scale;
  int32_t output_dtype;  /* JITATTN_DTYPE_UNSET: the query's */
  double p;              /* dropout probability */
  uint64_t seed, offset; /* dropout's Philox seed and offset */
  /* A user variant over the bias, or NULL, with one value per declared capture. */
  const jitattn_variant* variant;
  int32_t num_capture_values;
  const jitattn_capture_value* capture_values;
  const jitattn_block_map* block_map; /* that variant's block map, or NULL */
} jitattn_attention_options;

/* jitattn::BackwardOptions. NULL: all defaults. */
typedef struct jitattn_backward_options {
  size_t struct_size;
  double scale; /* the forward's, used when has_scale != 0 */
  int32_t has_scale;
  int32_t deterministic; /* != 0: dQ without atomics, bitwise identical runs */
  double p;
  uint64_t seed, offset;
  void* workspace; /* >= jitattn_backward_workspace_bytes() of 16-byte aligned device scratch, or NULL (allocated on the stream) */
  const jitattn_variant* variant; /* the forward's, with its capture values */
  int32_t num_capture_values;
  const jitattn_capture_value* capture_values;
  const jitattn_block_map* block_map; /* the forward's, or NULL */
} jitattn_backward_options;

/* ---- attention ------------------------------------------------------------------------------ */
/* memory_efficient_attention_forward: out = softmax(query·keyᵀ·scale + bias)·value. */
JITATTN_C_EXPORT jitattn_status jitattn_forward(const jitattn_tensor* query, const jitattn_tensor* key,
                                                const jitattn_tensor* value, const jitattn_bias* bias,
                                                const jitattn_tensor* out, const jitattn_attention_options* options,
                                                void* stream);
JITATTN_C_EXPORT jitattn_status jitattn_forward_h(const jitattn_tensor* query, const jitattn_tensor* key,
                                                  const jitattn_tensor* value, const jitattn_bias_handle* bias,
                                                  const jitattn_tensor* out, const jitattn_attention_options* options,
                                                  void* stream);

/* memory_efficient_attention_forward_requires_grad: also writes lse [B, H, Mq] f32 (required). */
JITATTN_C_EXPORT jitattn_status jitattn_forward_requires_grad(const jitattn_tensor* query, const jitattn_tensor* key,
                                                              const jitattn_tensor* value, const jitattn_bias* bias,
                                                              const jitattn_tensor* out, const jitattn_tensor* lse,
                                                              const jitattn_attention_options* options, void* stream);
JITATTN_C_EXPORT jitattn_status jitattn_forward_requires_grad_h(const jitattn_tensor* query, const jitattn_tensor* key,
                                                                const jitattn_tensor* value,
                                                                const jitattn_bias_handle* bias,
                                                                const jitattn_tensor* out, const jitattn_tensor* lse,
                                                                const jitattn_attention_options* options, void* stream);

/* not_supported_reasons: JITATTN_OK when the forward would run; JITATTN_ERROR_UNSUPPORTED with
 * every reason in the last-error list when not. lse NULL: the plain forward. Never launches. */
JITATTN_C_EXPORT jitattn_status jitattn_not_supported_reasons(const jitattn_tensor* query, const jitattn_tensor* key,
                                                              const jitattn_tensor* value, const jitattn_bias* bias,
                                                              const jitattn_tensor* out, const jitattn_tensor* lse,
                                                              const jitattn_attention_options* options);
JITATTN_C_EXPORT jitattn_status jitattn_not_supported_reasons_h(const jitattn_tensor* query, const jitattn_tensor* key,
                                                                const jitattn_tensor* value,
                                                                const jitattn_bias_handle* bias,
                                                                const jitattn_tensor* out, const jitattn_tensor* lse,
                                                                const jitattn_attention_options* options);

/* memory_efficient_attention_backward. dbias may be NULL. */
JITATTN_C_EXPORT jitattn_status jitattn_backward(const jitattn_tensor* grad, const jitattn_tensor* out,
                                                 const jitattn_tensor* lse, const jitattn_tensor* query,
                                                 const jitattn_tensor* key, const jitattn_tensor* value,
                                                 const jitattn_bias* bias, const jitattn_tensor* dq,
                                                 const jitattn_tensor* dk, const jitattn_tensor* dv,
                                                 const jitattn_tensor* dbias, const jitattn_backward_options* options,
                                                 void* stream);
JITATTN_C_EXPORT jitattn_status jitattn_backward_h(const jitattn_tensor* grad, const jitattn_tensor* out,
                                                   const jitattn_tensor* lse, const jitattn_tensor* query,
                                                   const jitattn_tensor* key, const jitattn_tensor* value,
                                                   const jitattn_bias_handle* bias, const jitattn_tensor* dq,
                                                   const jitattn_tensor* dk, const jitattn_tensor* dv,
                                                   const jitattn_tensor* dbias,
                                                   const jitattn_backward_options* options, void* stream);

/* backward_not_supported_reasons, as jitattn_not_supported_reasons. */
JITATTN_C_EXPORT jitattn_status jitattn_backward_not_supported_reasons(
    const jitattn_tensor* grad, const jitattn_tensor* out, const jitattn_tensor* lse, const jitattn_tensor* query,
    const jitattn_tensor* key, const jitattn_tensor* value, const jitattn_bias* bias, const jitattn_tensor* dq,
    const jitattn_tensor* dk, const jitattn_tensor* dv, const jitattn_tensor* dbias,
    const jitattn_backward_options* options);
JITATTN_C_EXPORT jitattn_status jitattn_backward_not_supported_reasons_h(
    const jitattn_tensor* grad, const jitattn_tensor* out, const jitattn_tensor* lse, const jitattn_tensor* query,
    const jitattn_tensor* key, const jitattn_tensor* value, const jitattn_bias_handle* bias, const jitattn_tensor* dq,
    const jitattn_tensor* dk, const jitattn_tensor* dv, const jitattn_tensor* dbias,
    const jitattn_backward_options* options);

/* memory_efficient_attention_backward_workspace_bytes into *bytes. */
JITATTN_C_EXPORT jitattn_status jitattn_backward_workspace_bytes(const jitattn_tensor* query, const jitattn_tensor* key,
                                                                 const jitattn_tensor* value, const jitattn_bias* bias,
                                                                 const jitattn_backward_options* options, size_t* bytes);
JITATTN_C_EXPORT jitattn_status jitattn_backward_workspace_bytes_h(const jitattn_tensor* query,
                                                                   const jitattn_tensor* key,
                                                                   const jitattn_tensor* value,
                                                                   const jitattn_bias_handle* bias,
                                                                   const jitattn_backward_options* options,
                                                                   size_t* bytes);

/* ---- split keys (merge.h) ------------------------------------------------------------------- */
/* memory_efficient_attention_partial: out and lse both required. */
JITATTN_C_EXPORT jitattn_status jitattn_partial(const jitattn_tensor* query, const jitattn_tensor* key,
                                                const jitattn_tensor* value, const jitattn_bias* bias,
                                                const jitattn_tensor* out, const jitattn_tensor* lse,
                                                const jitattn_attention_options* options, void* stream);
JITATTN_C_EXPORT jitattn_status jitattn_partial_h(const jitattn_tensor* query, const jitattn_tensor* key,
                                                  const jitattn_tensor* value, const jitattn_bias_handle* bias,
                                                  const jitattn_tensor* out, const jitattn_tensor* lse,
                                                  const jitattn_attention_options* options, void* stream);

/* merge_attentions, stacked form: outputs [S, B, M, (G,) H, K], lses [S, B, (G,) H, M]; lse may be NULL. */
JITATTN_C_EXPORT jitattn_status jitattn_merge_attentions(const jitattn_tensor* outputs, const jitattn_tensor* lses,
                                                         const jitattn_tensor* out, const jitattn_tensor* lse,
                                                         void* stream);
/* List form: outputs[i], lses[i] for i < num_splits (1..32). */
JITATTN_C_EXPORT jitattn_status jitattn_merge_attentions_list(const jitattn_tensor* const* outputs,
                                                              const jitattn_tensor* const* lses, size_t num_splits,
                                                              const jitattn_tensor* out, const jitattn_tensor* lse,
                                                              void* stream);
/* merge_not_supported_reasons of either form, as jitattn_not_supported_reasons. */
JITATTN_C_EXPORT jitattn_status jitattn_merge_not_supported_reasons(const jitattn_tensor* outputs,
                                                                    const jitattn_tensor* lses,
                                                                    const jitattn_tensor* out,
                                                                    const jitattn_tensor* lse);
JITATTN_C_EXPORT jitattn_status jitattn_merge_list_not_supported_reasons(const jitattn_tensor* const* outputs,
                                                                         const jitattn_tensor* const* lses,
                                                                         size_t num_splits, const jitattn_tensor* out,
                                                                         const jitattn_tensor* lse);

/* ---- kernel cache ---------------------------------------------------------------------------- */
/* The user cache DB this process uses ($JITATTN_CACHE or the default); valid for the process. */
JITATTN_C_EXPORT jitattn_status jitattn_cache_path(const char** path);

/* The process-wide runtime's counters (jit/jit_runtime.h JitStats). */
typedef struct jitattn_jit_stats {
  size_t struct_size;
  int64_t compiles;    /* kernels compiled by NVRTC */
  int64_t memory_hits; /* calls served by the in-process table */
  int64_t db_hits;     /* binaries found in a cache layer */
  int64_t loads;       /* modules loaded into a CUDA context */
  int64_t claim_hits;  /* compiles skipped: another process stored the kernel while this one waited */
} jitattn_jit_stats;
JITATTN_C_EXPORT jitattn_status jitattn_get_jit_stats(jitattn_jit_stats* stats);

/* Fetches one kernel's binary into the cache without a GPU, as `jitattn prewarm` does:
 * kernel_name is a canonical name (`jitattn ls` prints them, e.g.
 * "fwd.sm_90a.bf16.d128.v128.causal.lse.a16.wgmma_m128n128w8"). arch NULL or "" builds exactly
 * that kernel; an arch such as "sm_80" (or an AMD target such as "gfx90a", compiled by hiprtc)
 * builds the same signature for that arch, with the family and tile the tile table picks there.
 * *compiled (may be NULL) is 1 when NVRTC or hiprtc compiled it, 0
 * when a cache layer already held it. Honours JITATTN_JIT (off: a miss is JITATTN_ERROR_CACHE_MISS). */
JITATTN_C_EXPORT jitattn_status jitattn_prewarm(const char* kernel_name, const char* arch, int32_t* compiled);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* JITATTN_C_API_H */
