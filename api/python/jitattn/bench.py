"""``python -m jitattn.bench``: every registered attention part (``jitattn.registered_attentions()``)
timed over sequence lengths, forward and forward + backward, with its peak memory, as xFormers'
``runtime_vs_attention`` / ``memory_vs_attention`` benchmarks.

    python -m jitattn.bench [--seq-lens 512,1024,...] [-b 8] [--heads 8] [--head-dim 64]
                            [--dtype bf16] [-k NAME[,NAME]] [--import FILE.py ...] [--out DIR] [--dry-run]

Each part is built from its ``example_config(seq_len, heads)`` (what the registry-wide tests
build) and called on random q, k, v in the layout it takes (``[B*H, S, hd]``, or ``[B, H, S, hd]``
for a part that sets ``requires_head_dimension``). Times are the median of CUDA-event timings
after warm-up (the first call, which compiles a never-seen kernel, is not timed); peak memory is
``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()`` over one call, inputs
included. A case that fails (out of memory, a part that refuses the length) is reported with its
error and left out of the plots.

Prints a table; writes DIR/bench.json and DIR/runtime_vs_attention.png, DIR/memory_vs_attention.png
(matplotlib), or, without matplotlib, DIR/plot_bench.py that draws them from the JSON elsewhere.
Each plot is titled with the device's name and the date. ``--import`` registers user parts from
files first (e.g. tests/python/parts/*.py). ``--dry-run`` lists the cases and needs no GPU.
"""
import argparse
import datetime
import importlib.util
import json
import os
import runpy
import sys

