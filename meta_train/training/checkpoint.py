"""Orbax checkpoints of a meta-training run.

A checkpoint holds the whole ``MetaState`` (theta, outer optimizer state, every
particle's state and accumulator, the RNG key, the outer step) and the resolved
config as JSON, so a resumed run continues bit for bit. Saves are asynchronous
and atomic (Orbax writes to a temporary directory and renames it); call
``wait()`` before the process exits or the last save may be lost.
``max_to_keep`` bounds disk use. Restoring walks back from the newest step: a
damaged checkpoint is reported on stderr and the previous one is used.
Nothing is ever unpickled.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp

# One program copying every leaf (a per-leaf jnp.copy compiles a program per
# shape and sharding).
_copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


def _ocp():
    # Imported on first use: Orbax is slow to import, and a process that only
    # runs outer steps (bench/, a library user) never checkpoints.
    import orbax.checkpoint as ocp

    return ocp


class CheckpointError(RuntimeError):
    """No usable checkpoint; the message names the directory and why."""


class Checkpointer:
    def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 3):
        self.directory = pathlib.Path(directory).absolute()
        ocp = _ocp()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=True
            ),
        )

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, config: dict) -> None:
        """Start an asynchronous save of ``state`` (a copy: the caller may donate
        ``state``'s buffers to its next outer step while the save runs)."""
        ocp = _ocp()
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_copy(state)), config=ocp.args.JsonSave(config)
            ),
        )

    def restore(self, like: Any, step: int | None = None) -> tuple[int, Any, dict]:
        """Restore into the structure of ``like`` (arrays or ``jax.ShapeDtypeStruct``s);
        newest usable step unless given."""
        ocp = _ocp()
        self._manager.reload()
        steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        problems = []
        for s in steps:
            try:
                out = self._manager.restore(
                    s,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), config=ocp.args.JsonRestore()
                    ),
                )
                if jax.tree.structure(out.state) != jax.tree.structure(like):
                    raise CheckpointError("its contents do not match this run's structure")
                return s, out.state, out.config
            except Exception as e:  # noqa: BLE001 - any failure means this step is unusable
                reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                problems.append(f"step {s}: {reason}")
                print(
                    f"warning: checkpoint step {s} in {self.directory} is damaged "
                    f"({reason}); trying the previous one",
                    file=sys.stderr,
                )
        raise CheckpointError(f"no usable checkpoint in {self.directory}: " + "; ".join(problems))

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
