/* The C API from C11, without a GPU: version, statuses and the per-thread reasons, validation
 * through the not_supported_reasons calls, the real entry points failing cleanly, biases of
 * several kinds (valid and not), materialize against hand-computed masks, the struct_size rules
 * and NULL arguments. Tensors use fake device pointers: validation never dereferences them.
 * Built with -std=c11 -Wall -Wextra -Werror (tests/CMakeLists.txt); exits 1 on any failure. */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jitattn/c_api.h"

static int g_failures = 0;
static int g_checks = 0;

#define CHECK(cond)                                                                             \
  do {                                                                                          \
    ++g_checks;                                                                                 \
    if (!(cond)) {                                                                              \
      ++g_failures;                                                                             \
      fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__, #cond, \
              jitattn_last_error_message());                                                    \
    }                                                                                           \
  } while (0)

/* The call's status is `want` and one of the thread's reasons contains `needle`. */
#define CHECK_FAILS(call, want, needle)                                                               \
  do {                                                                                                \
    jitattn_status got_ = (call);                                                                     \
    ++g_checks;                                                                                       \
    if (got_ != (want) || !mentions(needle)) {                                                        \
      ++g_failures;                                                                                   \
      fprintf(stderr, "%s:%d: %s gave %s, want %s with a reason containing \"%s\"; reasons: %s\n",    \
              __FILE__, __LINE__, #call, jitattn_status_name(got_), jitattn_status_name(want), needle, \
              jitattn_last_error_message());                                                          \
    }                                                                                                 \
  } while (0)

static int mentions(const char* needle) {
  for (size_t i = 0; i < jitattn_last_error_count(); ++i)
    if (strstr(jitattn_last_error_reason(i), needle)) return 1;
  return 0;
}

/* A new fake device address each call, 2^40 bytes apart (tensors never overlap). */
static void* fake(void) {
  static uintptr_t next = (uintptr_t)1 << 40;
  void* p = (void*)next;
  next += (uintptr_t)1 << 40;
  return p;
}

/* A contiguous tensor of `ndim` dims. */
static jitattn_tensor tensor(int32_t dtype, int32_t ndim, const int64_t* shape) {
  jitattn_tensor t;
  memset(&t, 0, sizeof t);
  t.struct_size = sizeof t;
  t.data = fake();
  t.dtype = dtype;
  t.ndim = ndim;
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    t.shape[d] = shape[d];
    t.stride[d] = s;
    s *= shape[d];
  }
  return t;
}
static jitattn_tensor t4(int32_t dtype, int64_t a, int64_t b, int64_t c, int64_t d) {
  const int64_t shape[4] = {a, b, c, d};
  return tensor(dtype, 4, shape);
}
static jitattn_tensor t3(int32_t dtype, int64_t a, int64_t b, int64_t c) {
  const int64_t shape[3] = {a, b, c};
  return tensor(dtype, 3, shape);
}

static jitattn_bias bias_of(int32_t kind) {
  jitattn_bias b;
  memset(&b, 0, sizeof b);
  b.struct_size = sizeof b;
  b.kind = kind;
  return b;
}

/* One forward call: q [2, 100, 4, 64], k/v [2, 120, 4, 64], out, lse [2, 4, 100], bf16. */
typedef struct {
  jitattn_tensor q, k, v, out, lse;
} Call;
static Call valid_call(void) {
  Call c;
  c.q = t4(JITATTN_DTYPE_BF16, 2, 100, 4, 64);
  c.k = t4(JITATTN_DTYPE_BF16, 2, 120, 4, 64);
  c.v = t4(JITATTN_DTYPE_BF16, 2, 120, 4, 64);
  c.out = t4(JITATTN_DTYPE_BF16, 2, 100, 4, 64);
  c.lse = t3(JITATTN_DTYPE_F32, 2, 4, 100);
  return c;
}

static void test_version(void) {
  int32_t major = -1, minor = -1, patch = -1;
  jitattn_version_numbers(&major, &minor, &patch);
  char expected[64];
  snprintf(expected, sizeof expected, "%d.%d.%d", (int)major, (int)minor, (int)patch);
  CHECK(strcmp(jitattn_version(), expected) == 0);
  CHECK(major >= 0 && minor >= 0 && patch >= 0);
  jitattn_version_numbers(NULL, NULL, NULL); /* allowed */
  CHECK(jitattn_c_api_version() == JITATTN_C_API_VERSION);
  CHECK(strcmp(jitattn_status_name(JITATTN_ERROR_UNSUPPORTED), "JITATTN_ERROR_UNSUPPORTED") == 0);
  CHECK(strcmp(jitattn_status_name(12345), "unknown") == 0);
  CHECK(strcmp(jitattn_bias_kind_name(JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL), "BlockDiagonalCausalMask") == 0);
  CHECK(strcmp(jitattn_bias_kind_name(JITATTN_BIAS_NONE), "None") == 0);
  CHECK(strcmp(jitattn_bias_kind_name(JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_WITH_ALIBI), "BlockDiagonalCausalMaskWithAlibi") == 0);
  CHECK(jitattn_bias_kind_name(JITATTN_BIAS_KIND_COUNT) == NULL);
  CHECK(jitattn_bias_kind_name(-1) == NULL);
}

