"""Where W1's particle step spends its time, by part of the compiled program.

    python bench/w1_profile.py                  # N=8, K=20, T=200
    python bench/w1_profile.py --particles 32

Builds W1 as ``bench/w1.py`` does, runs the outer iteration under
``jax.profiler`` and adds up the time of every operation XLA executed, each
attributed by the named scope it was traced in (``LearnedOptimizerSystem.step``
and ``MLPLOpt.update`` name their parts):

* the learned optimizer's MLP (the per-parameter network),
* the rest of the learned optimizer (momenta, features, their normalisation,
  the update),
* the inner network's gradient (forward and backward on a batch),
* the meta-loss (forward on a fresh batch),
* everything else: the population's bookkeeping (reading and writing each
  particle's state, finiteness checks, episode restarts), the PES estimate and
  the outer update.

It prints milliseconds per particle inner step for each part, the MLP's
GFLOP/s, and the memory bandwidth this machine gives XLA (an elementwise pass
and a reduction over a 7 MB array, the size of one particle's features), so the
parts that move memory rather than multiply can be judged against it.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import pathlib
import re
import sys
import tempfile
from typing import Any

PARTS = (  # (label, the named scopes that mark it); the first that matches wins
    ("learned-optimizer MLP", {"learned_optimizer", "mlp"}),
    ("learned-optimizer features and update", {"learned_optimizer"}),
    ("inner gradient (forward + backward)", {"inner_gradient"}),
    ("meta-loss (forward)", {"meta_loss"}),
)
OTHER = "bookkeeping, estimate, outer update"
# Profiler events that are not operations: runtime spans that contain them.
CONTAINERS = ("ThunkExecutor", "$", "while", "SlinkyThreadPool", "end:", "PjitFunction")


def op_scopes(hlo_text: str) -> dict[str, str]:
    """Instruction name -> its op_name metadata, from the compiled HLO text."""
    found = {}
    for m in re.finditer(
        r"^\s+(?:ROOT )?%(\S+) = [^\n]*?op_name=\"([^\"]*)\"", hlo_text, re.MULTILINE
    ):
        found[m.group(1)] = m.group(2)
    return found


def part_of(op_name: str) -> str:
    # Transformations wrap a scope's name: "vmap(learned_optimizer)/vmap(mlp)/...".
    names = set(re.findall(r"\w+", op_name))
    for label, scopes in PARTS:
        if scopes <= names:
            return label
    return OTHER


def read_trace(trace_dir: pathlib.Path) -> list[dict]:
    files = sorted(trace_dir.rglob("*.trace.json.gz"))
    if not files:
        raise SystemExit(
            f"jax.profiler wrote no *.trace.json.gz under {trace_dir}; "
            "this jaxlib's profiler output is not supported"
        )
    with gzip.open(files[-1]) as f:
        events = json.load(f)["traceEvents"]
    return [e for e in events if e.get("ph") == "X"]


def bandwidth_gb_s(num_floats: int = 1_806_336, repeats: int = 50) -> tuple[float, float]:
    """(elementwise read+write, reduction read) GB/s over one float32 array."""
    import jax
    import jax.numpy as jnp

    from meta_train.runtime import xla_options

    x = jax.random.normal(jax.random.PRNGKey(0), (num_floats,), jnp.float32)

    from w1 import median_seconds

    def best(f, moved):
        return moved / median_seconds(f, x, repeats=repeats) / 1e9

    size = 4 * num_floats
    return (
        best(xla_options.jit(lambda v: v * 2.0 + 1.0), 2 * size),
        best(xla_options.jit(jnp.sum), size),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--particles", type=int, default=8)
    p.add_argument("--trunc-len", type=int, default=20)
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--iters", type=int, default=2, help="outer iterations profiled")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test, not W1)")
    args = p.parse_args()

    from meta_train.runtime.host_memory import limit_malloc_arenas

    limit_malloc_arenas()
    import jax

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from w1 import build_w1, flops_per_particle_step

    from meta_train.training.outer_step import init_meta_state, make_outer_step

    est, outer, task, lopt = build_w1(args.particles, args.trunc_len, args.horizon, args.tiny)
    state = init_meta_state(est, outer, seed=0)
    # Compiled once, ahead of time: the program traced below is the one whose
    # HLO names its operations.
    jitted: Any = make_outer_step(outer)  # a jax.jit function: it can be lowered
    step = jitted.lower(est, state).compile()
    scopes = op_scopes(step.as_text())
    for _ in range(2):  # so nothing first-time is traced
        state, _ = step(est, state)
    jax.block_until_ready(state)

    with tempfile.TemporaryDirectory(prefix="w1-profile-") as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(args.iters):
            state, _ = step(est, state)
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        events = read_trace(pathlib.Path(tmp))

    steps = args.iters * est.num_particles * est.trunc_len
    per_part: collections.Counter[str] = collections.Counter()
    for e in events:
        if not e["name"].startswith(CONTAINERS):
            per_part[part_of(scopes.get(e["name"], ""))] += e["dur"] / 1e3 / steps  # us -> ms
    total = sum(per_part.values())
    mlp_ms = per_part[PARTS[0][0]]
    params = sum(x.size for x in jax.tree.leaves(jax.eval_shape(task.init, jax.random.PRNGKey(0))))
    mlp_gflops = lopt.flops_per_param() * params / (mlp_ms / 1e3) / 1e9 if mlp_ms else 0.0
    elementwise, reduction = bandwidth_gb_s()

    print(
        f"# W1 profile{' (TINY shapes: smoke test only)' if args.tiny else ''}: command: "
        f"python bench/w1_profile.py {' '.join(sys.argv[1:])}"
    )
    print(
        f"# N={est.num_particles} K={est.trunc_len} T={args.horizon}, {args.iters} outer "
        f"iterations traced, {steps} particle steps; operation time per particle step"
    )
    print("| part | ms | share |")
    print("|---|---|---|")
    for label in [label for label, _ in PARTS] + [OTHER]:
        print(f"| {label} | {per_part[label]:.3f} | {100 * per_part[label] / total:4.1f}% |")
    print(f"| all operations | {total:.3f} | 100% |")
    print(
        f"# learned-optimizer MLP: {lopt.flops_per_param() * params / 1e6:.0f} MFLOP per step "
        f"at {mlp_gflops:.0f} GFLOP/s; whole step at "
        f"{flops_per_particle_step(task, lopt) / 1e6 / total:.0f} GFLOP/s"
    )
    print(
        f"# memory bandwidth seen by XLA: elementwise {elementwise:.0f} GB/s (read + write), "
        f"reduction {reduction:.0f} GB/s (7 MB float32)"
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
