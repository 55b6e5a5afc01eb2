"""W1 on one CPU device against W1 sharded over one device per core, paired.

    python bench/cpu_devices.py                     # W1, N=8
    python bench/cpu_devices.py --particles 32 --blocks 8
    python bench/cpu_devices.py --config configs/default.toml --iters 20

What ``lopt meta-train --cpu-devices`` buys. One process presents the CPU to
JAX as ``--devices`` devices (default: one per core) and builds the same W1
outer iteration (or that of ``--config``'s run) twice: on the first device
alone (the program every core works on together) and sharded over all of them
(``training.outer_step.distribute``: each device
steps its own particles). Timed blocks of the two alternate, so a shared
machine's drift hits both alike; each block's ratio is reported, then the
median ratio. Populations of one pair or particle cannot be split and are
reported as such.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--particles", type=int, default=8)
    p.add_argument("--trunc-len", type=int, default=20)
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--devices", type=int, default=0, help="CPU devices (default: one per core)")
    p.add_argument("--blocks", type=int, default=6, help="timed blocks of each program")
    p.add_argument("--iters", type=int, default=3, help="outer iterations per block")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test, not W1)")
    p.add_argument(
        "--config",
        help="a run's TOML config instead of W1 (--particles etc. "
        "are then ignored; set them with --set)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --config: override a key, as lopt meta-train --set",
    )
    args = p.parse_args()

    from meta_train.runtime.host_memory import limit_malloc_arenas

    limit_malloc_arenas()
    import jax

    from meta_train.runtime.sharding import cpu_cores, use_cpu_devices

    args.devices = args.devices or cpu_cores()
    use_cpu_devices(args.devices)

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from w1 import build_w1

    from meta_train.training.outer_step import distribute, init_meta_state, make_outer_step

    if args.config:
        from meta_train import config as config_lib
        from meta_train.builders import build_estimator, build_outer_optimizer, build_system

        config = config_lib.load(args.config, args.set)
        est = build_estimator(config, build_system(config))
        outer, name = build_outer_optimizer(config), f"{config.name} ({args.config})"
        args.horizon = config.task.horizon
    else:
        est, outer, _, _ = build_w1(args.particles, args.trunc_len, args.horizon, args.tiny)
        name = "W1"
    single = (make_outer_step(outer), est, init_meta_state(est, outer, seed=0))
    est_sharded, state, shardings, count = distribute(est, init_meta_state(est, outer, seed=0))
    sharded = (make_outer_step(outer, shardings), est_sharded, state)
    print(
        f"# {name} one device vs {count} CPU devices"
        f"{' (TINY shapes: smoke test only)' if args.tiny else ''}: "
        f"command: python bench/cpu_devices.py {' '.join(sys.argv[1:])}"
    )
    if count == 1:
        print(
            f"N={est.num_particles}: {est.num_groups} group(s) do not split over "
            f"{args.devices} devices; nothing to compare"
        )
        return

    def block(program, iters):
        step, e, s = program
        t0 = time.perf_counter()
        for _ in range(iters):
            s, _ = step(e, s)
        jax.block_until_ready(s)
        return (step, e, s), est.steps_per_call * iters / (time.perf_counter() - t0)

    single, _ = block(single, 2)  # compile and warm up both
    sharded, _ = block(sharded, 2)
    rates_single, rates_sharded = [], []
    for _ in range(args.blocks):
        single, r1 = block(single, args.iters)
        sharded, r2 = block(sharded, args.iters)
        rates_single.append(r1)
        rates_sharded.append(r2)
    ratios = [b / a for a, b in zip(rates_single, rates_sharded)]
    print(f"| block | 1 device (particle-steps/s) | {count} devices | ratio |")
    print("|---|---|---|---|")
    for i, (a, b, r) in enumerate(zip(rates_single, rates_sharded, ratios)):
        print(f"| {i + 1} | {a:.0f} | {b:.0f} | {r:.2f} |")
    print(
        f"N={est.num_particles} K={est.steps_per_call // est.num_particles} T={args.horizon}: "
        f"{count} CPU devices / 1 = "
        f"{statistics.median(ratios):.2f} (median of {len(ratios)} paired blocks; "
        f"range {min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