static void test_forward_validation(void) {
  Call c = valid_call();
  CHECK(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, NULL, &c.out, NULL, NULL) == JITATTN_OK);
  CHECK(jitattn_last_error_count() == 0 && strcmp(jitattn_last_error_message(), "") == 0);
  CHECK(jitattn_last_error_status() == JITATTN_OK);
  CHECK(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, NULL, &c.out, &c.lse, NULL) == JITATTN_OK);

  Call bad = valid_call();
  bad.q = t4(JITATTN_DTYPE_BF16, 2, 100, 4, 100);
  bad.k = t4(JITATTN_DTYPE_BF16, 2, 120, 4, 100);
  CHECK_FAILS(jitattn_not_supported_reasons(&bad.q, &bad.k, &bad.v, NULL, &bad.out, NULL, NULL),
              JITATTN_ERROR_UNSUPPORTED, "query.shape[-1]=100 is not a multiple of 8");
  CHECK(jitattn_last_error_status() == JITATTN_ERROR_UNSUPPORTED);
  CHECK(jitattn_last_error_count() >= 1);
  CHECK(jitattn_last_error_reason(jitattn_last_error_count()) == NULL);
  /* Every reason, not only the first: the dtype too. */
  bad.out.dtype = JITATTN_DTYPE_F32;
  CHECK_FAILS(jitattn_not_supported_reasons(&bad.q, &bad.k, &bad.v, NULL, &bad.out, NULL, NULL),
              JITATTN_ERROR_UNSUPPORTED, "out.dtype=f32 must be bf16");
  CHECK(mentions("query.shape[-1]=100"));
  CHECK(jitattn_last_error_count() >= 2);

  /* output_dtype in the options makes that out acceptable; a wrong lse shape is named. */
  Call f32out = valid_call();
  f32out.out.dtype = JITATTN_DTYPE_F32;
  jitattn_attention_options opt;
  memset(&opt, 0, sizeof opt);
  opt.struct_size = sizeof opt;
  opt.output_dtype = JITATTN_DTYPE_F32;
  CHECK(jitattn_not_supported_reasons(&f32out.q, &f32out.k, &f32out.v, NULL, &f32out.out, NULL, &opt) == JITATTN_OK);
  Call badlse = valid_call();
  badlse.lse = t3(JITATTN_DTYPE_F32, 2, 4, 99);
  CHECK_FAILS(jitattn_not_supported_reasons(&badlse.q, &badlse.k, &badlse.v, NULL, &badlse.out, &badlse.lse, NULL),
              JITATTN_ERROR_UNSUPPORTED, "lse.shape=[2, 4, 99]");

  /* A bias is checked against the shapes: block-diagonal needs B = 1. */
  jitattn_bias bd = bias_of(JITATTN_BIAS_BLOCK_DIAGONAL);
  const int32_t seqlens[2] = {50, 50};
  bd.num_seqs = 2;
  bd.q_seqlen = seqlens;
  CHECK_FAILS(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, &bd, &c.out, NULL, NULL), JITATTN_ERROR_UNSUPPORTED,
              "BlockDiagonalMask");

  /* Enum values the library does not know are invalid arguments. */
  Call baddt = valid_call();
  baddt.k.dtype = 7;
  CHECK_FAILS(jitattn_not_supported_reasons(&baddt.q, &baddt.k, &baddt.v, NULL, &baddt.out, NULL, NULL),
              JITATTN_ERROR_INVALID_ARGUMENT, "key.dtype=7");
  Call badnd = valid_call();
  badnd.q.ndim = 7;
  CHECK_FAILS(jitattn_not_supported_reasons(&badnd.q, &badnd.k, &badnd.v, NULL, &badnd.out, NULL, NULL),
              JITATTN_ERROR_INVALID_ARGUMENT, "query.ndim=7");
  jitattn_bias badkind = bias_of(99);
  CHECK_FAILS(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, &badkind, &c.out, NULL, NULL),
              JITATTN_ERROR_INVALID_ARGUMENT, "bias.kind=99");
  opt.output_dtype = 9;
  CHECK_FAILS(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, NULL, &c.out, NULL, &opt), JITATTN_ERROR_INVALID_ARGUMENT,
              "options.output_dtype=9");
}

/* libcuda present: the real calls could launch at the fake addresses, so they are not made. */
static int have_cuda_driver(void) {
  void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (h) dlclose(h);
  return h != NULL;
}

static void test_entry_points_without_gpu(void) {
  Call c = valid_call();
  /* Refused inputs are refused before the GPU, on any machine. */
  Call bad = valid_call();
  bad.v = t4(JITATTN_DTYPE_BF16, 2, 119, 4, 64);
  CHECK_FAILS(jitattn_forward(&bad.q, &bad.k, &bad.v, NULL, &bad.out, NULL, NULL), JITATTN_ERROR_UNSUPPORTED,
              "key.shape[1]=120 and value.shape[1]=119");
  CHECK_FAILS(jitattn_forward_requires_grad(&bad.q, &bad.k, &bad.v, NULL, &bad.out, &bad.lse, NULL, NULL),
              JITATTN_ERROR_UNSUPPORTED, "value.shape[1]=119");
  CHECK_FAILS(jitattn_partial(&bad.q, &bad.k, &bad.v, NULL, &bad.out, &bad.lse, NULL, NULL), JITATTN_ERROR_UNSUPPORTED,
              "value.shape[1]=119");
  jitattn_attention_options drop;
  memset(&drop, 0, sizeof drop);
  drop.struct_size = sizeof drop;
  drop.p = 0.5;
  CHECK_FAILS(jitattn_partial(&c.q, &c.k, &c.v, NULL, &c.out, &c.lse, &drop, NULL), JITATTN_ERROR_UNSUPPORTED,
              "dropout is not supported by memory_efficient_attention_partial");
  size_t bytes = 0;
  CHECK(jitattn_backward_workspace_bytes(&c.q, &c.k, &c.v, NULL, NULL, &bytes) == JITATTN_OK);
  CHECK(bytes > 0);

  if (have_cuda_driver()) {
    printf("c_api_test: libcuda.so.1 loads here; the launches at fake addresses are skipped\n");
    return;
  }
  /* Valid inputs: the call gets as far as the driver, which is missing. */
  CHECK_FAILS(jitattn_forward(&c.q, &c.k, &c.v, NULL, &c.out, NULL, NULL), JITATTN_ERROR_CUDA, "no CUDA driver");
  CHECK_FAILS(jitattn_forward_requires_grad(&c.q, &c.k, &c.v, NULL, &c.out, &c.lse, NULL, NULL), JITATTN_ERROR_CUDA,
              "no CUDA driver");
  CHECK_FAILS(jitattn_partial(&c.q, &c.k, &c.v, NULL, &c.out, &c.lse, NULL, NULL), JITATTN_ERROR_CUDA, "no CUDA driver");
  jitattn_tensor grad = t4(JITATTN_DTYPE_BF16, 2, 100, 4, 64), dq = t4(JITATTN_DTYPE_BF16, 2, 100, 4, 64),
                 dk = t4(JITATTN_DTYPE_BF16, 2, 120, 4, 64), dv = t4(JITATTN_DTYPE_BF16, 2, 120, 4, 64);
  CHECK(jitattn_backward_not_supported_reasons(&grad, &c.out, &c.lse, &c.q, &c.k, &c.v, NULL, &dq, &dk, &dv, NULL,
                                               NULL) == JITATTN_OK);
  CHECK_FAILS(jitattn_backward(&grad, &c.out, &c.lse, &c.q, &c.k, &c.v, NULL, &dq, &dk, &dv, NULL, NULL, NULL),
              JITATTN_ERROR_CUDA, "no CUDA driver");
  const int64_t stacked[5] = {3, 2, 100, 4, 64}, stacked_lse[4] = {3, 2, 4, 100};
  jitattn_tensor outs = tensor(JITATTN_DTYPE_F32, 5, stacked), lses = tensor(JITATTN_DTYPE_F32, 4, stacked_lse);
  CHECK_FAILS(jitattn_merge_attentions(&outs, &lses, &c.out, &c.lse, NULL), JITATTN_ERROR_CUDA, "no CUDA driver");
  /* A block-diagonal bias's arrays would be uploaded: the same clean failure. */
  Call one = valid_call();
  one.q = t4(JITATTN_DTYPE_BF16, 1, 100, 4, 64), one.out = t4(JITATTN_DTYPE_BF16, 1, 100, 4, 64);
  one.k = t4(JITATTN_DTYPE_BF16, 1, 100, 4, 64), one.v = t4(JITATTN_DTYPE_BF16, 1, 100, 4, 64);
  jitattn_bias bd = bias_of(JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL);
  const int32_t seqlens[2] = {60, 40};
  bd.num_seqs = 2, bd.q_seqlen = seqlens;
  CHECK_FAILS(jitattn_forward(&one.q, &one.k, &one.v, &bd, &one.out, NULL, NULL), JITATTN_ERROR_CUDA, "no CUDA driver");
}

