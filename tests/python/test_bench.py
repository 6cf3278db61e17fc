"""``python -m jitattn.bench`` without a GPU: --help, the argument parsing, the cases it would time
(every registered part, -k filters, --import of user parts), the table and the outputs it writes.
No timing is run or checked here (tests/python/test_parts_gpu.py checks the parts' numbers)."""
import json
import os
import subprocess
import sys

import pytest
from conftest import requires_torch

from jitattn import bench

PARTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parts")


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))


def test_help_without_a_gpu():
    out = subprocess.run([sys.executable, "-m", "jitattn.bench", "--help"], capture_output=True, text=True,
                         env=_env(), check=True)
    for flag in ("--seq-lens", "--batch", "--heads", "--head-dim", "--dtype", "-k", "--import", "--out", "--dry-run"):
        assert flag in out.stdout


def test_arguments():
    a = bench.parse_args([])
    assert a.seq_lens == [512, 1024, 2048, 4096, 8192] and (a.batch, a.heads, a.head_dim, a.dtype) == (8, 8, 64, "bf16")
    a = bench.parse_args(["--seq-lens", "128,256", "-b", "2", "--heads", "4", "--head-dim", "128", "--dtype", "f16",
                          "-k", "alibi,local", "--mode", "fwd"])
    assert (a.seq_lens, a.batch, a.heads, a.head_dim, a.dtype, a.filters, a.mode) == (
        [128, 256], 2, 4, 128, "f16", ["alibi", "local"], "fwd")
    for bad in (["--seq-lens", "12x"], ["--seq-lens", "0"], ["--dtype", "f64"], ["-b", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_cases_cover_the_registry():
    import jitattn

    todo = bench.cases(bench.parse_args(["--seq-lens", "512,1024"]))
    assert {n for n, _, _ in todo} == set(jitattn.registered_attentions())
    assert len(todo) == len(jitattn.registered_attentions()) * 2 * 2
    todo = bench.cases(bench.parse_args(["-k", "nystrom", "--seq-lens", "512", "--mode", "fwd_bwd"]))
    assert todo == [("nystrom", 512, "fwd_bwd")]


@requires_torch
def test_dry_run_imports_user_parts():
    out = subprocess.run([sys.executable, "-m", "jitattn.bench", "--dry-run", "--seq-lens", "256", "-k", "softcap,variant",
                          "--import", os.path.join(PARTS_DIR, "softcap.py")],
                         capture_output=True, text=True, env=_env(), check=True)
    lines = out.stdout.splitlines()
    assert "softcap\tseq_len=256\tfwd" in lines and "variant\tseq_len=256\tfwd_bwd" in lines
    assert lines[-1].startswith("4 cases: B=8 H=8 hd=64 bf16")


@requires_torch
def test_every_case_builds_at_the_lengths():
    # What run_case builds (the config at each length), on the CPU: construction only.
    import jitattn

    for name, s, _ in bench.cases(bench.parse_args(["--seq-lens", "512,2048", "--mode", "fwd"])):
        cls = jitattn.parts.attention_class(name)
        assert jitattn.build_attention(cls.example_config(s, 8)).part_name == name


def test_table_and_outputs(tmp_path):
    results = [{"part": "alibi", "seq_len": 512, "mode": "fwd", "ms": 0.5, "peak_mib": 10.0},
               {"part": "alibi", "seq_len": 1024, "mode": "fwd", "error": "OutOfMemoryError: ..."},
               {"part": "local", "seq_len": 512, "mode": "fwd", "ms": 0.25, "peak_mib": 8.0}]
    text = bench.table(results, [512, 1024], "fwd", "ms", lambda x: f"{x:.3f}")
    assert text.splitlines()[1].split() == ["alibi", "0.500", "error"]
    assert text.splitlines()[2].split() == ["local", "0.250", "-"]
    res = {"device": "test card", "date": "2025-01-01", "config": {"batch": 1, "heads": 1, "head_dim": 64, "dtype": "bf16"},
           "results": results}
    bench.write_outputs(res, str(tmp_path))
    assert json.load(open(tmp_path / "bench.json")) == res
    script = (tmp_path / "plot_bench.py").read_text()
    compile(script, "plot_bench.py", "exec")
    assert "r['device']" in script and "r['date']" in script
