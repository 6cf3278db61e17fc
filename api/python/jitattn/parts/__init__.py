"""``jitattn.parts``: attention mechanisms registered by name with a config, as xFormers'
``xformers.components.attention``. The registry and the configs need no torch; a part is a torch
module (``Attention``), imported when first built. Built-ins: ``scaled_dot_product``, ``local``,
``blocksparse``, ``alibi``, ``linformer``, ``nystrom``, ``variant`` (a user mask_mod/score_mod; docs/python.md, "Parts")."""
from . import configs
from .configs import (  # noqa: F401
    AlibiConfig,
    AttentionConfig,
    BlockSparseConfig,
    LinformerConfig,
    LocalConfig,
    NystromConfig,
    ScaledDotProductConfig,
    VariantConfig,
)
from .registry import (  # noqa: F401
    ConfigError,
    attention_class,
    attention_config_class,
    build_attention,
    parse_config,
    register_attention,
    registered_attentions,
)
from .registry import _declare

for _name, _config, _path in (
    ("scaled_dot_product", configs.ScaledDotProductConfig, "jitattn.parts.scaled_dot_product:ScaledDotProduct"),
    ("local", configs.LocalConfig, "jitattn.parts.local:LocalAttention"),
    ("blocksparse", configs.BlockSparseConfig, "jitattn.parts.blocksparse:BlockSparseAttention"),
    ("alibi", configs.AlibiConfig, "jitattn.parts.alibi:AlibiAttention"),
    ("linformer", configs.LinformerConfig, "jitattn.parts.linformer:LinformerAttention"),
    ("nystrom", configs.NystromConfig, "jitattn.parts.nystrom:NystromAttention"),
    ("variant", configs.VariantConfig, "jitattn.parts.user_variant:VariantAttention"),
):
    _declare(_name, _config, _path)


def __getattr__(name):
    if name == "Attention":   # needs torch: imported on first use
        from .base import Attention

        return Attention
    raise AttributeError(f"module 'jitattn.parts' has no attribute {name!r}")
