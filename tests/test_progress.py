"""Progress bar (terminal and log modes) and the JSONL metrics log."""
import io

import numpy as np
import pytest

from stopnp.run import progress
from stopnp.run.progress import MetricsLog, Progress, read_metrics


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_log_mode_prints_one_summary_line():
    s = io.StringIO()  # not a TTY: CI logs
    p = Progress(100, desc="epoch 1/2", stream=s)
    for _ in range(10):
        p.update(10, loss=0.5, acc=90.0)
    assert s.getvalue() == ""  # nothing per batch
    p.close()
    p.close()  # idempotent
    out = s.getvalue()
    assert out.count("\n") == 1 and out.startswith("epoch 1/2 |")
    assert "100/100" in out and "loss 0.5 acc 90.0%" in out and "samples/s" in out and " in 0:00" in out


def test_quiet_prints_nothing():
    s = io.StringIO()
    with Progress(10, quiet=True, stream=FakeTTY()) as q:
        q.update(10)
    assert q.closed
    q2 = Progress(10, quiet=True, stream=s)
    q2.update(10)
    q2.close()
    assert s.getvalue() == ""


def test_terminal_mode_redraws_in_place(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    s = FakeTTY()
    p = Progress(8000, desc="epoch 1/3", stream=s, unit="samples")
    clock[0] = 0.8421
    p.update(1280, loss=0.512, acc=91.2)
    text = s.getvalue()
    assert text.startswith("\r") and "\n" not in text
    line = text[1:]
    assert line.startswith("epoch 1/3 |") and "| 1280/8000 loss 0.512 acc 91.2% 1520 samples/s ETA 0:04" in line
    assert line.count("█") == 4  # 16% of 24 cells
    p.update(10)  # within 0.1 s: throttled, no redraw
    assert s.getvalue() == text
    clock[0] = 5.3
    p.update(6710)  # the 100% state is always drawn
    assert s.getvalue().count("\r") == 2 and "8000/8000" in s.getvalue()
    p.close()
    final = s.getvalue().split("\r")[-1]
    assert final.endswith("\n") and "█" * 24 in final and "in 0:05" in final


def test_eta_and_time_format():
    assert progress._fmt_time(4.9) == "0:04" and progress._fmt_time(3725) == "1:02:05"
    assert progress._fmt_time(-3) == "0:00"
    p = Progress(0, stream=io.StringIO())  # empty split: a full bar, no division by zero
    assert "|" + "█" * 24 + "|" in p.line()


def test_metrics_log_round_trip(tmp_path):
    path = tmp_path / "run" / "m.jsonl"  # folder created
    log = MetricsLog(path)
    log.append({"epoch": 1, "x": 1.5, "acc": np.float32(0.25), "arr": np.arange(2)})
    log.append({"epoch": 2, "x": 2.5, "name": "stop"})
    rows = read_metrics(path)
    assert rows == [{"epoch": 1, "x": 1.5, "acc": 0.25, "arr": [0, 1]}, {"epoch": 2, "x": 2.5, "name": "stop"}]
    assert path.read_text().count("\n") == 2
    with pytest.raises(TypeError):
        log.append({"bad": object()})
    assert len(read_metrics(path)) == 2  # a bad row writes nothing


def test_read_metrics_skips_torn_last_line_only(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\n\n{"epoch": 2}\n{"epo')  # crash mid-append
    assert read_metrics(path) == [{"epoch": 1}, {"epoch": 2}]
    path.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match="m.jsonl:2"):
        read_metrics(path)


def test_log_lines_during_a_long_epoch_and_a_resumed_start():
    """Not a TTY: a plain line every log_every seconds (no carriage returns), then the summary; a
    resumed bar starts at ``initial`` and its rate counts only the new samples."""
    import io
    buf = io.StringIO()
    bar = Progress(100, "epoch 1/1", stream=buf, log_every=0.0, initial=40)
    assert bar.n == 40 and bar.rate() == 0
    bar.update(10, loss=0.5)
    bar.update(10, loss=0.4)
    bar.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in buf.getvalue()
    assert lines[0].startswith("epoch 1/1") and " 50/100 " in lines[0] and " 60/100 " in lines[1]
    quiet = io.StringIO()
    q = Progress(100, stream=quiet, log_every=0.0, quiet=True)
    q.update(10)
    q.close()
    assert quiet.getvalue() == ""
