"""Every bias class of jitattn.ops.fmha.attn_bias: built by its xFormers constructor, materialized
by the library on the CPU and compared with masks drawn by hand ('x' visible, '.' hidden)."""
import array
import gc

import pytest

import jitattn
from jitattn.ops.fmha import attn_bias as ab
from conftest import HAS_TORCH, INF, mask



@pytest.fixture(autouse=True)
def materialize_as_lists(monkeypatch):
    """These tests compare nested lists: with torch present, materialize's tensor as .tolist()
    (float32 holds every value drawn here exactly). test_torch.py checks the tensors themselves."""
    if HAS_TORCH:
        torch_materialize = ab.AttentionBias.materialize
        monkeypatch.setattr(ab.AttentionBias, "materialize",
                            lambda self, shape, **kw: torch_materialize(self, shape, **kw).tolist())


def dense(bias, mq, mkv):
    return bias.materialize((mq, mkv))


def test_every_library_kind_has_its_class_under_the_library_name():
    lib = jitattn._capi.lib()
    assert sorted(ab.BIAS_CLASSES) == list(range(1, 28))
    for kind in range(1, 28):
        assert ab.BIAS_CLASSES[kind].__name__ == lib.jitattn_bias_kind_name(kind).decode()


CASES = [
    ("LowerTriangularMask", lambda: ab.LowerTriangularMask(), 3, 4, """
        x...
        xx..
        xxx."""),
    ("LowerTriangularFromBottomRightMask", lambda: ab.LowerTriangularFromBottomRightMask(), 3, 4, """
        xx..
        xxx.
        xxxx"""),
    ("LowerTriangularFromBottomRightLocalAttentionMask",
     lambda: ab.LowerTriangularFromBottomRightMask().make_local_attention(2), 3, 4, """
        xx..
        .xx.
        ..xx"""),
    ("LocalAttentionFromBottomRightMask", lambda: ab.LocalAttentionFromBottomRightMask(window_left=0, window_right=1),
     3, 4, """
        .xx.
        ..xx
        ...x"""),
    ("BlockDiagonalMask", lambda: ab.BlockDiagonalMask.from_seqlens([2, 1], [1, 2]), 3, 3, """
        x..
        x..
        .xx"""),
    ("BlockDiagonalCausalMask", lambda: ab.BlockDiagonalCausalMask.from_seqlens([2, 2], [2, 3]), 4, 5, """
        x....
        xx...
        ..x..
        ..xx."""),
    ("BlockDiagonalCausalFromBottomRightMask",
     lambda: ab.BlockDiagonalMask.from_seqlens([2, 2], [2, 3]).make_causal_from_bottomright(), 4, 5, """
        x....
        xx...
        ..xx.
        ..xxx"""),
    ("BlockDiagonalCausalLocalAttentionMask",
     lambda: ab.BlockDiagonalMask.from_seqlens([2, 2], [2, 3]).make_local_attention(1), 4, 5, """
        x....
        .x...
        ..x..
        ...x."""),
    ("BlockDiagonalCausalLocalAttentionFromBottomRightMask",
     lambda: ab.BlockDiagonalMask.from_seqlens([2, 2], [2, 3]).make_local_attention_from_bottomright(2), 4, 5, """
        x....
        xx...
        ..xx.
        ...xx"""),
    ("BlockDiagonalPaddedKeysMask",
     lambda: ab.BlockDiagonalPaddedKeysMask.from_seqlens([1, 2], kv_padding=3, kv_seqlen=[2, 1]), 3, 6, """
        xx....
        ...x..
        ...x.."""),
    ("BlockDiagonalCausalWithOffsetPaddedKeysMask",
     lambda: ab.BlockDiagonalCausalWithOffsetPaddedKeysMask.from_seqlens([1, 2], kv_padding=3, kv_seqlen=[2, 1]),
     3, 6, """
        xx....
        ......
        ...x.."""),
    ("BlockDiagonalLocalAttentionPaddedKeysMask",
     lambda: ab.BlockDiagonalLocalAttentionPaddedKeysMask.from_seqlens_local([1, 2], 3, [2, 1], window_left=0,
                                                                             window_right=0), 3, 6, """
        .x....
        ......
        ...x.."""),
    ("BlockDiagonalCausalLocalAttentionPaddedKeysMask",
     lambda: ab.BlockDiagonalCausalLocalAttentionPaddedKeysMask.from_seqlens_local([1, 2], 3, [3, 1], window_size=2),
     3, 6, """
        .xx...
        ......
        ...x.."""),
    ("BlockDiagonalGappyKeysMask",
     lambda: ab.BlockDiagonalGappyKeysMask.from_seqlens([1, 2], kv_seqstarts=[2, 0, 4], kv_seqlen=[2, 1]), 3, 4, """
        ..xx
        x...
        x..."""),
    ("BlockDiagonalCausalWithOffsetGappyKeysMask",
     lambda: ab.BlockDiagonalCausalWithOffsetGappyKeysMask.from_seqlens([1, 2], [2, 0, 4], [2, 1]), 3, 4, """
        ..xx
        ....
        x..."""),
    # Paged: pages of 2 rows, a pool of 4 pages (8 key rows); row b of the table names its pages.
    ("PagedBlockDiagonalPaddedKeysMask",
     lambda: ab.BlockDiagonalPaddedKeysMask.from_seqlens([1, 1], 4, [3, 2]).make_paged([[1, 0], [2, 3]], page_size=2),
     2, 8, """
        x.xx....
        ....xx.."""),
    ("PagedBlockDiagonalCausalWithOffsetPaddedKeysMask",
     lambda: ab.BlockDiagonalCausalWithOffsetPaddedKeysMask.from_seqlens([2, 1], 4, [3, 2]).make_paged(
         [[1, 0], [2, 3]], 2), 3, 8, """
        ..xx....
        x.xx....
        ....xx.."""),
    ("PagedBlockDiagonalCausalLocalPaddedKeysMask",
     lambda: ab.BlockDiagonalCausalLocalAttentionPaddedKeysMask.from_seqlens_local([2, 1], 4, [3, 2], 1).make_paged(
         [[1, 0], [2, 3]], 2), 3, 8, """
        ...x....
        x.......
        .....x.."""),
    ("PagedBlockDiagonalGappyKeysMask",
     lambda: ab.BlockDiagonalGappyKeysMask.from_seqlens([1, 1], [1, 4, 8], [2, 1]).make_paged([[1, 0], [2, 3]], 2),
     2, 8, """
        x..x....
        ....x..."""),
    ("PagedBlockDiagonalCausalWithOffsetGappyKeysMask",
     lambda: ab.BlockDiagonalCausalWithOffsetGappyKeysMask.from_seqlens([2, 1], [1, 4, 8], [2, 1]).make_paged(
         [[1, 0], [2, 3]], 2), 3, 8, """
        ...x....
        x..x....
        ....x..."""),
    # Blocks of 16: the layout's (row 0, col 1) and (row 1, col 0) set; causal cuts the second.
    ("BlockSparseMask", lambda: ab.BlockSparseMask(memoryview(bytearray([0, 1, 1, 0])).cast("B", (1, 2, 2)), 16), 32, 32,
     "\n".join(("." * 16 + "x" * 16) if i < 16 else ("x" * 16 + "." * 16) for i in range(32))),
    ("BlockSparseMask", lambda: ab.BlockSparseMask(memoryview(bytearray([1, 0, 1, 1])).cast("B", (1, 2, 2)), 16, causal=True),
     20, 20, "\n".join("".join("x" if j <= i else "." for j in range(20)) for i in range(20))),
]