static void test_backward_and_merge_validation(void) {
  Call c = valid_call();
  jitattn_tensor grad = t4(JITATTN_DTYPE_BF16, 2, 100, 4, 64), dq = t4(JITATTN_DTYPE_BF16, 2, 100, 4, 64),
                 dk = t4(JITATTN_DTYPE_BF16, 2, 120, 4, 64), dv = t4(JITATTN_DTYPE_BF16, 2, 120, 4, 64);
  /* dk of the wrong shape */
  jitattn_tensor dk_bad = t4(JITATTN_DTYPE_BF16, 2, 121, 4, 64);
  CHECK_FAILS(jitattn_backward_not_supported_reasons(&grad, &c.out, &c.lse, &c.q, &c.k, &c.v, NULL, &dq, &dk_bad, &dv,
                                                     NULL, NULL),
              JITATTN_ERROR_UNSUPPORTED, "dk");
  CHECK_FAILS(jitattn_backward(&grad, &c.out, &c.lse, &c.q, &c.k, &c.v, NULL, &dq, &dk_bad, &dv, NULL, NULL, NULL),
              JITATTN_ERROR_UNSUPPORTED, "dk");
  CHECK_FAILS(jitattn_backward(&grad, &c.out, NULL, &c.q, &c.k, &c.v, NULL, &dq, &dk, &dv, NULL, NULL, NULL),
              JITATTN_ERROR_INVALID_ARGUMENT, "lse is NULL");
  /* Deterministic options are read (struct accepted). */
  jitattn_backward_options bo;
  memset(&bo, 0, sizeof bo);
  bo.struct_size = sizeof bo;
  bo.deterministic = 1;
  CHECK(jitattn_backward_not_supported_reasons(&grad, &c.out, &c.lse, &c.q, &c.k, &c.v, NULL, &dq, &dk, &dv, NULL, &bo) ==
        JITATTN_OK);

  /* merge: stacked and list forms */
  const int64_t stacked[5] = {3, 2, 100, 4, 64}, stacked_lse[4] = {3, 2, 4, 100};
  jitattn_tensor outs = tensor(JITATTN_DTYPE_F32, 5, stacked), lses = tensor(JITATTN_DTYPE_F32, 4, stacked_lse);
  CHECK(jitattn_merge_not_supported_reasons(&outs, &lses, &c.out, &c.lse) == JITATTN_OK);
  CHECK(jitattn_merge_not_supported_reasons(&outs, &lses, &c.out, NULL) == JITATTN_OK);
  const int64_t stacked_k100[5] = {3, 2, 100, 4, 100};
  jitattn_tensor outs100 = tensor(JITATTN_DTYPE_F32, 5, stacked_k100);
  CHECK(jitattn_merge_not_supported_reasons(&outs100, &lses, &c.out, &c.lse) == JITATTN_ERROR_UNSUPPORTED);
  CHECK(jitattn_last_error_count() >= 1);
  CHECK_FAILS(jitattn_merge_attentions(&outs100, &lses, &c.out, &c.lse, NULL), JITATTN_ERROR_UNSUPPORTED, "");

  jitattn_tensor o0 = t4(JITATTN_DTYPE_F32, 2, 100, 4, 64), o1 = t4(JITATTN_DTYPE_F32, 2, 100, 4, 64);
  jitattn_tensor l0 = t3(JITATTN_DTYPE_F32, 2, 4, 100), l1 = t3(JITATTN_DTYPE_F32, 2, 4, 100);
  const jitattn_tensor* os[2] = {&o0, &o1};
  const jitattn_tensor* ls[2] = {&l0, &l1};
  CHECK(jitattn_merge_list_not_supported_reasons(os, ls, 2, &c.out, &c.lse) == JITATTN_OK);
  const jitattn_tensor* ls_hole[2] = {&l0, NULL};
  CHECK_FAILS(jitattn_merge_list_not_supported_reasons(os, ls_hole, 2, &c.out, &c.lse), JITATTN_ERROR_INVALID_ARGUMENT,
              "lses[1] is NULL");
  CHECK_FAILS(jitattn_merge_attentions_list(os, NULL, 2, &c.out, &c.lse, NULL), JITATTN_ERROR_INVALID_ARGUMENT,
              "lses is NULL");
  CHECK(jitattn_merge_list_not_supported_reasons(os, ls, 0, &c.out, &c.lse) == JITATTN_ERROR_UNSUPPORTED);
}

