"""``jitattn.ops.fmha``, as ``xformers.ops.fmha``: today the attention biases (``attn_bias``).
The attention functions over torch tensors come with the torch layer (see jitattn.ops)."""
from . import attn_bias  # noqa: F401
