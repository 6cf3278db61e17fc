#!/usr/bin/env python3
"""What the Python layer costs (GPU host): per-call host overhead of a warm
jitattn.ops.memory_efficient_attention, and forward/backward TFLOP/s through Python at one large
shape, next to the C++ bench (`jitattn bench --bwd`) in the same run.

  python3 tools/perf/python_check.py [--bench build/tools/jitattn] [--json out.json]

Overhead: a tiny shape (the GPU work is a few µs), N calls queued back to back, host time per
call (median of R batches). Next to it the same forward through the C API alone (ctypes, the
structs built once): the difference is what the Python layer adds. TFLOP/s: CUDA events around
`reps` calls, 4·B·H·M·N·K per forward (half for causal), a backward as 2.5 forwards (as the bench).
"""
import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time

import torch

import jitattn
from jitattn import _capi, ops
from jitattn.ops.fmha import _torch_bias, _torch_launch
from jitattn.ops.fmha import attn_bias as ab


def host_us(fn, calls=2000, batches=7):
    fn()
    torch.cuda.synchronize()
    per = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per.append((time.perf_counter() - t0) / calls * 1e6)
        torch.cuda.synchronize()
    return statistics.median(per)


def overhead():
    q = torch.randn(1, 16, 1, 64, device="cuda", dtype=torch.bfloat16)
    causal = ab.LowerTriangularMask()
    docs = ab.BlockDiagonalCausalMask.from_seqlens([8, 8])
    qg = q.clone().requires_grad_(True)
    res = {
        "python_forward_no_grad_us": host_us(lambda: ops.memory_efficient_attention(q, q, q, causal)),
        "python_forward_block_diagonal_us": host_us(lambda: ops.memory_efficient_attention(q, q, q, docs)),
        "python_forward_autograd_us": host_us(lambda: ops.memory_efficient_attention(qg, q, q, causal)),
        # What torch.compile's graph calls (the dispatcher, the custom op's autograd wrapper):
        "python_custom_op_autograd_us": host_us(lambda: torch.ops.jitattn.fwd(qg, q, q, None, None, 2, 0, 0, 0.0,
                                                                              None, None, 0, True, False, None,
                                                                              [])),
    }
    # The C API alone: the same call with everything prepared once.
    out = torch.empty_like(q)
    t = [_torch_launch.c_tensor(x) for x in (q, q, q, out)]
    h = _torch_bias.plain_handle(2, 0, 0)
    opts = _capi.AttentionOptions()
    stream = torch.cuda.current_stream().cuda_stream
    lib = _capi.lib()
    refs = [ctypes.byref(x) for x in t]
    fwd = lib.jitattn_forward_h

    def c_only():
        fwd(refs[0], refs[1], refs[2], h, refs[3], ctypes.byref(opts), stream)

    res["c_api_forward_us"] = host_us(c_only)
    res["python_layer_added_us"] = res["python_forward_no_grad_us"] - res["c_api_forward_us"]
    return res


def gpu_ms(fn, reps):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def throughput(m, k, hidden, tokens, causal, reps):
    b, h = max(1, tokens // m), hidden // k
    q, kk, v, g = (torch.randn(b, m, h, k, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    bias = ab.LowerTriangularMask() if causal else None
    flops = 4.0 * b * h * m * m * k * (0.5 if causal else 1.0)
    fwd = gpu_ms(lambda: ops.memory_efficient_attention(q, kk, v, bias), reps)
    out, lse = ops.memory_efficient_attention_forward_requires_grad(q, kk, v, bias)
    bwd = gpu_ms(lambda: ops.memory_efficient_attention_backward(g, out, lse, q, kk, v, bias), reps)
    qa, ka, va = (x.clone().requires_grad_(True) for x in (q, kk, v))

    def autograd_step():
        ops.memory_efficient_attention(qa, ka, va, bias).backward(g)

    step = gpu_ms(autograd_step, reps)
    return {"B": b, "M": m, "H": h, "K": k, "causal": causal, "fwd_ms": fwd, "fwd_tflops": flops / fwd / 1e9,
            "bwd_ms": bwd, "bwd_tflops": 2.5 * flops / bwd / 1e9,
            "autograd_fwd_bwd_ms": step, "autograd_fwd_bwd_tflops": 3.5 * flops / step / 1e9}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqlen", type=int, default=8192)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=2048, help="H = hidden / K (the bench's default)")
    ap.add_argument("--tokens", type=int, default=16384, help="B = tokens / M (the bench's default)")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--bench", help="the jitattn CLI, to run `bench --bwd` at the same shape in this run")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    res = {"jitattn": jitattn.version(), "torch": torch.__version__, "device": torch.cuda.get_device_name()}
    res["overhead"] = overhead()
    for key, v in res["overhead"].items():
        print(f"{key:36s} {v:8.2f}")
    res["python"] = [throughput(a.seqlen, a.head_dim, a.hidden, a.tokens, c, a.reps) for c in (False, True)]
    for r in res["python"]:
        print(f"python B={r['B']} M={r['M']} H={r['H']} K={r['K']} causal={int(r['causal'])}: "
              f"fwd {r['fwd_tflops']:.1f} TFLOP/s ({r['fwd_ms']:.3f} ms), bwd {r['bwd_tflops']:.1f} TFLOP/s "
              f"({r['bwd_ms']:.3f} ms), autograd fwd+bwd {r['autograd_fwd_bwd_tflops']:.1f} TFLOP/s")
    if a.bench:
        cmd = [a.bench, "bench", "--bwd", "--dtype", "bf16", "--head-dims", str(a.head_dim), "--seqlens", str(a.seqlen),
               "--tokens", str(a.tokens), "--hidden", str(a.hidden), "--causal", "both"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        print("$ " + " ".join(cmd) + "\n" + run.stdout + run.stderr)
        res["cpp_bench"] = {"cmd": cmd, "rc": run.returncode, "stdout": run.stdout}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
