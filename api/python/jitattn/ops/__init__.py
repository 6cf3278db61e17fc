"""``jitattn.ops``, mirroring ``xformers.ops``: ``fmha.attn_bias`` (every bias class, its
constructors and ``materialize``) with the bias names re-exported here, as xformers.ops does,
and — when torch is importable — ``memory_efficient_attention`` (autograd), ``..._forward``,
``..._forward_requires_grad``, ``..._backward``, ``..._partial`` and ``merge_attentions``
(``fmha._functions``). Without torch the package still imports (the biases work alone).
"""
from . import fmha  # noqa: F401
from .fmha import attn_bias  # noqa: F401
from .fmha.attn_bias import (  # noqa: F401
    AttentionBias,
    BlockDiagonalCausalMask,
    BlockDiagonalMask,
    LowerTriangularMask,
    LowerTriangularMaskWithTensorBias,
)

if fmha.HAS_TORCH:
    from .fmha import (  # noqa: F401
        memory_efficient_attention,
        memory_efficient_attention_backward,
        memory_efficient_attention_forward,
        memory_efficient_attention_forward_requires_grad,
        memory_efficient_attention_partial,
        merge_attentions,
        prepare_bias,
    )
    from .swiglu import SwiGLU, swiglu, swiglu_gate  # noqa: F401
