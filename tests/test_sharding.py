"""Particles sharded over 2 (fake CPU) devices give the single-device result."""

import json
import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = r"""
import json, sys
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
from tests.conftest import TINY
from meta_train import config as config_lib
from meta_train.builders import build_estimator, build_outer_optimizer, build_system
from meta_train.training.outer_step import distribute, init_meta_state, make_outer_step

assert len(jax.devices()) == 2, jax.devices()
cfg = config_lib.load(sys.argv[1] + "/configs/default.toml", TINY)
est = build_estimator(cfg, build_system(cfg))
outer = build_outer_optimizer(cfg)

def run(devices):
    state = init_meta_state(est, outer, 0)
    placed, state, shardings, count = distribute(est, state, devices)
    step = make_outer_step(outer, shardings)
    losses = []
    for i in range(3):
        # After the first call nothing moves between devices: the dataset was
        # placed on every device once, the population stays where it is.
        with jax.transfer_guard("allow" if i == 0 else "disallow"):
            state, m = step(placed, state)
            losses.append(float(m["meta_loss"]))
    return state, count, losses

single, n1, l1 = run(jax.devices()[:1])
sharded, n2, l2 = run(None)
spec = sharded.estimator_state.remaining.sharding.spec
diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
           for a, b in zip(jax.tree.leaves(single.theta), jax.tree.leaves(sharded.theta)))
scale = max(float(np.max(np.abs(np.asarray(a)))) for a in jax.tree.leaves(single.theta))
print(json.dumps({"n1": n1, "n2": n2, "spec": str(spec), "diff": diff, "scale": scale,
                  "l1": l1, "l2": l2,
                  "shards": len(sharded.estimator_state.remaining.addressable_shards)}))
"""


def test_sharded_particles_match_single_device():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["n1"] == 1 and r["n2"] == 2 and r["shards"] == 2
    assert "particles" in r["spec"]
    assert r["diff"] <= 1e-5 * r["scale"], r
    assert abs(r["l1"][-1] - r["l2"][-1]) <= 1e-5 * abs(r["l1"][-1])
