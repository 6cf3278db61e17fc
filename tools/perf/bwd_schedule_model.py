#!/usr/bin/env python3
"""A model (not a measurement) of the backward's block schedule: how long 132 SMs take to run the
dK/dV kernel's key blocks of one call, relative to perfect balance, for the grid orders and
schedules the sm_90a backward could use. A key block's cost is its query visits (64 queries each,
K = 128: M/64 visits non-causal, M/64 - 2·kb causal) plus `--overhead` visits of fixed cost when
each block is its own CTA (K/V load, pipeline fill, dK/dV store: nothing overlaps them at one
CTA per SM); a persistent CTA overlaps them with the neighbouring blocks' work (overhead 0).

  python3 tools/perf/bwd_schedule_model.py [--overhead 1] [--sms 132]

Orders: pair-major (the grid today: blockIdx = pair · key blocks + kb), kb-major (every pair's
key block 0 first). Schedules: greedy (the hardware hands the next block to the first free SM),
static snake (a persistent grid of one CTA per SM taking items x, 2G-1-x, 2G+x, ...).
docs/perf-notes.md, "A model of the backward's schedule", reads it."""
import argparse
import heapq


def greedy(jobs, sms, overhead):
    free = [0.0] * sms
    for j in jobs:
        t = heapq.heappop(free)
        heapq.heappush(free, t + j + overhead)
    return max(free)


def static_snake(jobs, sms):
    load = [0.0] * sms
    for i, j in enumerate(jobs):
        r, x = divmod(i, sms)
        load[x if r % 2 == 0 else sms - 1 - x] += j
    return max(load)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--overhead", type=float, default=1.0, help="fixed cost of a non-persistent block, in visits")
    ap.add_argument("--sms", type=int, default=132)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--heads", type=int, default=16)
    a = ap.parse_args()
    print(f"time / perfect balance of the visits alone ({a.sms} SMs, {a.tokens} tokens, {a.heads} heads, "
          f"{a.overhead} visits of fixed cost per non-persistent block)")
    for m in (4096, 16384):
        pairs, nb, steps = a.tokens // m * a.heads, m // 128, m // 64
        for causal in (False, True):
            cost = (lambda kb: steps - 2 * kb) if causal else (lambda kb: steps)
            pm = [cost(kb) for _ in range(pairs) for kb in range(nb)]
            km = [cost(kb) for kb in range(nb) for _ in range(pairs)]
            ideal = sum(pm) / a.sms
            print(f"M={m:5d} causal={int(causal)}: greedy pair-major {greedy(pm, a.sms, a.overhead) / ideal:.3f}, "
                  f"greedy kb-major {greedy(km, a.sms, a.overhead) / ideal:.3f}, "
                  f"persistent snake pair-major {static_snake(pm, a.sms) / ideal:.3f}, "
                  f"persistent snake kb-major {static_snake(km, a.sms) / ideal:.3f}")


if __name__ == "__main__":
    main()
