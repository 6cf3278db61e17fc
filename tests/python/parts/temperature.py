"""A part registered from the tests, as a user would: the registry-wide tests pick it up
(tests/python/conftest.py imports every file here when torch is importable), so
``pytest -k temperature`` runs its construction, reference and GPU tests with nothing else
written. softmax(q·kᵀ/(√hd·temperature))·v through jitattn's kernel."""
from dataclasses import dataclass

import jitattn
from jitattn.ops import memory_efficient_attention
from jitattn.parts import base


@dataclass
class TemperatureConfig(jitattn.AttentionConfig):
    temperature: float = 2.0


@jitattn.register_attention("temperature", TemperatureConfig)
class TemperatureAttention(jitattn.Attention):
    def __init__(self, dropout=0.0, temperature=2.0, *args, **kwargs):
        super().__init__(dropout, *args, **kwargs)
        self.temperature = temperature

    def forward(self, q, k, v, att_mask=None, *args, **kwargs):
        scale = q.shape[-1] ** -0.5 / self.temperature
        qb, kb, vb = (base.to_bmhk(x) for x in (q, k, v))
        return base.from_bmhk(memory_efficient_attention(qb, kb, vb, p=self._p(), scale=scale), q)

    def reference(self, q, k, v, att_mask=None):
        return base.softmax_attention(q, k, v, scale=q.shape[-1] ** -0.5 / self.temperature)
