"""A picture of a run: ``RUN/report.png``.

Written at the end of ``lopt meta-train`` and redrawn by ``lopt report RUN``
(also for a run that is still going or was stopped): the meta-loss against
outer step, the evaluation loss with the evaluation at initialisation as a
reference line, and the throughput. Reads ``metrics.jsonl`` only, tolerating
a torn last line.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any


class ReportError(ValueError):
    """A directory that holds no run to report on; the message names it."""


def read_metrics(run_dir: str | pathlib.Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``; a line that does not parse (a torn
    last line, after a kill) is skipped."""
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ReportError(f"{run_dir} holds no run (no metrics.jsonl)")
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def draw_report(run_dir: str | pathlib.Path) -> pathlib.Path:
    """Draw ``run_dir/report.png`` from its metrics; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = pathlib.Path(run_dir)
    records = read_metrics(run_dir)
    steps = [r for r in records if "meta_loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    if not steps and not evals:
        raise ReportError(f"{run_dir}/metrics.jsonl holds no outer step or evaluation yet")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ax.plot([r["step"] for r in steps], [r["meta_loss"] for r in steps], lw=1)
    ax.set_title("meta-loss (mean L_t over the particles' truncation)")
    ax.set_xlabel("outer step")
    ax = axes[1]
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-",
                label="mean inner loss over the episode")  # fmt: skip
        if "eval_final_loss" in evals[0]:
            ax.plot([r["step"] for r in evals], [r["eval_final_loss"] for r in evals], "s--",
                    label="loss at the episode's last step")  # fmt: skip
        initial = [r for r in evals if r["step"] == 0]
        if initial:
            ax.axhline(initial[0]["eval_loss"], color="k", ls=":", lw=1,
                       label=f"at initialisation ({initial[0]['eval_loss']:.3f})")  # fmt: skip
        ax.legend(fontsize=8)
    ax.set_title("evaluation at fixed seeds")
    ax.set_xlabel("outer step")
    ax = axes[2]
    timed = [r for r in steps if r.get("particle_steps_per_s")]
    ax.plot([r["step"] for r in timed], [r["particle_steps_per_s"] for r in timed], lw=1)
    ax.set_title("particle inner-steps / s (running mean)")
    ax.set_xlabel("outer step")
    for ax in axes:
        ax.grid(alpha=0.3)
    last = steps[-1]["step"] if steps else evals[-1]["step"]
    fig.suptitle(f"{run_dir.name}: {last} outer steps")
    fig.tight_layout()
    path = run_dir / "report.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
