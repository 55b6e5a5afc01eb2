"""XLA's convolution against ``tasks.convnet.conv_same`` inside a training loop, paired.

    python bench/conv_in_scan.py                    # the generalization suite's convnet
    python bench/conv_in_scan.py --image-size 8 --steps 5 --blocks 1   # a smoke test

Why ``ConvNetTask`` computes its convolutions as slices and one dot (im2col):
every training loop here is a ``lax.scan``, and inside one XLA:CPU runs its
convolution several times slower than outside (a jitted step alone is fast).
One process compiles the same scan of Adam steps on the convnet twice, once
per implementation, and times blocks of them in turn, the order alternated
every block; it prints each block's milliseconds per step and the median ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--steps", type=int, default=50, help="Adam steps per timed scan")
    p.add_argument("--blocks", type=int, default=4)
    args = p.parse_args()

    import jax
    import jax.numpy as jnp

    import tasks.convnet as convnet
    from learned_opt import Adam
    from meta_train.systems.inner_training import init_inner, inner_step

    def xla_conv(h, w, stride):
        return jax.lax.conv_general_dilated(
            h, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    task = convnet.ConvNetSpec(image_size=args.image_size).build()
    opt, theta = Adam(), {"log_lr": jnp.log(jnp.float32(1e-3))}

    def compiled(conv):
        convnet_conv = convnet.conv_same
        convnet.conv_same = conv  # traced now, so the program keeps this implementation
        try:

            def run(key):
                state = init_inner(task, opt, theta, key, args.steps)

                def step(s, k):
                    return inner_step(task, opt, theta, s, task.batch(k, "train"))

                return jax.lax.scan(step, state, jax.random.split(key, args.steps))[1]

            return jax.jit(run).lower(jax.random.PRNGKey(0)).compile()
        finally:
            convnet.conv_same = convnet_conv

    programs = {"xla": compiled(xla_conv), "im2col": compiled(convnet.conv_same)}
    print(
        f"# conv{task.channels[0]}x{task.channels[1]} on {args.image_size}x{args.image_size}, "
        f"batch {task.batch_size}, Adam steps inside lax.scan: command: python "
        f"bench/conv_in_scan.py {' '.join(sys.argv[1:])}"
    )
    ms: dict[str, list[float]] = {k: [] for k in programs}
    for b in range(args.blocks + 1):  # block 0 warms up
        for name in list(programs)[:: 1 if b % 2 else -1]:
            t0 = time.perf_counter()
            jax.block_until_ready(programs[name](jax.random.PRNGKey(b)))
            if b:
                ms[name].append((time.perf_counter() - t0) / args.steps * 1e3)
    print("| block | XLA conv (ms/step) | im2col (ms/step) |")
    print("|---|---|---|")
    for i in range(args.blocks):
        print(f"| {i + 1} | {ms['xla'][i]:.2f} | {ms['im2col'][i]:.2f} |")
    ratios = [a / b for a, b in zip(ms["xla"], ms["im2col"])]
    print(
        f"XLA conv / im2col = {statistics.median(ratios):.2f} (median of {len(ratios)} paired "
        f"blocks; range {min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
