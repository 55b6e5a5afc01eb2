"""Benchmark W1 (shared/BENCHMARKS.md): the standard PES meta-training step.

Inner task: MLP 784-128-10 (ReLU), softmax cross-entropy, batch 128, random
28x28x1 images; learned optimizer MLPLOpt 2x32; PES, K=20, T=200, sigma 0.01,
outer Adam 1e-3 - all through the public API. Per configuration it prints:
particle inner-steps/s (median over timed blocks after warm-up), warm-up time
(start of the process to the end of 3 warm-up iterations, compilation
included) and peak RSS of a fresh process -- once with an empty compilation
cache ("cold") and once more with the cache that run filled ("cached", what a
rerun of ``lopt meta-train`` sees) -- and the fraction of the FLOP-bound limit
(FLOPs of one particle step / float32 matmul throughput timed in the same run).

    python bench/w1.py                      # N=8, K=20, T=200
    python bench/w1.py --particles 32 --trunc-len 50
    python bench/w1.py --sweep              # N in {2,8,32}; K in {10,50}; T in {200,2000,20000}

Each configuration runs in its own subprocess so its peak RSS is its own.
The last line is the summary figure for N=8.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REFERENCE = {2: 122.0, 8: 98.0, 32: 89.0}  # learned_optimization, BENCHMARKS.md


def median_seconds(f, *args, repeats: int) -> float:
    """Median wall time of ``f(*args)`` over ``repeats`` calls, after one untimed call."""
    import jax

    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_flops_per_s(n: int = 2048, repeats: int = 10) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    return 2 * n**3 / median_seconds(jax.jit(jnp.dot), a, a, repeats=repeats)


def flops_per_particle_step(task, lopt) -> float:
    sizes = task.layer_sizes
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    inner = 3 * 2 * task.batch_size * weights  # forward + backward
    meta_loss = 2 * task.batch_size * weights  # forward on a fresh batch
    return inner + meta_loss + lopt.flops_per_param() * params


def build_w1(particles: int, trunc_len: int, horizon: int, tiny: bool = False):
    """W1 through the public API: ``(estimator, outer optimizer, task, lopt)``."""
    import jax
    import numpy as np
    import optax

    from learned_opt import MLPLOpt
    from meta_train.estimators import PES
    from meta_train.systems import LearnedOptimizerSystem
    from tasks.datasets import Dataset
    from tasks.image_mlp import ImageMLPTask

    side, hidden, batch, n = (8, 16, 16, 256) if tiny else (28, 128, 128, 10_000)
    # Drawn on the host (a device RNG would hold its temporaries) and handed over
    # with device_put, which on CPU adopts the buffer instead of copying it.
    # The held-out splits are host views too (slicing on the device would compile).
    rng = np.random.default_rng(0)
    x, y = rng.random((n, side, side, 1), np.float32), rng.integers(0, 10, n, dtype=np.int32)
    held_out = jax.device_put((x[: n // 10], y[: n // 10]))
    data = Dataset("random", 10, *jax.device_put((x, y)), *held_out, *held_out)
    task = ImageMLPTask(data, hidden_sizes=(hidden,), batch_size=batch)
    lopt = MLPLOpt(hidden_sizes=(32, 32))
    system = LearnedOptimizerSystem(task=task, lopt=lopt, horizon=horizon, loss_cap=3.45)
    est = PES(system, num_particles=particles, trunc_len=trunc_len, sigma=0.01)
    return est, optax.adam(1e-3), task, lopt


def run_one(
    particles: int,
    trunc_len: int,
    horizon: int,
    warmup: int,
    iters: int,
    blocks: int,
    tiny: bool,
    cpu_devices: int = 1,
) -> dict:
    t_start = time.perf_counter()
    from meta_train.runtime.host_memory import limit_malloc_arenas

    limit_malloc_arenas()  # as the CLI does, before JAX's thread pools start
    import jax

    if cpu_devices > 1:
        from meta_train.runtime.sharding import use_cpu_devices

        use_cpu_devices(cpu_devices)  # before the backend starts, as the CLI does

    from meta_train.runtime.xla_options import enable_compilation_cache

    enable_compilation_cache()  # the directory comes from the parent ($LOPT_COMPILATION_CACHE)

    from meta_train.training.outer_step import distribute, init_meta_state, make_outer_step

    est, outer, task, lopt = build_w1(particles, trunc_len, horizon, tiny)
    # As `lopt meta-train` does: the population sharded over the devices there are.
    est, state, shardings, num_devices = distribute(est, init_meta_state(est, outer, seed=0))
    step = make_outer_step(outer, shardings)
    for _ in range(warmup):
        state, metrics = step(est, state)
    jax.block_until_ready(state)
    warmup_s = time.perf_counter() - t_start
    per_block = max(1, iters // blocks)
    rates = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(per_block):
            state, metrics = step(est, state)
        jax.block_until_ready(state)
        rates.append(particles * trunc_len * per_block / (time.perf_counter() - t0))
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    flops = flops_per_particle_step(task, lopt)
    peak_flops = matmul_flops_per_s()
    rate = statistics.median(rates)
    return {
        "particles": particles,
        "trunc_len": trunc_len,
        "horizon": horizon,
        "steps_per_s": rate,
        "warmup_s": warmup_s,
        "peak_rss_mb": peak_mb,
        "mflop_per_step": flops / 1e6,
        "matmul_gflops": peak_flops / 1e9,
        "limit_steps_per_s": peak_flops / flops,
        "fraction_of_limit": rate * flops / peak_flops,
        "meta_loss": float(metrics["meta_loss"]),
        "device": str(jax.devices()[0].platform),
        "devices": num_devices,
    }


def in_subprocess(args, particles, trunc_len, horizon, cache_dir, iters=None, blocks=None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        "--particles",
        str(particles),
        "--trunc-len",
        str(trunc_len),
        "--horizon",
        str(horizon),
        "--iters",
        str(iters or args.iters),
        "--warmup",
        str(args.warmup),
        "--blocks",
        str(blocks or args.blocks),
        "--cpu-devices",
        str(args.cpu_devices),
    ]
    cmd += ["--tiny"] if args.tiny else []
    env = {**os.environ, "LOPT_COMPILATION_CACHE": cache_dir}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(args, particles, trunc_len, horizon, cache_root) -> dict:
    """A cold run (empty compilation cache), then the warm-up again from its cache."""
    cache_dir = tempfile.mkdtemp(dir=cache_root)
    cold = in_subprocess(args, particles, trunc_len, horizon, cache_dir)
    cached = in_subprocess(args, particles, trunc_len, horizon, cache_dir, iters=1, blocks=1)
    return dict(cold, warmup_cached_s=cached["warmup_s"], peak_rss_cached_mb=cached["peak_rss_mb"])


def row(r: dict) -> str:
    ref = REFERENCE.get(r["particles"]) if r["trunc_len"] == 20 and r["horizon"] == 200 else None
    vs = f"{r['steps_per_s'] / ref:5.1f}x" if ref else "   - "
    return (
        f"| {r['particles']:3d} | {r['trunc_len']:3d} | {r['horizon']:6d} | "
        f"{r['steps_per_s']:8.0f} | {vs} | {r['warmup_s']:5.1f} / {r['warmup_cached_s']:4.1f} | "
        f"{r['peak_rss_mb']:5.0f} / {r['peak_rss_cached_mb']:5.0f} | "
        f"{100 * r['fraction_of_limit']:5.1f}% |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--particles", type=int, default=8)
    p.add_argument("--trunc-len", type=int, default=20)
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--sweep", action="store_true")
    p.add_argument(
        "--cpu-devices",
        type=int,
        default=1,
        help="JAX CPU devices to shard the population over (lopt meta-train "
        "--cpu-devices); 1 = one device using every core",
    )
    p.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test, not W1)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(
            json.dumps(
                run_one(
                    args.particles,
                    args.trunc_len,
                    args.horizon,
                    args.warmup,
                    args.iters,
                    args.blocks,
                    args.tiny,
                    args.cpu_devices,
                )
            )
        )
        return
    configs = [(args.particles, args.trunc_len, args.horizon)]
    if args.sweep:
        configs = (
            [(n, 20, 200) for n in (2, 8, 32)]
            + [(8, k, 200) for k in (10, 50)]
            + [(8, 20, t) for t in (2000, 20000)]
        )
    print(
        f"# W1{' (TINY shapes: smoke test only)' if args.tiny else ''}: "
        f"command: python bench/w1.py {' '.join(sys.argv[1:])}"
    )
    print(
        "| N | K | T | particle-steps/s | vs l_o | warm-up s (cold / cached) "
        "| peak RSS MB (cold / cached) | of limit |"
    )
    print("|---|---|---|---|---|---|---|---|")
    results = []
    with tempfile.TemporaryDirectory(prefix="w1-xla-cache-") as cache_root:
        for n, k, t in configs:
            r = measure(args, n, k, t, cache_root)
            results.append(r)
            print(row(r), flush=True)
    r0 = results[0]
    print(
        f"# one particle step = {r0['mflop_per_step']:.0f} MFLOP; float32 matmul "
        f"{r0['matmul_gflops']:.0f} GFLOP/s -> limit {r0['limit_steps_per_s']:.0f} "
        f"particle-steps/s on {r0['device']}"
        + (f"; population sharded over {r0['devices']} CPU devices" if r0["devices"] > 1 else "")
    )
    n8 = next((r for r in results if r["particles"] == 8), r0)
    print(
        f"W1 N={n8['particles']} K={n8['trunc_len']} T={n8['horizon']}: "
        f"{n8['steps_per_s']:.0f} particle inner-steps/s"
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
