#!/usr/bin/env bash
# Build the wheel, install it into a fresh virtual environment, and use it as a
# user would, from a directory outside the repository (run by .ci/run).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# setuptools builds in the tree and packs whatever build/lib holds: a stale
# build/ from an older tree would put files the source no longer has in the wheel.
rm -rf "$repo/build"
python3 -m pip wheel --no-deps -v -w "$work/dist" "$repo" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
# Our metadata must build without setuptools' warnings (pip's own notes about
# this machine's package index are not ours).
if grep -E "Setuptools[A-Za-z]*Warning" "$work/build.log"; then
  echo "check_wheel: the build warned about our metadata (above)"; exit 1
fi
wheel="$(ls "$work"/dist/lopt_pes-*.whl)"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel"

cd "$work"  # nothing of the repository is reachable from here
lopt="$work/venv/bin/lopt"
"$lopt" --version
"$lopt" list > list.txt && grep -q "shipped optimizers: default_mlp" list.txt
"$lopt" meta-train --config default --no-progress --out run \
  --set task.hidden_sizes=[16] --set task.batch_size=32 --set task.horizon=20 \
  --set lopt.hidden_sizes=[8] --set estimator.num_particles=2 --set estimator.trunc_len=5 \
  --set train.steps=2 --set train.eval_seeds=1 --set train.eval_every=0
test -f run/report.png && test -d run/tb
"$lopt" export --run run --out exported
"$lopt" eval --optimizer default_mlp --tasks tiny --steps 20 --seeds 1 --no-progress --out eval
"$lopt" eval --optimizer exported --tasks tiny --steps 20 --seeds 1 --no-progress --out eval2
# The library alone finds the shipped optimizers inside the wheel, by name.
"$work/venv/bin/python" -c 'import learned_opt; learned_opt.load_optax("generalist"); learned_opt.load_optax("default_mlp")'
echo "check_wheel: the wheel installs and runs from $work"
