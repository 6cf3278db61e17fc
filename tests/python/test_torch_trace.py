"""The torch layer without a GPU: the ops are registered, CPU tensors get a clear message, and
torch.compile(fullgraph=True) traces attention — forward, backward, every way a bias crosses the
ops — over meta tensors (the fakes run; no kernel does). Skipped without torch (CI has none)."""
import pytest

from conftest import requires_torch

pytestmark = requires_torch


@pytest.fixture
def ops():
    from jitattn import ops

    return ops


def meta(*shape, grad=True):
    import torch

    return torch.randn(*shape, device="meta", requires_grad=grad)


def test_the_ops_are_registered(ops):
    import torch

    for name in ("fwd", "bwd", "merge"):
        assert hasattr(torch.ops.jitattn, name), name


def test_cpu_tensors_are_refused_with_a_clear_message(ops):
    import torch
    import jitattn

    q = torch.randn(1, 8, 2, 64)
    with pytest.raises(jitattn.Error) as e:
        ops.memory_efficient_attention(q, q, q)
    assert e.value.reasons == ["query is on cpu: jitattn runs on CUDA tensors (move it with query.cuda())"]


def test_a_bias_that_is_not_one_is_a_type_error(ops):
    import torch

    q = torch.randn(1, 8, 2, 64)
    with pytest.raises(TypeError, match="attn_bias"):
        ops.memory_efficient_attention(q, q, q, attn_bias="causal")


def test_non_autograd_dropout_is_refused_as_xformers(ops):
    q = meta(1, 8, 2, 64, grad=False)
    with pytest.raises(NotImplementedError, match="dropout"):
        ops.memory_efficient_attention_forward_requires_grad(q, q, q, p=0.1)


def compiled(fn):
    import torch

    return torch.compile(fn, fullgraph=True, backend="aot_eager")


def test_compile_fullgraph_forward_and_backward_with_a_block_diagonal_mask(ops):
    import torch
    from jitattn.ops.fmha import attn_bias as ab

    q, k, v = meta(1, 12, 2, 64), meta(1, 12, 2, 64), meta(1, 12, 2, 64)

    def f(q, k, v, bias):  # a mask built inside the compiled function, too
        return (ops.memory_efficient_attention(q, k, v, bias) +
                ops.memory_efficient_attention(q, k, v, ab.LowerTriangularMask())).sum()

    cf = compiled(f)
    cf(q, k, v, ab.BlockDiagonalCausalMask.from_seqlens([5, 7])).backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape
    # A new bias object with other lengths (a new packed batch) reuses the compiled graph.
    with torch._dynamo.config.patch(error_on_recompile=True):
        cf(q, k, v, ab.BlockDiagonalCausalMask.from_seqlens([4, 8]))


def test_compile_a_tensor_bias_gets_its_gradient(ops):
    q, k, v = meta(2, 12, 2, 64), meta(2, 12, 2, 64), meta(2, 12, 2, 32)
    bias = meta(2, 2, 12, 12)
    out = compiled(lambda q, k, v, b: ops.memory_efficient_attention(q, k, v, b, p=0.1))(q, k, v, bias)
    assert out.shape == (2, 12, 2, 32)
    out.sum().backward()
    assert bias.grad.shape == bias.shape


def test_compile_int_masks_gqa_and_5d(ops):
    from jitattn.ops.fmha import attn_bias as ab

    q, k = meta(2, 12, 4, 64), meta(2, 16, 2, 64)
    for bias in (ab.LowerTriangularFromBottomRightMask().make_local_attention(3),
                 ab.LocalAttentionFromBottomRightMask(2, 3)):
        compiled(lambda q, k, b: ops.memory_efficient_attention(q, k, k, b))(q, k, bias).sum().backward()
    q5, k5 = meta(2, 12, 2, 3, 64), meta(2, 16, 2, 1, 64)
    out = compiled(lambda q, k: ops.memory_efficient_attention(q, k.expand(2, 16, 2, 3, 64), k.expand(2, 16, 2, 3, 64)))(
        q5, k5)
    assert out.shape == (2, 12, 2, 3, 64)
    out.sum().backward()
    assert k5.grad.shape == k5.shape


