"""Without a GPU: every library call the torch layer makes for test_torch_gpu.py's cases is one the
library accepts. CPU tensors pose as device 0 and each launch becomes its *_not_supported_reasons
twin (validation reads no memory), so shapes, strides, dtypes, lse/dk/dbias layouts and the bias
handles are checked; the numbers are not (test_torch_gpu.py does that on the GPU).
Skipped without torch."""
import pytest

from conftest import requires_torch

pytestmark = requires_torch


@pytest.fixture
def validate_only(monkeypatch):
    import torch

    import jitattn
    from jitattn import _capi
    from jitattn.ops.fmha import _torch_launch as L

    real = _capi.lib()

    class Validating:
        def __getattr__(self, name):
            return getattr(real, name)

        def jitattn_forward_h(self, q, k, v, h, o, opts, stream):
            return real.jitattn_not_supported_reasons_h(q, k, v, h, o, None, opts)

        def jitattn_forward_requires_grad_h(self, q, k, v, h, o, lse, opts, stream):
            return real.jitattn_not_supported_reasons_h(q, k, v, h, o, lse, opts)

        jitattn_partial_h = jitattn_forward_requires_grad_h

        def jitattn_backward_h(self, *args):
            return real.jitattn_backward_not_supported_reasons_h(*args[:-1])

        def jitattn_merge_attentions(self, a, b, o, lse, stream):
            return real.jitattn_merge_not_supported_reasons(a, b, o, lse)

        def jitattn_merge_attentions_list(self, a, b, n, o, lse, stream):
            return real.jitattn_merge_list_not_supported_reasons(a, b, n, o, lse)

    class NoDevice:
        def __init__(self, device):
            pass

        def __enter__(self):
            pass

        def __exit__(self, *exc):
            pass

    check = L.check_tensor
    monkeypatch.setattr(_capi, "lib", lambda: Validating())
    monkeypatch.setattr(L, "check_tensor", lambda x, name, device: x.device.type == "cpu" or check(x, name, device))
    monkeypatch.setattr(L, "stream_of", lambda device: 0)
    monkeypatch.setattr(L, "_OnDevice", NoDevice)
    import test_torch_gpu as T

    monkeypatch.setattr(T, "DEV", "cpu")
    monkeypatch.setattr(T, "rel", lambda x, ref: 0.0)  # the outputs are never written here
    monkeypatch.setattr(torch, "equal", lambda *a: True)
    ones = torch.ones
    monkeypatch.setattr(torch, "isfinite", lambda x: ones((), dtype=torch.bool))
    return T, jitattn


def _cases():
    import test_torch_gpu as T
    import torch

    cases = [(f"{c[0]}-{d}", T.test_dense_masks_forward_and_backward, (c, d))
             for c in T.dense_cases() for d in (torch.bfloat16, torch.float32)]
    cases += [(c[0], T.test_varlen_masks_forward_and_backward, (c, torch.bfloat16)) for c in T.varlen_cases()]
    cases += [(f"paged-{k}", T.test_paged_masks_forward, (k,)) for k in ("padded", "causal", "local", "gappy",
                                                                          "gappy_causal")]
    cases += [("tensor-bias", T.test_tensor_bias_and_its_gradient, (torch.bfloat16,)),
              ("partial-stacked", T.test_partial_and_merge_equal_the_whole, (False,)),
              ("partial-listed", T.test_partial_and_merge_equal_the_whole, (True,))]
    cases += [(n, getattr(T, n), ()) for n in (
        "test_gqa_4d", "test_bmghk_with_keys_expanded_over_heads", "test_bmk_scale_and_output_dtype",
        "test_non_autograd_api_matches_autograd", "test_autograd_through_a_small_model_matches_sdpa",
        "test_a_bias_dropped_before_the_backward_still_serves_it")]
    return cases


try:
    CASES = _cases()
except ImportError:  # no torch: the module is skipped anyway
    CASES = []


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_library_accepts_every_call(validate_only, case):
    T, jitattn = validate_only
    name, fn, args = case
    try:
        fn(*args)
    except jitattn.Error as e:
        pytest.fail(f"{name}: the library refuses a call: {e.reasons}")
