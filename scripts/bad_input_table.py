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

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from conftest import TINY  # noqa: E402
from test_bad_inputs import CLI_CASES, _snapshot, make_bad_files  # noqa: E402

tmp = pathlib.Path(sys.argv[1])
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir()
make_bad_files(tmp)
run = tmp / "run"
subprocess.run(
    [
        sys.executable,
        "-m",
        "meta_train.cli",
        "meta-train",
        *[x for s in TINY for x in ("--set", s)],
        "--out",
        str(run),
        "--no-progress",
    ],
    check=True,
    capture_output=True,
)
fill = {"tmp": str(tmp), "run": str(run), "artifact": str(tmp / "artifact")}
results = {}


def snap():  # a run started by a version that accepts a bad value writes runs/
    return {p: v for p, v in _snapshot(tmp).items() if "/runs/" not in str(p)}


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