def test_compile_partial_merge_and_the_non_autograd_api(ops):
    import torch

    q, k, v = (meta(1, 12, 2, 64, grad=False) for _ in range(3))

    def g(q, k, v):
        o1, l1 = ops.memory_efficient_attention_partial(q, k[:, :6], v[:, :6])
        o2, l2 = ops.memory_efficient_attention_partial(q, k[:, 6:], v[:, 6:])
        o, lse = ops.merge_attentions([o1, o2], [l1, l2])
        o3, none = ops.merge_attentions(torch.stack([o1, o2]), torch.stack([l1, l2]), write_lse=False,
                                        output_dtype=torch.bfloat16)
        out, lse2 = ops.memory_efficient_attention_forward_requires_grad(q, k, v)
        dq, dk, dv = ops.memory_efficient_attention_backward(out, out, lse2, q, k, v)
        return o, lse, o3, none, lse2, dq

    o, lse, o3, none, lse2, dq = compiled(g)(q, k, v)
    assert o.shape == (1, 12, 2, 64) and lse.shape == (1, 2, 12) and none is None
    assert o3.dtype == torch.bfloat16 and lse2.shape == (1, 2, 12) and dq.shape == q.shape


def test_a_bias_lives_while_its_key_does_and_is_freed_after():
    import gc
    import weakref

    from jitattn.ops.fmha import _bias_base, attn_bias as ab

    bias = ab.BlockDiagonalCausalMask.from_seqlens([3, 4])
    key, alive = bias._jitattn_key, weakref.ref(bias)
    number = int(key)
    del bias
    gc.collect()
    assert alive() is not None and _bias_base.registered(number) is alive()  # autograd may still need it
    del key
    gc.collect()
    assert alive() is None and _bias_base.registered(number) is None


def test_every_array_mask_hands_the_library_its_device_arrays():
    """The arrays a bias gives as the C API's *_device pointers (torch tensors; on the CPU here,
    the handle only stores the pointers): the library accepts each kind's set, and the values are
    what c_api.h says they stand for."""
    import torch

    from jitattn.ops.fmha import _torch_bias
    from jitattn.ops.fmha import attn_bias as ab

    q, kv = [5, 9, 3], [20, 31, 12]
    table = torch.randperm(9, dtype=torch.int32).reshape(3, 3)
    padded = ab.BlockDiagonalPaddedKeysMask.from_seqlens(q, 48, kv)
    gappy = ab.BlockDiagonalGappyKeysMask.from_seqlens(q, [2, 50, 98, 144], kv)
    biases = [ab.BlockDiagonalMask.from_seqlens(q, kv), ab.BlockDiagonalCausalMask.from_seqlens(q),
              ab.BlockDiagonalMask.from_seqlens(q, kv).make_causal_from_bottomright(),
              ab.BlockDiagonalMask.from_seqlens(q, kv).make_local_attention(4),
              ab.BlockDiagonalMask.from_seqlens(q, kv).make_local_attention_from_bottomright(4), padded,
              ab.BlockDiagonalCausalWithOffsetPaddedKeysMask.from_seqlens(q, 48, kv),
              ab.BlockDiagonalLocalAttentionPaddedKeysMask.from_seqlens_local(q, 48, kv, 3, 2),
              ab.BlockDiagonalCausalLocalAttentionPaddedKeysMask.from_seqlens_local(q, 48, kv, 5), gappy,
              ab.BlockDiagonalCausalWithOffsetGappyKeysMask.from_seqlens(q, [2, 50, 98, 144], kv),
              ab.AlibiBias(4), ab.LowerTriangularMask().add_alibi(4),
              ab.BlockDiagonalMask.from_seqlens(q).add_alibi([1.0, 2.0]), ab.BlockDiagonalCausalMask.from_seqlens(q).add_alibi(2)]
    paged = [b.make_paged(table, 16) for b in biases[5:7] + biases[8:11]]
    cpu = torch.device("cpu")
    for b in biases + paged:
        assert _torch_bias.device_handle(b, cpu)
        assert _torch_bias.device_handle(b, cpu) is _torch_bias.device_handle(b, cpu)  # made once
    arrays = lambda b: {n: t.flatten().tolist() for n, t in b._jitattn_device[None][1].items()}  # noqa: E731
    assert arrays(padded) == {"q_seqstart_device": [0, 5, 14, 17], "kv_seqstart_device": [0, 48, 96, 144],
                              "kv_seqlen_device": kv}
    assert arrays(gappy)["kv_seqstart_device"] == [2, 50, 98, 144]
    assert arrays(paged[0])["block_tables_device"] == table.flatten().tolist()
    # A contiguous int32 table on the call's device is the caller's own memory (graph replays see updates).
    assert paged[0]._jitattn_device[None][1]["block_tables_device"].data_ptr() == table.data_ptr()
    assert arrays(paged[0]).keys() == {"q_seqstart_device", "kv_seqlen_device", "block_tables_device"}
    assert arrays(biases[11])["alibi_slopes_device"] == [2.0 ** (-8.0 * (h + 1) / 4) for h in range(4)]
