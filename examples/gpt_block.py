#!/usr/bin/env python3
"""A GPT block (pre-norm; GQA attention with ALiBi over packed variable-length sequences; SwiGLU)
trained end to end on associative recall, with jitattn or with PyTorch SDPA. Importable: the
module's ``GPT``, ``Block``, ``make_batch`` and ``train`` are what the script runs.

    python examples/gpt_block.py [--attention jitattn|sdpa] [--unfused-swiglu] [--amp bf16|f16|none]
                                 [--steps N] [--out DIR] [--compare]

Attention (``--attention jitattn``, the default): ``jitattn.ops.memory_efficient_attention`` over
the packed documents, the bias ``BlockDiagonalCausalMask.from_tensor_list(documents)`` with
``add_alibi`` (ALiBi's -slope_h·|i-j| added inside the kernel, no bias tensor); GQA through
xFormers' 5-D BMGHK inputs: q ``[1, T, G, H/G, hd]``, k and v ``[1, T, G, 1, hd]`` expanded over
the H/G heads of their group by stride 0 (no copies). ``--attention sdpa``:
``torch.nn.functional.scaled_dot_product_attention`` with a dense ``[1, H, T, T]`` additive bias
(per-document causal mask plus the same ALiBi) and k/v repeated over the heads.
MLP: ``jitattn.ops.SwiGLU`` (the fused gate), or ``--unfused-swiglu`` the same function in plain
torch, ``w3(silu(w1 x + b1) * (w2 x + b2))``.

The task needs attention: each document is n (key, value) pairs (keys distinct in the document)
followed by a separator and queries ``q a q a ...`` where each answer ``a`` is the value paired with
``q`` earlier in the same document. Only the answers are predictable (and scored); a mask leaking
across documents, or a non-causal one, gives wrong answers. Chance is 1/VALUES.

Training: AdamW, linear warm-up, ``torch.autocast(bfloat16)`` (``--amp f16``: float16 with a
``GradScaler``). Prints loss and accuracy on the answer positions, the median step time, the step
at which the smoothed accuracy first reached ``--target-acc``; writes DIR/gpt_block.json (the
loss/accuracy curves) and DIR/gpt_block.png (matplotlib), or DIR/plot_gpt_block.py that draws it
from the JSON, titled with the card and the date.

``--compare``: trains jitattn + fused SwiGLU and SDPA + unfused SwiGLU from the same initial weights
(the unfused model's, copied into the fused one) on the same batches; reports the max |difference|
of the smoothed loss curves and both median step times.

jitattn and the fused SwiGLU need a CUDA GPU; ``--attention sdpa --unfused-swiglu`` runs anywhere
(the CPU test in tests/python/test_gpt_block.py trains a tiny one).
"""
import argparse
import dataclasses
import datetime
import json
import math
import os
import runpy
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

if __package__ in (None, ""):   # run as a script from a checkout: api/python holds the package
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(os.path.dirname(_here), "api", "python"))


@dataclasses.dataclass
class Config:
    # task
    keys: int = 64             # key tokens 0..keys-1
    values: int = 64           # value tokens keys..keys+values-1
    min_pairs: int = 4
    max_pairs: int = 24
    queries: int = 8           # queries per document
    tokens: int = 4096         # packed tokens per step (one row of variable-length documents)
    # model
    dim: int = 256
    layers: int = 4
    heads: int = 8
    kv_groups: int = 2         # G: key/value heads (GQA); heads % kv_groups == 0
    hidden: int = 768          # SwiGLU hidden width
    # training
    steps: int = 1500
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.0
    seed: int = 0
    attention: str = "jitattn"  # or "sdpa"
    fused_swiglu: bool = True
    amp: str = "bf16"           # "bf16", "f16" (GradScaler) or "none"
    target_acc: float = 0.99
    smooth: int = 20
    log_every: int = 50

    @property
    def vocab(self):
        return self.keys + self.values + 1   # + the separator

    @property
    def sep(self):
        return self.keys + self.values


