"""The built-in parts' configs (dataclasses, no torch). Every config has ``AttentionConfig``'s
fields: FairSeq's MultiheadAttention adds ``dropout`` and ``num_heads`` to every config it
builds, so every part takes them (a part that needs no head count ignores ``num_heads``)."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional


def required():
    """A field a config must be given (a dataclass field after defaulted ones needs a default)."""
    return field(default=None, metadata={"required": True})


@dataclass
class AttentionConfig:
    name: str
    dropout: float = 0.0
    num_heads: Optional[int] = None


@dataclass
class ScaledDotProductConfig(AttentionConfig):
    causal: bool = False
    seq_len: Optional[int] = None      # accepted as xFormers' config has it; unused
    to_seq_len: Optional[int] = None   # idem


@dataclass
class LocalConfig(AttentionConfig):
    causal: bool = False
    window_size: int = 5               # keys within window_size // 2 of the query (left only if causal)


@dataclass
class BlockSparseConfig(AttentionConfig):
    layout: Any = None                 # [H, S/bs, S/bs] or [S/bs, S/bs] (same for every head), nonzero = visible
    block_size: int = 16
    causal: bool = False


@dataclass
class AlibiConfig(AttentionConfig):
    causal: bool = False


@dataclass
class LinformerConfig(AttentionConfig):
    seq_len: int = required()          # the keys' length the projections take
    k: Optional[int] = None            # keys after projection; default seq_len // 4


@dataclass
class NystromConfig(AttentionConfig):
    num_landmarks: int = 64
    inv_iterations: int = 6
    seq_len: Optional[int] = None      # accepted as xFormers' config has it; unused



@dataclass
class VariantConfig(AttentionConfig):
    """A user ``jitattn.Variant`` as a part (docs/python.md "User variants"): the snippets are
    CUDA C++, so ``reference`` — a Python callable ``(score, b, h, q_idx, kv_idx, captures) ->
    score`` over float64 torch tensors (``-inf`` where ``mask_mod`` hides) — is what the tests
    check the kernel against."""
    mask_mod: Optional[str] = None
    score_mod: Optional[str] = None
    score_grad: Optional[str] = None
    additive: bool = False
    captures: Optional[Dict[str, Any]] = None   # name -> tensor (moved to the input's device), float or int
    causal: bool = False                        # the built-in LowerTriangularMask under the variant
    reference: Any = None                       # the torch reference of mask_mod/score_mod (tests)
