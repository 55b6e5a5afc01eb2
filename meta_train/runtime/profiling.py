"""``jax.profiler`` traces of a few outer steps (``lopt meta-train --profile STEPS``).

The trace directory opens in TensorBoard's profile plugin or xprof
(``pip install xprof``; ``xprof --logdir RUN/profile``), which show each
operation of the compiled outer step with the named scopes the system and the
learned optimizer label their parts with.
"""

from __future__ import annotations

import pathlib

import jax


class StepTrace:
    """Traces the outer steps ``[first, first + count)``; ``count = 0`` traces nothing."""

    def __init__(self, directory: pathlib.Path, first: int, count: int):
        self.directory, self.first, self.count = directory, first, count
        self._active = False

    def before(self, step: int) -> None:
        if self.count > 0 and step == self.first:
            jax.profiler.start_trace(str(self.directory))
            self._active = True

    def after(self, step: int) -> None:
        if self._active and step == self.first + self.count - 1:
            self.close()

    def close(self) -> None:
        """Stop a trace still running (a run shorter than the trace, an interrupt)."""
        if self._active:
            jax.profiler.stop_trace()
            self._active = False
