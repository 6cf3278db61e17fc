#!/usr/bin/env python3
"""Plots of record: TFLOP/s of the forward and the backward against sequence length, jitattn next
to PyTorch's backends, from one call's measurements (docs/performance.md).

  python3 tools/perf/plot_record.py --bench bench.json --anchors anchors.json \
      [--memory memory.json] [--masks masks.json] --card "NVIDIA H200" --date 2026-12-01 --out docs/plots/record

Inputs: `jitattn bench --bwd --json` (rows: op fwd|bwd, K, M, causal, tflops) and
`.gpu/anchors.py --out` (rows: sys, K, M, causal, fwd_tflops, bwd_tflops) from the same call;
optionally tools/perf/memory_record.py's JSON (rows: sys, K, M, causal, peak_mib) and
tools/perf/mask_record.py's (rows: sys, mask, M, tflops, fwd_bwd_tflops). Writes OUT_tflops.png
(one panel per head dim and causal flag; solid forward, dashed backward), with --memory
OUT_memory.png, with --masks OUT_masks.png (one panel per mask kind). Each title names the card
and the date.
"""
import argparse
import json
from collections import defaultdict

SYSTEMS = ["jitattn", "cudnn", "flash", "flex", "efficient", "math"]
LABELS = {"jitattn": "jitattn", "cudnn": "cuDNN", "flash": "FlashAttention-2", "flex": "FlexAttention",
          "efficient": "xFormers-style (SDPA efficient)", "math": "PyTorch math"}


def load_series(bench, anchors):
    """{(K, causal): {(sys, op): [(M, tflops)]}}"""
    series = defaultdict(lambda: defaultdict(list))
    for r in bench["rows"]:
        if r.get("op") in ("fwd", "bwd") and not r.get("dropout"):
            series[(r["K"], bool(r["causal"]))][("jitattn", r["op"])].append((r["M"], r["tflops"]))
    for r in anchors:
        if "error" in r or "M" not in r or r.get("decode") or r.get("mask"):
            continue
        for op in ("fwd", "bwd"):
            if r.get(op + "_tflops"):
                series[(r["K"], bool(r["causal"]))][(r["sys"], op)].append((r["M"], r[op + "_tflops"]))
    return series


def panels(plt, keys):
    ks = sorted({k for k, _ in keys})
    fig, axes = plt.subplots(len(ks), 2, figsize=(11, 3.6 * len(ks)), squeeze=False)
    return fig, {(k, c): axes[i][int(c)] for i, k in enumerate(ks) for c in (False, True)}


def style_axis(ax, ylabel, title):
    """Every panel: sequence length on a log2 axis, its label and title, a light grid."""
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length M")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def plot_tflops(plt, series, title, path):
    fig, ax_of = panels(plt, series.keys())
    for (k, causal), ax in ax_of.items():
        lines = series.get((k, causal), {})
        for i, sys in enumerate(SYSTEMS):
            for op, style in (("fwd", "-"), ("bwd", "--")):
                pts = sorted(lines.get((sys, op), []))
                if pts:
                    ax.plot([m for m, _ in pts], [t for _, t in pts], style, marker="o", color=f"C{i}",
                            label=f"{LABELS[sys]} {op}")
        style_axis(ax, "TFLOP/s", f"head dim {k}, {'causal' if causal else 'no mask'}")
    finish(fig, ax_of, title, path)


def finish(fig, ax_of, title, path):
    """One legend for the figure (every panel draws the same systems), below the panels."""
    handles, labels = {}, []
    for ax in ax_of.values():
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in handles:
                handles[l] = h
                labels.append(l)
    fig.suptitle(title)
    fig.legend([handles[l] for l in labels], labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * ((len(labels) + 3) // 4), 1, 1))
    fig.savefig(path, dpi=110)
    print("wrote", path)


def plot_memory(plt, rows, title, path):
    series = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if "error" not in r:
            series[(r["K"], bool(r["causal"]))][r["sys"]].append((r["M"], r["peak_mib"]))
    fig, ax_of = panels(plt, series.keys())
    for (k, causal), ax in ax_of.items():
        for i, sys in enumerate(SYSTEMS):
            pts = sorted(series.get((k, causal), {}).get(sys, []))
            if pts:
                ax.plot([m for m, _ in pts], [x for _, x in pts], marker="o", color=f"C{i}", label=LABELS[sys])
        ax.set_yscale("log")
        style_axis(ax, "peak memory of forward + backward (MiB)", f"head dim {k}, {'causal' if causal else 'no mask'}")
    finish(fig, ax_of, title, path)


MASK_TITLES = {"causal": "causal", "docs16": "16 documents per sequence, causal within each",
               "sparse10": "BlockSparseMask, block 128, 10% of the blocks"}


def plot_masks(plt, doc, title, path):
    """tools/perf/mask_record.py's rows: a panel per mask kind, jitattn's built-in bias and Flex
    with the same mask_mod; solid forward, dashed forward + backward."""
    series = defaultdict(lambda: defaultdict(list))
    for r in doc["rows"]:
        if "error" not in r:
            series[r["mask"]][(r["sys"], "fwd")].append((r["M"], r["tflops"]))
            series[r["mask"]][(r["sys"], "fwd+bwd")].append((r["M"], r["fwd_bwd_tflops"]))
    kinds = list(dict.fromkeys(r["mask"] for r in doc["rows"]))
    cols = 2
    fig, axes = plt.subplots((len(kinds) + cols - 1) // cols, cols, figsize=(11, 3.6 * ((len(kinds) + 1) // 2)),
                             squeeze=False)
    ax_of = {kind: axes[i // cols][i % cols] for i, kind in enumerate(kinds)}
    for kind, ax in ax_of.items():
        for i, sys in enumerate(SYSTEMS):
            for op, style in (("fwd", "-"), ("fwd+bwd", "--")):
                pts = sorted(series[kind].get((sys, op), []))
                if pts:
                    ax.plot([m for m, _ in pts], [t for _, t in pts], style, marker="o", color=f"C{i}",
                            label=f"{LABELS[sys]} {op}")
        style_axis(ax, "TFLOP/s (visible elements)",
              MASK_TITLES.get(kind, f"causal window of {kind[6:]} keys" if kind.startswith("window") else kind))
    for j in range(len(kinds), axes.shape[0] * cols):
        axes[j // cols][j % cols].axis("off")
    finish(fig, ax_of, title, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", required=True)
    ap.add_argument("--anchors", required=True)
    ap.add_argument("--memory")
    ap.add_argument("--masks", help="tools/perf/mask_record.py's JSON: also OUT_masks.png")
    ap.add_argument("--card", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--out", required=True, help="path prefix of the PNGs")
    a = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bench = json.load(open(a.bench))
    anchors = json.load(open(a.anchors))
    dtype = bench.get("dtype", "bf16")
    series = load_series(bench, anchors)
    if series:
        plot_tflops(plt, series,
                    f"Attention forward (solid) and backward (dashed), {dtype}, {a.card}, {a.date}",
                    a.out + "_tflops.png")
    if a.masks:
        md = json.load(open(a.masks))
        plot_masks(plt, md, f"Masks, head dim {md['K']}: forward (solid) and forward + backward (dashed), "
                   f"{md.get('dtype', 'bf16')}, {a.card}, {a.date}", a.out + "_masks.png")
    if a.memory:
        plot_memory(plt, json.load(open(a.memory)), f"Peak memory, {dtype}, {a.card}, {a.date}", a.out + "_memory.png")


if __name__ == "__main__":
    main()
