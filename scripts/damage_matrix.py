"""The checkpoint damage matrix run against any version of the code: a 9-step tiny
run, its newest checkpoint (9) damaged one way per row, then ``--resume``; what
was reported (stderr lines), which step the run resumed from, and whether the
optimizer exported afterwards equals the undamaged run's (the recomputed step
saved again):

    git worktree add /tmp/old REV
    PYTHONPATH=/tmp/old python scripts/damage_matrix.py /tmp/dm_old
    python scripts/damage_matrix.py /tmp/dm_new
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

work = pathlib.Path(sys.argv[1])
shutil.rmtree(work, ignore_errors=True)
work.mkdir()
SETS = [
    "task.hidden_sizes=[16]",
    "task.batch_size=32",
    "task.horizon=40",
    "lopt.hidden_sizes=[16,16]",
    "estimator.num_particles=4",
    "estimator.trunc_len=10",
    "train.eval_seeds=2",
    "train.eval_every=0",
    "train.steps=9",
    "train.checkpoint_every=3",
    "train.log_every=1",
]
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
r = lopt("meta-train", *[x for s in SETS for x in ("--set", s)], "--out", str(ref), "--no-progress")
assert r.returncode == 0, r.stderr


def data(d):
    return [f for f in d.rglob("*") if f.is_file() and f.parent.name == "d"]


def flip(d):
    for f in data(d):
        b = bytearray(f.read_bytes())
        for i in range(64, len(b), 97):
            b[i] ^= 0x5A
        f.write_bytes(bytes(b))


def trunc(d):
    for f in data(d):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def rm(*names):
    def go(d):
        for n in names:
            t = d / n
            shutil.rmtree(t) if t.is_dir() else t.unlink()

    return go


def empty(d):
    for f in d.rglob("manifest.ocdbt"):
        f.write_bytes(b"")


def deldata(d):
    for f in data(d):
        f.unlink()


def wrongsum(d):
    for f in [d / "integrity" / "metadata"]:
        if f.exists():
            f.write_text(re.sub(r"[0-9a-f]{64}", "0" * 64, f.read_text()))
        else:  # before checksums existed: flip one array's bytes Orbax cannot see? no equivalent
            pass


KINDS = {
    "flipped bytes": flip,
    "wrong checksum": wrongsum,
    "truncated data": trunc,
    "deleted data files": deldata,
    "emptied manifest": empty,
    "deleted _CHECKPOINT_METADATA": rm("_CHECKPOINT_METADATA"),
    "deleted state/_METADATA": rm("state/_METADATA"),
    "deleted checksum file": rm("integrity"),
}


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
for name, damage in KINDS.items():
    run = work / name.replace(" ", "_").replace("/", "_")
    shutil.copytree(ref, run)
    if (
        name in ("wrong checksum", "deleted checksum file")
        and not (run / "checkpoints/9/integrity").exists()
    ):
        out[name] = {"note": "no checksum file in this version"}
        print(name, out[name], flush=True)
        continue
    damage(run / "checkpoints" / "9")
    r = lopt("meta-train", "--resume", "--out", str(run), "--no-progress")
    err = r.stderr.strip().splitlines()
    resumed_from = re.search(r"resumed \S+ from outer step (\d+)", r.stdout)
    saved9 = (run / "checkpoints/9/commit_success.txt").exists() or (
        run / "checkpoints/9/_CHECKPOINT_METADATA"
    ).exists()
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
