// Context-parallel (ring) attention: a sequence of N tokens split over R ranks (GPUs), each
// holding its slice of q, k, v; key/value blocks travel around the ring (rank r sends to r + 1,
// receives from r − 1) while each rank computes memory_efficient_attention_partial of its
// queries against the block in hand, and the partial results are merged in fp32 (merge.h).
// The backward sends the key/value blocks around again with fp32 dK/dV accumulators travelling
// with them. docs/ring.md has the algorithm, the layouts and the costs.
//
// The ring runs over a RingTransport: NcclRing (NCCL, loaded with dlopen, never linked) between
// GPUs, LocalRing (several ranks simulated on one GPU, "send" a device-to-device copy) to test
// the algebra on one card. A process passes the tensors of every rank it drives (NcclRing: one
// per communicator it holds; LocalRing: all R), in transport.local_ranks() order.
//
// Shapes: each rank's q [B, M, H, K], k [B, M, Hkv, K], v [B, M, Hkv, Kv], out [B, M, H, Kv],
// lse [B, H, M] float32, 4-D, M = N / R the same on every rank, Hkv dividing H (GQA). Every
// rank's tensors are on one device (its own). The global mask is one of the masks below, read
// over the whole sequence (Mq = Mkv = N); which global positions a rank's rows hold is the
// layout's (ring_global_position).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "jitattn/attention.h"
#include "jitattn/bias.h"
#include "jitattn/tensor.h"

namespace jitattn {

// Which global positions rank r's M local rows hold (R ranks, N = R·M):
//   contiguous: [r·M, (r+1)·M) — causal masks leave rank 0 almost idle and rank R−1 busiest;
//   zigzag:     chunks r and 2R−1−r of 2R chunks of M/2 (M even) — every rank does the same
//               causal work (Megatron CP, ring-flash-attention's zigzag);
//   striped:    r, r + R, r + 2R, … — the same causal work too (Brandon et al., striped attention).
enum class RingLayout { contiguous, zigzag, striped };
const char* to_string(RingLayout layout);

// Global position of local row `row` of rank `rank`.
int64_t ring_global_position(RingLayout layout, int world, int rank, int64_t local_len, int64_t row);

// The global mask, over the whole sequence (Mq = Mkv = N, so bottom-right = top-left): a band of
// key offsets, query i sees key j iff lo <= j − i <= hi, and optionally documents (B = 1, the
// sequence cut into documents seen only from within, as a block-diagonal mask). Read from:
//   std::monostate                                    → no mask
//   LowerTriangularMask, LowerTriangularFromBottomRightMask → causal (hi = 0)
//   LowerTriangularFromBottomRightLocalAttentionMask{w}     → lo = 1 − w, hi = 0
//   LocalAttentionFromBottomRightMask{wl, wr}               → lo = −wl, hi = wr
//   BlockDiagonalMask, BlockDiagonalCausalMask (q_seqinfo = k_seqinfo) → documents (causal: hi = 0);
//     contiguous and zigzag layouts only
struct RingMask {
  static constexpr int64_t kUnbounded = INT64_MAX / 4;
  int64_t lo = -kUnbounded, hi = kUnbounded;
  std::vector<int64_t> doc_start;  // empty, or the documents' first positions and N (seqstart)
  bool visible(int64_t i, int64_t j) const;
  // Index of the document holding position i (doc_start non-empty).
  int64_t document(int64_t i) const;
};
// The mask of `bias`; false (with the reason in `why`) for a bias a ring cannot slice.
bool ring_mask(const AttnBias& bias, RingMask& mask, std::string* why = nullptr);

// One partial-attention call of a step: local query rows [q_begin, q_end) of the rank against
// rows [k_begin, k_end) of the key/value block in hand, with `bias` in the call's own
// coordinates (merge.h). Query rows of the range that see no key of it get lse = −inf.
struct RingCall {
  int64_t q_begin = 0, q_end = 0, k_begin = 0, k_end = 0;
  AttnBias bias;
};
// The calls rank `rank` makes at a step where it holds the key/value block of rank `src` (its
// own at step 0, then rank − 1's, …): every (query, key) pair the mask lets through is in exactly
// one call and visible there; any other pair a call covers its bias hides; a (query chunk, key
// chunk) pair with nothing visible makes no call.
std::vector<RingCall> ring_step_calls(RingLayout layout, const RingMask& mask, int world, int rank, int src,
                                      int64_t local_len);

// ---- transports --------------------------------------------------------------------------------
// Moves device buffers one step around the ring. Everything is queued on streams and nothing
// synchronizes with the host.
class RingTransport {
 public:
  struct Buffer {
    const void* send = nullptr;  // read: this rank's buffer, sent to rank + 1
    void* recv = nullptr;        // written: the same-sized buffer of rank − 1
    size_t bytes = 0;
  };
  virtual ~RingTransport() = default;
  virtual int world_size() const = 0;
  // The ranks this process drives, in the order the ring calls take their tensors.
  virtual std::vector<int> local_ranks() const = 0;
  // The CUDA device each local rank's tensors are on (local_ranks() order).
  virtual std::vector<int> local_devices() const = 0;
  // One rotation: local rank i sends buffers[i][*].send to its next rank and receives
  // buffers[i][*].recv from its previous one (every rank passes the same sizes), queued on
  // streams[i]: the sends read what work queued before on streams[i] wrote, and work queued after
  // on streams[i] may read the received data and overwrite the sent buffers.
  virtual void shift(const std::vector<std::vector<Buffer>>& buffers, const std::vector<void*>& streams) = 0;
};

// R ranks simulated in this process on one device: a shift is a device-to-device copy from rank
// r − 1's buffer into rank r's, ordered with both ranks' streams by events.
class LocalRing final : public RingTransport {
 public:
  explicit LocalRing(int world, int device = 0);
  ~LocalRing() override;
  LocalRing(const LocalRing&) = delete;
  LocalRing& operator=(const LocalRing&) = delete;
  int world_size() const override { return world_; }
  std::vector<int> local_ranks() const override;
  std::vector<int> local_devices() const override { return std::vector<int>(size_t(world_), device_); }
  void shift(const std::vector<std::vector<Buffer>>& buffers, const std::vector<void*>& streams) override;

