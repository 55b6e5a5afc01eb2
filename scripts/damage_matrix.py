"""The checkpoint damage matrix run against any version of the code: a 9-step tiny
run, its newest checkpoint (9) damaged one way per row, then ``--resume``; what
was reported (stderr lines), which step the run resumed from, and whether the
optimizer exported afterwards equals the undamaged run's (the recomputed step
saved again):

    git worktree add /tmp/old REV
    PYTHONPATH=/tmp/old python scripts/damage_matrix.py /tmp/dm_old
    python scripts/damage_matrix.py /tmp/dm_new

The run and the kinds of damage are those of tests/test_reliability.py.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from test_reliability import CHECKPOINT_DAMAGE, SETS  # noqa: E402

work = pathlib.Path(sys.argv[1])
shutil.rmtree(work, ignore_errors=True)
work.mkdir()
env = {**os.environ, "LOPT_COMPILATION_CACHE": "0"}


def lopt(*a):
    return subprocess.run(
        [sys.executable, "-m", "meta_train.cli", *a],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


ref = work / "ref"
r = lopt("meta-train", *SETS, "--out", str(ref), "--no-progress")
assert r.returncode == 0, r.stderr


def theta(run):
    code = (  # a SHA-256 over theta's arrays, readable by any version
        "import sys, hashlib, jax, numpy as np; "
        "from meta_train.training.export_run import theta_from_run; "
        "t = theta_from_run(sys.argv[1])[1]; h = hashlib.sha256(); "
        "[h.update(np.asarray(x).tobytes()) for x in jax.tree.leaves(t)]; print(h.hexdigest())"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(run)], capture_output=True, text=True, env=env
    )
    return (
        r.stdout.strip() if r.returncode == 0 else "ERR " + r.stderr.strip().splitlines()[-1][:100]
    )


ref_theta = theta(ref)
out: dict[str, dict] = {}
for name, (damage, _) in CHECKPOINT_DAMAGE.items():
    run = work / name
    shutil.copytree(ref, run)
    if (
        name in ("wrong_checksum", "deleted_checksum")
        and not (run / "checkpoints/9/integrity").exists()
    ):
        out[name] = {"note": "no checksum file in this version"}
        print(name, out[name], flush=True)
        continue
    damage(run / "checkpoints" / "9")
    r = lopt("meta-train", "--resume", "--out", str(run), "--no-progress")
    err = r.stderr.strip().splitlines()
    resumed_from = re.search(r"resumed \S+ from outer step (\d+)", r.stdout)
    t = theta(run)
    out[name] = {
        "rc": r.returncode,
        "stderr_lines": len(err),
        "reported": any("damaged" in line for line in err),
        "resumed_from": int(resumed_from.group(1)) if resumed_from else None,
        "export_after_matches_reference": t == ref_theta,
        "first": err[0][:120] if err else "",
    }
    print(name, json.dumps(out[name]), flush=True)
json.dump(out, open(work / "result.json", "w"), indent=1)