# ---- data -----------------------------------------------------------------------------------------
def make_batch(cfg, step, device):
    """(documents: list of int64 [n_i] tensors, targets: list of int64 [n_i], -100 where unscored)."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    docs, tgts, total = [], [], 0
    while True:
        n = int(torch.randint(cfg.min_pairs, cfg.max_pairs + 1, (1,), generator=g))
        length = 2 * n + 1 + 2 * cfg.queries
        if total + length > cfg.tokens:
            break
        keys = torch.randperm(cfg.keys, generator=g)[:n]
        vals = cfg.keys + torch.randint(0, cfg.values, (n,), generator=g)
        ask = torch.randint(0, n, (cfg.queries,), generator=g)
        doc = torch.cat([torch.stack([keys, vals], 1).flatten(), torch.tensor([cfg.sep]),
                         torch.stack([keys[ask], vals[ask]], 1).flatten()])
        tgt = torch.full_like(doc, -100)
        qpos = 2 * n + 1 + 2 * torch.arange(cfg.queries)   # each query predicts the answer after it
        tgt[qpos] = vals[ask]
        docs.append(doc.to(device))
        tgts.append(tgt.to(device))
        total += length
    return docs, tgts


def alibi_slopes(heads):
    """ALiBi's geometric slopes 2^(-8(h+1)/H) (H a power of two, as the paper's)."""
    return [2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)]


def dense_bias(lens, slopes, device, dtype):
    """[1, H, T, T] additive bias for SDPA: -inf outside each document's causal triangle, ALiBi inside."""
    doc = torch.cat([torch.full((n,), i, device=device) for i, n in enumerate(lens)])
    idx = torch.arange(len(doc), device=device)
    visible = (doc[:, None] == doc[None, :]) & (idx[None, :] <= idx[:, None])
    dist = (idx[:, None] - idx[None, :]).abs().to(torch.float32)
    s = torch.tensor(slopes, device=device, dtype=torch.float32)[:, None, None]
    bias = (-s * dist).masked_fill(~visible, -math.inf)
    return bias[None].to(dtype)


# ---- model ----------------------------------------------------------------------------------------
class UnfusedSwiGLU(nn.Module):
    """xFormers' SwiGLU in plain torch: w3(silu(w1 x + b1) * (w2 x + b2))."""

    def __init__(self, in_features, hidden_features, out_features=None, bias=True):
        super().__init__()
        out_features = out_features or in_features
        self.w1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.w2 = nn.Linear(in_features, hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, out_features, bias=bias)

    def forward(self, x):
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


def make_swiglu(cfg):
    if not cfg.fused_swiglu:
        return UnfusedSwiGLU(cfg.dim, cfg.hidden)
    from jitattn import ops

    if not hasattr(ops, "SwiGLU"):
        raise SystemExit("jitattn.ops.SwiGLU is not available in this jitattn: run with --unfused-swiglu")
    return ops.SwiGLU(cfg.dim, cfg.hidden, None, True, _pack_weights=True)


def load_swiglu(fused, unfused):
    """Copies an UnfusedSwiGLU's weights into jitattn.ops.SwiGLU (xFormers' layouts: a packed
    ``w12`` Linear [2·hidden, in] with w1 on top, or separate ``w1``/``w2``; then ``w3``)."""
    with torch.no_grad():
        if hasattr(fused, "w12"):
            h = unfused.w1.weight.shape[0]
            fused.w12.weight[:h].copy_(unfused.w1.weight)
            fused.w12.weight[h:].copy_(unfused.w2.weight)
            if fused.w12.bias is not None:
                fused.w12.bias[:h].copy_(unfused.w1.bias)
                fused.w12.bias[h:].copy_(unfused.w2.bias)
        else:
            fused.w1.load_state_dict(unfused.w1.state_dict())
            fused.w2.load_state_dict(unfused.w2.state_dict())
        fused.w3.load_state_dict(unfused.w3.state_dict())


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.dim % cfg.heads == 0 and cfg.heads % cfg.kv_groups == 0
        self.cfg, self.hd = cfg, cfg.dim // cfg.heads
        self.wq = nn.Linear(cfg.dim, cfg.dim)
        self.wkv = nn.Linear(cfg.dim, 2 * cfg.kv_groups * self.hd)
        self.wo = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x, bias):
        cfg, hd = self.cfg, self.hd
        B, T, _ = x.shape
        G, Hg = cfg.kv_groups, cfg.heads // cfg.kv_groups
        q = self.wq(x).view(B, T, G, Hg, hd)
        k, v = self.wkv(x).view(B, T, 2, G, 1, hd).unbind(2)
        if cfg.attention == "jitattn":
            from jitattn import ops

            # BMGHK: key/value expanded over the Hg heads of their group by stride 0 (no copies)
            y = ops.memory_efficient_attention(q, k.expand(B, T, G, Hg, hd), v.expand(B, T, G, Hg, hd), bias)
        else:
            # heads g-major (g·Hg + h), as the 5-D layout flattens them; k/v repeated over each group's heads
            qh = q.reshape(B, T, G * Hg, hd).transpose(1, 2)
            kh, vh = (t.expand(B, T, G, Hg, hd).reshape(B, T, G * Hg, hd).transpose(1, 2) for t in (k, v))
            y = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias.to(qh.dtype)).transpose(1, 2)
        return self.wo(y.reshape(B, T, cfg.dim))


