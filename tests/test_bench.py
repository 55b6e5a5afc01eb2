"""The benchmark scripts run (tiny shapes; not timed)."""

import subprocess
import sys

from conftest import ROOT, TINY

TINY_W1 = ["--tiny", "--particles", "4", "--trunc-len", "3", "--horizon", "10"]


def _bench(script: str, *args: str) -> list[str]:
    """The lines a bench script prints (it must succeed)."""
    proc = subprocess.run(
        [sys.executable, f"bench/{script}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def test_w1_smoke():
    lines = _bench("w1.py", *TINY_W1, "--warmup", "1", "--iters", "2", "--blocks", "2")
    assert lines[0].startswith("# W1") and "command: python bench/w1.py" in lines[0]
    row = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row[:3] == ["4", "3", "10"]
    assert float(row[3]) > 0  # steps/s
    warm_cold, warm_cached = (float(x) for x in row[5].split("/"))
    rss_cold, rss_cached = (float(x) for x in row[6].split("/"))
    assert warm_cold > 0 and warm_cached > 0 and rss_cold > 0 and rss_cached > 0
    assert lines[-1].startswith("W1 N=4 K=3 T=10:")


def test_w2_smoke():
    out = "\n".join(
        _bench("w2.py", "--tiny", "--buckets", "2", "--particles", "4", "--horizon", "6",
               "--trunc-len", "3", "--draw-steps", "6", "--blocks", "1", "--block-steps", "1")
    )  # fmt: skip
    assert "particle inner-steps/s (all buckets):" in out
    assert "0 more compilations, 0.00 s compiling; outer-step programs 1" in out
    assert "peak RSS" in out and "reproduce: python bench/w2.py --tiny" in out


def test_dataset_load_smoke():
    out = "\n".join(_bench("dataset_load.py", "--train", "120", "--test", "20"))
    assert "train split on device: [100, 32, 32, 3]" in out  # 120 minus a sixth
    assert "first load" in out and "cached load" in out
    assert "reproduce: python bench/dataset_load.py --train 120 --test 20" in out


def test_w1_profile_smoke():
    lines = _bench("w1_profile.py", *TINY_W1, "--iters", "1")
    assert "command: python bench/w1_profile.py" in lines[0]
    parts = {r.split("|")[1].strip(): float(r.split("|")[2]) for r in lines[4:9]}
    # Every part of the step was found in the profile by its named scope.
    assert all(ms > 0 for ms in parts.values()), parts
    assert abs(sum(parts.values()) - float(lines[9].split("|")[2])) < 0.01
    assert "GFLOP/s" in lines[10] and "GB/s" in lines[11]


def test_cpu_devices_smoke():
    lines = _bench("cpu_devices.py", *TINY_W1, "--devices", "2", "--blocks", "1", "--iters", "1")
    assert "vs 2 CPU devices" in lines[0] and "command: python bench/cpu_devices.py" in lines[0]
    assert lines[-1].startswith("N=4 K=3 T=10: 2 CPU devices / 1 = ")


def test_cpu_devices_on_a_config_smoke():
    sets = [a for x in TINY for a in ("--set", x)]
    lines = _bench(
        "cpu_devices.py",
        "--config",
        "configs/default.toml",
        *sets,
        "--devices",
        "2",
        "--blocks",
        "1",
        "--iters",
        "1",
    )
    assert lines[0].startswith("# default (configs/default.toml) one device vs 2 CPU devices")
    assert lines[-1].startswith("N=4 K=10 T=40: 2 CPU devices / 1 = ")


def test_w1_bound_smoke():
    lines = _bench(
        "w1_bound.py", "--tiny", "--repeats", "2", "--step-iters", "1", "--step-blocks", "1"
    )
    assert "command: python bench/w1_bound.py" in lines[0]
    parts = {r.split("|")[1].strip(): float(r.split("|")[2]) for r in lines[3:7]}
    assert all(ms > 0 for ms in parts.values()), parts
    assert abs(sum(parts.values()) - float(lines[7].split("|")[2])) < 0.01
    assert "particle-steps/s" in lines[-2] and "of the FLOP bound" in lines[-2]
    assert lines[-1].startswith("W1 ceiling from its compute floor: ")


def test_unroll_strategies_smoke():
    lines = _bench(
        "unroll_strategies.py", *TINY_W1, "--chunks", "0,1,2", "--blocks", "2", "--iters", "1"
    )
    assert "command: python bench/unroll_strategies.py" in lines[0]
    assert len(lines) == 1 + 2 + 2 + 2  # header, table head, a row per block, a ratio per chunk
    assert float(lines[3].strip("|").split("|")[2]) > 0  # particle-steps/s of chunk 1
    assert lines[-1].startswith("chunk 2 / chunk 0 = ")


def test_w1_against_smoke():
    lines = _bench("w1_against.py", "--tiny", "--base", "HEAD", "--pairs", "1", "--particles",
                   "4", "--iters", "1", "--blocks", "1")  # fmt: skip
    assert "command: python bench/w1_against.py" in lines[0]
    assert float(lines[3].strip("|").split("|")[3]) > 0  # the pair's ratio
    assert lines[-1].startswith("this / HEAD = ")


def test_conv_in_scan_smoke():
    lines = _bench("conv_in_scan.py", "--image-size", "8", "--steps", "3", "--blocks", "2")
    assert "command: python bench/conv_in_scan.py" in lines[0]
    assert lines[-1].startswith("XLA conv / im2col = ")
