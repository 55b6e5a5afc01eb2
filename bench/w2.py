"""Benchmark W2 (shared/BENCHMARKS.md): meta-training over a task family.

The family: image MLPs on the embedded Fashion-MNIST at 8x8 and 28x28, depths
1-3, widths 16-256, activations relu/tanh/gelu/elu, batch sizes 32-256, with
task augmentation; the normalized learned optimizer; PES, 32 particles, K=20,
T=1000; ``--buckets`` shape buckets drawn from the family (particles split
evenly). Built from the config keys through the public builders, so it
measures what ``lopt meta-train --config family_long`` runs.

Prints, for one process:

* particle inner-steps/s over all buckets (median over timed blocks);
* compilation: XLA backend compile time and count up to the end of the first
  outer step, and again after ``--draw-steps`` more outer steps, with the
  number of episodes (each a newly drawn task) begun in between: the count
  must not grow (one compiled outer step for every task drawn);
* the time of an outer step at the start and after the draws (flat);
* peak RSS.

    python bench/w2.py                       # 4 buckets, 32 particles, T=1000, K=20
    python bench/w2.py --buckets 8 --draw-steps 200
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--buckets", type=int, default=4)
    ap.add_argument("--particles", type=int, default=32)
    ap.add_argument("--trunc-len", type=int, default=20)
    ap.add_argument("--horizon", type=int, default=1000)
    ap.add_argument("--draw-steps", type=int, default=120, help="outer steps drawing tasks")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--block-steps", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="a family of small 8x8 MLPs (tests)")
    args = ap.parse_args()

    import jax
    from jax import monitoring

    compiles: list[float] = []

    def on_event(event: str, duration_secs: float, **_) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration_secs)

    monitoring.register_event_duration_secs_listener(on_event)
    from meta_train import config as config_lib
    from meta_train.builders import build_estimator, build_outer_optimizer, build_system
    from meta_train.systems.family import SystemFamily
    from meta_train.training.outer_step import init_meta_state, make_outer_step

    family = (
        ["family.image_sizes=[8]", "family.depths=[1]", "family.width_range=[8, 16]",
         "family.batch_sizes=[16]"]
        if args.tiny
        else ["family.image_sizes=[8, 28]", "family.depths=[1, 2, 3]",
              "family.width_range=[16, 256]", "family.batch_sizes=[32, 64, 128, 256]"]
    )  # fmt: skip
    config = config_lib.load(
        None,
        [
            "task.kind=image_mlp_family",
            f"task.horizon={args.horizon}",
            *family,
            f"family.num_buckets={args.buckets}",
            "family.param_scale=3.0",
            "family.grad_scale=10.0",
            "family.loss_scale=10.0",
            "lopt.kind=norm_mlp",
            "lopt.hidden_sizes=[16]",
            f"estimator.num_particles={args.particles}",
            f"estimator.trunc_len={args.trunc_len}",
        ],
    )
    t_start = time.perf_counter()
    system = build_system(config)
    estimator = build_estimator(config, system)
    outer_opt = build_outer_optimizer(config)
    state = init_meta_state(estimator, outer_opt, seed=0)
    step = make_outer_step(outer_opt)

    def run(n: int):
        nonlocal state
        begun = 0
        t0 = time.perf_counter()
        for _ in range(n):
            state, metrics = step(estimator, state)
            begun += int(metrics["episodes_begun"])  # waits for the step
        return time.perf_counter() - t0, begun

    first, _ = run(1)
    start_compiles, start_compile_s = len(compiles), sum(compiles)
    ready_s = time.perf_counter() - t_start
    start_step_s = statistics.median(run(1)[0] for _ in range(3))
    _, drawn = run(args.draw_steps)
    after_step_s = statistics.median(run(1)[0] for _ in range(3))
    blocks = [run(args.block_steps)[0] / args.block_steps for _ in range(args.blocks)]
    rate = estimator.steps_per_call / statistics.median(blocks)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print("W2: image-MLP family (8x8 and 28x28, depth 1-3, width 16-256, batch 32-256),")
    print(f"    augmentation, norm_mlp 16, PES N={args.particles} K={args.trunc_len} "
          f"T={args.horizon}, {args.buckets} buckets; {jax.devices()[0].platform}")  # fmt: skip
    assert isinstance(system, SystemFamily)
    for member in system.members:
        print(f"    bucket {getattr(member, 'name', '?')}")
    print(f"particle inner-steps/s (all buckets): {rate:.0f}")
    print(f"start: {start_compiles} XLA compilations, {start_compile_s:.1f} s compiling; "
          f"ready after {ready_s:.1f} s (first outer step {first:.1f} s)")  # fmt: skip
    more, more_s = len(compiles) - start_compiles, sum(compiles) - start_compile_s
    programs = step._cache_size()  # type: ignore[attr-defined]  # a jitted function's
    print(f"after {args.draw_steps} more outer steps ({drawn} episodes begun, each a new task): "
          f"{more} more compilations, {more_s:.2f} s compiling; "
          f"outer-step programs {programs}")  # fmt: skip
    print(f"outer step at start {start_step_s * 1e3:.0f} ms, after the draws "
          f"{after_step_s * 1e3:.0f} ms")  # fmt: skip
    print(f"peak RSS: {rss_mb:.0f} MB")
    print("reproduce: python bench/w2.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
