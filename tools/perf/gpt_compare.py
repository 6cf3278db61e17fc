#!/usr/bin/env python3
"""A small GPT trained twice from the same seed on the same packed batches (GPU host): attention
through jitattn (BlockDiagonalCausalMask over the packed documents) and through
torch.nn.functional.scaled_dot_product_attention (the same per-document causal mask, dense),
and through SDPA's math path (the bf16 noise reference: two correct implementations' drift),
under torch.autocast(bfloat16). Then torch.compile(fullgraph=True) of the jitattn model.

  python3 tools/perf/gpt_compare.py OUT_DIR [--steps 300]

Writes OUT_DIR/gpt_compare.json (both loss curves, step times, the compile result) and
OUT_DIR/gpt_compare.png (matplotlib), or, without matplotlib, OUT_DIR/plot_gpt_compare.py that
draws it from the JSON elsewhere.

The data teach attention something: each document samples its tokens from its own random bag of
BAG tokens, so the next token is predictable (loss from ln 256 = 5.5 toward ln 8 = 2.1) only by
looking back inside the same document (a mask leaking across documents, or missing causality,
shows up in the curve).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from jitattn import ops
from jitattn.ops.fmha import attn_bias as ab

VOCAB, DIM, HEADS, LAYERS, TOKENS, MAX_DOC, BAG = 256, 256, 4, 4, 2048, 256, 8


def batch(step, device):
    """(tokens [1, T], targets [1, T] with -100 at document ends, document lengths, positions)."""
    g = torch.Generator().manual_seed(1000 + step)
    lens, total = [], 0
    while total < TOKENS:
        n = min(int(torch.randint(16, MAX_DOC + 1, (1,), generator=g)), TOKENS - total)
        lens.append(n)
        total += n
    # Each document draws its own BAG tokens and then samples from them only: a token is predictable
    # (loss -> ln BAG from ln VOCAB) only by looking back inside the same document, so a mask that
    # leaks across documents, or one that is not causal, shows in the curve.
    docs = []
    for n in lens:
        bag = torch.randperm(VOCAB, generator=g)[:BAG]
        docs.append(bag[torch.randint(0, BAG, (n,), generator=g)])
    x = torch.cat(docs)
    y = torch.full_like(x, -100)
    pos = torch.cat([torch.arange(n) for n in lens])
    start = 0
    for n in lens:
        y[start:start + n - 1] = x[start + 1:start + n]
        start += n
    return x[None].to(device), y[None].to(device), lens, pos[None].to(device)


def dense_doc_causal(lens, device):
    """[T, T] bool, True where query i may see key j: same document and j <= i."""
    doc = torch.cat([torch.full((n,), i) for i, n in enumerate(lens)]).to(device)
    idx = torch.arange(len(doc), device=device)
    return (doc[:, None] == doc[None, :]) & (idx[None, :] <= idx[:, None])


class Attention(nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.backend = backend
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x, mask):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, HEADS, DIM // HEADS).unbind(2)
        if self.backend == "jitattn":
            y = ops.memory_efficient_attention(q, k, v, mask)
        elif self.backend == "sdpa_math":
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
                y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                   attn_mask=mask).transpose(1, 2)
        else:
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               attn_mask=mask).transpose(1, 2)
        return self.proj(y.reshape(b, t, DIM))


class Block(nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.attn = Attention(backend)
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))

    def forward(self, x, mask):
        x = x + self.attn(self.n1(x), mask)
        return x + self.mlp(self.n2(x))


class GPT(nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, DIM)
        self.pos = nn.Embedding(MAX_DOC, DIM)
        self.blocks = nn.ModuleList([Block(backend) for _ in range(LAYERS)])
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, x, pos, mask, y):
        h = self.tok(x) + self.pos(pos)
        for blk in self.blocks:
            h = blk(h, mask)
        logits = self.head(self.norm(h)).float()
        return F.cross_entropy(logits.view(-1, VOCAB), y.view(-1), ignore_index=-100)


def mask_for(backend, lens, device):
    if backend == "jitattn":
        return ab.BlockDiagonalCausalMask.from_seqlens(lens)
    return dense_doc_causal(lens, device)[None, None]


def train(backend, steps, device, compile_model=False):
    torch.manual_seed(0)
    model = GPT(backend).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    fwd = torch.compile(model, fullgraph=True) if compile_model else model
    losses, times = [], []
    for step in range(steps):
        x, y, lens, pos = batch(step, device)
        mask = mask_for(backend, lens, device)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(x, pos, mask, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            print(f"{backend}{' (compiled)' if compile_model else ''} step {step}: loss {losses[-1]:.4f}", flush=True)
    return losses, times


def smooth(xs, w=20):
    out = []
    for i in range(len(xs)):
        window = xs[max(0, i - w + 1): i + 1]
        out.append(sum(window) / len(window))
    return out


PLOT_SCRIPT = '''import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
r = json.load(open(sys.argv[1]))
plt.figure(figsize=(7, 4))
for name in ("jitattn", "sdpa", "sdpa_math", "jitattn_compiled"):
    if r.get(name):
        plt.plot(r[name]["losses"], label=name, lw=1)
plt.xlabel("step"); plt.ylabel("loss (bf16 autocast)"); plt.yscale("log"); plt.legend(); plt.grid(alpha=.3)
plt.title(f"small GPT, packed documents: jitattn vs SDPA ({r.get('device', '?')}, {r.get('date', '?')})")
plt.tight_layout(); plt.savefig(sys.argv[2], dpi=120)
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--compile-steps", type=int, default=50)
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    device = torch.device("cuda")
    res = {"steps": a.steps, "tokens_per_step": TOKENS, "model": dict(vocab=VOCAB, dim=DIM, heads=HEADS,
                                                                        layers=LAYERS),
           "device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d")}
    for backend in ("jitattn", "sdpa", "sdpa_math"):
        losses, times = train(backend, a.steps, device)
        res[backend] = {"losses": losses, "median_step_ms": 1e3 * sorted(times)[len(times) // 2]}
    sj, ss, sm = (smooth(res[b]["losses"]) for b in ("jitattn", "sdpa", "sdpa_math"))
    res["max_abs_diff_smoothed"] = max(abs(x - y) for x, y in zip(sj, ss))
    # bf16 noise: how far two correct implementations (SDPA's fused kernel and its math path) drift apart
    res["noise_max_abs_diff_smoothed"] = max(abs(x - y) for x, y in zip(sm, ss))
    res["final_smoothed"] = {"jitattn": sj[-1], "sdpa": ss[-1], "sdpa_math": sm[-1]}
    try:
        losses, times = train("jitattn", a.compile_steps, device, compile_model=True)
        same = max(abs(x - y) for x, y in zip(losses, res["jitattn"]["losses"]))
        res["jitattn_compiled"] = {"ok": True, "losses": losses, "max_abs_diff_vs_eager": same,
                                   "median_step_ms": 1e3 * sorted(times)[len(times) // 2]}
    except Exception as e:  # reported, not hidden
        res["jitattn_compiled"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:4000]}
    print(json.dumps({k: v for k, v in res.items() if k not in ("jitattn", "sdpa", "sdpa_math", "jitattn_compiled")},
                     indent=1))
    print("median step ms:", {b: round(res[b]["median_step_ms"], 3) for b in ("jitattn", "sdpa", "sdpa_math")})
    print("compile:", {k: v for k, v in res["jitattn_compiled"].items() if k != "losses"})
    path = os.path.join(a.out_dir, "gpt_compare.json")
    with open(path, "w") as f:
        json.dump(res, f)
    script = os.path.join(a.out_dir, "plot_gpt_compare.py")
    with open(script, "w") as f:
        f.write(PLOT_SCRIPT)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"no matplotlib: draw it with python3 {script} {path} gpt_compare.png")
        return 0
    import runpy
    sys.argv = [script, path, os.path.join(a.out_dir, "gpt_compare.png")]
    runpy.run_path(script, run_name="__main__")
    print("wrote", sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
