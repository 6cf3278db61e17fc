"""not_supported_reasons from Python over fake device pointers (validation never reads memory),
and the conversion of tensor-likes into the C API's jitattn_tensor."""
import array

import pytest

import jitattn
from jitattn import TensorDesc, _tensor
from jitattn.ops.fmha import attn_bias as ab

_next = [1 << 40]


def fake(dtype, shape, stride=None):
    """A tensor at a new fake device address, 2^40 bytes from the others (no overlaps)."""
    _next[0] += 1 << 40
    return TensorDesc(_next[0], dtype, shape, stride)


def call(K=64, Kv=64, Mq=100, Mkv=120, dtype="bf16"):
    return (fake(dtype, (2, Mq, 4, K)), fake(dtype, (2, Mkv, 4, K)), fake(dtype, (2, Mkv, 4, Kv)),
            fake(dtype, (2, Mq, 4, Kv)))


def test_a_valid_call_has_no_reasons():
    assert jitattn.not_supported_reasons(*call()) == []
    assert jitattn.not_supported_reasons(*call(), attn_bias=ab.LowerTriangularMask()) == []
    q, k, v, o = call()
    assert jitattn.not_supported_reasons(q, k, v, o, lse=fake("f32", (2, 4, 100))) == []


def test_reasons_name_the_argument():
    reasons = jitattn.not_supported_reasons(*call(K=100, Kv=100))
    assert any("query.shape[-1]=100" in r for r in reasons), reasons
    q, k, v, _ = call()
    reasons = jitattn.not_supported_reasons(q, k, v, fake("bf16", (2, 100, 4, 60)))
    assert any(r.startswith("out.shape") for r in reasons), reasons


def test_a_block_diagonal_bias_must_fit_the_query():
    q, k, v, o = (fake("f16", (1, 5, 2, 64)), fake("f16", (1, 5, 2, 64)), fake("f16", (1, 5, 2, 64)),
                  fake("f16", (1, 5, 2, 64)))
    assert jitattn.not_supported_reasons(q, k, v, o, ab.BlockDiagonalCausalMask.from_seqlens([2, 3])) == []
    reasons = jitattn.not_supported_reasons(q, k, v, o, ab.BlockDiagonalCausalMask.from_seqlens([2, 2]))
    assert any("sum(q_seqlen)=4" in r for r in reasons), reasons


def test_output_overlapping_an_input_is_refused():
    q, k, v, _ = call()
    reasons = jitattn.not_supported_reasons(q, k, v, TensorDesc(q.data_ptr, "bf16", q.shape))
    assert any("out" in r and "query" in r for r in reasons), reasons


def test_options_reach_the_library():
    reasons = jitattn.not_supported_reasons(*call(), p=1.5)
    assert any("p=" in r or "dropout" in r for r in reasons), reasons


def test_bad_dtype_names_the_tensor():
    q, k, v, o = call()
    with pytest.raises(jitattn.Error) as e:
        jitattn.not_supported_reasons(TensorDesc(q.data_ptr, "int8", q.shape), k, v, o)
    assert e.value.reasons == ["query.dtype=int8 is not float16, bfloat16 or float32"]


def test_tensor_likes_convert():
    t = _tensor.to_c(TensorDesc(4096, "f16", (2, 3, 4)), "x")
    assert (t.data, t.dtype, t.ndim, list(t.shape[:3]), list(t.stride[:3]), t.device) == (
        4096, jitattn._capi.DTYPE_F16, 3, [2, 3, 4], [12, 4, 1], 0)
    mv = memoryview(array.array("f", range(6))).cast("B").cast("f", [2, 3])
    m = _tensor.to_c(mv, "bias")
    assert (m.dtype, list(m.shape[:2]), list(m.stride[:2]), m.device) == (
        jitattn._capi.DTYPE_F32, [2, 3], [3, 1], jitattn._capi.DEVICE_HOST)
    with pytest.raises(jitattn.Error):
        _tensor.to_c(memoryview(array.array("d", [1.0])), "bias")  # float64 is no kernel dtype
    with pytest.raises(TypeError):
        _tensor.to_c([1.0], "bias")


def backward_call(K=64):
    q, k, v, o = call(K=K, Kv=K)
    return dict(grad=fake("bf16", o.shape), out=o, lse=fake("f32", (2, 4, 100)), query=q, key=k, value=v,
                dq=fake("bf16", q.shape), dk=fake("bf16", k.shape), dv=fake("bf16", v.shape))


def test_backward_reasons():
    assert jitattn.backward_not_supported_reasons(**backward_call()) == []
    args = backward_call()
    args["dk"] = args["key"]  # a gradient written over its input
    reasons = jitattn.backward_not_supported_reasons(**args)
    assert any("dk" in r and "key" in r for r in reasons), reasons
    assert jitattn.backward_not_supported_reasons(**backward_call(), attn_bias=ab.LowerTriangularMask(),
                                                  deterministic=True) == []


def test_merge_reasons_stacked_and_list():
    outs, lses = fake("f32", (3, 2, 100, 4, 64)), fake("f32", (3, 2, 4, 100))
    out, lse = fake("bf16", (2, 100, 4, 64)), fake("f32", (2, 4, 100))
    assert jitattn.merge_not_supported_reasons(outs, lses, out, lse) == []
    parts = [fake("f32", (2, 100, 4, 64)) for _ in range(3)]
    part_lses = [fake("f32", (2, 4, 100)) for _ in range(3)]
    assert jitattn.merge_not_supported_reasons(parts, part_lses, out) == []
    reasons = jitattn.merge_not_supported_reasons(parts, part_lses, fake("bf16", (2, 100, 4, 32)))
    assert any("out" in r for r in reasons), reasons
