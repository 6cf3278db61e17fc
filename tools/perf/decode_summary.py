"""decode_summary.py DIR — one line per decode shape: jitattn's TB/s per layout as a ratio of
cuDNN's, from `jitattn bench --decode --json DIR/decode_jitattn.B<b>.json` and
`.gpu/anchors.py --decode --out DIR/anchors_decode.B<b>.json` run in the same call (h100_check.sh
decode). Also paged / dense (issue 11: paged within 5% of dense)."""
import glob, json, os, sys

out = sys.argv[1] if len(sys.argv) > 1 else "."
for jf in sorted(glob.glob(os.path.join(out, "decode_jitattn.B*.json"))):
    b = jf.rsplit(".B", 1)[1][: -len(".json")]
    af = os.path.join(out, f"anchors_decode.B{b}.json")
    if not os.path.exists(af):
        print(f"decode summary B={b}: no {af}")
        continue
    ours, ref = json.load(open(jf))["rows"], json.load(open(af))
    def anchor(name, n):
        return next((r["TBps"] for r in ref if r.get("sys") == name and r.get("N") == n and "TBps" in r), None)
    for n in sorted({r["N"] for r in ours}):
        cudnn, fa2 = anchor("cudnn", n), anchor("flash", n)
        mine = {r["layout"]: r["TBps"] for r in ours if r["N"] == n}
        parts = [f"{l} {t:.2f}" + (f" ({t / cudnn:.2f}x cuDNN)" if cudnn else "") for l, t in mine.items()]
        if "paged" in mine and "dense" in mine:
            parts.append(f"paged/dense {mine['paged'] / mine['dense']:.3f}")
        refs = f"cuDNN {cudnn:.2f}" if cudnn else "cuDNN n/a"
        refs += f", FA2 {fa2:.2f}" if fa2 else ""
        print(f"decode summary B={b} N={n}: jitattn " + ", ".join(parts) + f"; {refs} TB/s")
