#!/usr/bin/env python3
"""User variants against FlexAttention on the same mask_mod / score_mod (GPU host), in one run:

  python3 tools/perf/variant_bench.py [--seqlen 16384] [--head-dim 128] [--heads 16] [--window 256]

- soft-capping (tanh, causal): jitattn.Variant score_mod + score_grad vs flex_attention score_mod;
- 16 packed documents (causal within each), FlexAttention's anchors.py cuts: jitattn's built-in
  BlockDiagonalCausalMask, and the same mask as a jitattn.Variant mask_mod over causal with its
  block map (built once, like flex's create_block_mask), vs flex with the document mask_mod;
- a sliding window (causal, W keys): jitattn's built-in local mask and the same as a mask_mod
  with its block map;
- BlockSparseMask (block 128, a random layout per head) at 10%, 50% and 90% density against
  the same shapes without a mask (the issue's goal: 10% in at most 15% of the dense time);
- the first call of a never-seen variant (its text made unique), compile included, and of its
  block map's builder.
TFLOP/s count unmasked elements only (4·H·visible·K forward, 2.5× that for the backward), timed
as triton.testing.do_bench (median). Prints one line per case and the ratios.
"""
import argparse
import json
import os
import random
import sys
import time

import torch
import triton.testing as tt

import jitattn
from jitattn import ops
from jitattn.ops.fmha import attn_bias as ab


def ms(fn):
    return tt.do_bench(fn, warmup=25, rep=100, return_mode="median")