@pytest.mark.parametrize("name,make,mq,mkv,picture", CASES, ids=[c[0] for c in CASES])
def test_mask_materializes_as_drawn(name, make, mq, mkv, picture):
    bias = make()
    assert type(bias).__name__ == name
    assert dense(bias, mq, mkv) == mask(picture)


def test_every_mask_class_is_covered():
    covered = {c[0] for c in CASES} | {"TensorBias", "LowerTriangularMaskWithTensorBias", "AlibiBias",
                                       "LowerTriangularMaskWithAlibi", "BlockDiagonalMaskWithAlibi",
                                       "BlockDiagonalCausalMaskWithAlibi"}
    assert covered == {c.__name__ for c in ab.BIAS_CLASSES.values()}


def test_paged_from_seqlens_equals_make_paged():
    tables = [[1, 0], [2, 3]]
    direct = ab.PagedBlockDiagonalPaddedKeysMask.from_seqlens([1, 1], [3, 2], tables, 2)
    assert dense(direct, 2, 8) == mask("x.xx....\n....xx..")
    gappy = ab.PagedBlockDiagonalGappyKeysMask.from_seqlens([1, 1], [1, 0, 4], [2, 1], tables, 2)  # starts in-row
    assert dense(gappy, 2, 8) == mask("x..x....\n....x...")


