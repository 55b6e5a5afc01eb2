"""Compiler options for the meta-training programs (``jax.jit(..., compiler_options=...)``).

On CPU, XLA hands each matmul to YNNPACK as its own call by default, so the
learned optimizer's MLP writes every ``(parameters, 32)`` activation to memory
and reads it back for the bias, the ReLU and the next matmul. With
``xla_cpu_experimental_ynn_fusion_type = LIBRARY_FUSION_TYPE_DOT`` XLA passes
the whole chain (matmul, bias, ReLU, matmul, ...) to YNNPACK as one graph,
which runs it tile by tile in cache. The results are the same bit for bit
(checked in ``tests/test_learned_opt.py``) and the MLP runs in well under the
time of separate calls (docs/PERFORMANCE.md).

``xla_cpu_use_fusion_emitters = False`` compiles XLA's loop fusions with its
classic LLVM emitters instead of the MLIR ones, which keep memory that is
never returned and take longer per fusion; the outer iteration has several
hundred small fusions (one per state leaf for each slice, select and
finiteness check), so this shrinks compilation's time and memory with the
same step time (``bench/w1.py`` reports warm-up and peak memory).

``enable_compilation_cache()`` keeps compiled programs on disk (JAX's
persistent compilation cache), so a second run with the same shapes loads its
outer iteration instead of compiling it (``bench/w1.py`` reports the warm-up
with an empty and with a filled cache).

Both options are XLA's own and may change, so each is probed once on a tiny
program; a jaxlib that does not know one compiles without it rather than
failing. Options apply per compiled program: a user's own ``jit`` is never
affected.
"""

from __future__ import annotations

import functools
import os
import pathlib

import jax
import jax.numpy as jnp

CPU_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
    "xla_cpu_use_fusion_emitters": False,
}


def _compiles_with(option: str, value) -> bool:
    try:
        probe = jax.jit(lambda x: jax.nn.relu(x @ x), compiler_options={option: value})
        probe.lower(jnp.ones((2, 2), jnp.float32)).compile()
    except Exception:  # an XLA without the option: leave it out
        return False
    return True


@functools.cache
def compiler_options() -> dict | None:
    """The options for this process's default backend that its XLA knows, or None."""
    if jax.default_backend() != "cpu":
        return None
    known = {k: v for k, v in CPU_OPTIONS.items() if _compiles_with(k, v)}
    return known or None


def jit(fun, **kwargs):
    """``jax.jit`` with ``compiler_options()``."""
    return jax.jit(fun, compiler_options=compiler_options(), **kwargs)


CACHE_ENV = "LOPT_COMPILATION_CACHE"  # a directory, or 0 to turn the cache off


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache; returns its directory or None.

    ``$LOPT_COMPILATION_CACHE`` names the directory (``0`` disables it); the
    default is ``~/.cache/lopt/xla``. A directory already set for JAX (e.g.
    ``$JAX_COMPILATION_CACHE_DIR``) is left as it is.
    """
    current = jax.config.values.get("jax_compilation_cache_dir")
    if current:
        return current
    choice = os.environ.get(CACHE_ENV, "")
    if choice.lower() in ("0", "off", "false", "no"):
        return None
    directory = pathlib.Path(choice or pathlib.Path.home() / ".cache" / "lopt" / "xla")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: run without the cache
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return str(directory)
