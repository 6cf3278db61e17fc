#!/usr/bin/env python3
"""Peak GPU memory of one forward + backward, jitattn next to PyTorch's SDPA backends (flash,
efficient, cudnn, math), over sequence lengths, for tools/perf/plot_record.py (GPU host).

  PYTHONPATH=api/python JITATTN_LIBRARY=build/libjitattn.so \
      python3 tools/perf/memory_record.py --head-dims 64,128 --seqlens 1024,4096,16384 --out memory.json

Shapes as `jitattn bench` and `.gpu/anchors.py` take them: B = max(1, tokens / M), H = hidden / K,
bf16. Peak is torch.cuda.max_memory_allocated() after reset_peak_memory_stats() over one forward
and its backward, inputs and gradients included (jitattn's backward workspace comes from torch's
allocator through the Python layer, so it is counted). PyTorch's math backend materializes the
M × M scores, so its memory grows quadratically; a case that fails (out of memory, a backend that
refuses the shape) is written with its error.
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def peak_mib(step):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2 ** 20


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--head-dims", type=ints, default=[64, 128])
    ap.add_argument("--seqlens", type=ints, default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--out", default="memory.json")
    a = ap.parse_args()
    from jitattn import ops
    from jitattn.ops.fmha import attn_bias as ab

    dt = torch.bfloat16
    rows = []
    for K in a.head_dims:
        H = a.hidden // K
        for M in a.seqlens:
            B = max(1, a.tokens // M)
            for causal in (False, True):
                base = dict(B=B, H=H, M=M, K=K, causal=causal, dtype="bfloat16")

                def jit_step():  # [B, M, H, K], xFormers' layout
                    q, k, v = (torch.randn(B, M, H, K, device="cuda", dtype=dt, requires_grad=True) for _ in range(3))
                    o = ops.memory_efficient_attention(q, k, v, ab.LowerTriangularMask() if causal else None)
                    o.backward(torch.randn_like(o))

                def sdpa_step(backend):
                    def step():
                        q, k, v = (torch.randn(B, H, M, K, device="cuda", dtype=dt, requires_grad=True) for _ in range(3))
                        with sdpa_kernel([backend]):
                            o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                        o.backward(torch.randn_like(o))
                    return step

                for name, step in [("jitattn", jit_step)] + [(n, sdpa_step(b)) for n, b in BACKENDS.items()]:
                    try:
                        step()  # warm-up: a first call compiles (jitattn) or picks its kernels
                        rows.append(dict(base, sys=name, peak_mib=peak_mib(step)))
                    except Exception as e:  # out of memory, or a backend that refuses the shape
                        rows.append(dict(base, sys=name, error=str(e)[:160]))
                        torch.cuda.empty_cache()
                    r = rows[-1]
                    print(f"{name:9s} K={K:3d} M={M:5d} causal={int(causal)} "
                          + (f"peak {r['peak_mib']:9.1f} MiB" if "peak_mib" in r else "error " + r["error"][:60]), flush=True)
    with open(a.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
