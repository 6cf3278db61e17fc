"""The parts registry without torch (CI has none): names, the decorator, config parsing with
FairSeq's strings verbatim, and the errors a bad config gets."""
import dataclasses
import os
import subprocess
import sys
from typing import Optional

import pytest

import jitattn
from jitattn import parts
from jitattn.parts import ConfigError, parse_config

BUILT_INS = ["alibi", "blocksparse", "linformer", "local", "nystrom", "scaled_dot_product", "variant"]


def test_built_ins_are_registered():
    assert set(BUILT_INS) <= set(jitattn.registered_attentions())
    for name in BUILT_INS:
        config = parts.attention_config_class(name)
        assert dataclasses.is_dataclass(config)
        assert {"name", "dropout", "num_heads"} <= {f.name for f in dataclasses.fields(config)}


def test_registry_and_configs_import_without_torch():
    # A fresh interpreter: importing the registry and parsing a config must not import torch.
    code = ("import sys, jitattn; jitattn.parts.parse_config('{\"name\": \"linformer\", \"seq_len\": \"256\"}'); "
            "jitattn.registered_attentions(); import jitattn.nn; print('torch' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_fairseq_strings_verbatim():
    decoder = parse_config('{"name": "scaled_dot_product"}')
    assert type(decoder) is parts.ScaledDotProductConfig and decoder.causal is False
    encoder = parse_config('{"name": "linformer", "seq_len": "256"}')
    assert type(encoder) is parts.LinformerConfig
    assert encoder.seq_len == 256 and isinstance(encoder.seq_len, int)
    # FairSeq's eval_str_dict also takes a Python dict literal
    assert parse_config("{'name': 'linformer', 'seq_len': 256}").seq_len == 256


def test_values_take_the_fields_types():
    c = parse_config({"name": "local", "window_size": "7", "causal": "true", "dropout": "0.1", "num_heads": 8})
    assert (c.window_size, c.causal, c.dropout, c.num_heads) == (7, True, 0.1, 8)
    assert parse_config({"name": "local", "causal": False, "dropout": 0}).dropout == 0.0
    assert parse_config({"name": "nystrom", "num_landmarks": 32.0}).num_landmarks == 32
    assert parse_config(parts.LinformerConfig(name="linformer", seq_len=128)).seq_len == 128


def test_unknown_name_lists_the_registered_names():
    with pytest.raises(ConfigError, match="unknown attention 'favor'") as e:
        parse_config('{"name": "favor"}')
    for name in BUILT_INS:
        assert name in str(e.value)
    with pytest.raises(ConfigError, match="has no 'name'.*registered: .*linformer"):
        parse_config('{"seq_len": 256}')


@pytest.mark.parametrize("config, message", [
    ('{"name": "linformer", "seqlen": "256"}', "unknown field 'seqlen'"),
    ('{"name": "linformer"}', "missing field 'seq_len'"),
    ('{"name": "linformer", "seq_len": null}', "linformer.seq_len=None is not an int"),
    ('{"name": "linformer", "seq_len": "256x"}', "linformer.seq_len='256x' is not an int"),
    ('{"name": "linformer", "seq_len": 256.5}', "is not an int"),
    ('{"name": "local", "causal": "maybe"}', "local.causal='maybe' is not a bool"),
    ('{"name": "nystrom", "dropout": "much"}', "nystrom.dropout='much' is not a finite float"),
    ('{"name": "nystrom", "num_landmarks": true}', "is not an int"),
])
def test_bad_fields_list_the_configs_fields(config, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse_config(config)
    cls = parts.attention_config_class(parse_config_name(config))
    for f in dataclasses.fields(cls):
        assert f"{f.name}:" in str(e.value)
    assert cls.__name__ in str(e.value)


def parse_config_name(config):
    import json
    return json.loads(config)["name"]


@pytest.mark.parametrize("config", ["not json", "[1, 2]", "42", None])
def test_not_a_config(config):
    with pytest.raises(ConfigError):
        parse_config(config)


@pytest.mark.parametrize("config, message", [
    ('{"name": "local", "window_size": 3, "window_size": 128}', "key 'window_size' appears twice"),
    ('{"name": "nystrom", "dropout": NaN}', "is not a finite float"),
    ('{"name": "nystrom", "dropout": "inf"}', "is not a finite float"),
    ('{"name": "local", "window_size": "12_8"}', "is not an int"),
    ('{"name": ["local"]}', "'name' must be a string"),
    ("{'name': 'local', 1: 2}", "keys must be strings"),
    ("[" * 100000 + "]" * 100000, "nested too deeply|neither JSON"),
    ("{'name': 'local', 'window_size': " + "-" * 100000 + "1}", "neither JSON nor a dict literal|is not an int"),
])
def test_hostile_configs_get_a_config_error(config, message):
    """What json.loads and int()/float() would let through or raise as something else."""
    with pytest.raises(ConfigError, match=message) as e:
        parse_config(config)
    assert len(str(e.value)) < 3000, "the error echoes its whole input"


def test_register_attention_decorator():
    @dataclasses.dataclass
    class DoublingConfig(parts.AttentionConfig):
        factor: Optional[int] = 2

    @jitattn.register_attention("test_doubling", DoublingConfig)
    class Doubling:   # a stand-in for an Attention subclass (no torch here)
        def __init__(self, dropout=0.0, factor=2, *args, **kwargs):
            self.factor, self.extra = factor, kwargs

        @classmethod
        def from_config(cls, config):
            return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "name"})

    try:
        assert "test_doubling" in jitattn.registered_attentions()
        assert Doubling.part_name == "test_doubling" and Doubling.config_class is DoublingConfig
        part = jitattn.build_attention('{"name": "test_doubling", "factor": "3", "num_heads": 4}')
        assert isinstance(part, Doubling) and part.factor == 3 and part.extra == {"num_heads": 4}
        with pytest.raises(ConfigError, match="unknown field 'facter'.*DoublingConfig has: .*factor: Optional"):
            jitattn.build_attention({"name": "test_doubling", "facter": 3})

        with pytest.raises(ConfigError, match="the name is taken"):
            @jitattn.register_attention("test_doubling", DoublingConfig)
            class Other:
                pass
    finally:
        parts.registry._REGISTRY.pop("test_doubling", None)


def test_register_attention_wants_a_dataclass_config():
    with pytest.raises(ConfigError, match="not a dataclass"):
        jitattn.register_attention("test_bad", dict)


def test_a_built_in_name_cannot_be_taken():
    @dataclasses.dataclass
    class OtherConfig(parts.AttentionConfig):
        seq_len: int = 1

    with pytest.raises(ConfigError, match="'linformer'.*built-in part's, with config LinformerConfig"):
        jitattn.register_attention("linformer", OtherConfig)(type("Other", (), {}))
    assert parts.attention_config_class("linformer") is parts.LinformerConfig


def test_variant_config_from_json():
    c = parse_config('{"name": "variant", "score_mod": "cap * tanhf(score / cap)", "additive": "false", '
                     '"captures": {"cap": 30.0}, "causal": "true"}')
    assert type(c) is parts.VariantConfig
    assert (c.score_mod, c.additive, c.captures, c.causal, c.reference) == ("cap * tanhf(score / cap)", False,
                                                                           {"cap": 30.0}, True, None)
    with pytest.raises(ConfigError, match="unknown field 'score_fn'.*VariantConfig has: .*mask_mod"):
        parse_config({"name": "variant", "score_fn": "score"})
