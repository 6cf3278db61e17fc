"""The parts with torch and no GPU: each registered part builds from its config, its reference
gives the output shape, and its forward — with a CPU stand-in for jitattn's kernel — matches its
reference; ``jitattn.nn.MultiheadAttention`` takes FairSeq's arguments. Every test is
parametrized over the registry, so ``pytest -k NAME`` runs a new part's tests."""
import math

import pytest
from conftest import requires_torch

pytestmark = requires_torch

torch = pytest.importorskip("torch")

import jitattn  # noqa: E402
import parts_support as ps  # noqa: E402


@pytest.mark.parametrize("name", ps.names())
def test_part_builds(name):
    part = ps.build(name)
    assert isinstance(part, jitattn.Attention) and isinstance(part, torch.nn.Module)
    assert part.part_name == name and type(part.config) is part.config_class
    # extra positional/keyword arguments are accepted, as xFormers' parts take them
    type(part)(**{**{k: v for k, v in vars(part.config).items() if k != "name"}, "unused_extra": 1})


@pytest.mark.parametrize("name", ps.names())
def test_part_reference_shapes(name):
    part = ps.build(name)
    q, k, v = ps.inputs(part)
    assert part.reference(q, k, v).shape == q.shape
    assert part.reference(q, k, v).dtype == torch.float64


@pytest.mark.parametrize("name", ps.names())
def test_part_forward_matches_reference_with_a_cpu_kernel(name, monkeypatch):
    ps.patch_kernel(monkeypatch)
    part = ps.build(name).double()
    q, k, v = ps.inputs(part, torch.float64)
    out = part(q, k, v)
    assert out.shape == q.shape
    torch.testing.assert_close(out.double(), part.reference(q, k, v), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("name", ps.names())
def test_part_forward_backward_check_with_a_cpu_kernel(name, dtype, monkeypatch):
    # The GPU test's own check, with the CPU stand-in kernel (exact, then rounded to the dtype).
    ps.patch_kernel(monkeypatch)
    ps.forward_backward_check(name, {"f32": torch.float32, "bf16": torch.bfloat16}[dtype], "cpu")


def test_nystrom_approximates_attention():
    # Smooth inputs (landmarks are segment means): Nyström is close to exact softmax attention.
    part = jitattn.build_attention({"name": "nystrom", "num_landmarks": 16})
    t = torch.linspace(0, 1, ps.S, dtype=torch.float64)[None, :, None]
    q = torch.sin(t * torch.arange(1, 9, dtype=torch.float64) * 3)
    exact = torch.softmax(q @ q.transpose(-2, -1) / math.sqrt(8), -1) @ q
    assert (part.reference(q, q, q) - exact).abs().max() < 0.05


def test_scaled_dot_product_causal_and_masks(monkeypatch):
    ps.patch_kernel(monkeypatch)
    part = jitattn.build_attention('{"name": "scaled_dot_product", "causal": "true"}')
    q, k, v = ps.inputs(part)   # float32: a bias object takes the kernel's dtypes only
    close = lambda got, want: torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)  # noqa: E731
    close(part(q, k, v), part.reference(q, k, v))
    mask = torch.rand(q.shape[0], ps.S, ps.S) > 0.3
    mask |= torch.eye(ps.S, dtype=torch.bool)
    close(part(q, k, v, att_mask=mask), part.reference(q, k, v, mask))
    plain = jitattn.build_attention({"name": "scaled_dot_product"})
    additive = torch.randn(ps.S, ps.S)
    close(plain(q, k, v, att_mask=additive), plain.reference(q, k, v, additive))
    q4 = q.reshape(ps.B, ps.H, ps.S, ps.D)
    bias = jitattn.ops.fmha.attn_bias.LowerTriangularFromBottomRightMask()
    close(plain(q4, q4, q4, attn_bias=bias), part.reference(q4, q4, q4))


def test_part_errors():
    with pytest.raises(ValueError, match="layout is required"):
        jitattn.build_attention({"name": "blocksparse"})
    with pytest.raises(ValueError, match="key length 64 != seq_len 128"):
        part = jitattn.build_attention({"name": "linformer", "seq_len": 128})
        part(*[torch.randn(2, 64, 8)] * 3)
    with pytest.raises(ValueError, match="not a multiple of num_landmarks"):
        part = jitattn.build_attention({"name": "nystrom", "num_landmarks": 48})
        part.reference(*[torch.randn(2, 100, 8)] * 3)
    with pytest.raises(ValueError, match="needs num_heads"):
        jitattn.build_attention({"name": "alibi"})(*[torch.randn(2, 16, 8)] * 3)


