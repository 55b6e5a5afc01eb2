"""The CLI bad-input table of tests/test_bad_inputs.py run against any version of
the code, one real process per case, for before/after comparisons:

    git worktree add /tmp/old REV
    PYTHONPATH=/tmp/old python scripts/bad_input_table.py /tmp/bad_old /tmp/bad_old.json
    python scripts/bad_input_table.py /tmp/bad_new /tmp/bad_new.json

A case is OK when it exits 2 with one line on stderr, no traceback, and changes
no file; a version that starts training on a bad value is stopped after 20 s.
Prints one JSON line per case and writes them all to the second argument.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
src = (ROOT / "tests" / "test_bad_inputs.py").read_text()
ns: dict = {}
exec(
    compile(
        src.split("def _drive")[0].replace(
            "from conftest import ROOT", f"ROOT = __import__('pathlib').Path({str(ROOT)!r})"
        ),
        "cases",
        "exec",
    ),
    ns,
)
CLI_CASES = ns["CLI_CASES"]
tmp = pathlib.Path(sys.argv[1])
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir()
(tmp / "plain").write_text("x")
(tmp / "cfgdir").mkdir()
(tmp / "binary.toml").write_bytes(b"\xff\xfe\x00binary")
(tmp / "syntax.toml").write_text("[train\nsteps = 3\n")
(tmp / "section.toml").write_text('name = "x"\n[bogus]\nx = 1\n')
(tmp / "value.toml").write_text("[train]\nsteps = 0\n")
(tmp / "logonly").mkdir()
(tmp / "logonly" / "metrics.jsonl").write_text('{"step": 0}\n')
(tmp / "binrun" / "checkpoints").mkdir(parents=True)
(tmp / "binrun" / "config.toml").write_bytes(b"\x00\xff binary")
code = (
    "import sys, jax, learned_opt; from learned_opt import MLPLOpt; "
    "lo = MLPLOpt(hidden_sizes=(8,)); "
    "learned_opt.save(sys.argv[1], lo, lo.init_meta(jax.random.PRNGKey(0)))"
)
for name in ("artifact", "damaged_opt"):
    subprocess.run([sys.executable, "-c", code, str(tmp / name)], check=True, capture_output=True)
for f in (tmp / "damaged_opt").rglob("*"):
    if f.is_file() and f.parent.name == "d":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
SETS = [
    "task.hidden_sizes=[16]",
    "task.batch_size=32",
    "task.horizon=40",
    "lopt.hidden_sizes=[16,16]",
    "estimator.num_particles=4",
    "estimator.trunc_len=10",
    "train.eval_seeds=2",
    "train.steps=6",
    "train.checkpoint_every=3",
]
run = tmp / "run"
subprocess.run(
    [
        sys.executable,
        "-m",
        "meta_train.cli",
        "meta-train",
        *[x for s in SETS for x in ("--set", s)],
        "--out",
        str(run),
        "--no-progress",
    ],
    check=True,
    capture_output=True,
)
fill = {"tmp": str(tmp), "run": str(run), "artifact": str(tmp / "artifact")}
results = {}


def snap():
    return {
        p: (p.read_bytes() if p.is_file() else None)
        for p in tmp.rglob("*")
        if "/runs/" not in str(p)
    }


for cid, argv, _ in CLI_CASES:
    before = snap()
    args = [a.format(**fill) for a in argv]
    try:
        r = subprocess.run(
            [sys.executable, "-m", "meta_train.cli", *args],
            capture_output=True,
            text=True,
            timeout=20,
            cwd=tmp,
            env={**os.environ, "LOPT_COMPILATION_CACHE": "0"},
        )
        rc: int | str = r.returncode
        err = r.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = (
            "ran >20 s (started work)",
            (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or ""),
        )
    lines = err.strip().splitlines()
    changed = snap() != before
    ok = rc == 2 and len(lines) == 1 and "Traceback" not in err and not changed
    results[cid] = dict(
        rc=rc,
        lines=len(lines),
        traceback="Traceback" in err,
        changed=changed,
        ok=ok,
        first=(lines[-1][:150] if lines else ""),
    )
    print(json.dumps({cid: results[cid]}), flush=True)
json.dump(results, open(sys.argv[2], "w"), indent=1)