 private:
  int world_, device_;
  std::vector<void*> events_;  // CUevent: two per rank, made on first use
};

// NCCL point-to-point over communicators this process holds (one per local rank: one for a
// process per GPU, several from ncclCommInitAll). libnccl.so.2 is loaded with dlopen, never
// linked: the copy the process already loaded (torch's), then `library` when given, then the
// loader's search path. `comms` are ncclComm_t. NCCL_NVLS_ENABLE=0 is set (unless already set)
// before the library is loaded. Throws jitattn::Error (ErrorKind::cuda) naming what failed.
class NcclRing final : public RingTransport {
 public:
  explicit NcclRing(std::vector<void*> comms, const std::string& library = "");
  int world_size() const override { return world_; }
  std::vector<int> local_ranks() const override { return ranks_; }
  std::vector<int> local_devices() const override { return devices_; }
  void shift(const std::vector<std::vector<Buffer>>& buffers, const std::vector<void*>& streams) override;

  // The loaded library's entry points (nccl.h's, declared here without it).
  struct Api;
  static const Api& load(const std::string& library = "");

 private:
  const Api* api_;
  std::vector<void*> comms_;
  std::vector<int> ranks_, devices_;
  int world_ = 0;
};

// ---- the calls -----------------------------------------------------------------------------------
struct RingOptions {
  RingLayout layout = RingLayout::contiguous;
  std::optional<double> scale;  // default K^-0.5
};

// One rank's tensors for the forward.
struct RingForwardArgs {
  TensorView q, k, v, out, lse;  // out in q's dtype or f32; lse [B, H, M] f32 (needed by the backward)
  void* stream = nullptr;        // CUstream the rank's work is queued on
};
// One rank's tensors for the backward: the forward's inputs, its out and lse, dO, and the
// gradients (shaped as q, k, v, in q's dtype).
struct RingBackwardArgs {
  TensorView grad, out, lse, q, k, v, dq, dk, dv;
  void* stream = nullptr;
};

// out = attention over the whole sequence (every rank's keys), masked by `bias` as a global mask
// (RingMask), for each local rank's queries. Every rank of the ring must make the same call.
// Partial outputs and their merge are fp32; the K/V rotation of step t + 1 runs on a side stream
// while step t computes. Dropout and user variants are not supported.
void ring_attention_forward(RingTransport& transport, const std::vector<RingForwardArgs>& ranks,
                            const AttnBias& bias, const RingOptions& options = {});
// dq, dk, dv of the forward above. dQ is summed in the rank's fp32 accumulator, dK/dV in fp32
// accumulators that travel with their K/V block and arrive home after the last step.
void ring_attention_backward(RingTransport& transport, const std::vector<RingBackwardArgs>& ranks,
                             const AttnBias& bias, const RingOptions& options = {});

// Every reason the calls would refuse these arguments (naming the rank and the argument);
// empty when they are supported. Never throws.
std::vector<std::string> ring_forward_not_supported_reasons(const RingTransport& transport,
                                                            const std::vector<RingForwardArgs>& ranks,
                                                            const AttnBias& bias, const RingOptions& options = {});
std::vector<std::string> ring_backward_not_supported_reasons(const RingTransport& transport,
                                                             const std::vector<RingBackwardArgs>& ranks,
                                                             const AttnBias& bias, const RingOptions& options = {});

}  // namespace jitattn