static void test_bias_handles(void) {
  jitattn_bias_handle* h = NULL;
  const int32_t q_seqlen[3] = {3, 0, 5}, kv_seqlen[3] = {4, 2, 6};

  /* Valid kinds of each family. */
  jitattn_bias causal = bias_of(JITATTN_BIAS_LOWER_TRIANGULAR);
  CHECK(jitattn_bias_create(&causal, &h) == JITATTN_OK && h != NULL);
  jitattn_bias_destroy(h);

  jitattn_bias bd = bias_of(JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_LOCAL_ATTENTION);
  bd.num_seqs = 3, bd.q_seqlen = q_seqlen, bd.kv_seqlen = kv_seqlen, bd.window_size = 2;
  h = NULL;
  CHECK(jitattn_bias_create(&bd, &h) == JITATTN_OK && h != NULL);
  /* used through the handle: B = 1, Mq = 8, Mkv = 12 */
  jitattn_tensor q = t4(JITATTN_DTYPE_F16, 1, 8, 2, 64), k = t4(JITATTN_DTYPE_F16, 1, 12, 2, 64),
                 v = t4(JITATTN_DTYPE_F16, 1, 12, 2, 64), out = t4(JITATTN_DTYPE_F16, 1, 8, 2, 64);
  CHECK(jitattn_not_supported_reasons_h(&q, &k, &v, h, &out, NULL, NULL) == JITATTN_OK);
  jitattn_tensor k_short = t4(JITATTN_DTYPE_F16, 1, 11, 2, 64), v_short = t4(JITATTN_DTYPE_F16, 1, 11, 2, 64);
  CHECK(jitattn_not_supported_reasons_h(&q, &k_short, &v_short, h, &out, NULL, NULL) == JITATTN_ERROR_UNSUPPORTED);
  CHECK(jitattn_last_error_count() >= 1);
  jitattn_bias_destroy(h);
  jitattn_bias_destroy(NULL);

  jitattn_bias padded = bias_of(JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_WITH_OFFSET_PADDED_KEYS);
  padded.num_seqs = 3, padded.q_seqlen = q_seqlen, padded.kv_seqlen = kv_seqlen, padded.kv_padding = 8;
  CHECK(jitattn_bias_create(&padded, &h) == JITATTN_OK);
  jitattn_bias_destroy(h);
  padded.kv_padding = 5; /* kv_seqlen[2] = 6 does not fit */
  h = (jitattn_bias_handle*)&padded; /* must be reset to NULL on failure */
  CHECK_FAILS(jitattn_bias_create(&padded, &h), JITATTN_ERROR_INVALID_ARGUMENT, "kv_seqlen");
  CHECK(h == NULL);
  padded.kv_padding = 8;
  padded.kv_seqlen = NULL;
  CHECK_FAILS(jitattn_bias_create(&padded, &h), JITATTN_ERROR_INVALID_ARGUMENT, "bias.kv_seqlen is NULL");

  const int32_t seqstarts[4] = {0, 4, 6, 12};
  jitattn_bias gappy = bias_of(JITATTN_BIAS_BLOCK_DIAGONAL_GAPPY_KEYS);
  gappy.num_seqs = 3, gappy.q_seqlen = q_seqlen, gappy.kv_seqlen = kv_seqlen, gappy.kv_seqstarts = seqstarts;
  CHECK(jitattn_bias_create(&gappy, &h) == JITATTN_OK);
  jitattn_bias_destroy(h);
  gappy.kv_seqstarts = NULL;
  CHECK_FAILS(jitattn_bias_create(&gappy, &h), JITATTN_ERROR_INVALID_ARGUMENT, "bias.kv_seqstarts is NULL");

  /* Paged: 3 sequences of at most 2 pages of 4 keys, in a pool of 6 pages. */
  const int32_t tables[6] = {0, 1, 2, 3, 4, 5};
  jitattn_bias paged = bias_of(JITATTN_BIAS_PAGED_BLOCK_DIAGONAL_CAUSAL_WITH_OFFSET_PADDED_KEYS);
  paged.num_seqs = 3, paged.q_seqlen = q_seqlen, paged.kv_seqlen = kv_seqlen;
  paged.block_tables = tables, paged.max_pages = 2, paged.page_size = 4;
  CHECK(jitattn_bias_create(&paged, &h) == JITATTN_OK);
  jitattn_bias_destroy(h);
  /* the caller's device arrays a CUDA graph would update (never read here) */
  paged.kv_seqlen_device = (const int32_t*)fake();
  paged.block_tables_device = (const int32_t*)fake();
  CHECK(jitattn_bias_create(&paged, &h) == JITATTN_OK);
  jitattn_bias_destroy(h);
  paged.kv_seqstart_device = (const int32_t*)fake();
  CHECK_FAILS(jitattn_bias_create(&paged, &h), JITATTN_ERROR_INVALID_ARGUMENT, "kv_seqstart_device");
  paged.kv_seqstart_device = NULL;
  paged.page_size = 0;
  CHECK_FAILS(jitattn_bias_create(&paged, &h), JITATTN_ERROR_INVALID_ARGUMENT, "page_size");
  paged.page_size = 2; /* rows of 4 keys: kv_seqlen 6 does not fit, and the row is the rule named */
  CHECK_FAILS(jitattn_bias_create(&paged, &h), JITATTN_ERROR_INVALID_ARGUMENT, "exceeds max_pages*page_size=4");
  CHECK(jitattn_last_error_count() >= 1);
  paged.page_size = 4;
  paged.block_tables = NULL;
  CHECK_FAILS(jitattn_bias_create(&paged, &h), JITATTN_ERROR_INVALID_ARGUMENT, "bias.block_tables is NULL");

  /* ALiBi: geometric slopes, or the caller's. */
  jitattn_bias alibi = bias_of(JITATTN_BIAS_LOWER_TRIANGULAR_WITH_ALIBI);
  alibi.alibi_num_slopes = 4;
  CHECK(jitattn_bias_create(&alibi, &h) == JITATTN_OK);
  jitattn_bias_destroy(h);
  alibi.alibi_num_slopes = 0;
  CHECK_FAILS(jitattn_bias_create(&alibi, &h), JITATTN_ERROR_INVALID_ARGUMENT, "bias.alibi_num_slopes=0");

  /* Invalid: a negative length, a zero window, a missing tensor, an array the kind lacks. */
  const int32_t negative[2] = {3, -1};
  jitattn_bias neg = bias_of(JITATTN_BIAS_BLOCK_DIAGONAL);
  neg.num_seqs = 2, neg.q_seqlen = negative;
  CHECK_FAILS(jitattn_bias_create(&neg, &h), JITATTN_ERROR_INVALID_ARGUMENT, "-1");
  neg.num_seqs = -2;
  CHECK_FAILS(jitattn_bias_create(&neg, &h), JITATTN_ERROR_INVALID_ARGUMENT, "negative");
  neg.num_seqs = 2, neg.q_seqlen = NULL;
  CHECK_FAILS(jitattn_bias_create(&neg, &h), JITATTN_ERROR_INVALID_ARGUMENT, "bias.q_seqlen is NULL");
  jitattn_bias local = bias_of(JITATTN_BIAS_LOWER_TRIANGULAR_FROM_BOTTOM_RIGHT_LOCAL_ATTENTION);
  CHECK_FAILS(jitattn_bias_create(&local, &h), JITATTN_ERROR_INVALID_ARGUMENT, "window_size");
  jitattn_bias windows = bias_of(JITATTN_BIAS_LOCAL_ATTENTION_FROM_BOTTOM_RIGHT);
  windows.window_left = -1;
  CHECK_FAILS(jitattn_bias_create(&windows, &h), JITATTN_ERROR_INVALID_ARGUMENT, "window_left=-1");
  jitattn_bias tb = bias_of(JITATTN_BIAS_TENSOR);
  CHECK_FAILS(jitattn_bias_create(&tb, &h), JITATTN_ERROR_INVALID_ARGUMENT, "bias.tensor is NULL");
  causal.q_seqstart_device = (const int32_t*)fake();
  CHECK_FAILS(jitattn_bias_create(&causal, &h), JITATTN_ERROR_INVALID_ARGUMENT, "q_seqstart_device");
  causal.q_seqstart_device = NULL;
  causal.reserved0 = 1;
  CHECK_FAILS(jitattn_bias_create(&causal, &h), JITATTN_ERROR_INVALID_ARGUMENT, "reserved0");
}

