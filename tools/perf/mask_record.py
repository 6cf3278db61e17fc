#!/usr/bin/env python3
"""Per-kind plots of record: TFLOP/s of the forward and of forward + backward against sequence
length for each mask kind, jitattn's built-in bias next to FlexAttention with the same mask_mod,
for tools/perf/plot_record.py --masks (GPU host, one call; docs/performance.md).

  PYTHONPATH=api/python JITATTN_LIBRARY=build/libjitattn.so \
      python3 tools/perf/mask_record.py --seqlens 1024,4096,16384 --head-dim 128 --out masks.json

Kinds: causal (LowerTriangularMask), a causal local window of W keys
(LowerTriangularFromBottomRightMask().make_local_attention(W)), 16 packed documents per sequence
with causal attention within each (BlockDiagonalCausalMask over the packed batch), and
BlockSparseMask (block 128, a random layout per head) at 10% density against a dense key set.
Shapes as `jitattn bench`: B = max(1, tokens / M), H = hidden / K, bf16; jitattn takes
[B, M, H, K], Flex [B, H, M, K] with create_block_mask built once per shape (as
tools/perf/variant_bench.py). TFLOP/s count visible elements only: 4·B·H·visible·K per forward,
3.5 times that for forward + backward (the backward as 2.5 forwards). Times are
triton.testing.do_bench medians. A case that fails is written with its error.
"""
import argparse
import json
import os
import sys

import torch
import triton.testing as tt

from jitattn import ops
from jitattn.ops.fmha import attn_bias as ab
from variant_bench import with_grad  # this script's directory is on sys.path


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def ms(fn):
    return tt.do_bench(fn, warmup=10, rep=60, return_mode="median")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqlens", type=ints, default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=16384, help="batch * seqlen")
    ap.add_argument("--hidden", type=int, default=2048, help="heads * head_dim")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "record_masks.json"))
    a = ap.parse_args()
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    torch._dynamo.config.cache_size_limit = 256
    flex = torch.compile(flex_attention, dynamic=False)
    K, W, dt = a.head_dim, a.window, torch.bfloat16
    H = a.hidden // K
    rows = []
    for M in a.seqlens:
        B = max(1, a.tokens // M)
        q, k, v = (torch.randn(B, M, H, K, device="cuda", dtype=dt) for _ in range(3))
        qf, kf, vf = (x.transpose(1, 2).contiguous() for x in (q, k, v))
        g = torch.Generator().manual_seed(1)
        cuts = sorted(torch.randperm(M - 1, generator=g)[:15].add(1).tolist())
        lens = [e - s for s, e in zip([0] + cuts, cuts + [M])]
        doc = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens)).cuda().int()
        gen = torch.Generator(device="cuda").manual_seed(2)
        layout = torch.rand(H, M // 128, M // 128, device="cuda", generator=gen) < 0.1
        # jitattn's documents: the B sequences packed into one, each cut as `lens`
        packed = ab.BlockDiagonalCausalMask.from_seqlens(lens * B)
        pq, pk, pv = (x.reshape(1, B * M, H, K) for x in (q, k, v))
        cases = {
            "causal": (lambda b, h, i, j: i >= j, M * (M + 1) // 2,
                       lambda q_, k_, v_: ops.memory_efficient_attention(q_, k_, v_, ab.LowerTriangularMask()), (q, k, v)),
            f"window{W}": (lambda b, h, i, j: (i >= j) & (i - j < W), sum(min(i + 1, W) for i in range(M)),
                           lambda q_, k_, v_: ops.memory_efficient_attention(
                               q_, k_, v_, ab.LowerTriangularFromBottomRightMask().make_local_attention(W)), (q, k, v)),
            "docs16": (lambda b, h, i, j: (doc[i] == doc[j]) & (i >= j), sum(n * (n + 1) // 2 for n in lens),
                       lambda q_, k_, v_: ops.memory_efficient_attention(q_, k_, v_, packed), (pq, pk, pv)),
            "sparse10": (lambda b, h, i, j: layout[h, i // 128, j // 128], None,
                         lambda q_, k_, v_: ops.memory_efficient_attention(q_, k_, v_, ab.BlockSparseMask(layout, 128)),
                         (q, k, v)),
        }
        for name, (mod, visible, jfn, jargs) in cases.items():
            if visible is None:  # per head: the layout's blocks
                visible = int(layout.sum()) * 128 * 128 / H
            flops = 4 * B * H * visible * K
            base = dict(mask=name, M=M, B=B, H=H, K=K, visible=visible)
            for sys_, fwd, step in (
                    ("jitattn", lambda: jfn(*jargs), with_grad(jfn, *jargs)),
                    ("flex", None, None)):
                try:
                    if sys_ == "flex":
                        bm = create_block_mask(mod, None, H if name == "sparse10" else None, M, M)
                        ff = lambda q_, k_, v_, bm=bm: flex(q_, k_, v_, block_mask=bm)
                        fwd, step = (lambda: ff(qf, kf, vf)), with_grad(ff, qf, kf, vf)
                    t = ms(fwd)
                    tb = ms(step)
                    r = dict(base, sys=sys_, ms=t, tflops=flops / t / 1e9, fwd_bwd_ms=tb,
                             fwd_bwd_tflops=3.5 * flops / tb / 1e9)
                    print(f"{sys_:8s} mask={name:10s} M={M:6d} B={B:3d} fwd {t:8.3f} ms {r['tflops']:6.1f} TFLOP/s"
                          f"  fwd+bwd {tb:8.3f} ms {r['fwd_bwd_tflops']:6.1f} TFLOP/s", flush=True)
                except Exception as e:  # written down, not hidden
                    r = dict(base, sys=sys_, error=str(e)[:200])
                    print(f"{sys_:8s} mask={name:10s} M={M:6d} failed: {r['error']}", flush=True)
                rows.append(r)
    with open(a.out, "w") as f:
        json.dump(dict(rows=rows, K=K, H_of_K=a.hidden, tokens=a.tokens, window=W, dtype="bf16",
                       device=torch.cuda.get_device_name(), torch=torch.__version__), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
