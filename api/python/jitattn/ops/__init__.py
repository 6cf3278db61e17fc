"""``jitattn.ops``, mirroring ``xformers.ops``.

What exists now: ``jitattn.ops.fmha.attn_bias`` (every bias class, its constructors and
``materialize``) and the bias names re-exported here, as xformers.ops does.

Not written yet, on purpose: ``memory_efficient_attention`` (forward, backward through
autograd, ``_partial`` and ``merge_attentions``) over torch tensors, registered with
``torch.library``. It needs a GPU to be verified and comes in a later session; it will be
imported here only when torch is importable, so this package keeps working without torch.
"""
from .fmha import attn_bias  # noqa: F401
from .fmha.attn_bias import (  # noqa: F401
    AttentionBias,
    BlockDiagonalCausalMask,
    BlockDiagonalMask,
    LowerTriangularMask,
    LowerTriangularMaskWithTensorBias,
)
