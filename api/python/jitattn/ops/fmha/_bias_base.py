"""``AttentionBias``, the base of every bias class: its C description (``jitattn_bias``), the
handle made from it once (``jitattn_bias_create``: the library converts the bias through its
xFormers-style constructors, checks it, and later uploads its device arrays once per handle),
and ``materialize``.

A subclass only says what it is: ``_KIND`` (a JITATTN_BIAS_* value) and its fields; the
description reads them by name (``q_seqinfo``, ``k_seqinfo``, ``_window_size``, ...).
"""
import array
import ctypes
import itertools
import threading
import weakref

from ... import _capi, _tensor
from ._seqinfo import _GappySeqInfo, _PaddedSeqLenInfo, _SeqLenInfo

_handle_lock = threading.Lock()
_live = [0]  # handles created and not yet destroyed (tests read it through live_handles())


# Every bias object with a handle, by a number of its own (never reused): the torch ops receive
# that number as a 0-dim int64 CPU tensor (``_jitattn_key``) and find the object here (see
# ops/fmha/_torch_bias.py for why a tensor). Weak: the registry keeps no bias alive.
_registry = weakref.WeakValueDictionary()
_ids = itertools.count(1)


def registered(number: int):
    """The live bias object registered under ``number``, or None."""
    return _registry.get(number)


def live_handles() -> int:
    """How many bias handles exist now (each bias object holds at most one)."""
    return _live[0]


def _destroy(handle):
    _capi.lib().jitattn_bias_destroy(handle)
    _live[0] -= 1


def _keep(keep, value):
    keep.append(value)
    return value


def _sized(values, n, name):
    if len(values) != n:
        raise _capi.Error(_capi.ERROR_INVALID_ARGUMENT, [f"len({name})={len(values)} must be {n} (one per sequence"
                                                         f"{', plus the key count' if name == 'kv_seqstarts' else ''})"],
                          "JITATTN_ERROR_INVALID_ARGUMENT")
    return values


def _try_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


