"""jitattn.Variant without a GPU: the code is checked by the library (names, ranks, kinds), its
id follows the code and not the values, and bad captures raise with the library's reasons."""
import pytest

import jitattn
from jitattn import variant as V


def test_code_id_follows_the_code_not_the_values():
    a = jitattn.Variant(mask_mod="q_idx - kv_idx < w", captures={"w": 8})
    b = jitattn.Variant(mask_mod="q_idx - kv_idx < w", captures={"w": 100})
    c = jitattn.Variant(mask_mod="q_idx - kv_idx < w", captures={"w": 8.0})  # a float: other code
    assert a.code_id() == b.code_id() != 0
    assert a.code_id() != c.code_id()
    d = jitattn.Variant(mask_mod="q_idx - kv_idx <= w", captures={"w": 8})
    assert d.code_id() != a.code_id()


def test_bad_code_raises_the_library_reasons():
    with pytest.raises(jitattn.Error) as e:
        jitattn.Variant(mask_mod="true", captures={"kv_idx": 1}).code_id()
    assert any("'kv_idx': the name is taken" in r for r in e.value.reasons)
    with pytest.raises(jitattn.Error) as e:
        jitattn.Variant(score_grad="return 1.f;").code_id()
    assert any("without score_mod" in r for r in e.value.reasons)
    with pytest.raises(jitattn.Error) as e:
        jitattn.Variant().code_id()
    assert any("neither mask_mod nor score_mod" in r for r in e.value.reasons)


def test_a_capture_of_another_type_is_refused():
    with pytest.raises(TypeError, match="variant capture 'table'"):
        jitattn.Variant(mask_mod="true", captures={"table": [1, 2, 3]}).code_id()


def test_the_registry_names_live_variants_only():
    v = jitattn.Variant(mask_mod="true")
    key = v._id
    assert V._registry[key] is v
    del v
    import gc

    gc.collect()
    assert key not in V._registry