class Block(nn.Module):
    """Pre-norm: x + attn(norm(x)), then + swiglu(norm(x))."""

    def __init__(self, cfg):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg)
        self.mlp = make_swiglu(cfg)

    def forward(self, x, bias):
        x = x + self.attn(self.n1(x), bias)
        return x + self.mlp(self.n2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.dim)   # no position embedding: ALiBi gives the positions
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.layers)])
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab, bias=False)

    def bias(self, docs, device):
        """(packed tokens [1, T], the attention bias for the configured backend)."""
        cfg = self.cfg
        slopes = alibi_slopes(cfg.heads)
        if cfg.attention == "jitattn":
            from jitattn.ops.fmha import attn_bias as ab

            mask, tokens = ab.BlockDiagonalCausalMask.from_tensor_list([d[None] for d in docs])
            return tokens, mask.add_alibi(slopes)
        tokens = torch.cat(docs)[None]
        return tokens, dense_bias([len(d) for d in docs], slopes, device, torch.float32)

    def forward(self, tokens, bias):
        h = self.tok(tokens)
        for blk in self.blocks:
            h = blk(h, bias)
        return self.head(self.norm(h)).float()


def copy_weights(dst, src):
    """src's weights into dst (same config but the SwiGLU kind): the same starting point."""
    for bd, bs in zip(dst.blocks, src.blocks):
        for name in ("n1", "n2", "attn"):
            getattr(bd, name).load_state_dict(getattr(bs, name).state_dict())
        if isinstance(bd.mlp, UnfusedSwiGLU) == isinstance(bs.mlp, UnfusedSwiGLU):
            bd.mlp.load_state_dict(bs.mlp.state_dict())
        else:
            load_swiglu(bd.mlp, bs.mlp)
    for name in ("tok", "norm", "head"):
        getattr(dst, name).load_state_dict(getattr(src, name).state_dict())


# ---- training -------------------------------------------------------------------------------------
def smooth(xs, w):
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= w:
            acc -= xs[i - w]
        out.append(acc / min(i + 1, w))
    return out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(cfg, device=None, init_from=None, verbose=True):
    """Trains a GPT of ``cfg``; returns {"losses", "accs", "median_step_ms", "step_at_target", ...}.
    ``init_from``: a model whose weights the new one starts from (``--compare``)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    model = GPT(cfg).to(device)
    if init_from is not None:
        copy_weights(model, init_from)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)))
    amp_dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "none": None}[cfg.amp]
    scaler = torch.amp.GradScaler(device.type) if amp_dtype is torch.float16 else None
    label = f"{cfg.attention}+{'fused' if cfg.fused_swiglu else 'unfused'}-swiglu"
    losses, accs, times, step_at_target = [], [], [], None
    for step in range(cfg.steps):
        docs, tgts = make_batch(cfg, step, device)
        _sync(device)
        t0 = time.perf_counter()
        tokens, bias = model.bias(docs, device)
        target = torch.cat(tgts)[None]
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(tokens, bias)
        loss = F.cross_entropy(logits.view(-1, cfg.vocab), target.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        sched.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        scored = target != -100
        acc = (logits.argmax(-1)[scored] == target[scored]).float().mean().item()
        losses.append(loss.item())
        accs.append(acc)
        sacc = smooth(accs[-cfg.smooth:], cfg.smooth)[-1]
        if step_at_target is None and len(accs) >= cfg.smooth and sacc >= cfg.target_acc:
            step_at_target = step
        if verbose and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            print(f"{label} step {step}: loss {losses[-1]:.4f} acc {acc:.4f} (smoothed {sacc:.4f}) "
                  f"{1e3 * times[-1]:.1f} ms", flush=True)
    warm = times[min(len(times) - 1, 10):]   # the first steps compile kernels
    return {"label": label, "losses": losses, "accs": accs, "model": model,
            "median_step_ms": 1e3 * sorted(warm)[len(warm) // 2], "total_s": sum(times),
            "step_at_target": step_at_target, "final_smoothed_acc": smooth(accs, cfg.smooth)[-1],
            "final_smoothed_loss": smooth(losses, cfg.smooth)[-1]}


PLOT_SCRIPT = '''"""Draws the loss/accuracy curves of a gpt_block.json: python3 plot_gpt_block.py gpt_block.json OUT.png"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
r = json.load(open(sys.argv[1]))
fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
for run in r["runs"]:
    a1.plot(run["losses"], lw=1, label=run["label"]); a2.plot(run["accs"], lw=1, label=run["label"])
