"""Progress bars with throughput and ETA, and the per-epoch metrics log (JSONL). No dependencies.

On a terminal the bar redraws in place; when quiet, or when the stream is not a TTY (logs, CI), it
prints only a closing summary line so logs stay short.
"""
import json
import os
import sys
import time


def _fmt_time(s):
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, total, desc="", unit="samples", quiet=False, stream=None, width=24):
        self.total, self.desc, self.unit, self.width = total, desc, unit, width
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.live = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.n = 0
        self.postfix = {}
        self.t0 = time.perf_counter()
        self._last = 0.0

    def rate(self):
        return self.n / max(time.perf_counter() - self.t0, 1e-9)

    def line(self):
        frac = self.n / self.total if self.total else 1.0
        fill = int(round(frac * self.width))
        bar = "█" * fill + " " * (self.width - fill)
        rate = self.rate()
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        post = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.postfix.items())
        return (f"{self.desc} |{bar}| {self.n}/{self.total} {post} {rate:.0f} {self.unit}/s "
                f"ETA {_fmt_time(eta)}")

    def update(self, n, **postfix):
        self.n += n
        self.postfix.update(postfix)
        now = time.perf_counter()
        if self.live and (now - self._last > 0.1 or self.n >= self.total):
            self.stream.write("\r" + self.line())
            self.stream.flush()
            self._last = now

    def close(self):
        if self.live:
            self.stream.write("\r" + self.line() + "\n")
        elif not self.quiet:
            self.stream.write(self.line().replace(" ETA 0:00", f" in {_fmt_time(time.perf_counter() - self.t0)}")
                              + "\n")
        self.stream.flush()


class MetricsLog:
    """Append one JSON object per line; each append is flushed so a crash loses nothing."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def append(self, row: dict):
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


def read_metrics(path) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