def test_gappy_make_paged_notional_padding():
    # Keys notionally in blocks of 3 rows: sequence 1 starts at 3 + 1, i.e. position 1 of its own row.
    bias = ab.BlockDiagonalGappyKeysMask.from_seqlens([1, 1], [0, 4, 6], [1, 1]).make_paged(
        [[0, 1], [2, 3]], 2, notional_padding=3)
    assert dense(bias, 2, 8) == mask("x.......\n.....x..")


# ---- values: tensors and ALiBi -------------------------------------------------------------------
def host_tensor(values, shape):
    return memoryview(array.array("f", values)).cast("B").cast("f", shape)


def test_tensor_bias_and_lower_triangular_with_tensor_bias():
    t = host_tensor([1, 2, 3, 4], [1, 1, 2, 2])
    assert ab.TensorBias(t).materialize((1, 1, 2, 2)) == [[[[1.0, 2.0], [3.0, 4.0]]]]
    causal = ab.LowerTriangularMask().add_bias(t)
    assert isinstance(causal, ab.LowerTriangularMaskWithTensorBias) and isinstance(causal, ab.LowerTriangularMask)
    assert causal.materialize((1, 1, 2, 2)) == [[[[1.0, INF], [3.0, 4.0]]]]


def test_tensor_bias_broadcasts_over_heads():
    t = host_tensor([1, 2], [1, 1, 1, 2])  # broadcast over B, H and Mq by size 1
    assert ab.TensorBias(t).materialize((2, 2, 1, 2)) == [[[[1.0, 2.0]]] * 2] * 2


def test_alibi_slopes_given_and_geometric():
    assert ab.AlibiBias([0.5, 0.25]).materialize((1, 2, 2, 3)) == [[
        [[0.0, -0.5, -1.0], [-0.5, 0.0, -0.5]],
        [[0.0, -0.25, -0.5], [-0.25, 0.0, -0.25]]]]
    geo = ab.AlibiBias(4).materialize((1, 4, 1, 2))
    assert [h[0][1] for h in geo[0]] == [-(2.0 ** (-8 * (h + 1) / 4)) for h in range(4)]


def test_alibi_under_masks():
    assert ab.LowerTriangularMask().add_alibi([1.0]).materialize((1, 1, 2, 2)) == [[[[0.0, INF], [-1.0, 0.0]]]]
    # Positions count from each block's start.
    bd = ab.BlockDiagonalMask.from_seqlens([1, 2]).add_alibi([1.0])
    assert type(bd).__name__ == "BlockDiagonalMaskWithAlibi"
    assert bd.materialize((3, 3)) == [[0.0, INF, INF], [INF, 0.0, -1.0], [INF, -1.0, 0.0]]
    bdc = ab.BlockDiagonalCausalMask.from_seqlens([1, 2]).add_alibi([1.0])
    assert type(bdc).__name__ == "BlockDiagonalCausalMaskWithAlibi"
    assert bdc.materialize((3, 3)) == [[0.0, INF, INF], [INF, 0.0, INF], [INF, -1.0, 0.0]]


def test_materialize_broadcasts_leading_dims():
    bias = ab.BlockDiagonalCausalMask.from_seqlens([1, 1])
    one = mask("x.\n.x")
    assert bias.materialize((2, 2)) == one
    assert bias.materialize((3, 2, 2)) == [one] * 3
    assert bias.materialize((2, 3, 2, 2)) == [[one] * 3] * 2
    assert bias.materialize((1, 2, 3, 2, 2)) == [[[one] * 3] * 2]
    # ALiBi over G·H heads of a 5-D shape, g-major.
    five = ab.AlibiBias([1.0, 2.0, 3.0, 4.0]).materialize((1, 2, 2, 1, 2))
    assert [[h[0][1] for h in g] for g in five[0]] == [[-1.0, -2.0], [-3.0, -4.0]]


def test_materialize_result_is_not_aliased():
    out = ab.LowerTriangularMask().materialize((2, 2, 2))
    out[0][0][0] = 7.0
    assert out[1][0][0] == 0.0