a1.set_yscale("log"); a1.set_ylabel("loss (answer positions)"); a2.set_ylabel("accuracy (answer positions)")
for a in (a1, a2):
    a.set_xlabel("step"); a.grid(alpha=.3); a.legend()
a2.axhline(0.99, color="k", lw=.5, ls="--")
fig.suptitle(f"GPT block, associative recall over packed documents ({r['amp']} autocast): {r['device']}, {r['date']}")
fig.tight_layout(); fig.savefig(sys.argv[2], dpi=120)
print("wrote", sys.argv[2])
'''


def write_outputs(out_dir, res):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "gpt_block.json")
    with open(path, "w") as f:
        json.dump(res, f)
    script = os.path.join(out_dir, "plot_gpt_block.py")
    with open(script, "w") as f:
        f.write(PLOT_SCRIPT)
    print("wrote", path)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"no matplotlib: draw it with python3 {script} {path} {os.path.join(out_dir, 'gpt_block.png')}")
        return
    saved = sys.argv
    try:
        sys.argv = [script, path, os.path.join(out_dir, "gpt_block.png")]
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = saved


def parse_args(argv=None):
    d = Config()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attention", choices=("jitattn", "sdpa"), default=d.attention)
    ap.add_argument("--unfused-swiglu", action="store_true", help="plain-torch SwiGLU instead of jitattn.ops.SwiGLU")
    ap.add_argument("--amp", choices=("bf16", "f16", "none"), default=d.amp)
    ap.add_argument("--compare", action="store_true", help="jitattn+fused SwiGLU vs SDPA+unfused SwiGLU, same start")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--out", default="gpt_block_out")
    for f in dataclasses.fields(Config):
        if f.name in ("attention", "fused_swiglu", "amp"):
            continue
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    a = ap.parse_args(argv)
    cfg = Config(**{f.name: getattr(a, f.name) for f in dataclasses.fields(Config)
                    if f.name not in ("attention", "fused_swiglu", "amp")},
                 attention=a.attention, fused_swiglu=not a.unfused_swiglu, amp=a.amp)
    return a, cfg


def main(argv=None):
    a, cfg = parse_args(argv)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    res = {"device": card, "date": datetime.date.today().isoformat(), "torch": torch.__version__, "amp": cfg.amp,
           "config": dataclasses.asdict(cfg), "runs": []}
    if a.compare:
        ref_cfg = dataclasses.replace(cfg, attention="sdpa", fused_swiglu=False)
        ref = train(ref_cfg, device)
        torch.manual_seed(cfg.seed)
        init = GPT(ref_cfg).to(device)   # the SDPA model's initial weights (same seed, same init order)
        got = train(dataclasses.replace(cfg, attention="jitattn", fused_swiglu=True), device, init_from=init)
        runs = [got, ref]
        sj, ss = smooth(got["losses"], cfg.smooth), smooth(ref["losses"], cfg.smooth)
        res["max_abs_diff_smoothed_loss"] = max(abs(x - y) for x, y in zip(sj, ss))
        res["max_abs_diff_smoothed_acc"] = max(abs(x - y) for x, y in zip(smooth(got["accs"], cfg.smooth),
                                                                          smooth(ref["accs"], cfg.smooth)))
    else:
        runs = [train(cfg, device)]
    for r in runs:
        r.pop("model")
        res["runs"].append(r)
        print(f"{r['label']}: final smoothed loss {r['final_smoothed_loss']:.4f}, acc {r['final_smoothed_acc']:.4f}, "
              f"{cfg.target_acc:.0%} at step {r['step_at_target']}, median step {r['median_step_ms']:.2f} ms, "
              f"total {r['total_s']:.1f} s")
    if a.compare:
        print(f"max |smoothed loss difference| {res['max_abs_diff_smoothed_loss']:.4g} "
              f"(acc {res['max_abs_diff_smoothed_acc']:.4g}); median step ms: "
              + ", ".join(f"{r['label']} {r['median_step_ms']:.2f}" for r in runs))
    write_outputs(a.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
