"""``jitattn.ops.fmha``, as ``xformers.ops.fmha``: the attention biases (``attn_bias``, no torch
needed) and, when torch is importable, the attention functions over torch tensors
(``_functions``, registered as ``torch.ops.jitattn.*`` custom ops)."""
import importlib.util

from . import attn_bias  # noqa: F401

HAS_TORCH = importlib.util.find_spec("torch") is not None
if HAS_TORCH:
    from ._functions import (  # noqa: F401
        memory_efficient_attention,
        memory_efficient_attention_backward,
        memory_efficient_attention_forward,
        memory_efficient_attention_forward_requires_grad,
        memory_efficient_attention_partial,
        merge_attentions,
        prepare_bias,
    )
