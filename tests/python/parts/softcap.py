"""A user variant registered as a part from the tests: tanh soft-capping of the scores (Gemma 2's
``cap·tanh(score/cap)``) as CUDA C++ snippets with their derivative for the backward, and the same
in torch as the reference. conftest imports this file, so the registry-wide tests (CPU stand-in
and GPU) run ``pytest -k softcap`` with nothing else written. The cap is small (2.0) so that it
bends the scores of random inputs (|q·k/√hd| ~ 1..4) rather than passing them through."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch

import jitattn
from jitattn.parts.configs import VariantConfig
from jitattn.parts.user_variant import VariantAttention


def softcap_reference(score, b, h, q_idx, kv_idx, captures):
    cap = captures["cap"]
    return cap * torch.tanh(score / cap)


@dataclass
class SoftcapConfig(VariantConfig):
    score_mod: Optional[str] = "cap * tanhf(score / cap)"
    score_grad: Optional[str] = "const float t = tanhf(score / cap); return 1.f - t * t;"
    captures: Optional[Dict[str, Any]] = field(default_factory=lambda: {"cap": 2.0})
    causal: bool = True
    reference: Any = softcap_reference


@jitattn.register_attention("softcap", SoftcapConfig)
class SoftcapAttention(VariantAttention):
    pass
