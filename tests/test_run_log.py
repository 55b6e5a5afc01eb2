"""What a run writes for its user: metrics.jsonl, TensorBoard files, the report."""

import json
import sys

import pytest

from meta_train.evaluation.report import ReportError, draw_report, read_metrics
from meta_train.training.run_log import MetricsLog


def test_without_the_tensorboard_writer_the_run_goes_on_and_says_what_to_install(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
    said = []
    log = MetricsLog(tmp_path, append=False, log=said.append)
    log.write({"step": 1, "meta_loss": 2.5})
    log.close()
    assert len(said) == 1 and "pip install tensorboardX" in said[0]
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "meta_loss": 2.5}
    assert not (tmp_path / "tb").exists()


def test_report_reads_a_log_with_a_torn_last_line(tmp_path):
    lines = [{"step": 0, "eval_loss": 2.3, "eval_final_loss": 2.2}]
    lines += [{"step": s, "meta_loss": 2.0 - 0.1 * s, "particle_steps_per_s": 100.0 * s}
              for s in range(1, 6)]  # fmt: skip
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"step": 6, "meta_lo'
    (tmp_path / "metrics.jsonl").write_text(text)
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1, 2, 3, 4, 5]
    assert draw_report(tmp_path).stat().st_size > 10_000


def test_report_of_an_empty_log_is_a_clear_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ReportError, match="no outer step"):
        draw_report(tmp_path)


def test_a_resumed_log_carries_the_time_spent_before(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    log = MetricsLog(tmp_path, append=False, log=lambda _: None)
    for step, wall, cpu in ((1, 10.0, 18.0), (2, 20.0, 37.0), (3, 30.0, 55.0)):
        log.write({"step": step, "meta_loss": 1.0, "seconds": wall, "cpu_seconds": cpu})
    log.write({"step": 3, "eval_loss": 0.5})
    log.close()
    # Restored from the checkpoint of step 2: step 3 runs again, and its time with it.
    resumed = MetricsLog(tmp_path, append=True, log=lambda _: None, keep_through=2)
    resumed.close()
    assert resumed.elapsed == (20.0, 37.0)
    assert MetricsLog(tmp_path, append=False, log=lambda _: None).elapsed == (0.0, 0.0)
