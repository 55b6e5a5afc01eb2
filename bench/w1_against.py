"""W1 of this checkout against W1 of another commit, in alternating processes.

    python bench/w1_against.py --base HEAD~1            # 5 pairs, N=8
    python bench/w1_against.py --base main --pairs 8 --particles 32

The check that a change does not slow W1 down. The base commit is checked out
in a temporary git worktree; then each pair runs ``bench/w1.py --one`` (N,
K = 20, T = 200: particle-steps/s over timed blocks after warm-up) once from
the base and once from this working tree, in fresh processes, the order
alternating pair by pair so a shared machine's drift hits both alike. Each
side keeps its own compilation cache, filled by an untimed first run. Prints
each pair's rates and ratio (this / base), then the median ratio and range.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_w1(checkout: pathlib.Path, cache: str, args: argparse.Namespace) -> float:
    cmd = [sys.executable, "bench/w1.py", "--one", "--particles", str(args.particles),
           "--iters", str(args.iters), "--blocks", str(args.blocks)]  # fmt: skip
    cmd += ["--tiny", "--trunc-len", "3", "--horizon", "10"] if args.tiny else []
    env = {**os.environ, "LOPT_COMPILATION_CACHE": cache, "PYTHONPATH": str(checkout)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="HEAD", help="the commit to compare against")
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--particles", type=int, default=8)
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test, not W1)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.base],
                       cwd=ROOT, check=True)  # fmt: skip
        try:
            sides = {"base": base, "this": ROOT}
            caches = {name: tempfile.mkdtemp(dir=tmp) for name in sides}
            for name, checkout in sides.items():  # fill each side's compilation cache
                run_w1(
                    checkout,
                    caches[name],
                    argparse.Namespace(**{**vars(args), "iters": 1, "blocks": 1}),
                )
            print(
                f"# W1 N={args.particles}: this working tree against {args.base}"
                f"{' (TINY shapes: smoke test only)' if args.tiny else ''}: command: "
                f"python bench/w1_against.py {' '.join(sys.argv[1:])}"
            )
            print("| pair | base (particle-steps/s) | this | this / base |")
            print("|---|---|---|---|")
            ratios = []
            for i in range(args.pairs):
                order = ["base", "this"] if i % 2 == 0 else ["this", "base"]
                rate = {name: run_w1(sides[name], caches[name], args) for name in order}
                ratios.append(rate["this"] / rate["base"])
                print(
                    f"| {i + 1} | {rate['base']:.0f} | {rate['this']:.0f} | {ratios[-1]:.2f} |",
                    flush=True,
                )
            print(
                f"this / {args.base} = {statistics.median(ratios):.2f} (median of {len(ratios)} "
                f"pairs; range {min(ratios):.2f}-{max(ratios):.2f})"
            )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                           check=False)  # fmt: skip


if __name__ == "__main__":
    main()