class AttentionBias:
    """Base class of the attention biases (xFormers' ``AttentionBias``)."""

    _KIND = 0  # JITATTN_BIAS_NONE; every subclass sets its own

    # ---- the C description and handle ---------------------------------------------------------
    def _c_fields(self, desc, keep):
        """Fills ``desc`` from this bias's fields; appends to ``keep`` what must outlive it."""
        q = getattr(self, "q_seqinfo", None)
        k = getattr(self, "k_seqinfo", None)
        n = 0
        if q is not None:
            n = len(q.seqlen_py)
            desc.num_seqs = _capi.int32(n, "len(q_seqlen)")
            desc.q_seqlen = _keep(keep, _capi.int32_array(q.seqlen_py, "q_seqlen"))
        if k is not None:
            # The C API reads num_seqs entries (num_seqs + 1 starts): a shorter list is refused here.
            desc.kv_seqlen = _keep(keep, _capi.int32_array(_sized(k.seqlen_py, n, "kv_seqlen"), "kv_seqlen"))
            if isinstance(k, _PaddedSeqLenInfo):
                desc.kv_padding = _capi.int32(k.padding, "kv_padding")
            elif isinstance(k, _GappySeqInfo):
                starts = _sized(self._c_kv_seqstarts(), n + 1, "kv_seqstarts")
                desc.kv_seqstarts = _keep(keep, _capi.int32_array(starts, "kv_seqstarts"))
        for attr, field in (("_window_size", "window_size"), ("window_left", "window_left"),
                            ("window_right", "window_right"), ("page_size", "page_size")):
            if getattr(self, attr, None) is not None:
                setattr(desc, field, _capi.int32(getattr(self, attr), attr.lstrip("_")))
        tables = getattr(self, "block_tables", None)
        if tables is not None:
            rows = _sized(tables.tolist() if hasattr(tables, "tolist") else [list(r) for r in tables], n,
                          "block_tables (rows)")
            desc.max_pages = _capi.int32(len(rows[0]) if rows else 0, "block_tables.shape[1]")
            for b, r in enumerate(rows):
                _sized(r, desc.max_pages, f"block_tables[{b}]")
            desc.block_tables = _keep(keep, _capi.int32_array([x for r in rows for x in r], "block_tables"))
        if hasattr(self, "_alibi_heads"):
            desc.alibi_num_slopes = _capi.int32(self._alibi_heads, "len(slopes)")
            if self._alibi_slopes is not None:
                keep.append((ctypes.c_float * len(self._alibi_slopes))(*self._alibi_slopes))
                desc.alibi_slopes = keep[-1]
        if getattr(self, "_bias", None) is not None:
            keep.append(self._bias)
            keep.append(_tensor.to_c(self._bias, "bias"))
            desc.tensor = ctypes.pointer(keep[-1])

    def _c_kv_seqstarts(self):
        return self.k_seqinfo.seqstart_py

    def _c_desc(self):
        desc, keep = _capi.Bias(), []
        desc.kind = self._KIND
        self._c_fields(desc, keep)
        return desc, keep

    def _c_handle(self):
        """The handle, created on first use (which checks the bias) and kept for the object's life."""
        h = self.__dict__.get("_jitattn_handle")
        if h is not None:
            return h
        with _handle_lock:
            h = self.__dict__.get("_jitattn_handle")
            if h is None:
                desc, keep = self._c_desc()
                h = ctypes.POINTER(_capi.BiasHandle)()
                lib = _capi.lib()
                _capi.check(lib.jitattn_bias_create(ctypes.byref(desc), ctypes.byref(h)))
                _live[0] += 1
                self.__dict__["_jitattn_keep"] = keep  # a tensor bias's memory: read by every call
                self.__dict__["_jitattn_finalizer"] = weakref.finalize(self, _destroy, h)
                number = next(_ids)
                _registry[number] = self
                self.__dict__["_jitattn_id"] = number
                torch = _try_torch()
                if torch is not None:  # made here, outside any torch.compile trace
                    key = torch.tensor(number, dtype=torch.int64)
                    # The key holds its bias: autograd saves the key for the backward, and so keeps
                    # the bias alive until then even when the caller dropped it (a cycle the GC frees).
                    key._jitattn_bias = self
                    self.__dict__["_jitattn_key"] = key
                self.__dict__["_jitattn_handle"] = h
        return h

    @property
    def handle_id(self) -> int:
        """The address of this bias's C handle (the same for every call on this object)."""
        return ctypes.cast(self._c_handle(), ctypes.c_void_p).value

    def _checked(self):
        """Creates the handle now, so that a constructor's bad arguments raise jitattn.Error."""
        self._c_handle()
        return self

    # ---- materialize ----------------------------------------------------------------------------
    def _materialize_bh(self, batch, heads):
        """(B, H) the library materializes; the result is broadcast to the rest. Masks do not
        depend on either (ALiBi depends on H, dense tensors on both)."""
        if getattr(self, "_bias", None) is not None:
            return batch, heads
        if hasattr(self, "_alibi_heads"):
            return 1, heads
        return 1, 1

    def _host_copy(self):
        """This bias, or for a dense tensor in GPU memory the same bias over a host copy of it
        (the library materializes from host memory)."""
        t = getattr(self, "_bias", None)
        if t is None or not _tensor.is_torch_tensor(t) or t.device.type == "cpu":
            return self
        copy = type(self).__new__(type(self))
        copy._bias = t.cpu()
        return copy

    def materialize(self, shape, dtype=None, device="cpu"):
        """The bias as a dense tensor of ``shape`` (``[..., Mq, Mkv]``; the dims before Mq are
        ``[B]``, ``[B, H]`` or ``[B, G, H]``), computed by the library in fp64: a torch tensor
        of ``dtype`` (default float32) on ``device`` when torch is importable, else nested
        Python lists of floats (then ``dtype`` is ignored and ``device`` must be "cpu")."""
        shape = tuple(int(n) for n in shape)
        if len(shape) < 2 or len(shape) > 5:
            raise ValueError(f"materialize: shape={shape} must have 2 to 5 dims ([..., Mq, Mkv])")
        mq, mkv = shape[-2:]
        lead = shape[:-2]
        batch = lead[0] if lead else 1
        heads = 1
        for n in lead[1:]:
            heads *= n
        b, h = self._materialize_bh(batch, heads)
        count = b * h * mq * mkv
        out = array.array("d", bytes(8 * max(count, 1)))  # never NULL, even for an empty shape
        ptr = (ctypes.c_double * len(out)).from_buffer(out)
        _capi.check(_capi.lib().jitattn_materialize_h(self._host_copy()._c_handle(), b, h, mq, mkv, ptr, count))
        del ptr, out[count:]  # the ctypes view first: an exported array cannot shrink
        torch = _try_torch()
        if torch is not None:
            t = torch.frombuffer(out, dtype=torch.float64) if count else torch.empty(0, dtype=torch.float64)
            t = t.reshape(b, h, mq, mkv).expand(batch, heads, mq, mkv).reshape(shape)
            return t.to(dtype=dtype or torch.float32, device=device)
        if str(device) != "cpu":
            raise ValueError(f"materialize: device={device!r} needs torch; without it the result is host lists")
        return _nested(out, b, h, batch, heads, lead, mq, mkv)

    def __repr__(self):
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_jitattn")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"


def _nested(values, b, h, batch, heads, lead, mq, mkv):
    """values [b, h, mq, mkv] broadcast to lead + [mq, mkv], as fresh nested lists."""

    def block(bi, hi):
        off = ((bi if b > 1 else 0) * h + (hi if h > 1 else 0)) * mq * mkv
        return [list(values[off + i * mkv: off + (i + 1) * mkv]) for i in range(mq)]

    if len(lead) == 0:
        return block(0, 0)
    if len(lead) == 1:
        return [block(bi, 0) for bi in range(batch)]
    if len(lead) == 2:
        return [[block(bi, hi) for hi in range(heads)] for bi in range(batch)]
    g, hh = lead[1], lead[2]
    return [[[block(bi, gi * hh + hi) for hi in range(hh)] for gi in range(g)] for bi in range(batch)]
