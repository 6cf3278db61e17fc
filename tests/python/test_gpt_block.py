"""examples/gpt_block.py on the CPU: the module imports, its batches are packed documents whose
answers are the values paired with the queried keys, its dense SDPA bias is the per-document
causal mask plus ALiBi, and a tiny SDPA + unfused-SwiGLU model's loss falls in a short run
(the jitattn and fused-SwiGLU paths need a GPU: see docs/python.md "The GPT block")."""
import importlib.util
import json
import math
import os

import pytest
from conftest import ROOT, requires_torch

pytestmark = requires_torch
torch = pytest.importorskip("torch")


def _module():
    spec = importlib.util.spec_from_file_location("gpt_block", os.path.join(ROOT, "examples", "gpt_block.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = dict(dim=32, layers=2, heads=2, kv_groups=1, hidden=64, tokens=256, keys=8, values=8, min_pairs=2,
            max_pairs=4, queries=4, steps=40, lr=3e-3, warmup=5, attention="sdpa", fused_swiglu=False, amp="none",
            log_every=1000, smooth=5)


def test_batches_are_recall_documents():
    gb = _module()
    cfg = gb.Config(**TINY)
    docs, tgts = gb.make_batch(cfg, 0, "cpu")
    assert sum(len(d) for d in docs) <= cfg.tokens and len(docs) > 1
    for d, t in zip(docs, tgts):
        n = (len(d) - 1 - 2 * cfg.queries) // 2
        pairs = {int(d[2 * i]): int(d[2 * i + 1]) for i in range(n)}
        assert int(d[2 * n]) == cfg.sep and len(pairs) == n   # distinct keys
        scored = (t != -100).nonzero().flatten().tolist()
        assert len(scored) == cfg.queries
        for p in scored:
            assert int(t[p]) == pairs[int(d[p])] == int(d[p + 1])
    again, _ = gb.make_batch(cfg, 0, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(docs, again))   # the same batches for the same step


def test_dense_bias_is_document_causal_with_alibi():
    gb = _module()
    bias = gb.dense_bias([2, 3], [0.5, 0.25], "cpu", torch.float32)
    assert bias.shape == (1, 2, 5, 5)
    assert bias[0, 0, 1, 0] == -0.5 and bias[0, 1, 4, 2] == -0.5 and bias[0, 0, 3, 3] == 0
    assert math.isinf(bias[0, 0, 0, 1]) and math.isinf(bias[0, 0, 2, 1])   # causal; another document


def test_swiglu_reference_and_weight_copy():
    gb = _module()
    m = gb.UnfusedSwiGLU(8, 16)
    x = torch.randn(3, 8)
    want = m.w3(torch.nn.functional.silu(x @ m.w1.weight.T + m.w1.bias) * (x @ m.w2.weight.T + m.w2.bias))
    torch.testing.assert_close(m(x), want)

    class Packed(torch.nn.Module):   # xFormers' packed layout, as jitattn.ops.SwiGLU(_pack_weights=True)
        def __init__(self):
            super().__init__()
            self.w12, self.w3 = torch.nn.Linear(8, 32), torch.nn.Linear(16, 8)

        def forward(self, x):
            a, b = self.w12(x).chunk(2, dim=-1)
            return self.w3(torch.nn.functional.silu(a) * b)

    p = Packed()
    gb.load_swiglu(p, m)
    torch.testing.assert_close(p(x), m(x))


def test_tiny_model_learns_on_cpu(tmp_path):
    gb = _module()
    r = gb.train(gb.Config(**TINY), "cpu", verbose=False)
    first, last = sum(r["losses"][:5]) / 5, sum(r["losses"][-5:]) / 5
    assert last < first - 0.1, (first, last)
    assert len(r["accs"]) == TINY["steps"] and r["median_step_ms"] > 0


def test_script_writes_curves(tmp_path):
    gb = _module()
    args = ["--attention", "sdpa", "--unfused-swiglu", "--amp", "bf16", "--device", "cpu", "--out", str(tmp_path)]
    for k, v in TINY.items():
        if k not in ("attention", "fused_swiglu", "amp"):
            args += ["--" + k.replace("_", "-"), str(v)]
    args[args.index("--steps") + 1] = "6"
    assert gb.main(args) == 0
    res = json.load(open(tmp_path / "gpt_block.json"))
    assert res["device"] == "cpu" and res["date"] and len(res["runs"][0]["losses"]) == 6
    assert "r['device']" in (tmp_path / "plot_gpt_block.py").read_text()
