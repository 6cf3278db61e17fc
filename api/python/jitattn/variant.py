"""User attention variants (the C++ ``jitattn::Variant``, docs/python.md "User variants"): CUDA
C++ snippets compiled into the kernels, over any ``attn_bias``.

    doc = torch.tensor(..., dtype=torch.int32, device="cuda")
    v = jitattn.Variant(mask_mod="doc[q_idx] == doc[kv_idx]", captures={"doc": doc})
    out = jitattn.ops.memory_efficient_attention(q, k, v_, attn_bias=LowerTriangularMask(), variant=v)

Each snippet is the body of a device function (statements that ``return``, or one expression):
``mask_mod`` -> bool over ``(b, h, q_idx, kv_idx)``; ``score_mod`` -> float over ``(score, b, h,
q_idx, kv_idx)``; ``score_grad`` its derivative in ``score`` (or ``additive=True``: gradient 1),
which the backward needs. ``score`` is q·k·scale plus the built-in bias; the built-in mask applies
first. ``b`` is the batch row (dense) or the sequence (block-diagonal, paged), positions count from
that sequence's start, ``h`` is the query head.

``captures`` maps names to CUDA tensors (rank 1..4, any strides; float32/float16/bfloat16 read
as float, int32, int64, bool/uint8) read as ``name(i, j)`` or ``name[i]``, and to Python floats
and ints. The code — snippets, capture names, kinds, dtypes and ranks — is compiled once and
cached; values are per call (a new tensor or scalar reuses the kernel). Captured tensors get no
gradient.

A block map (``v.build_block_map(mq, mkv)``, FlexAttention's ``create_block_mask``) evaluates
``mask_mod`` once on the GPU per cell of ``cell_size`` × ``cell_size`` elements; the variant then
carries it to every call, forward and backward: tiles whose cells are all masked are never
loaded, and tiles inside fully visible cells skip ``mask_mod`` (``score_mod`` still runs). It
also holds each query row's visible keys as one interval where they are one (documents,
windows, prefix-LM): the forward masks the other tiles of such rows by a compare per element
instead of calling ``mask_mod``. Rebuild it when a captured tensor's contents change;
``v.block_map = None`` drops it.
"""
import ctypes
import weakref

from . import _capi

_KIND_TENSOR, _KIND_F32, _KIND_I32 = 0, 1, 2
_TYPE_OF = {"float32": 0, "float16": 1, "bfloat16": 2, "int32": 3, "int64": 4, "bool": 5, "uint8": 5}
_handles = {}  # code key -> jitattn_variant handle, kept for the process (one per distinct code)
_registry = weakref.WeakValueDictionary()  # id -> Variant, for the custom op (torch.compile)
_next_id = [1]


def _capture_kind(name, value):
    if isinstance(value, bool) or isinstance(value, int):
        return (name, _KIND_I32, 0, 0)
    if isinstance(value, float):
        return (name, _KIND_F32, 0, 0)
    dtype = str(getattr(value, "dtype", "")).replace("torch.", "")
    if dtype not in _TYPE_OF or not hasattr(value, "data_ptr"):
        raise TypeError(f"variant capture '{name}': a CUDA tensor (float32, float16, bfloat16, int32, int64, bool, "
                        f"uint8), a float or an int, not {type(value).__name__} {dtype}")
    return (name, _KIND_TENSOR, _TYPE_OF[dtype], value.dim())


class BlockMap:
    """A variant's block map (the C++ ``jitattn::BlockMap``): ``cells`` a uint8 CUDA tensor
    [B or 1, H or 1, ceil(mq / cell_size), ceil(mkv / cell_size)] of 0 (no element visible), 1
    (some) or 2 (all), and ``spans`` an int32 CUDA tensor [B or 1, H or 1, mq, 2] (or None): row
    i's (lo, hi) when the keys it sees under mask_mod are exactly [lo, hi) ((0, 0): none), else
    (0, -1); built by ``Variant.build_block_map``."""

    def __init__(self, cells, cell_size, mq, mkv, variant_id, spans=None):
        self.cells, self.cell_size, self.mq, self.mkv, self.variant_id = cells, cell_size, mq, mkv, variant_id
        self.spans = spans

    def _c(self):
        from . import _tensor

        m = _capi.BlockMap(cell_size=self.cell_size, mq=self.mq, mkv=self.mkv, variant_id=self.variant_id)
        m.cells = _tensor.to_c(self.cells, "block_map.cells")
        if self.spans is not None:
            m.spans = _tensor.to_c(self.spans, "block_map.spans")
        return m


