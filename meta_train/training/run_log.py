"""What a run tells its user: ``metrics.jsonl`` and TensorBoard files, the progress bar,
the step rate."""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

SMALL_THETA = 16  # a theta this small is written to metrics.jsonl at every logged step


class MetricsLog:
    """A run's records: one JSON object per line of ``RUN/metrics.jsonl``, flushed as
    written, and the same scalars as TensorBoard event files in ``RUN/tb/``.

    Appending (a resumed run) first cuts the file back to the records of steps
    up to ``keep_through`` (the restored step: later ones will be logged again),
    dropping a torn last line and, with ``drop_eval_at``, the evaluation at
    that step, so every step is in the file once; ``elapsed`` is then the
    ``seconds`` and ``cpu_seconds`` of the last record kept (what the run had
    spent before, so a resumed run logs its time since step 0). TensorBoard is
    told the same:
    the new event file starts by purging the steps after ``keep_through`` (all
    steps, for a fresh log beside old event files), and
    ``flush()`` (called at every checkpoint) puts on disk all that a resume keeps.
    """

    def __init__(
        self,
        run_dir: pathlib.Path,
        append: bool,
        log: Callable[[str], None] = print,
        keep_through: int | None = None,
        drop_eval_at: int | None = None,
    ):
        path = run_dir / "metrics.jsonl"
        self.elapsed = Elapsed(0.0, 0.0)
        if append and path.exists() and keep_through is not None:
            self.elapsed = _cut_back(path, keep_through, drop_eval_at)
        self._file = path.open("a" if append else "w")
        if append:
            purge = keep_through + 1 if keep_through is not None else None
        else:  # a fresh log: a run started over also hides what its killed start wrote
            purge = 0 if any((run_dir / "tb").glob("events.out.tfevents.*")) else None
        self._tensorboard = _open_tensorboard(run_dir / "tb", log, purge)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            self._tensorboard.write(record)

    def flush(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


class Elapsed(NamedTuple):
    """Time a run has spent: ``seconds`` wall-clock, ``cpu_seconds`` of CPU (all
    threads of the process)."""

    seconds: float
    cpu_seconds: float


def _cut_back(path: pathlib.Path, keep_through: int, drop_eval_at: int | None) -> Elapsed:
    kept = []
    elapsed = Elapsed(0.0, 0.0)
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue
        if record["step"] > keep_through:
            continue
        if record["step"] == drop_eval_at and "eval_loss" in record:
            continue
        kept.append(line + "\n")
        if isinstance(record.get("seconds"), (int, float)):
            elapsed = Elapsed(float(record["seconds"]), float(record.get("cpu_seconds", 0.0)))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)  # atomic: a kill now leaves the old file or the new one
    return elapsed


class _TensorBoard:
    """Every numeric field of every record as a TensorBoard scalar at its step, in
    ``RUN/tb/`` (tensorboardX: no TensorFlow needed)."""

    def __init__(self, directory: pathlib.Path, purge_step: int | None = None):
        from tensorboardX import SummaryWriter

        # purge_step: TensorBoard hides earlier files' events from that step on
        # (the steps a resumed run logs again).
        self._writer = SummaryWriter(logdir=str(directory), flush_secs=10, purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(key, value, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _open_tensorboard(
    directory: pathlib.Path, log: Callable[[str], None], purge_step: int | None = None
) -> _TensorBoard | None:
    try:
        return _TensorBoard(directory, purge_step)
    except ImportError:  # an install without the writer: metrics.jsonl still has everything
        log("TensorBoard files are not written: pip install tensorboardX (metrics.jsonl has "
            "every scalar)")  # fmt: skip
        return None


class StepRate:
    """Particle steps per second over the outer steps timed so far (the first,
    which compiles, is not timed)."""

    def __init__(self, steps_per_call: int):
        self.steps_per_call = steps_per_call
        self._calls, self._seconds, self._seen = 0, 0.0, 0
        self.rate = 0.0

    def add(self, seconds: float) -> None:
        self._seen += 1
        if self._seen > 1:
            self._calls += 1
            self._seconds += seconds
            self.rate = self.steps_per_call * self._calls / self._seconds


def theta_values(theta: Any) -> list[float] | None:
    """Theta as a flat list when it is small enough to log (a toy system's), else None."""
    if sum(x.size for x in jax.tree.leaves(theta)) > SMALL_THETA:
        return None
    flat = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(theta)])
    return [float(x) for x in jax.device_get(flat)]


class Progress:
    """A tqdm bar on stderr (outer step, meta-loss, particle steps/s), or nothing."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc="meta-train", unit="step",
                file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
            )  # fmt: skip

    def update(self, meta_loss: float, rate: float, health: str = "") -> None:
        if self._bar is not None:
            extra = {"health": health} if health else {}
            self._bar.set_postfix(
                meta_loss=f"{meta_loss:.4f}", steps_per_s=f"{rate:.0f}", **extra, refresh=False
            )
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