/* Every kind converts, to the AttnBias alternative of its number, from one description that
 * fits them all: one sequence of 4 queries and 4 keys (a pool of one page of 4 for paged kinds). */
static void test_every_bias_kind(void) {
  const int32_t len[1] = {4}, starts[2] = {0, 4}, table[1] = {0};
  float values[16] = {0};
  jitattn_tensor t = t4(JITATTN_DTYPE_F32, 1, 1, 4, 4);
  t.data = values, t.device = JITATTN_DEVICE_HOST;
  for (int32_t kind = 0; kind < JITATTN_BIAS_KIND_COUNT; ++kind) {
    jitattn_bias d = bias_of(kind);
    d.num_seqs = 1, d.q_seqlen = len, d.kv_seqlen = len, d.kv_seqstarts = starts, d.kv_padding = 4;
    d.window_size = 2, d.window_left = 1, d.window_right = 1, d.tensor = &t;
    d.block_tables = table, d.max_pages = 1, d.page_size = 4, d.alibi_num_slopes = 1;
    unsigned char one_block = 1;
    jitattn_tensor layout = t4(JITATTN_DTYPE_U8, 1, 1, 1, 1);
    layout.ndim = 3, layout.data = &one_block, layout.device = JITATTN_DEVICE_HOST;
    if (kind == JITATTN_BIAS_BLOCK_SPARSE) d.tensor = &layout, d.block_size = 16;
    jitattn_bias_handle* h = NULL;
    const jitattn_status st = jitattn_bias_create(&d, &h);
    if (st != JITATTN_OK) fprintf(stderr, "kind %d (%s): %s\n", (int)kind, jitattn_bias_kind_name(kind), jitattn_last_error_message());
    CHECK(st == JITATTN_OK);
    double m[16];
    CHECK(jitattn_materialize_h(h, 1, 1, 4, 4, m, 16) == JITATTN_OK);
    CHECK(m[0] == 0.0); /* query 0 sees key 0 under every kind of this description */
    jitattn_bias_destroy(h);
  }
}

static const double NEG_INF = -HUGE_VAL;

static void test_materialize(void) {
  /* Causal (top-left), B = 1, H = 2, Mq = 3, Mkv = 4: key j visible iff j <= i. */
  double causal[2 * 3 * 4];
  jitattn_bias lt = bias_of(JITATTN_BIAS_LOWER_TRIANGULAR);
  CHECK(jitattn_materialize(&lt, 1, 2, 3, 4, causal, 24) == JITATTN_OK);
  int ok = 1;
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j) {
        const double want = j <= i ? 0.0 : NEG_INF;
        if (causal[(h * 3 + i) * 4 + j] != want) ok = 0;
      }
  CHECK(ok);
  CHECK_FAILS(jitattn_materialize(&lt, 1, 2, 3, 4, causal, 23), JITATTN_ERROR_INVALID_ARGUMENT,
              "out holds 23 doubles, the [B, H, Mq, Mkv] mask needs 24");
  CHECK_FAILS(jitattn_materialize(&lt, 1, 2, 3, 4, NULL, 24), JITATTN_ERROR_INVALID_ARGUMENT, "out is NULL");
  CHECK(jitattn_materialize(NULL, 1, 1, 1, 1, causal, 1) == JITATTN_OK && causal[0] == 0.0); /* no bias */

  /* Block-diagonal, q_seqlen {2, 1}, kv_seqlen {1, 2}: rows 0-1 see key 0, row 2 keys 1-2. */
  const int32_t q_seqlen[2] = {2, 1}, kv_seqlen[2] = {1, 2};
  jitattn_bias bd = bias_of(JITATTN_BIAS_BLOCK_DIAGONAL);
  bd.num_seqs = 2, bd.q_seqlen = q_seqlen, bd.kv_seqlen = kv_seqlen;
  const double X = NEG_INF;
  const double want[9] = {0, X, X, /**/ 0, X, X, /**/ X, 0, 0};
  double got[9];
  CHECK(jitattn_materialize(&bd, 1, 1, 3, 3, got, 9) == JITATTN_OK);
  CHECK(memcmp(got, want, sizeof want) == 0);
  /* The same through a handle, and its causal variant: row 2 sees key 1 only (top-left in its block). */
  jitattn_bias_handle* h = NULL;
  bd.kind = JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL;
  CHECK(jitattn_bias_create(&bd, &h) == JITATTN_OK);
  const double want_causal[9] = {0, X, X, /**/ 0, X, X, /**/ X, 0, X};
  CHECK(jitattn_materialize_h(h, 1, 1, 3, 3, got, 9) == JITATTN_OK);
  CHECK(memcmp(got, want_causal, sizeof want_causal) == 0);
  /* shapes the bias does not fit */
  CHECK_FAILS(jitattn_materialize_h(h, 1, 1, 4, 3, got, 9), JITATTN_ERROR_INVALID_ARGUMENT, "q_seqlen");
  jitattn_bias_destroy(h);

  /* A host tensor bias: [1, 1, 2, 2] f32 values added where causal lets them through. */
  float values[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  jitattn_tensor t = t4(JITATTN_DTYPE_F32, 1, 1, 2, 2);
  t.data = values, t.device = JITATTN_DEVICE_HOST;
  jitattn_bias ltb = bias_of(JITATTN_BIAS_LOWER_TRIANGULAR_WITH_TENSOR_BIAS);
  ltb.tensor = &t;
  double dense[4];
  CHECK(jitattn_materialize(&ltb, 1, 1, 2, 2, dense, 4) == JITATTN_OK);
  CHECK(dense[0] == 1.0 && dense[1] == NEG_INF && dense[2] == 3.0 && dense[3] == 4.0);
}