class Variant:
    """A mask_mod and/or score_mod with named captures; see the module's doc."""

    def __init__(self, mask_mod=None, score_mod=None, score_grad=None, additive=False, captures=None, block_map=None):
        self.mask_mod, self.score_mod, self.score_grad = mask_mod, score_mod, score_grad
        self.additive = bool(additive)
        self.captures = dict(captures or {})
        self.block_map = block_map  # a BlockMap of this variant's mask_mod, or None
        self._id = _next_id[0]
        _next_id[0] += 1
        _registry[self._id] = self
        try:  # made now, not while torch.compile traces a first call (it would be a constant there)
            import torch

            self._key_tensor = torch.tensor(self._id, dtype=torch.int64)
        except ImportError:
            self._key_tensor = None

    # ---- the code -------------------------------------------------------------------------
    def _code(self):
        return (self.mask_mod or "", self.score_mod or "", self.score_grad or "", self.additive,
                tuple(_capture_kind(n, v) for n, v in self.captures.items()))

    def _handle(self):
        code = self._code()
        h = _handles.get(code)
        if h is None:
            mask, score, grad, additive, caps = code
            decls = (_capi.CaptureDecl * max(1, len(caps)))()
            names = [n.encode() for n, *_ in caps]
            for i, (n, kind, t, rank) in enumerate(caps):
                decls[i] = _capi.CaptureDecl(name=names[i], kind=kind, type=t, rank=rank)
            desc = _capi.VariantDesc(mask_mod=mask.encode() or None, score_mod=score.encode() or None,
                                     score_grad=grad.encode() or None, additive=int(additive),
                                     num_captures=len(caps), captures=decls)
            h = ctypes.POINTER(_capi.VariantHandle)()
            _capi.check(_capi.lib().jitattn_variant_create(ctypes.byref(desc), ctypes.byref(h)))
            _handles[code] = h
        return h

    def code_id(self):
        """The code's id: the ``+u<16 hex>`` of its kernels' names."""
        return int(_capi.lib().jitattn_variant_id(self._handle()))

    def tensors(self):
        """The captured tensors, in declaration order (what the custom op takes as inputs)."""
        return [v for v in self.captures.values() if not isinstance(v, (bool, int, float))]

    def key(self):
        """A 0-dim int64 CPU tensor naming this object for torch.ops.jitattn (as a bias's key)."""
        return self._key_tensor

    def snapshot(self):
        """A copy with the same code and the current capture values (the captures dict copied,
        the tensors shared): what a forward keeps for its backward, so changing this variant
        between the two does not change the function whose gradient is computed."""
        return Variant(self.mask_mod, self.score_mod, self.score_grad, self.additive, self.captures, self.block_map)

    # ---- block maps and materialize -----------------------------------------------------------
    def _device_of_captures(self, device):
        import torch

        if device is None:
            device = next((t.device for t in self.tensors()), None) or torch.device("cuda", torch.cuda.current_device())
        device = torch.device(device)
        if device.index is None:
            device = torch.device(device.type, torch.cuda.current_device())
        return device

    def build_block_map(self, mq, mkv, batch=1, heads=1, cell_size=128, device=None):
        """Evaluates mask_mod over every (b < batch, h < heads, q_idx < mq, kv_idx < mkv) on the
        GPU, keeps the map on this variant (``self.block_map``) and returns it. batch or heads 1:
        the mask does not depend on b or h. Calls may use it when their sequences have at most mq
        queries and mkv keys and their batch (sequences) and heads equal the map's or the map's
        are 1. Queued on the current stream."""
        import torch

        device = self._device_of_captures(device)
        rows, cols = -(-int(mq) // int(cell_size)), -(-int(mkv) // int(cell_size))
        cells = torch.empty((int(batch), int(heads), max(rows, 0), max(cols, 0)), dtype=torch.uint8, device=device)
        spans = torch.empty((int(batch), int(heads), max(int(mq), 0), 2), dtype=torch.int32, device=device)
        from . import _tensor

        h, vals, n, keep = self.call_values(device)
        c_cells, c_spans = _tensor.to_c(cells, "cells"), _tensor.to_c(spans, "spans")
        out = _capi.BlockMap()
        stream = torch.cuda.current_stream(device).cuda_stream
        _capi.check(_capi.lib().jitattn_block_map_build_spans(h, n, vals, int(mq), int(mkv), int(cell_size),
                                                              ctypes.byref(c_cells), ctypes.byref(c_spans),
                                                              ctypes.byref(out), ctypes.c_void_p(stream)))
        del keep
        self.block_map = BlockMap(cells, int(cell_size), int(mq), int(mkv), int(out.variant_id), spans)
        return self.block_map

    def materialize(self, shape, device=None):
        """The variant as an additive float32 bias of ``shape`` [B, H, Mq, Mkv] on the GPU: -inf
        where mask_mod is false, else score_mod(0, ...) (additive variants) or 0."""
        import torch

        device = self._device_of_captures(device)
        out = torch.empty(tuple(int(n) for n in shape), dtype=torch.float32, device=device)
        from . import _tensor

        h, vals, n, keep = self.call_values(device)
        c_out = _tensor.to_c(out, "out")
        stream = torch.cuda.current_stream(device).cuda_stream
        _capi.check(_capi.lib().jitattn_variant_materialize(h, n, vals, ctypes.byref(c_out), ctypes.c_void_p(stream)))
        del keep
        return out

    # ---- one call ---------------------------------------------------------------------------
    def call_values(self, device, tensors=None):
        """(handle, values array, count, keep): the C API's per-call capture values, the tensors
        checked to be on ``device``. ``tensors`` replaces the captured ones (the custom op's inputs)."""
        h = self._handle()
        items = list(self.captures.items())
        n = len(items)
        vals = (_capi.CaptureValue * max(1, n))()
        replace = iter(tensors) if tensors is not None else None
        keep = []
        for i, (name, v) in enumerate(items):
            c = vals[i]
            c.struct_size = ctypes.sizeof(_capi.CaptureValue)
            if isinstance(v, (bool, int, float)):
                c.value = float(v)
                continue
            if replace is not None:
                v = next(replace)
            if not v.is_cuda or v.device != device:
                raise _capi.Error(1, [f"variant capture '{name}' is on {v.device}; the call runs on {device}"])
            if v.dim() < 1 or v.dim() > 4:
                raise _capi.Error(1, [f"variant capture '{name}': rank={v.dim()} is not in 1..4"])
            c.data = v.data_ptr() or None
            for d in range(v.dim()):
                c.shape[d], c.stride[d] = v.shape[d], v.stride(d)
            keep.append(v)
        return h, vals, n, keep


def lookup(key_tensor):
    """The Variant a key tensor names (for the custom ops)."""
    v = _registry.get(int(key_tensor))
    if v is None:
        raise RuntimeError("jitattn: the Variant of this call was garbage-collected; keep it alive while it is used")
    return v


def apply(options, variant, device, tensors=None):
    """Sets ``options``' variant fields (a C API options struct); returns what must stay alive."""
    if variant is None:
        return None
    h, vals, n, keep = variant.call_values(device, tensors)
    options.variant, options.num_capture_values, options.capture_values = h, n, vals
    block_map = None
    if variant.block_map is not None:
        block_map = variant.block_map._c()
        options.block_map = ctypes.pointer(block_map)
    return (vals, keep, block_map)
