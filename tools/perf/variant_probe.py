import torch, triton.testing as tt, jitattn
from jitattn import ops
from jitattn.ops.fmha import attn_bias as ab
M, H, K, W = 16384, 16, 128, 256
q, k, v = (torch.randn(1, M, H, K, device="cuda", dtype=torch.bfloat16) for _ in range(3))
def ms(f): return tt.do_bench(f, warmup=25, rep=100, return_mode="median")
def run(name, bias=None, var=None):
    f = lambda: ops.memory_efficient_attention_forward(q, k, v, bias, variant=var) if var is not None else ops.memory_efficient_attention_forward(q, k, v, bias)
    f(); torch.cuda.synchronize()
    print(f"{name:50s} {ms(f):8.3f} ms", flush=True)
run("causal", ab.LowerTriangularMask())
run("builtin local W", ab.LowerTriangularFromBottomRightLocalAttentionMask(W))
w = jitattn.Variant(mask_mod="q_idx - kv_idx < w", captures={"w": W}); w.build_block_map(M, M)
run("variant window over causal + map", ab.LowerTriangularMask(), w)
w2 = jitattn.Variant(mask_mod="q_idx - kv_idx < w", captures={"w": W})
run("variant window over builtin local, no map", ab.LowerTriangularFromBottomRightLocalAttentionMask(W), w2)
w2.build_block_map(M, M)
run("variant window over builtin local + map", ab.LowerTriangularFromBottomRightLocalAttentionMask(W), w2)
t = jitattn.Variant(mask_mod="true /* all */"); t.build_block_map(M, M)
run("variant mask true over causal + map (all full)", ab.LowerTriangularMask(), t)
band = torch.zeros(1, M // 128, M // 128, dtype=torch.bool, device="cuda")
for r in range(M // 128):
    band[0, r, max(0, r - 2):r + 1] = True
run("block sparse band (3 blocks) causal", ab.BlockSparseMask(band, 128, causal=True))
run("block sparse band (3 blocks)", ab.BlockSparseMask(band, 128))
for name, code in (("softcap tanhf", "cap * tanhf(score / cap)"),
                   ("softcap tanhf * inv", "cap * tanhf(score * inv)"),
                   ("softcap tanh.approx", "float y; asm(\"tanh.approx.f32 %0, %1;\" : \"=f\"(y) : \"f\"(score * inv)); return cap * y;"),
                   ("score * 1", "score * one")):
    s = jitattn.Variant(score_mod=code, score_grad="return 1.f;", captures={"cap": 20.0, "inv": 0.05, "one": 1.0})
    run(name, ab.LowerTriangularMask(), s)
g = torch.Generator().manual_seed(1)
cuts = sorted(torch.randperm(M - 1, generator=g)[:15].add(1).tolist())
lens = [b - c for c, b in zip([0] + cuts, cuts + [M])]
doc = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens)).cuda().int()
run("builtin docs16", ab.BlockDiagonalCausalMask.from_seqlens(lens))
d = jitattn.Variant(mask_mod="doc[q_idx] == doc[kv_idx]", captures={"doc": doc}); d.build_block_map(M, M)
run("variant docs16 over causal + map", ab.LowerTriangularMask(), d)
d2 = jitattn.Variant(mask_mod="doc[q_idx] == doc[kv_idx]", captures={"doc": doc})
run("variant docs16 over builtin docs, no map", ab.BlockDiagonalCausalMask.from_seqlens(lens), d2)
run("no mask", None)
rnd = torch.rand(H, M // 128, M // 128, generator=torch.Generator().manual_seed(2)).cuda() < 0.1
run("block sparse 10% random", ab.BlockSparseMask(rnd, 128))