def test_block_diagonal_seqinfo_and_split_helpers():
    bias = ab.BlockDiagonalMask.from_seqlens([2, 3], [1, 4])
    assert bias.q_seqinfo.seqstart_py == [0, 2, 5] and bias.k_seqinfo.seqstart_py == [0, 1, 5]
    assert bias.q_seqinfo.max_seqlen == 3 and bias.q_seqinfo.min_seqlen == 2
    assert bias.q_seqinfo.intervals() == [(0, 2), (2, 5)]
    padded = ab.BlockDiagonalPaddedKeysMask.from_seqlens([1, 1], 4, [2, 3])
    assert padded.k_seqinfo.seqstart_py == [0, 4, 8] and padded.k_seqinfo.intervals() == [(0, 2), (4, 7)]
    assert isinstance(bias.make_causal(), ab.BlockDiagonalCausalMask)
    assert isinstance(bias.make_causal(), ab.BlockDiagonalMask)


# ---- errors: the library's reasons, naming the argument --------------------------------------
def reasons_of(make):
    with pytest.raises(jitattn.Error) as e:
        make()
    assert e.value.status == jitattn._capi.ERROR_INVALID_ARGUMENT
    return " | ".join(e.value.reasons)


@pytest.mark.parametrize("make,needle", [
    (lambda: ab.BlockDiagonalMask.from_seqlens([2, -1]), "q_seqlen[1]"),
    (lambda: ab.BlockDiagonalMask.from_seqlens([2, 1], [1]), "len(kv_seqlen)=1"),
    (lambda: ab.BlockDiagonalMask.from_seqlens([1]).make_local_attention(0), "window_size"),
    (lambda: ab.BlockDiagonalMask.from_seqlens([1]).make_local_attention_from_bottomright(0), "window_size"),
    (lambda: ab.LowerTriangularFromBottomRightMask().make_local_attention(0), "window_size"),
    (lambda: ab.LocalAttentionFromBottomRightMask(-1, 0), "window_left"),
    (lambda: ab.BlockDiagonalPaddedKeysMask.from_seqlens([1], kv_padding=2, kv_seqlen=[3]), "kv_seqlen"),
    (lambda: ab.BlockDiagonalPaddedKeysMask.from_seqlens([1], kv_padding=0, kv_seqlen=[0]), "padding"),
    (lambda: ab.BlockDiagonalGappyKeysMask.from_seqlens([1, 1], [0, 1], [1, 1]), "len(kv_seqstarts)=2"),
    (lambda: ab.BlockDiagonalGappyKeysMask.from_seqlens([1], [0, 2], [-1]), "seqlen"),
    (lambda: ab.BlockDiagonalPaddedKeysMask.from_seqlens([1], 4, [2]).make_paged([[0, 1]], page_size=0), "page_size"),
    (lambda: ab.BlockDiagonalPaddedKeysMask.from_seqlens([1, 1], 4, [2, 2]).make_paged([[0, 1]], 2), "block_tables"),
    (lambda: ab.BlockDiagonalPaddedKeysMask.from_seqlens([1], 4, [2]).make_paged([[0, 1]], 2,
                                                                                   ab.PagedBlockDiagonalGappyKeysMask),
     "paged_type"),
    (lambda: ab.AlibiBias([1.0]).materialize((1, 2, 2, 2)), "len(slopes)=1"),
    (lambda: ab.BlockDiagonalCausalMask.from_seqlens([1, 1]).materialize((3, 2)), "sum(q_seqlen)=2"),
])
def test_invalid_arguments_raise_the_librarys_reasons(make, needle):
    assert needle in reasons_of(make)


# ---- handles: one per object, reused, freed ------------------------------------------------------
def test_handle_is_created_once_and_reused():
    bias = ab.BlockDiagonalCausalMask.from_seqlens([3, 2])
    first = bias.handle_id
    bias.materialize((5, 5))
    bias.materialize((2, 5, 5))
    assert bias.handle_id == first
    assert bias.make_causal().handle_id != first  # a new object, its own handle


def test_handles_are_freed_with_their_objects():
    gc.collect()
    before = ab.live_handles()
    biases = [ab.BlockDiagonalMask.from_seqlens([i + 1]) for i in range(10)]
    assert ab.live_handles() == before + 10
    finalizers = [b._jitattn_finalizer for b in biases]
    del biases
    gc.collect()
    assert ab.live_handles() == before
    assert not any(f.alive for f in finalizers)


def test_a_bias_never_used_holds_no_handle():
    before = ab.live_handles()
    bias = ab.LowerTriangularMask()
    assert ab.live_handles() == before
    bias.materialize((1, 1))
    assert ab.live_handles() == before + 1


def test_empty_shapes_materialize_empty():
    assert ab.LowerTriangularMask().materialize((0, 3)) == []
    assert ab.LowerTriangularMask().materialize((2, 0)) == [[], []]