def with_grad(f, *xs):
    """One forward + backward step of f on leaf copies of xs (tools/perf/mask_record.py uses it too)."""
    xs = [x.detach().requires_grad_(True) for x in xs]

    def step():
        out = f(*xs)
        out.backward(torch.ones_like(out))
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqlen", type=int, default=16384)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--cap", type=float, default=20.0)
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "variant_bench.json"))
    a = ap.parse_args()
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    torch._dynamo.config.cache_size_limit = 64
    flex = torch.compile(flex_attention, dynamic=False)
    M, K, H, W, cap = a.seqlen, a.head_dim, a.heads, a.window, a.cap
    dt = torch.bfloat16
    q, k, v = (torch.randn(1, M, H, K, device="cuda", dtype=dt) for _ in range(3))  # BMHK for jitattn
    qf, kf, vf = (x.transpose(1, 2).contiguous() for x in (q, k, v))                 # BHMK for flex
    g = torch.Generator().manual_seed(1)  # anchors.py's document cuts
    cuts = sorted(torch.randperm(M - 1, generator=g)[:15].add(1).tolist())
    lens = [b - c for c, b in zip([0] + cuts, cuts + [M])]
    doc = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens)).cuda().int()
    causal_visible = M * (M + 1) // 2
    rows = []

    def add(name, system, fn, visible, bwd=None):
        t = ms(fn)
        r = dict(case=name, sys=system, ms=t, tflops=4 * H * visible * K / t / 1e9)
        if bwd is not None:
            tb = ms(bwd)
            r.update(fwd_bwd_ms=tb, fwd_bwd_tflops=3.5 * 4 * H * visible * K / tb / 1e9)
        rows.append(r)
        extra = f"  fwd+bwd {r['fwd_bwd_tflops']:6.1f} TFLOP/s" if bwd is not None else ""
        print(f"{name:12s} {system:24s} {t:8.3f} ms  {r['tflops']:6.1f} TFLOP/s{extra}", flush=True)

    # soft-capping, causal
    softcap = jitattn.Variant(score_mod="cap * tanhf(score / cap)",
                              score_grad="const float t = tanhf(score / cap); return 1.f - t * t;",
                              captures={"cap": cap})
    jf = lambda q_, k_, v_: ops.memory_efficient_attention(q_, k_, v_, ab.LowerTriangularMask(), variant=softcap)
    add("softcap", "jitattn variant", lambda: jf(q, k, v), causal_visible, with_grad(jf, q, k, v))
    # Flex's score_mod below divides with Triton's fp32 `/`, which is div.full.f32 (2 ulp), not the
    # IEEE division CUDA C++'s `/` is: the same function with that division (jitattn::fast_div).
    softcap_div = jitattn.Variant(score_mod="cap * tanhf(jitattn::fast_div(score, cap))",
                                  score_grad="const float t = tanhf(jitattn::fast_div(score, cap)); return 1.f - t * t;",
                                  captures={"cap": cap})
    jfd = lambda q_, k_, v_: ops.memory_efficient_attention(q_, k_, v_, ab.LowerTriangularMask(), variant=softcap_div)
    add("softcap", "jitattn variant flex div", lambda: jfd(q, k, v), causal_visible, with_grad(jfd, q, k, v))
    # The same function through the fast forms (tanh.approx, a reciprocal): docs/python.md says why.
    softcap_fast = jitattn.Variant(score_mod="cap * jitattn::fast_tanh(score * inv_cap)",
                                   score_grad="const float t = jitattn::fast_tanh(score * inv_cap); return 1.f - t * t;",
                                   captures={"cap": cap, "inv_cap": 1.0 / cap})
    jff = lambda q_, k_, v_: ops.memory_efficient_attention(q_, k_, v_, ab.LowerTriangularMask(), variant=softcap_fast)
    add("softcap", "jitattn variant fast", lambda: jff(q, k, v), causal_visible, with_grad(jff, q, k, v))

    def sc(score, b, h, i, j):
        return cap * torch.tanh(score / cap)
    bm_causal = create_block_mask(lambda b, h, i, j: i >= j, None, None, M, M)
    ff = lambda q_, k_, v_: flex(q_, k_, v_, score_mod=sc, block_mask=bm_causal)
    add("softcap", "flex", lambda: ff(qf, kf, vf), causal_visible, with_grad(ff, qf, kf, vf))

    # documents
    docs_visible = sum(n * (n + 1) // 2 for n in lens)
    bd = ab.BlockDiagonalCausalMask.from_seqlens(lens)
    jd = lambda q_, k_, v_: ops.memory_efficient_attention(q_, k_, v_, bd)
    add("docs16", "jitattn built-in", lambda: jd(q, k, v), docs_visible, with_grad(jd, q, k, v))
    docv = jitattn.Variant(mask_mod="doc[q_idx] == doc[kv_idx]", captures={"doc": doc})
    docv.build_block_map(M, M, cell_size=128)
    torch.cuda.synchronize()
    build_ms = ms(lambda: docv.build_block_map(M, M, cell_size=128))
    print(f"block map build (documents, {M}x{M}, cells of 128): {build_ms:.3f} ms")
    jdv = lambda q_, k_, v_: ops.memory_efficient_attention(q_, k_, v_, ab.LowerTriangularMask(), variant=docv)
    add("docs16", "jitattn variant", lambda: jdv(q, k, v), docs_visible, with_grad(jdv, q, k, v))
    bm_docs = create_block_mask(lambda b, h, i, j: (doc[i] == doc[j]) & (i >= j), None, None, M, M)
    fd = lambda q_, k_, v_: flex(q_, k_, v_, block_mask=bm_docs)
    add("docs16", "flex", lambda: fd(qf, kf, vf), docs_visible, with_grad(fd, qf, kf, vf))

    # sliding window
    win_visible = sum(min(i + 1, W) for i in range(M))
    local = ab.LowerTriangularFromBottomRightLocalAttentionMask(W)
    jw = lambda q_, k_, v_: ops.memory_efficient_attention(q_, k_, v_, local)
    add(f"window{W}", "jitattn built-in", lambda: jw(q, k, v), win_visible, with_grad(jw, q, k, v))
    winv = jitattn.Variant(mask_mod="q_idx - kv_idx < w", captures={"w": W})
    winv.build_block_map(M, M, cell_size=128)
    jwv = lambda q_, k_, v_: ops.memory_efficient_attention(q_, k_, v_, ab.LowerTriangularMask(), variant=winv)
    add(f"window{W}", "jitattn variant", lambda: jwv(q, k, v), win_visible, with_grad(jwv, q, k, v))
    bm_win = create_block_mask(lambda b, h, i, j: (i >= j) & (i - j < W), None, None, M, M)
    fw = lambda q_, k_, v_: flex(q_, k_, v_, block_mask=bm_win)
    add(f"window{W}", "flex", lambda: fw(qf, kf, vf), win_visible, with_grad(fw, qf, kf, vf))

    # block-sparse layouts against no mask
    dense_visible = M * M
    jn = lambda q_, k_, v_: ops.memory_efficient_attention(q_, k_, v_)
    add("dense", "jitattn", lambda: jn(q, k, v), dense_visible, with_grad(jn, q, k, v))
    gen = torch.Generator(device="cuda").manual_seed(2)
    for density in (0.1, 0.5, 0.9):
        layout = torch.rand(H, M // 128, M // 128, device="cuda", generator=gen) < density
        bs = ab.BlockSparseMask(layout, 128)
        visible = int(layout.sum()) * 128 * 128 // H
        js = lambda q_, k_, v_, bs=bs: ops.memory_efficient_attention(q_, k_, v_, bs)
        add(f"sparse{int(density * 100)}", "jitattn", lambda js=js: js(q, k, v), visible, with_grad(js, q, k, v))

    # first call of a never-seen variant (forward), then of its backward
    salt = random.getrandbits(48)
    fresh = jitattn.Variant(score_mod=f"score * 0.5f /* {salt} */", additive=False, score_grad="return 0.5f;")
    qs = q[:, :1024].detach().clone().requires_grad_(True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = ops.memory_efficient_attention(qs, qs, qs, ab.LowerTriangularMask(), variant=fresh)
    torch.cuda.synchronize()
    first_fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    out.sum().backward()
    torch.cuda.synchronize()
    first_bwd = time.perf_counter() - t0
    print(f"first call of a never-seen variant: forward {first_fwd:.3f} s, backward {first_bwd:.3f} s (compile included)")
    fresh_mask = jitattn.Variant(mask_mod=f"(q_idx ^ kv_idx) % 7 != 3 /* {salt} */")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fresh_mask.build_block_map(1024, 1024)
    torch.cuda.synchronize()
    first_map = time.perf_counter() - t0
    print(f"first block map of a never-seen mask_mod: {first_map:.3f} s (its builder's compile included)")

    by = {(r["case"], r["sys"]): r for r in rows}
    print("ratios (jitattn / flex, forward; fwd+bwd where measured):")
    for case in ("softcap", "docs16", f"window{W}"):
        fl = by[(case, "flex")]
        for sys_ in ("jitattn variant", "jitattn variant flex div", "jitattn variant fast", "jitattn built-in"):
            r = by.get((case, sys_))
            if r:
                both = f", fwd+bwd {fl['fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f}x" if "fwd_bwd_ms" in r else ""
                print(f"  {case:12s} {sys_:24s} {fl['ms'] / r['ms']:.2f}x{both}")
    dense = by[("dense", "jitattn")]
    for d in (10, 50, 90):
        r = by[(f"sparse{d}", "jitattn")]
        print(f"  sparse{d:<3d} time / dense time: forward {r['ms'] / dense['ms']:.3f}, fwd+bwd "
              f"{r['fwd_bwd_ms'] / dense['fwd_bwd_ms']:.3f}")
    with open(a.out, "w") as f:
        json.dump(dict(rows=rows, first_call_s=dict(forward=first_fwd, backward=first_bwd), M=M, K=K, H=H, W=W,
                       device=torch.cuda.get_device_name(), torch=torch.__version__), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