/* struct_size: an older caller's smaller struct reads defaults for what it lacks; 0 is refused;
 * a newer caller's larger one is accepted when the unknown tail is zero. */
static void test_struct_sizes(void) {
  Call c = valid_call();
  /* An uninitialized struct_size far past this library's struct: refused without reading there. */
  jitattn_tensor wild = c.q;
  wild.struct_size = (size_t)1 << 40;
  CHECK_FAILS(jitattn_not_supported_reasons(&wild, &c.k, &c.v, NULL, &c.out, NULL, NULL), JITATTN_ERROR_INVALID_ARGUMENT,
              "is more than 4096 bytes past");
  /* Older tensor without `device`: device 0. */
  jitattn_tensor old_q = c.q;
  old_q.struct_size = offsetof(jitattn_tensor, device);
  old_q.device = 5; /* past its struct_size: not read */
  CHECK(jitattn_not_supported_reasons(&old_q, &c.k, &c.v, NULL, &c.out, NULL, NULL) == JITATTN_OK);
  c.k.device = 5;
  CHECK(jitattn_not_supported_reasons(&old_q, &c.k, &c.v, NULL, &c.out, NULL, NULL) == JITATTN_ERROR_UNSUPPORTED);
  c.k.device = 0;

  /* Older options without dropout fields: p past struct_size is not read. */
  jitattn_attention_options opt;
  memset(&opt, 0, sizeof opt);
  opt.struct_size = offsetof(jitattn_attention_options, p);
  opt.p = 0.5;
  /* (inputs refused for another reason, so that nothing launches where there is a GPU) */
  jitattn_tensor v119 = t4(JITATTN_DTYPE_BF16, 2, 119, 4, 64);
  CHECK_FAILS(jitattn_partial(&c.q, &c.k, &v119, NULL, &c.out, &c.lse, &opt, NULL), JITATTN_ERROR_UNSUPPORTED,
              "value.shape[1]=119");
  CHECK(!mentions("dropout"));
  opt.struct_size = sizeof opt;
  CHECK_FAILS(jitattn_partial(&c.q, &c.k, &v119, NULL, &c.out, &c.lse, &opt, NULL), JITATTN_ERROR_UNSUPPORTED,
              "dropout is not supported");
  /* A field cut by struct_size is not read either: scale's bytes half covered. */
  opt.struct_size = offsetof(jitattn_attention_options, scale) + 4;
  CHECK(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, NULL, &c.out, NULL, &opt) == JITATTN_OK);

  /* Older bias without the device pointers. */
  const int32_t seqlens[2] = {60, 40};
  jitattn_bias bd = bias_of(JITATTN_BIAS_BLOCK_DIAGONAL);
  bd.struct_size = offsetof(jitattn_bias, q_seqstart_device);
  bd.num_seqs = 2, bd.q_seqlen = seqlens;
  bd.q_seqstart_device = (const int32_t*)fake(); /* not read */
  jitattn_bias_handle* h = NULL;
  CHECK(jitattn_bias_create(&bd, &h) == JITATTN_OK);
  jitattn_bias_destroy(h);
  /* ... and the smallest: kind only (a causal mask). */
  jitattn_bias tiny = bias_of(JITATTN_BIAS_LOWER_TRIANGULAR);
  tiny.struct_size = offsetof(jitattn_bias, kind) + sizeof tiny.kind;
  double m[4];
  CHECK(jitattn_materialize(&tiny, 1, 1, 2, 2, m, 4) == JITATTN_OK);
  CHECK(m[0] == 0.0 && m[1] == NEG_INF && m[2] == 0.0 && m[3] == 0.0);

  /* 0 and less than sizeof(size_t) are refused, naming the struct. */
  jitattn_tensor zero = c.q;
  zero.struct_size = 0;
  CHECK_FAILS(jitattn_not_supported_reasons(&zero, &c.k, &c.v, NULL, &c.out, NULL, NULL), JITATTN_ERROR_INVALID_ARGUMENT,
              "jitattn_tensor.struct_size=0");
  bd.struct_size = 3;
  CHECK_FAILS(jitattn_bias_create(&bd, &h), JITATTN_ERROR_INVALID_ARGUMENT, "jitattn_bias.struct_size=3");

  /* A newer caller: a larger struct whose unknown tail is zero is accepted, a set one refused. */
  struct {
    jitattn_tensor t;
    uint64_t future_field;
  } newer;
  memset(&newer, 0, sizeof newer);
  newer.t = c.q;
  newer.t.struct_size = sizeof newer;
  CHECK(jitattn_not_supported_reasons(&newer.t, &c.k, &c.v, NULL, &c.out, NULL, NULL) == JITATTN_OK);
  newer.future_field = 1;
  CHECK_FAILS(jitattn_not_supported_reasons(&newer.t, &c.k, &c.v, NULL, &c.out, NULL, NULL),
              JITATTN_ERROR_INVALID_ARGUMENT, "a field this library does not know is set");

  /* Stats written only as far as the caller's struct goes. */
  jitattn_jit_stats stats;
  memset(&stats, 0x7f, sizeof stats);
  stats.struct_size = offsetof(jitattn_jit_stats, db_hits);
  CHECK(jitattn_get_jit_stats(&stats) == JITATTN_OK);
  CHECK(stats.compiles >= 0 && stats.memory_hits >= 0);
  CHECK(stats.db_hits == 0x7f7f7f7f7f7f7f7f && stats.claim_hits == 0x7f7f7f7f7f7f7f7f);
  stats.struct_size = sizeof stats;
  CHECK(jitattn_get_jit_stats(&stats) == JITATTN_OK);
  CHECK(stats.db_hits >= 0 && stats.loads >= 0 && stats.claim_hits >= 0);
  stats.struct_size = 0;
  CHECK(jitattn_get_jit_stats(&stats) == JITATTN_ERROR_INVALID_ARGUMENT);
}