DTYPES = ("bf16", "f16", "f32")
DEFAULT_SEQ_LENS = (512, 1024, 2048, 4096, 8192)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m jitattn.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lens", default=",".join(map(str, DEFAULT_SEQ_LENS)),
                    help="comma-separated sequence lengths (default %(default)s)")
    ap.add_argument("-b", "--batch", type=int, default=8, help="batch size B (default %(default)s)")
    ap.add_argument("--heads", type=int, default=8, help="heads H (default %(default)s)")
    ap.add_argument("--head-dim", type=int, default=64, help="head dim hd (default %(default)s)")
    ap.add_argument("--dtype", choices=DTYPES, default="bf16", help="input dtype (default %(default)s)")
    ap.add_argument("-k", "--parts", default="",
                    help="comma-separated substrings; only parts whose name contains one of them (default: all)")
    ap.add_argument("--import", dest="imports", action="append", default=[], metavar="FILE.py",
                    help="a Python file that registers parts (repeatable)")
    ap.add_argument("--mode", choices=("fwd", "fwd_bwd", "both"), default="both", help="what to time (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per case (default %(default)s)")
    ap.add_argument("--iters", type=int, default=10, help="timed calls per case, median reported (default %(default)s)")
    ap.add_argument("--out", default="bench_out", help="output folder (default %(default)s)")
    ap.add_argument("--dry-run", action="store_true", help="list the cases and exit (no GPU needed)")
    a = ap.parse_args(argv)
    try:
        a.seq_lens = [int(s) for s in a.seq_lens.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seq-lens {a.seq_lens!r}: expected comma-separated integers")
    if not a.seq_lens or min(a.seq_lens) <= 0:
        ap.error("--seq-lens: at least one positive length")
    for n in ("batch", "heads", "head_dim", "iters"):
        if getattr(a, n) <= 0:
            ap.error(f"--{n.replace('_', '-')} must be positive")
    a.filters = [f.strip() for f in a.parts.split(",") if f.strip()]
    return a


def import_parts(files):
    """Runs each file (it registers parts with jitattn.register_attention)."""
    for i, path in enumerate(files):
        spec = importlib.util.spec_from_file_location(f"jitattn_bench_parts_{i}", path)
        if spec is None:
            raise SystemExit(f"--import {path}: not a Python file")
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def selected_parts(filters):
    import jitattn

    names = jitattn.registered_attentions()
    return [n for n in names if not filters or any(f in n for f in filters)]


def cases(args):
    """(part name, seq_len, mode) for every case the run times, in order."""
    modes = ("fwd", "fwd_bwd") if args.mode == "both" else (args.mode,)
    return [(name, s, m) for name in selected_parts(args.filters) for s in args.seq_lens for m in modes]


def _inputs(part, args, seq_len, dtype, requires_grad):
    import torch

    B, H, D = args.batch, args.heads, args.head_dim
    shape = (B, H, seq_len, D) if part.requires_head_dimension else (B * H, seq_len, D)
    return [torch.randn(shape, device="cuda", dtype=dtype).requires_grad_(requires_grad) for _ in range(3)]


def run_case(name, seq_len, mode, args):
    """{"ms": median, "peak_mib": ..., } or {"error": ...} for one case."""
    import torch

    import jitattn

    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    torch.cuda.empty_cache()
    try:
        cls = jitattn.parts.attention_class(name)
        part = jitattn.build_attention(cls.example_config(seq_len, args.heads)).to("cuda", dtype)
        bwd = mode == "fwd_bwd"
        part.train(bwd)
        q, k, v = _inputs(part, args, seq_len, dtype, bwd)
        grad = torch.randn(q.shape[:-1] + (v.shape[-1],), device="cuda", dtype=dtype) if bwd else None

        def call():
            if bwd:
                out = part(q, k, v)
                out.backward(grad)
                for x in (q, k, v, *part.parameters()):
                    x.grad = None
            else:
                with torch.no_grad():
                    part(q, k, v)

        for _ in range(max(1, args.warmup)):   # the first call compiles a never-seen kernel
            call()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        call()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        times = []
        for _ in range(args.iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        times.sort()
        return {"ms": times[len(times) // 2], "min_ms": times[0], "peak_mib": peak / 2 ** 20}
    except Exception as e:  # reported in the table and the JSON, left out of the plots
        if "out of memory" in str(e).lower():
            torch.cuda.empty_cache()
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}


def table(results, seq_lens, mode, key, fmt):
    """One text table: a row per part, a column per length."""
    names = sorted({r["part"] for r in results if r["mode"] == mode})
    cells = {(r["part"], r["seq_len"]): r for r in results if r["mode"] == mode}
    width = max([len("part")] + [len(n) for n in names])
    lines = ["  ".join([f"{'part':<{width}}"] + [f"{s:>10}" for s in seq_lens])]
    for n in names:
        row = [f"{n:<{width}}"]
        for s in seq_lens:
            r = cells.get((n, s), {})
            row.append(f"{fmt(r[key]):>10}" if key in r else f"{'error' if 'error' in r else '-':>10}")
        lines.append("  ".join(row))
    return "\n".join(lines)


PLOT_SCRIPT = '''"""Draws runtime_vs_attention.png and memory_vs_attention.png from a jitattn.bench JSON:
python3 plot_bench.py bench.json OUT_DIR"""
import json, os, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

r = json.load(open(sys.argv[1]))
out = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(sys.argv[1]))
c = r["config"]
shape = f"B={c['batch']} H={c['heads']} hd={c['head_dim']} {c['dtype']}"
for what, key, ylabel in (("runtime", "ms", "time (ms, median)"), ("memory", "peak_mib", "peak memory (MiB)")):
    modes = sorted({x["mode"] for x in r["results"]})
    fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 4.5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        for part in sorted({x["part"] for x in r["results"]}):
            pts = sorted((x["seq_len"], x[key]) for x in r["results"] if x["part"] == part and x["mode"] == mode and key in x)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=part)
        ax.set_xscale("log", base=2); ax.set_yscale("log"); ax.grid(alpha=.3)
        ax.set_xlabel("sequence length"); ax.set_ylabel(ylabel)
        ax.set_title({"fwd": "forward", "fwd_bwd": "forward + backward"}[mode])
        ax.legend(fontsize=8)
    fig.suptitle(f"{what} vs attention: {r['device']}, {r['date']} ({shape})")
    fig.tight_layout()
    path = os.path.join(out, f"{what}_vs_attention.png")
    fig.savefig(path, dpi=120)
    print("wrote", path)
'''


def write_outputs(res, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "bench.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    script = os.path.join(out_dir, "plot_bench.py")
    with open(script, "w") as f:
        f.write(PLOT_SCRIPT)
    print("wrote", path)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"no matplotlib: draw the plots with python3 {script} {path} {out_dir}")
        return
    saved = sys.argv
    try:
        sys.argv = [script, path, out_dir]
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = saved


def main(argv=None):
    args = parse_args(argv)
    import_parts(args.imports)
    todo = cases(args)
    if args.dry_run:
        for name, s, m in todo:
            print(f"{name}\tseq_len={s}\t{m}")
        print(f"{len(todo)} cases: B={args.batch} H={args.heads} hd={args.head_dim} {args.dtype}")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("jitattn.bench: no CUDA GPU (torch.cuda.is_available() is False); --dry-run lists the cases", file=sys.stderr)
        return 2
    results = []
    for name, s, m in todo:
        r = run_case(name, s, m, args)
        results.append({"part": name, "seq_len": s, "mode": m, **r})
        shown = f"{r['ms']:.3f} ms, {r['peak_mib']:.0f} MiB" if "ms" in r else r["error"]
        print(f"  {name:<20} S={s:<6} {m:<8} {shown}", flush=True)
    res = {"device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
           "torch": torch.__version__, "config": {"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim,
                                                 "dtype": args.dtype, "warmup": args.warmup, "iters": args.iters},
           "results": results}
    modes = ("fwd", "fwd_bwd") if args.mode == "both" else (args.mode,)
    for m in modes:
        print(f"\n{m}: median ms ({res['device']}, B={args.batch} H={args.heads} hd={args.head_dim} {args.dtype})")
        print(table(results, args.seq_lens, m, "ms", lambda x: f"{x:.3f}"))
        print(f"\n{m}: peak MiB")
        print(table(results, args.seq_lens, m, "peak_mib", lambda x: f"{x:.0f}"))
    errors = [r for r in results if "error" in r]
    for r in errors:
        print(f"error: {r['part']} S={r['seq_len']} {r['mode']}: {r['error']}")
    write_outputs(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
