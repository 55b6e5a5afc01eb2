"""Orbax checkpoints of a meta-training run.

A checkpoint holds the whole ``MetaState`` (theta, outer optimizer state, every
particle's state and accumulator, the RNG key, the outer step) and the resolved
config as JSON, so a resumed run continues bit for bit. Saves are asynchronous
and atomic (Orbax writes to a temporary directory and renames it); call
``wait()`` before the process exits or the last save may be lost.
``max_to_keep`` bounds disk use.

Integrity: each checkpoint also holds ``integrity`` (JSON), a SHA-256 of the
state's arrays (``learned_opt.export.tree_digest``), checked on restore, so
flipped bytes that Orbax reads without complaint are caught. Restoring walks
back from the newest step: a damaged checkpoint (unreadable, failing its
checksum, or missing its metadata or checksum file) is reported in one line
on stderr, removed, and the previous one is used; the steps recomputed after
it are then saved again. A checkpoint holding another state structure (written
by another config or version of an optimizer's state) is intact: it is named
and skipped, never removed. A save that fails raises ``CheckpointError`` naming
its step (at once, or from ``check()`` at the next outer step when it failed in
the background), keeping the checkpoints already written. Partial saves (a
kill, a full disk) are cleaned up when the directory is opened again. Nothing
is ever unpickled.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp

from learned_opt.export import quiet_closed_event_loops, short_reason, tree_digest

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
        quiet_closed_event_loops()
        ocp = _ocp()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                create=True,
                enable_async_checkpointing=True,
                # a save cut short by a kill or a full disk: its partial directory
                # is removed (the run directory's lock keeps writers out)
                cleanup_tmp_directories=True,
            ),
        )

        self._writing: int | None = None  # the step of the last save started

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, config: dict) -> None:
        """Start an asynchronous save of ``state`` (a copy: the caller may donate
        ``state``'s buffers to its next outer step while the save runs)."""
        ocp = _ocp()
        copy = _copy(state)
        integrity = {"state_sha256": tree_digest(copy)}
        self.wait()  # the previous save, reported as its own step if it failed
        try:
            saved = self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(copy),
                    config=ocp.args.JsonSave(config),
                    integrity=ocp.args.JsonSave(integrity),
                ),
            )
        except Exception as e:  # noqa: BLE001 - disk full, permissions, ...: one line
            raise CheckpointError(
                f"saving checkpoint step {step} in {self.directory} failed ({short_reason(e)}); "
                f"the checkpoints before it are kept"
            ) from None
        self._writing = step
        if not saved:
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} was not saved (a step at or "
                "after it already exists)"
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
        # A run written with checksums has one in every checkpoint: one without is
        # damaged (deleted files), not an older run's.
        checked = any((self.directory / str(s) / "integrity").exists() for s in steps)
        problems, damaged = [], []
        for s in steps:
            try:
                for name in ("_CHECKPOINT_METADATA", *(["integrity"] if checked else [])):
                    if not (self.directory / str(s) / name).exists():
                        raise CheckpointError(f"its {_FILES[name]} is missing")
                out = self._restore_step(ocp, s, abstract)
                if jax.tree.structure(out.state) != jax.tree.structure(like):
                    raise _OtherStructure("its contents do not match this run's structure")
                digest = (out.get("integrity") or {}).get("state_sha256")
                if digest is not None and digest != tree_digest(out.state):
                    raise CheckpointError("its arrays do not match their checksum")
            except Exception as e:  # noqa: BLE001 - any failure means this step is unusable
                reason = short_reason(e)
                problems.append(f"step {s}: {reason}")
                if _written_for_another_structure(e):
                    # Intact, written by another config or version: kept, never removed.
                    print(
                        f"warning: checkpoint step {s} in {self.directory} holds another "
                        f"state structure ({reason}); kept, trying the previous one",
                        file=sys.stderr,
                    )
                    continue
                damaged.append(s)
                print(
                    f"warning: checkpoint step {s} in {self.directory} is damaged "
                    f"({reason}); trying the previous one",
                    file=sys.stderr,
                )
                continue
            for bad in damaged:  # so the steps recomputed after ``s`` are saved again
                self._manager.delete(bad)
                print(f"warning: removed damaged checkpoint step {bad}", file=sys.stderr)
            return s, out.state, out.config
        raise CheckpointError(f"no usable checkpoint in {self.directory}: " + "; ".join(problems))

    def _restore_step(self, ocp, step: int, abstract: Any):
        items = {"state": ocp.args.StandardRestore(abstract), "config": ocp.args.JsonRestore()}
        if (self.directory / str(step) / "integrity").exists():  # older runs have none
            items["integrity"] = ocp.args.JsonRestore()
        return self._manager.restore(step, args=ocp.args.Composite(**items))

    def check(self) -> None:
        """Raise ``CheckpointError`` if an asynchronous save has failed (cheap: call it
        every outer step, so a full disk stops the run at once)."""
        try:
            self._manager.check_for_errors()
        except Exception as e:  # noqa: BLE001 - disk full, permissions, ...: one line
            raise self._failed(e) from None

    def wait(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - the last asynchronous save failed
            raise self._failed(e) from None

    def _failed(self, e: Exception) -> CheckpointError:
        return CheckpointError(
            f"saving checkpoint step {self._writing} in {self.directory} failed "
            f"({short_reason(e)}); the checkpoints before it are kept"
        )

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._manager.close()


_FILES = {"_CHECKPOINT_METADATA": "metadata file", "integrity": "checksum file"}


class _OtherStructure(CheckpointError):
    """A checkpoint read whole whose tree differs from the one asked for."""


def _written_for_another_structure(e: Exception) -> bool:
    """Whether a restore failed because the checkpoint holds a differently shaped
    state (another config, another version's optimizer state) rather than damage;
    Orbax says so ("Structure mismatch", "tree structures do not match")."""
    message = str(e).lower()
    return isinstance(e, _OtherStructure) or any(
        words in message for words in ("structure mismatch", "structures do not match")
    )
