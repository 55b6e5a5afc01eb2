"""A run's health: problems the metrics show, surfaced instead of logged in silence.

``Health.add(step, metrics)`` counts, over the run, outer steps skipped (a
non-finite meta-gradient or theta: the update was not applied), steps whose
meta-gradient was exactly zero, and particles restarted because their state
went non-finite. ``summary()`` is the short text the progress bar and the
final line show. A run that cannot make progress, every one of the last
``window`` outer steps skipped or with a zero gradient, raises
``RunHealthError`` (one line, exit 2 from the CLI) after the checkpoint that
keeps what was done.
"""

from __future__ import annotations

import dataclasses


class RunHealthError(RuntimeError):
    """The run stopped making progress; the message says how and what to try."""


@dataclasses.dataclass
class Health:
    window: int  # 0: never stop a run
    skipped: int = 0
    zero_gradient: int = 0
    nonfinite_resets: int = 0
    _skipped_run: int = 0  # consecutive, up to the last step
    _zero_run: int = 0

    def add(self, step: int, metrics: dict[str, float]) -> None:
        skipped = metrics.get("skipped", 0) > 0
        zero = not skipped and metrics.get("grad_norm", 1.0) == 0.0
        self.skipped += skipped
        self.zero_gradient += zero
        self.nonfinite_resets += int(metrics.get("nonfinite_resets", 0))
        self._skipped_run = self._skipped_run + 1 if skipped else 0
        self._zero_run = self._zero_run + 1 if zero else 0

    def summary(self) -> str:
        parts = []
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        if self.zero_gradient:
            parts.append(f"{self.zero_gradient} zero-gradient")
        if self.nonfinite_resets:
            parts.append(f"{self.nonfinite_resets} non-finite restarts")
        return ", ".join(parts)

    @property
    def stalled(self) -> bool:
        """Whether ``check`` will stop the run (save a checkpoint first)."""
        return bool(self.window) and max(self._skipped_run, self._zero_run) >= self.window

    def check(self, step: int) -> None:
        if not self.window:
            return
        if self._skipped_run >= self.window:
            raise RunHealthError(
                f"outer steps {step - self.window + 1}-{step} were all skipped (a non-finite "
                "meta-gradient or theta): the run cannot make progress; try a smaller "
                "train.learning_rate or estimator.sigma, or a lower task.loss_cap"
            )
        if self._zero_run >= self.window:
            raise RunHealthError(
                f"the meta-gradient was exactly zero for outer steps "
                f"{step - self.window + 1}-{step}: theta no longer changes the loss (every "
                "particle at the loss cap, or a loss that does not depend on theta)"
            )