static void test_null_arguments(void) {
  Call c = valid_call();
  CHECK_FAILS(jitattn_forward(NULL, &c.k, &c.v, NULL, &c.out, NULL, NULL), JITATTN_ERROR_INVALID_ARGUMENT,
              "query is NULL");
  CHECK_FAILS(jitattn_forward(&c.q, &c.k, &c.v, NULL, NULL, NULL, NULL), JITATTN_ERROR_INVALID_ARGUMENT, "out is NULL");
  CHECK_FAILS(jitattn_forward_requires_grad(&c.q, &c.k, &c.v, NULL, &c.out, NULL, NULL, NULL),
              JITATTN_ERROR_INVALID_ARGUMENT, "lse is NULL");
  CHECK_FAILS(jitattn_partial(&c.q, &c.k, &c.v, NULL, &c.out, NULL, NULL, NULL), JITATTN_ERROR_INVALID_ARGUMENT,
              "lse is NULL");
  CHECK_FAILS(jitattn_not_supported_reasons(&c.q, NULL, &c.v, NULL, &c.out, NULL, NULL), JITATTN_ERROR_INVALID_ARGUMENT,
              "key is NULL");
  CHECK_FAILS(jitattn_forward_h(&c.q, &c.k, NULL, NULL, &c.out, NULL, NULL), JITATTN_ERROR_INVALID_ARGUMENT,
              "value is NULL");
  CHECK_FAILS(jitattn_backward_workspace_bytes(&c.q, &c.k, &c.v, NULL, NULL, NULL), JITATTN_ERROR_INVALID_ARGUMENT,
              "bytes is NULL");
  CHECK_FAILS(jitattn_merge_attentions(NULL, &c.lse, &c.out, NULL, NULL), JITATTN_ERROR_INVALID_ARGUMENT,
              "outputs is NULL");
  CHECK_FAILS(jitattn_bias_create(NULL, NULL), JITATTN_ERROR_INVALID_ARGUMENT, "handle is NULL");
  jitattn_bias_handle* h = NULL;
  CHECK_FAILS(jitattn_bias_create(NULL, &h), JITATTN_ERROR_INVALID_ARGUMENT, "desc is NULL");
  CHECK_FAILS(jitattn_cache_path(NULL), JITATTN_ERROR_INVALID_ARGUMENT, "path is NULL");
  CHECK_FAILS(jitattn_get_jit_stats(NULL), JITATTN_ERROR_INVALID_ARGUMENT, "stats is NULL");
  CHECK_FAILS(jitattn_prewarm(NULL, NULL, NULL), JITATTN_ERROR_INVALID_ARGUMENT, "kernel_name is NULL");
  /* an undefined (data NULL) required tensor is the C++ API's reason */
  jitattn_tensor undefined = c.q;
  undefined.data = NULL;
  CHECK(jitattn_not_supported_reasons(&undefined, &c.k, &c.v, NULL, &c.out, NULL, NULL) == JITATTN_ERROR_UNSUPPORTED);
  CHECK(jitattn_last_error_count() >= 1);
  /* ...but an empty tensor needs no data (torch's data_ptr() of an empty tensor is 0): empty
     queries, keys or a whole empty batch are a valid call, lse included */
  Call e = valid_call();
  e.q = t4(JITATTN_DTYPE_BF16, 2, 0, 4, 64);
  e.out = t4(JITATTN_DTYPE_BF16, 2, 0, 4, 64);
  e.lse = t3(JITATTN_DTYPE_F32, 2, 4, 0);
  e.q.data = e.out.data = e.lse.data = NULL;
  CHECK(jitattn_not_supported_reasons(&e.q, &e.k, &e.v, NULL, &e.out, &e.lse, NULL) == JITATTN_OK);
  e.k = t4(JITATTN_DTYPE_BF16, 2, 0, 4, 64);
  e.v = t4(JITATTN_DTYPE_BF16, 2, 0, 4, 64);
  e.k.data = e.v.data = NULL;
  CHECK(jitattn_not_supported_reasons(&e.q, &e.k, &e.v, NULL, &e.out, &e.lse, NULL) == JITATTN_OK);
}

static void test_cache_controls(void) {
  const char* path = NULL;
  CHECK(jitattn_cache_path(&path) == JITATTN_OK && path != NULL && path[0] != '\0');
  const char* env = getenv("JITATTN_CACHE");
  if (env && *env) CHECK(strcmp(path, env) == 0);

  CHECK_FAILS(jitattn_prewarm("not.a.kernel", NULL, NULL), JITATTN_ERROR_INVALID_ARGUMENT, "not a canonical kernel name");
  const char* merge = "merge.sm_80.f32.d64.v64.none.lse.a16.simt_m128n1w4";
  CHECK_FAILS(jitattn_prewarm(merge, "sm_7x", NULL), JITATTN_ERROR_INVALID_ARGUMENT, "sm_7x");
  /* One small kernel, compiled (or found) without a GPU; then always found. */
  int32_t compiled = -1;
  CHECK(jitattn_prewarm(merge, NULL, &compiled) == JITATTN_OK);
  CHECK(compiled == 0 || compiled == 1);
  CHECK(jitattn_prewarm(merge, "", &compiled) == JITATTN_OK);
  CHECK(compiled == 0);
  /* The same signature for another arch, with its own tile choice. */
  CHECK(jitattn_prewarm(merge, "sm_86", &compiled) == JITATTN_OK);
  CHECK(jitattn_prewarm(merge, "sm_86", &compiled) == JITATTN_OK && compiled == 0);
  jitattn_jit_stats stats;
  memset(&stats, 0, sizeof stats);
  stats.struct_size = sizeof stats;
  CHECK(jitattn_get_jit_stats(&stats) == JITATTN_OK);
  CHECK(stats.compiles + stats.db_hits >= 2);
}

/* A status that depends on JITATTN_* variables, which a process reads once: checked in a child
 * forked before this process makes any jitattn call, with `var`=`value` and an empty user cache.
 * The child's exit code is the check's outcome. */
