"""How fast W1's particle step could be on this machine: its compute floor, measured.

    python bench/w1_bound.py                 # W1 shapes (MLP 784-128-10, batch 128, lopt 2x32)
    python bench/w1_bound.py --repeats 50

A particle step cannot take less than the time of the three computations it
must do, each timed here on its own, as its own compiled program, on W1's
shapes, with the compiler options the meta-training step uses:

* the learned optimizer's MLP over every inner parameter (given its input
  rows; one matrix per tensor, as ``MLPLOpt.update`` runs it),
* the inner gradient (forward + backward on a batch drawn on device),
* the meta-loss (forward on a fresh batch),

plus a memory floor for everything else: one pass that reads each
parameter's value, gradient, momenta and second moments and writes the new
value, momenta and second moments (19 float32 per parameter), at the
elementwise bandwidth XLA reaches in the same run. Nothing else (features,
their normalisation, finiteness checks, the estimator) is counted, so the
sum is a floor no implementation built on XLA's kernels can beat, and
``1000 / floor_ms`` a ceiling in particle-steps per second.

Printed beside it: the FLOP-bound ceiling (the step's FLOPs at the float32
matmul rate of a 2048 x 2048 ``jnp.dot`` timed in the same run, as in
``bench/w1.py``), and, unless ``--no-step``, the real outer iteration's
particle-steps per second measured in the same process (median of timed
blocks), as a fraction of both ceilings. The machine's speed drifts (shared cores): compare figures
from one run, not across runs.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

FLOATS_PER_PARAM = 19  # read p, g, 4 m, 4 v; write p, 4 m, 4 v
STATE_PASS = "state read + write (memory floor)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30, help="timed calls of each part")
    p.add_argument(
        "--step-iters",
        type=int,
        default=2,
        help="outer iterations per timed block of the real step (after 2 warm-up)",
    )
    p.add_argument("--step-blocks", type=int, default=5, help="timed blocks (median)")
    p.add_argument("--no-step", action="store_true", help="skip timing the real outer step")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test, not W1)")
    args = p.parse_args()

    from meta_train.runtime.host_memory import limit_malloc_arenas

    limit_malloc_arenas()
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from w1 import build_w1, flops_per_particle_step, matmul_flops_per_s, median_seconds

    from learned_opt.mlp_lopt import TIMESCALES
    from meta_train.runtime import xla_options
    from meta_train.training.outer_step import init_meta_state, make_outer_step

    est, outer, task, lopt = build_w1(8, 20, 200, args.tiny)
    key = jax.random.PRNGKey(0)
    params = task.init(key)
    theta = lopt.init_meta(key)
    leaves = jax.tree.leaves(params)
    num_params = sum(x.size for x in leaves)
    rows = [
        jax.random.normal(jax.random.fold_in(key, i), (x.size, lopt.num_features))
        for i, x in enumerate(leaves)
    ]
    time_features = jnp.zeros((len(TIMESCALES),), jnp.float32)
    net = lopt._net  # the optimizer's Haiku network, as MLPLOpt.update applies it

    mlp = xla_options.jit(lambda th, rs: [net.apply(th, r, time_features) for r in rs])
    grad = xla_options.jit(lambda prm, k: jax.value_and_grad(task.loss)(prm, task.batch(k)))
    meta = xla_options.jit(lambda prm, k: task.loss(prm, task.batch(k)))
    x = jax.random.normal(key, (FLOATS_PER_PARAM * num_params // 2,), jnp.float32)
    one_pass = xla_options.jit(lambda v: v * 0.5 + 1.0)  # reads and writes half each

    def ms(f, *a):
        return 1e3 * median_seconds(f, *a, repeats=args.repeats)

    parts = {
        "learned-optimizer MLP": ms(mlp, theta, rows),
        "inner gradient": ms(grad, params, key),
        "meta-loss": ms(meta, params, key),
        STATE_PASS: ms(one_pass, x),
    }
    floor_ms = sum(parts.values())
    flops = flops_per_particle_step(task, lopt)
    matmul = matmul_flops_per_s()
    mlp_gflops = lopt.flops_per_param() * num_params / parts["learned-optimizer MLP"] / 1e6

    print(
        f"# W1 compute floor{' (TINY shapes: smoke test only)' if args.tiny else ''}: "
        f"command: python bench/w1_bound.py {' '.join(sys.argv[1:])}"
    )
    print("| part | ms per particle step |")
    print("|---|---|")
    for name, ms in parts.items():
        print(f"| {name} | {ms:.3f} |")
    print(f"| floor (sum) | {floor_ms:.3f} |")
    pass_gb_s = 4 * FLOATS_PER_PARAM * num_params / parts[STATE_PASS] / 1e6
    print(
        f"# MLP at {mlp_gflops:.0f} GFLOP/s; float32 matmul {matmul / 1e9:.0f} GFLOP/s; "
        f"memory pass {pass_gb_s:.0f} GB/s"
    )
    print(
        f"# ceilings: compute floor {1e3 / floor_ms:.0f} particle-steps/s; "
        f"FLOP bound {matmul / flops:.0f} particle-steps/s ({flops / 1e6:.0f} MFLOP per step)"
    )
    if not args.no_step:
        state = init_meta_state(est, outer, seed=0)
        step = make_outer_step(outer)
        for _ in range(2):
            state, _ = step(est, state)
        jax.block_until_ready(state)
        rates = []
        for _ in range(args.step_blocks):
            t0 = time.perf_counter()
            for _ in range(args.step_iters):
                state, _ = step(est, state)
            jax.block_until_ready(state)
            rates.append(
                est.num_particles * est.trunc_len * args.step_iters / (time.perf_counter() - t0)
            )
        rate = statistics.median(rates)
        print(
            f"# the outer step (N={est.num_particles}, K={est.trunc_len}): {rate:.0f} "
            f"particle-steps/s = {rate * floor_ms / 1e3:.0%} of the compute floor's ceiling, "
            f"{rate * flops / matmul:.0%} of the FLOP bound"
        )
    print(f"W1 ceiling from its compute floor: {1e3 / floor_ms:.0f} particle-steps/s")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
