"""Run a learned optimizer far past its meta-training horizon on held-out tasks.

    python scripts/run_on.py --optimizer checkpoints/generalist --steps 20000 --seeds 2 \
        --skip conv8x16_fashion_mnist_embedded28_b64 \
        --skip mlp512x512_relu_fashion_mnist_embedded28_b128

Prints, per task of the suite, the mean validation loss at a quarter, half and
all of the steps, the largest training loss of any seed and step (against the
initial one) and how many seeds ``held_out.diverged_seeds`` counts as diverged.
No baselines: this checks the README's long-run claim, not a comparison.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

import learned_opt
from meta_train.evaluation import held_out
from tasks.suites import HELD_OUT_SUITES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", required=True, help="an exported optimizer's directory")
    parser.add_argument("--tasks", default="generalization", choices=sorted(HELD_OUT_SUITES))
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--skip", action="append", default=[], help="a task name to leave out")
    args = parser.parse_args()
    try:
        lopt, theta, _ = learned_opt.load(args.optimizer)
    except learned_opt.OptimizerFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    thetas = jax.tree.map(lambda x: np.asarray(x)[None], theta)
    points = 20  # validation points along the run; quarter, half and end are among them
    for spec in HELD_OUT_SUITES[args.tasks]:
        if spec.name in args.skip:
            continue
        out, _, val_steps = held_out.run_optimizer(
            spec.build(), lopt, thetas, args.seeds, args.steps, points
        )
        train, val = out["train_loss"][0], out["val_loss"][0]
        marks = [points // 4 - 1, points // 2 - 1, points - 1]
        at = ", ".join(f"{val_steps[i]}: {val.mean(0)[i]:.3f}" for i in marks)
        diverged = held_out.diverged_seeds(train, val)
        print(
            f"{spec.name}: validation loss {at}; largest training loss {np.max(train):.3f} "
            f"(initial {train[:, 0].mean():.3f}); diverged seeds {diverged}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
