"""jitattn.ring on the GPU with the real kernels: R = 2, 4, 8 ranks simulated on one GPU
(LocalRing), every layout, causal and not, a window, GQA, bf16/f16 — the forward and the autograd
backward against full attention by torch autograd in float64 on the gathered sequence; and, with
two GPUs, two processes over torch.distributed (NCCL) against single-GPU jitattn attention.
Inputs are random; every output the layer allocates is poisoned with NaN first."""
import os

import pytest

from conftest import requires_gpu, requires_torch

pytestmark = [requires_torch, requires_gpu, pytest.mark.usefixtures("poisoned_outputs")]

torch = pytest.importorskip("torch")

from jitattn import ops, ring  # noqa: E402
from jitattn.ops.fmha import attn_bias as ab  # noqa: E402

FWD_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
BWD_TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2}
MASKS = {"none": None, "causal": ab.LowerTriangularMask(),
         "window37": ab.LowerTriangularFromBottomRightLocalAttentionMask(37),
         "local20_9": ab.LocalAttentionFromBottomRightMask(20, 9)}


def rel(x, ref):
    x, ref = x.double(), ref.double()
    assert torch.isfinite(x).all(), "non-finite values (a poisoned element was never written?)"
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def reference(q, k, v, mask):
    """Full attention over the whole sequence in float64, differentiable."""
    n = q.shape[1]
    i = torch.arange(n, device=q.device)[:, None]
    j = torch.arange(n, device=q.device)[None, :]
    ok = (j - i >= max(mask.lo, -n)) & (j - i <= min(mask.hi, n))
    if mask.doc_start is not None:
        doc = torch.tensor([mask.document(p) for p in range(n)], device=q.device)
        ok = ok & (doc[:, None] == doc[None, :])
    bias = torch.where(ok, 0.0, float("-inf")).double()
    g = q.shape[2] // k.shape[2]
    s = torch.einsum("bmhk,bnhk->bhmn", q, k.repeat_interleave(g, dim=2)) * q.shape[-1] ** -0.5 + bias
    return torch.einsum("bhmn,bnhk->bmhk", torch.softmax(s, -1), v.repeat_interleave(g, dim=2))


def run_case(layout, world, mask, dtype, B=2, M=None, H=2, Hkv=2, K=64, bias=None):
    M = M or 256 // world
    N = M * world
    q, k, v, do = (torch.randn(B, N, h, K, device="cuda", dtype=dtype) for h in (H, Hkv, Hkv, H))
    qs, ks, vs = ([x.requires_grad_(True) for x in ring.shard(t, world, layout)] for t in (q, k, v))
    bias = MASKS[mask] if bias is None else bias
    outs = ring.ring_attention_local(qs, ks, vs, bias, layout=layout)
    torch.autograd.backward(outs, ring.shard(do, world, layout))
    qr, kr, vr = (x.detach().double().requires_grad_(True) for x in (q, k, v))
    ref = reference(qr, kr, vr, ring.mask_of(bias))
    ref.backward(do.double())
    assert rel(ring.unshard(outs, layout), ref) <= FWD_TOL[dtype]
    for got, want, name in ((qs, qr, "dq"), (ks, kr, "dk"), (vs, vr, "dv")):
        err = rel(ring.unshard([x.grad for x in got], layout), want.grad)
        assert err <= BWD_TOL[dtype], f"{name}: {err}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("mask", ["none", "causal"])
@pytest.mark.parametrize("world", [2, 4, 8])
@pytest.mark.parametrize("layout", ring.LAYOUTS)
def test_simulated_ring_matches_full_attention(layout, world, mask, dtype):
    run_case(layout, world, mask, dtype)


@pytest.mark.parametrize("mask", ["window37", "local20_9"])
@pytest.mark.parametrize("layout", ["zigzag", "striped"])
def test_simulated_ring_windows_and_gqa(layout, mask):
    run_case(layout, 4, mask, torch.bfloat16, M=40, H=4, Hkv=2)


@pytest.mark.parametrize("causal", [False, True], ids=["documents", "causal_documents"])
@pytest.mark.parametrize("world", [2, 4, 8])
@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
def test_simulated_ring_documents(layout, world, causal):
    lens, pattern, used = [], [77, 0, 130, 1, 45, 96, 3, 64, 200, 33], 0
    while used < 512:
        lens.append(min(pattern[len(lens) % 10], 512 - used))
        used += lens[-1]
    bias = ab.BlockDiagonalMask.from_seqlens(lens)
    run_case(layout, world, "documents", torch.bfloat16, B=1, M=512 // world, H=4, Hkv=2,
             bias=bias.make_causal() if causal else bias)


def _worker(rank, world, layout, port, result_dir):
    import torch.distributed as dist

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            device_id=torch.device("cuda", rank))
    try:
        g = torch.Generator(device="cuda").manual_seed(1234)  # the same sequence on every rank
        B, N, H, K = 2, 512, 4, 64
        q, k, v, do = (torch.randn(B, N, H, K, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
        mine = [ring.shard(t, world, layout)[rank].clone().requires_grad_(True) for t in (q, k, v)]
        out = ring.ring_attention(*mine, ab.LowerTriangularMask(), layout=layout)
        out.backward(ring.shard(do, world, layout)[rank])
        qa, ka, va = (t.clone().requires_grad_(True) for t in (q, k, v))
        full = ops.memory_efficient_attention(qa, ka, va, ab.LowerTriangularMask())
        full.backward(do)
        errs = [rel(out, ring.shard(full, world, layout)[rank])]
        errs += [rel(m.grad, ring.shard(a.grad, world, layout)[rank]) for m, a in zip(mine, (qa, ka, va))]
        with open(os.path.join(result_dir, f"rank{rank}"), "w") as f:
            f.write(" ".join(str(e) for e in errs))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
@pytest.mark.parametrize("layout", ["zigzag", "striped"])
def test_nccl_ring_matches_single_gpu(tmp_path, layout):
    import random

    import torch.multiprocessing as mp

    os.environ["NCCL_NVLS_ENABLE"] = "0"
    port = random.randint(20000, 40000)
    mp.spawn(_worker, args=(2, layout, port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        errs = [float(x) for x in (tmp_path / f"rank{rank}").read_text().split()]
        assert errs[0] <= FWD_TOL[torch.bfloat16], f"rank {rank} out: {errs[0]}"
        assert max(errs[1:]) <= BWD_TOL[torch.bfloat16], f"rank {rank} grads: {errs[1:]}"
