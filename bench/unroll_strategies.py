"""W1 under each execution strategy of the population (``particle_chunk``), paired.

    python bench/unroll_strategies.py                   # W1, N=8: chunk 0 against 1
    python bench/unroll_strategies.py --chunks 0,1,4 --particles 16

Why each strategy in ``meta_train/estimators/execution.py`` is kept. One
process builds the same W1 outer iteration once per ``particle_chunk`` (0:
every particle under one vmap; 1: one pair at a time, each member alone;
c > 1: c particles vectorised per chunk) and times blocks of them in turn,
the order rotated every block, so a shared machine's drift hits all alike.
Each block's rate is reported against the first chunk's, then the median
ratio and its range.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import statistics
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", default="0,1", help="particle_chunk values, the first the baseline")
    p.add_argument("--particles", type=int, default=8)
    p.add_argument("--trunc-len", type=int, default=20)
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--blocks", type=int, default=6, help="timed blocks of each program")
    p.add_argument("--iters", type=int, default=2, help="outer iterations per block")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test, not W1)")
    args = p.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]

    from meta_train.runtime.host_memory import limit_malloc_arenas

    limit_malloc_arenas()
    import jax

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from w1 import build_w1

    from meta_train.training.outer_step import init_meta_state, make_outer_step

    est, outer, _, _ = build_w1(args.particles, args.trunc_len, args.horizon, args.tiny)
    programs = {}
    for chunk in chunks:
        e = dataclasses.replace(est, particle_chunk=chunk)
        programs[chunk] = [make_outer_step(outer), e, init_meta_state(e, outer, seed=0)]
    print(
        f"# W1 N={args.particles} K={args.trunc_len} T={args.horizon}, particle_chunk "
        f"{' vs '.join(map(str, chunks))}{' (TINY shapes: smoke test only)' if args.tiny else ''}"
        f": command: python bench/unroll_strategies.py {' '.join(sys.argv[1:])}"
    )

    def block(chunk: int, iters: int) -> float:
        step, e, s = programs[chunk]
        t0 = time.perf_counter()
        for _ in range(iters):
            s, _ = step(e, s)
        jax.block_until_ready(s)
        programs[chunk][2] = s
        return est.num_particles * est.trunc_len * iters / (time.perf_counter() - t0)

    for chunk in chunks:  # compile and warm up each
        block(chunk, 2)
    rates: dict[int, list[float]] = {c: [] for c in chunks}
    for b in range(args.blocks):
        order = chunks[b % len(chunks) :] + chunks[: b % len(chunks)]
        for chunk in order:
            rates[chunk].append(block(chunk, args.iters))
    base = chunks[0]
    print("| block | " + " | ".join(f"chunk {c} (particle-steps/s)" for c in chunks) + " |")
    print("|---" * (len(chunks) + 1) + "|")
    for i in range(args.blocks):
        print(f"| {i + 1} | " + " | ".join(f"{rates[c][i]:.0f}" for c in chunks) + " |")
    for c in chunks[1:]:
        ratios = [a / b for a, b in zip(rates[c], rates[base])]
        print(
            f"chunk {c} / chunk {base} = {statistics.median(ratios):.2f} (median of "
            f"{len(ratios)} paired blocks; range {min(ratios):.2f}-{max(ratios):.2f})"
        )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
