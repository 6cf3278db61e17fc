"""``jitattn.nn``: torch modules over jitattn's parts. ``MultiheadAttention`` takes FairSeq's
``xformers_att_config`` / ``xformers_blocksparse_layout`` / ``xformers_blocksparse_blocksize``.
Imports torch on first use of a module (the package imports without it)."""


def __getattr__(name):
    if name == "MultiheadAttention":
        from .multihead_attention import MultiheadAttention

        return MultiheadAttention
    raise AttributeError(f"module 'jitattn.nn' has no attribute {name!r}")
