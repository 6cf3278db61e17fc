"""FairSeq's MultiheadAttention with its xFormers path, over jitattn's parts.

What it takes from FairSeq's module: [T, B, C] inputs; q/k/v/out projections (xavier init, the
q/k/v ones with gain 1/√2 when the dims agree); ``xformers_att_config`` as a JSON string or
dict, given ``dropout`` and ``num_heads`` from the module unless it names them; a block-sparse
layout turns the part into ``blocksparse`` with that layout and block size; the heads folded
into the batch ([B*H, S, hd]) unless the part wants them apart ([B, H, S, hd]);
``key_padding_mask`` ([B, S], True = pad) merged into the attention mask; forward returns
``(out, None)`` (no attention weights). Without a config, the part is ``scaled_dot_product``.
Not taken: incremental decoding state, add_bias_kv, add_zero_attn, quant noise."""
import math
from typing import Optional

import torch
from torch import nn

from ..parts.registry import _as_dict, build_attention


class MultiheadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, kdim=None, vdim=None, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, self_attention=False, encoder_decoder_attention=False, dictionary=None,
                 q_noise=0.0, qn_block_size=8, xformers_att_config=None,
                 xformers_blocksparse_layout: Optional[torch.Tensor] = None,
                 xformers_blocksparse_blocksize: Optional[int] = 16):
        super().__init__()
        if add_bias_kv or add_zero_attn or q_noise:
            raise ValueError("jitattn.nn.MultiheadAttention: add_bias_kv, add_zero_attn and q_noise are not supported")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not a multiple of num_heads={num_heads}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.self_attention, self.encoder_decoder_attention = self_attention, encoder_decoder_attention
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.reset_parameters()

        config = _as_dict(xformers_att_config if xformers_att_config is not None else {"name": "scaled_dot_product"})
        config.setdefault("dropout", dropout)
        config.setdefault("num_heads", num_heads)
        if xformers_blocksparse_layout is not None:
            config.update(name="blocksparse", layout=xformers_blocksparse_layout,
                          block_size=xformers_blocksparse_blocksize)
        self.attention = build_attention(config)

    def reset_parameters(self):
        same = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight, gain=1 / math.sqrt(2) if same else 1.0)
        nn.init.xavier_uniform_(self.out_proj.weight)
        if self.out_proj.bias is not None:
            nn.init.constant_(self.out_proj.bias, 0.0)

    def _heads(self, x, bsz):
        """[S, B, C] -> [B*H, S, hd] or, when the part wants heads apart, [B, H, S, hd]."""
        x = x.reshape(x.shape[0], bsz, self.num_heads, self.head_dim).permute(1, 2, 0, 3)
        return x if self.attention.requires_head_dimension else x.reshape(bsz * self.num_heads, x.shape[2], self.head_dim)

    def _mask(self, attn_mask, key_padding_mask, bsz, tgt_len, src_len, dtype):
        """FairSeq's masks (attn_mask [T, S] additive or bool True = hidden; key_padding_mask
        [B, S], True = pad) as one additive mask the part takes, [T, S] or [B*H, T, S]."""
        mask = None
        if attn_mask is not None:
            mask = attn_mask.to(dtype) if attn_mask.dtype != torch.bool else \
                torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device).masked_fill(attn_mask, -math.inf)
        if key_padding_mask is not None:
            pad = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
            pad = pad.masked_fill(key_padding_mask.to(torch.bool), -math.inf)[:, None, None, :]
            pad = pad.expand(bsz, self.num_heads, tgt_len, src_len)
            mask = pad if mask is None else pad + mask
            if not self.attention.requires_head_dimension:
                mask = mask.reshape(bsz * self.num_heads, tgt_len, src_len)
        if mask is not None and not self.attention.supports_attention_mask:
            raise ValueError(f"attention part {self.attention.part_name!r} takes no attention or key padding mask")
        return mask

    def forward(self, query, key=None, value=None, key_padding_mask=None, incremental_state=None, need_weights=False,
                static_kv=False, attn_mask=None, before_softmax=False, need_head_weights=False):
        if incremental_state is not None or before_softmax:
            raise ValueError("jitattn.nn.MultiheadAttention: incremental_state and before_softmax are not supported")
        tgt_len, bsz, embed_dim = query.shape
        if embed_dim != self.embed_dim:
            raise ValueError(f"query dim {embed_dim} != {self.embed_dim}")
        if self.self_attention or key is None:
            key = value = query
        elif self.encoder_decoder_attention or value is None:
            value = key
        q = self._heads(self.q_proj(query), bsz)
        k = self._heads(self.k_proj(key), bsz)
        v = self._heads(self.v_proj(value), bsz)
        mask = self._mask(attn_mask, key_padding_mask, bsz, tgt_len, key.shape[0], q.dtype)
        y = self.attention(q, k, v, att_mask=mask) if mask is not None else self.attention(q, k, v)
        y = y.reshape(bsz, self.num_heads, tgt_len, self.head_dim).permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)
        return self.out_proj(y), None
