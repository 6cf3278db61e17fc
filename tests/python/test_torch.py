"""What the biases do with torch: materialize gives tensors, from_tensor_list and split
concatenate and cut torch tensors. Skipped without torch (CI has none); the device cases
also need a CUDA GPU."""
import pytest

from conftest import INF, mask, requires_gpu, requires_torch

pytestmark = requires_torch


def test_materialize_gives_a_float32_cpu_tensor_by_default():
    import torch
    from jitattn.ops.fmha import attn_bias as ab

    t = ab.LowerTriangularMask().materialize((2, 3, 3))
    assert t.dtype == torch.float32 and t.device.type == "cpu" and tuple(t.shape) == (2, 3, 3)
    assert t[1].tolist() == mask("x..\nxx.\nxxx")
    h = ab.BlockDiagonalMask.from_seqlens([1, 1]).materialize((2, 2), dtype=torch.float16)
    assert h.dtype == torch.float16 and h.tolist() == [[0.0, INF], [INF, 0.0]]


def test_tensor_bias_from_a_torch_tensor():
    import torch
    from jitattn.ops.fmha import attn_bias as ab

    bias = torch.arange(4, dtype=torch.float32).reshape(1, 1, 2, 2)
    out = ab.LowerTriangularMask().add_bias(bias).materialize((1, 1, 2, 2))
    assert out.tolist() == [[[[0.0, INF], [2.0, 3.0]]]]


def test_from_tensor_list_and_split_round_trip():
    import torch
    from jitattn.ops.fmha import attn_bias as ab

    xs = [torch.randn(1, 2, 3, 8), torch.randn(2, 3, 3, 8)]
    bias, cat = ab.BlockDiagonalMask.from_tensor_list(xs)
    assert bias.q_seqinfo.seqstart_py == [0, 2, 5, 8] and tuple(cat.shape) == (1, 8, 3, 8)
    parts = bias.split(cat)
    assert [tuple(p.shape) for p in parts] == [(1, 2, 3, 8), (2, 3, 3, 8)]
    assert all(torch.equal(a, b) for a, b in zip(parts, xs))


def test_block_tables_as_a_tensor():
    import torch
    from jitattn.ops.fmha import attn_bias as ab

    tables = torch.tensor([[1, 0], [2, 3]], dtype=torch.int32)
    bias = ab.BlockDiagonalPaddedKeysMask.from_seqlens([1, 1], 4, [3, 2]).make_paged(tables, 2)
    assert bias.materialize((2, 8)).tolist() == mask("x.xx....\n....xx..")


@requires_gpu
def test_materialize_on_the_gpu_equals_the_cpu():
    from jitattn.ops.fmha import attn_bias as ab

    bias = ab.BlockDiagonalCausalMask.from_seqlens([3, 2])
    assert bias.materialize((5, 5), device="cuda").cpu().equal(bias.materialize((5, 5)))