# ---- jitattn.nn.MultiheadAttention, FairSeq's arguments -----------------------------------------
def test_multihead_attention_fairseq_configs():
    mha = jitattn.nn.MultiheadAttention(64, 4, dropout=0.1, xformers_att_config='{"name": "scaled_dot_product"}')
    assert type(mha.attention).__name__ == "ScaledDotProduct"
    assert mha.attention.dropout == 0.1 and mha.attention.num_heads == 4   # as FairSeq fills them in
    mha = jitattn.nn.MultiheadAttention(64, 4, xformers_att_config='{"name": "linformer", "seq_len": "256"}')
    assert mha.attention.seq_len == 256 and mha.attention.k == 64
    mha = jitattn.nn.MultiheadAttention(64, 4, xformers_att_config='{"name": "local", "dropout": 0.2}', dropout=0.1)
    assert mha.attention.dropout == 0.2   # the config's own dropout wins
    layout = torch.ones(8, 8, dtype=torch.int32)
    mha = jitattn.nn.MultiheadAttention(64, 4, xformers_att_config='{"name": "scaled_dot_product"}',
                                        xformers_blocksparse_layout=layout, xformers_blocksparse_blocksize=16)
    assert mha.attention.part_name == "blocksparse" and mha.attention.block_size == 16
    assert tuple(mha.attention.layout.shape) == (1, 8, 8)
    with pytest.raises(jitattn.ConfigError, match="unknown attention 'linformr'"):
        jitattn.nn.MultiheadAttention(64, 4, xformers_att_config='{"name": "linformr"}')


def test_multihead_attention_matches_torch(monkeypatch):
    ps.patch_kernel(monkeypatch)
    T, Bz, E, Hn = 32, 3, 64, 4
    mha = jitattn.nn.MultiheadAttention(E, Hn, self_attention=True, xformers_att_config='{"name": "scaled_dot_product"}').double()
    x = torch.randn(T, Bz, E, dtype=torch.float64)
    pad = torch.zeros(Bz, T, dtype=torch.bool)
    pad[1, -5:] = True
    causal = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    got, weights = mha(x, x, x, key_padding_mask=pad, attn_mask=causal)
    assert weights is None
    want, _ = torch.nn.functional.multi_head_attention_forward(
        x, x, x, E, Hn, None, torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]), None, None, False, 0.0,
        mha.out_proj.weight, mha.out_proj.bias, training=False, need_weights=False,
        key_padding_mask=torch.zeros(pad.shape, dtype=torch.float64).masked_fill(pad, float("-inf")),
        attn_mask=causal, use_separate_proj_weight=True, q_proj_weight=mha.q_proj.weight,
        k_proj_weight=mha.k_proj.weight, v_proj_weight=mha.v_proj.weight)
    torch.testing.assert_close(got, want)


def test_multihead_attention_blocksparse_and_heads_apart(monkeypatch):
    ps.patch_kernel(monkeypatch)
    T, Bz, E, Hn = 64, 2, 32, 2
    layout = torch.eye(4, dtype=torch.int32)
    mha = jitattn.nn.MultiheadAttention(E, Hn, self_attention=True, xformers_blocksparse_layout=layout,
                                        xformers_att_config='{"name": "scaled_dot_product"}').double()
    x = torch.randn(T, Bz, E, dtype=torch.float64)
    y, _ = mha(x, x, x)
    assert y.shape == (T, Bz, E)
    # a block-diagonal layout: the first 16 tokens see only themselves
    x2 = x.clone()
    x2[16:] += 1.0
    torch.testing.assert_close(mha(x2, x2, x2)[0][:16], y[:16])
    assert not torch.allclose(mha(x2, x2, x2)[0][16:], y[16:])
    mha = jitattn.nn.MultiheadAttention(E, Hn, self_attention=True, xformers_att_config='{"name": "alibi"}').double()
    assert mha.attention.num_heads == Hn
    assert mha(x, x, x)[0].shape == (T, Bz, E)


def test_variant_part(monkeypatch):
    ps.patch_kernel(monkeypatch)
    # a mask_mod alone (a diagonal band) with its torch reference, over [B, H, S, hd] via num_heads
    band = jitattn.build_attention({
        "name": "variant", "num_heads": ps.H, "mask_mod": "return abs(q_idx - kv_idx) <= w;", "captures": {"w": 3},
        "reference": lambda s, b, h, qi, ki, c: s.masked_fill((qi - ki).abs() > c["w"], float("-inf"))})
    v = band.variant("cpu")
    assert isinstance(v, jitattn.Variant) and v.mask_mod.startswith("return abs") and v.captures == {"w": 3}
    assert band.variant("cpu") is v   # one Variant per device
    q, k, vv = ps.inputs(band, torch.float64)
    torch.testing.assert_close(band(q, k, vv), band.reference(q, k, vv))
    # the soft-capping part from tests/python/parts bends the scores: not plain causal attention
    softcap = ps.build("softcap")
    causal = jitattn.build_attention({"name": "scaled_dot_product", "causal": True})
    q, k, vv = ps.inputs(softcap, torch.float64)
    assert (softcap.reference(q, k, vv) - causal.reference(q, k, vv)).abs().max() > 1e-2
    with pytest.raises(ValueError, match="reference must be a callable"):
        jitattn.build_attention({"name": "variant", "reference": "cap * tanh(score)"})
    with pytest.raises(NotImplementedError, match="no reference"):
        jitattn.build_attention({"name": "variant", "score_mod": "score"}).reference(q, k, vv)
