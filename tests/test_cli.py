import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, TINY


def _lopt(*args, cwd=ROOT, timeout=300):
    exe = shutil.which("lopt")
    cmd = [exe] if exe else [sys.executable, "-m", "meta_train.cli"]
    return subprocess.run(
        cmd + list(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A tiny run started from a directory outside the repository, with no --config:
    the shipped default (the wheel check in scripts/check_wheel.sh names it)."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    out = tmp_path_factory.mktemp("cli") / "run"
    sets = [a for s in TINY + ["train.steps=4", "train.checkpoint_every=2"] for a in ("--set", s)]
    proc = _lopt("meta-train", *sets, "--out", str(out), cwd=elsewhere)
    return proc, out


def _event_scalars(tb_dir) -> dict[str, list[tuple[int, float]]]:
    """The scalars TensorBoard shows from the event files in ``tb_dir``, read record by
    record (TFRecord framing: length, its CRC, the Event proto, its CRC), files in
    the order written; a file's purge step (SessionLog.START, written by a resumed
    run) hides the earlier files' events at or after it."""
    import struct

    from tensorboardX.proto.event_pb2 import Event, SessionLog

    scalars: dict[str, list[tuple[int, float]]] = {}
    files = sorted(tb_dir.glob("events.out.tfevents.*"), key=lambda f: int(f.name.split(".")[3]))
    for path in files:
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                scalars = {k: [x for x in v if x[0] < event.step] for k, v in scalars.items()}
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_meta_train_end_to_end(cli_run):
    proc, out = cli_run
    assert proc.returncode == 0, proc.stderr
    assert "meta-train" in proc.stderr and "4/4" in proc.stderr  # the progress bar
    assert "particle inner-steps/s" in proc.stdout
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 4
    assert (out / "config.toml").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    assert (out / "report.png").stat().st_size > 10_000
    # Every scalar of metrics.jsonl is in TensorBoard, at its step, with its value.
    scalars = _event_scalars(out / "tb")
    for key in ("meta_loss", "grad_norm", "nonfinite_resets", "particle_steps_per_s", "eval_loss"):
        logged = [(r["step"], r[key]) for r in records if key in r]
        assert [s for s, _ in scalars[key]] == [s for s, _ in logged], key
        assert [v for _, v in scalars[key]] == pytest.approx([v for _, v in logged], rel=1e-6)


def test_report_redraws_a_run_and_refuses_a_directory_without_one(cli_run, tmp_path):
    _, out = cli_run
    (out / "report.png").unlink()
    proc = _lopt("report", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.png").stat().st_size > 10_000
    proc = _lopt("report", str(tmp_path))
    assert proc.returncode == 2 and "holds no run" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unknown_config_name_lists_the_shipped_ones(tmp_path):
    proc = _lopt("meta-train", "--config", "defualt", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "no shipped config of that name" in proc.stderr and "default" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_version():
    proc = _lopt("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("lopt 0.")


def test_resume_extends_a_run(cli_run, tmp_path):
    _, out = cli_run
    proc = _lopt(
        "meta-train", "--out", str(out), "--resume", "--set", "train.steps=6", "--no-progress"
    )
    assert proc.returncode == 0, proc.stderr
    assert "resumed" in proc.stdout
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 6 and 5 in steps
    # The card of an optimizer exported from it says how it was made, resume included.
    exported = _lopt("export", "--run", str(out), "--out", str(tmp_path / "opt"))
    assert exported.returncode == 0, exported.stderr
    card = json.loads((tmp_path / "opt" / "meta" / "metadata").read_text())["card"]
    first, resumed = card["commands"]
    assert first.startswith("lopt meta-train --set ") and first.endswith(f"--out {out}")
    assert resumed == f"lopt meta-train --out {out} --resume --set train.steps=6 --no-progress"


def test_resume_on_two_cpu_devices(cli_run):
    """A run checkpointed on one device continues with its particles on two."""
    _, out = cli_run
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    proc = _lopt(
        "meta-train",
        "--out",
        str(out),
        "--resume",
        "--set",
        f"train.steps={last + 2}",
        "--no-progress",
        "--cpu-devices",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    assert "particles sharded over 2 devices" in proc.stdout
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == last + 2


def test_cpu_devices_needs_a_fresh_process(tmp_path, capsys):
    import jax

    from meta_train import cli

    jax.devices()  # this process's backend is up, as in any test
    assert (
        cli.main(
            [
                "meta-train",
                "--config",
                "configs/default.toml",
                "--cpu-devices",
                "2",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("lopt: error: --cpu-devices") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_existing_run_is_not_overwritten(cli_run):
    _, out = cli_run
    proc = _lopt("meta-train", "--config", "configs/default.toml", "--out", str(out))
    assert proc.returncode == 2
    assert "already holds a run" in proc.stderr


def test_list_shows_configs_datasets_and_suites(tmp_path):
    proc = _lopt("list", cwd=tmp_path)  # shipped configs and optimizers from anywhere
    assert proc.returncode == 0, proc.stderr
    for word in ("default, family, family_long, generalist, influence_balancing",
                 "shipped optimizers: default_mlp", "fashion_mnist", "held-out", "generalization:",
                 "estimator.num_particles", "family.num_buckets",
                 "corpora (task.corpus):\n  tiny_shakespeare_embedded: embedded, ready",
                 "tiny_shakespeare: tfds, not prepared",
                 "environments (task.env, ready): Pendulum-v1"):  # fmt: skip
        assert word in proc.stdout


def test_toy_system_meta_trains_and_logs_theta_but_cannot_be_exported(tmp_path):
    out = tmp_path / "ib"
    proc = _lopt(
        "meta-train",
        "--config",
        "configs/influence_balancing.toml",
        "--set",
        "train.steps=20",
        "--set",
        "train.log_every=1",
        "--out",
        str(out),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    thetas = [r["theta"][0] for r in records if "theta" in r]
    assert len(thetas) == 20 and thetas[0] != thetas[-1]
    proc = _lopt("export", "--run", str(out), "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "only image_mlp, image_mlp_family, python runs" in proc.stderr


def test_figures_draws_pngs_and_a_summary(tmp_path):
    proc = _lopt(
        "figures",
        "--experiments",
        "influence_balancing,toy_regression",
        "--set",
        "train.steps=20",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "influence_balancing.png").stat().st_size > 10_000
    assert (tmp_path / "toy_regression.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["toy_regression"]) == {"pes", "nres", "full_es", "truncated_es", "tbptt"}
    assert "toy_regression       pes" in proc.stdout
    proc = _lopt("figures", "--experiments", "cartpole", "--out", str(tmp_path))
    assert proc.returncode == 2 and "unknown experiment 'cartpole'" in proc.stderr


def test_list_into_a_closed_pipe_is_quiet():
    lopt = "lopt" if shutil.which("lopt") else f"{sys.executable} -m meta_train.cli"
    proc = subprocess.run(
        f"{lopt} list | head -1", shell=True, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.startswith("configs")
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
