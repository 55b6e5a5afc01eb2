"""A family run's optimizer on the family's held-out shapes, against Adam at each
learning rate of a grid, on the normalised meta-loss the run was trained for.

Reads a run of ``task.kind = "image_mlp_family"`` (its config and latest
checkpoint), builds the held-out buckets its evaluation used, and runs every
held-out bucket for ``--seeds`` fixed seeds over the meta-training horizon
(or ``--steps``) with (a) the run's learned optimizer and (b) Adam at each
learning rate of ``--adam-lrs``, with the same draws of task (activation,
augmentation scales) and data. Prints per bucket the mean over the episode
of L_t / L_0 and its final value; "Adam tuned" picks per bucket the best
learning rate by mean. Draws the run's evaluation curve against those
references into ``--out``.

    python bench/family_heldout.py /work/runs/family --out docs/family_heldout.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=0, help="episode length (0: the horizon)")
    ap.add_argument("--adam-lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    import jax

    from learned_opt import Adam
    from meta_train import config as config_lib
    from meta_train.builders import build_eval_system, build_system
    from meta_train.evaluation.fixed_seeds import evaluate
    from meta_train.systems.family import SystemFamily
    from meta_train.training.export_run import theta_from_run

    run = pathlib.Path(args.run)
    config = config_lib.load(run / "config.toml")
    held_out = build_eval_system(config, build_system(config))
    assert isinstance(held_out, SystemFamily), "not a task-family run"
    lopt, theta, card = theta_from_run(run)
    steps = args.steps or held_out.horizon

    def on(member, opt, opt_theta):
        return evaluate(dataclasses.replace(member, lopt=opt), opt_theta, args.seeds, steps)

    rows = []
    for member in held_out.members:
        learned = on(member, lopt, theta)
        adam = {}
        for lr in args.adam_lrs:
            opt = Adam(learning_rate=lr)
            adam[lr] = on(member, opt, opt.init_meta(jax.random.PRNGKey(0)))
        best = min(adam, key=lambda lr: adam[lr]["eval_loss"])
        rows.append((getattr(member, "name", "?"), learned, adam, best))

    print(f"run {run} (outer step {card['outer_steps']}), {args.seeds} seeds x {steps} steps;")
    print("L_t / L_0 on held-out shapes: mean over the episode (final step)")
    header = f"{'bucket':58s} {'learned':>15s} {'Adam tuned':>15s} (lr)    "
    print(header + "  ".join(f"Adam {lr:g}" for lr in args.adam_lrs))
    for name, learned, adam, best in rows:
        cells = "  ".join(f"{adam[lr]['eval_loss']:8.3f}" for lr in args.adam_lrs)
        print(
            f"{name:58s} {learned['eval_loss']:6.3f} ({learned['eval_final_loss']:5.3f}) "
            f"{adam[best]['eval_loss']:6.3f} ({adam[best]['eval_final_loss']:5.3f}) {best:<7g} "
            + cells
        )
    n = len(rows)
    mean_learned = sum(r[1]["eval_loss"] for r in rows) / n
    mean_tuned = sum(r[2][r[3]]["eval_loss"] for r in rows) / n
    wins = sum(r[1]["eval_loss"] < r[2][r[3]]["eval_loss"] for r in rows)
    print(f"mean: learned {mean_learned:.3f}, Adam tuned per bucket {mean_tuned:.3f}; "
          f"learned lower on {wins}/{n} buckets")  # fmt: skip
    print(f"reproduce: python bench/family_heldout.py {args.run} --seeds {args.seeds}")

    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        evals = [
            json.loads(x)
            for x in (run / "metrics.jsonl").read_text().splitlines()
            if '"eval_loss"' in x
        ]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-",
                label="learned optimizer (held-out shapes)")  # fmt: skip
        ax.axhline(mean_tuned, color="k", ls="--", label="Adam, lr tuned per held-out shape")
        for lr in args.adam_lrs:
            mean = sum(r[2][lr]["eval_loss"] for r in rows) / n
            ax.axhline(mean, color="gray", lw=0.6, ls=":")
        ax.plot([], [], color="gray", lw=0.6, ls=":", label="Adam at each grid lr")
        ax.set_ylim(0, min(1.2, ax.get_ylim()[1]))
        ax.set_xlabel("outer step")
        ax.set_ylabel("mean L_t / L_0 over the episode")
        ax.set_title(f"{config.name}: normalised meta-loss on held-out family members")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.out, dpi=100)
        print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