static void check_in_child(const char* var, const char* value, jitattn_status want, const char* needle) {
  char dir[] = "/tmp/jitattn_c_api_test_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char cache[sizeof dir + 32];
  snprintf(cache, sizeof cache, "%s/kernels.sqlite", dir);
  fflush(NULL);
  const pid_t pid = fork();
  if (pid == 0) {
    setenv("JITATTN_CACHE", cache, 1);
    unsetenv("JITATTN_CACHE_RO");
    setenv(var, value, 1);
    int32_t compiled = -1;
    const jitattn_status got = jitattn_prewarm("merge.sm_80.f32.d64.v64.none.lse.a16.simt_m128n1w4", NULL, &compiled);
    if (got != want || !mentions(needle)) {
      fprintf(stderr, "%s=%s: jitattn_prewarm gave %s, want %s with a reason containing \"%s\"; reasons: %s\n", var,
              value, jitattn_status_name(got), jitattn_status_name(want), needle, jitattn_last_error_message());
      _exit(1);
    }
    _exit(0);
  }
  int status = -1;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  char cmd[sizeof dir + 16];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

/* JITATTN_JIT=off's miss is JITATTN_ERROR_CACHE_MISS; without NVRTC (and no row compiled from
 * this kernel_src) JITATTN_ERROR_COMPILE: from the error's kind, not its message. */
static void test_statuses_from_the_environment(void) {
  CHECK(strcmp(jitattn_status_name(JITATTN_ERROR_CACHE_MISS), "JITATTN_ERROR_CACHE_MISS") == 0);
  check_in_child("JITATTN_JIT", "off", JITATTN_ERROR_CACHE_MISS, "JITATTN_JIT=off and no cache layer holds");
  check_in_child("JITATTN_NVRTC", "/nonexistent/libnvrtc.so", JITATTN_ERROR_COMPILE, "cannot load NVRTC");
}

/* User variants: a checked handle (bad declarations refused with the reason), values given per
 * call in declaration order (a wrong count is refused), a bad value named. */
static void test_variants(void) {
  jitattn_capture_decl caps[2];
  memset(caps, 0, sizeof caps);
  caps[0].struct_size = sizeof caps[0];
  caps[0].name = "doc";
  caps[0].kind = JITATTN_CAPTURE_TENSOR;
  caps[0].type = JITATTN_CAPTURE_TYPE_I32;
  caps[0].rank = 1;
  caps[1].struct_size = sizeof caps[1];
  caps[1].name = "window";
  caps[1].kind = JITATTN_CAPTURE_I32;
  jitattn_variant_desc d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.mask_mod = "doc[q_idx] == doc[kv_idx] && q_idx - kv_idx < window";
  d.num_captures = 2;
  d.captures = caps;
  jitattn_variant* v = NULL;
  CHECK(jitattn_variant_create(&d, &v) == JITATTN_OK && v != NULL);
  CHECK(jitattn_variant_id(v) != 0);

  caps[1].name = "kv_idx"; /* a name the snippets already have */
  jitattn_variant* bad = NULL;
  CHECK(jitattn_variant_create(&d, &bad) == JITATTN_ERROR_INVALID_ARGUMENT && bad == NULL);
  CHECK(mentions("'kv_idx': the name is taken"));
  caps[1].name = "window";
  caps[0].rank = 7;
  CHECK(jitattn_variant_create(&d, &bad) == JITATTN_ERROR_INVALID_ARGUMENT && mentions("rank=7"));
  caps[0].rank = 1;

  Call c = valid_call();
  jitattn_capture_value vals[2];
  memset(vals, 0, sizeof vals);
  vals[0].struct_size = sizeof vals[0];
  vals[0].data = fake();
  vals[0].shape[0] = 100;
  vals[0].stride[0] = 1;
  vals[1].struct_size = sizeof vals[1];
  vals[1].value = 16;
  jitattn_attention_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.variant = v;
  o.num_capture_values = 1;
  o.capture_values = vals;
  CHECK(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, NULL, &c.out, NULL, &o) == JITATTN_ERROR_INVALID_ARGUMENT);
  CHECK(mentions("num_capture_values=1 but the variant declares 2"));
  o.num_capture_values = 2;
  CHECK(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, NULL, &c.out, NULL, &o) == JITATTN_OK);
  vals[1].value = 0.5; /* not an int */
  CHECK(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, NULL, &c.out, NULL, &o) == JITATTN_ERROR_INVALID_ARGUMENT);
  CHECK(mentions("is not an int32 (capture 'window')"));
  vals[1].value = 16;
  /* A block map with row spans (version 4), and spans of the wrong shape named. */
  jitattn_block_map map;
  memset(&map, 0, sizeof map);
  map.struct_size = sizeof map;
  map.cells = t4(JITATTN_DTYPE_U8, 1, 1, 4, 4);
  map.cell_size = 32, map.mq = 100, map.mkv = 120, map.variant_id = jitattn_variant_id(v);
  o.block_map = &map;
  CHECK(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, NULL, &c.out, NULL, &o) == JITATTN_OK);
  map.spans = t4(JITATTN_DTYPE_I32, 1, 1, 100, 2);
  CHECK(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, NULL, &c.out, NULL, &o) == JITATTN_OK);
  map.spans = t4(JITATTN_DTYPE_I32, 1, 1, 100, 3);
  CHECK(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, NULL, &c.out, NULL, &o) == JITATTN_ERROR_UNSUPPORTED);
  CHECK(mentions("block_map.spans.shape=[1, 1, 100, 3] must be [1, 1, 100, 2]"));
  /* An older caller's map, without spans: none read. */
  map.struct_size = offsetof(jitattn_block_map, spans);
  CHECK(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, NULL, &c.out, NULL, &o) == JITATTN_OK);
  o.block_map = NULL;
  vals[0].data = NULL;
  CHECK(jitattn_not_supported_reasons(&c.q, &c.k, &c.v, NULL, &c.out, NULL, &o) == JITATTN_ERROR_UNSUPPORTED);
  CHECK(mentions("variant capture 'doc': data is null"));
  /* Too many declarations are refused before the array is read. */
  d.num_captures = 1000;
  CHECK(jitattn_variant_create(&d, &bad) == JITATTN_ERROR_INVALID_ARGUMENT && mentions("at most 24"));
  d.num_captures = 2;
  /* A newer caller's larger elements (zero tails) are read where they are. */
  struct {
    jitattn_capture_decl decl;
    int64_t future_field;
  } wide[2];
  memset(wide, 0, sizeof wide);
  wide[0].decl = caps[0];
  wide[1].decl = caps[1];
  wide[0].decl.struct_size = wide[1].decl.struct_size = sizeof wide[0];
  d.captures = &wide[0].decl;
  jitattn_variant* v2 = NULL;
  CHECK(jitattn_variant_create(&d, &v2) == JITATTN_OK && jitattn_variant_id(v2) == jitattn_variant_id(v));
  wide[1].future_field = 7; /* a field this library does not know, set */
  CHECK(jitattn_variant_create(&d, &bad) == JITATTN_ERROR_INVALID_ARGUMENT);
  jitattn_variant_destroy(v2);
  jitattn_variant_destroy(v);
  jitattn_variant_destroy(NULL);
}

int main(void) {
  test_statuses_from_the_environment(); /* first: its children must not inherit a parsed environment */
  test_version();
  test_forward_validation();
  test_entry_points_without_gpu();
  test_backward_and_merge_validation();
  test_bias_handles();
  test_every_bias_kind();
  test_materialize();
  test_struct_sizes();
  test_null_arguments();
  test_cache_controls();
  test_variants();
  printf("c_api_test: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
