"""Process-level tuning: XLA compiler options and the malloc arena cap."""

import os
import subprocess
import sys

import jax
from conftest import ROOT

from meta_train.runtime import xla_options


def test_cpu_compiler_options_are_probed():
    opts = xla_options.compiler_options()
    if jax.default_backend() == "cpu":
        # Exactly the options this XLA compiles with (jax 0.12's XLA no longer knows
        # xla_cpu_use_fusion_emitters; jax 0.10's knows both).
        known = {k: v for k, v in xla_options.CPU_OPTIONS.items()
                 if xla_options._compiles_with(k, v)}  # fmt: skip
        assert known, "no CPU option is known to this XLA"
        assert opts == known
    else:
        assert opts is None
    # An option this XLA does not know is left out instead of failing every compile.
    assert not xla_options._compiles_with("xla_cpu_no_such_option_for_lopt", True)


def _cap_in_fresh_process(env: dict) -> str:
    code = (
        "from meta_train.runtime.host_memory import limit_malloc_arenas; "
        "print(limit_malloc_arenas())"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    ).stdout.strip()


def test_malloc_arena_cap_is_set_unless_the_user_set_one():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _cap_in_fresh_process(env) == str(sys.platform.startswith("linux"))
    assert _cap_in_fresh_process({**env, "MALLOC_ARENA_MAX": "4"}) == "False"
