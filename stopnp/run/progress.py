"""Progress bars with throughput and ETA, and the per-epoch metrics log (JSONL). No dependencies.

    bar = Progress(8000, "epoch 1/3")
    bar.update(1280, loss=0.512, acc=91.2)
    # epoch 1/3 |████                    | 1280/8000 loss 0.512 acc 91.2% 1520 samples/s ETA 0:04
    bar.close()

On a terminal the bar redraws in place (at most ten times a second). When the stream is not a TTY
(logs, CI) it prints a plain line every ``log_every`` seconds (30: a long epoch is not silent) and a
summary line at ``close()``, and nothing at all when ``quiet``. ``initial``: samples already done (a
resumed epoch); the rate counts only this run's. Throughput and ETA use ``time.perf_counter``.
Postfix values whose key contains "acc" are percentages (the caller passes 91.2, not 0.912) and get
a "%".

    MetricsLog(path).append(row)   one JSON object per line, flushed: a crash loses at most a line
    read_metrics(path)             the rows back (a torn last line from a crash is skipped)
"""
import json
import os
import shutil
import sys
import time


def _fmt_time(s):
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _fmt_value(key, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"{key} {v}"
    if "acc" in key:
        return f"{key} {v:.1f}%"
    return f"{key} {v:.4g}" if isinstance(v, float) else f"{key} {v}"


def _is_tty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Progress:
    """A one-line progress bar; see the module docstring. Usable as a context manager."""

    def __init__(self, total, desc="", unit="samples", quiet=False, stream=None, width=24, min_interval=0.1,
                 initial=0, log_every=30.0):
        self.total, self.desc, self.unit, self.width = int(total), desc, unit, width
        self.log_every = log_every
        # Resolved at call time (not as a default argument) so redirected/captured stderr is honoured.
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.live = not quiet and _is_tty(self.stream)
        self.min_interval = min_interval
        self.n = self.n0 = int(initial)
        self.postfix = {}
        self.t0 = time.perf_counter()
        self._last_draw = -float("inf")
        self._last_log = self.t0
        self._drawn_len = 0
        self.closed = False

    def elapsed(self):
        return time.perf_counter() - self.t0

    def rate(self):
        return (self.n - self.n0) / max(self.elapsed(), 1e-9)

    def line(self, final=False):
        """The bar as text. ``final``: the elapsed time instead of the ETA."""
        frac = min(self.n / self.total, 1.0) if self.total > 0 else 1.0
        fill = int(round(frac * self.width))
        bar = "█" * fill + " " * (self.width - fill)
        rate = self.rate()
        if final:
            when = f"in {_fmt_time(self.elapsed())}"
        else:
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            when = f"ETA {_fmt_time(eta)}"
        parts = [f"{self.desc} |{bar}| {self.n}/{self.total}".lstrip()]
        parts += [_fmt_value(k, v) for k, v in self.postfix.items()]
        parts += [f"{rate:.0f} {self.unit}/s", when]
        return " ".join(parts)

    def update(self, n=1, **postfix):
        self.n += n
        self.postfix.update(postfix)
        now = time.perf_counter()
        if not self.live:
            if not self.quiet and now - self._last_log >= self.log_every and self.n < self.total:
                self.stream.write(self.line() + "\n")
                self.stream.flush()
                self._last_log = now
            return
        # Redrawing costs a write per batch; throttle, but always draw the 100% state.
        if now - self._last_draw >= self.min_interval or self.n >= self.total:
            self._draw(self.line())
            self._last_draw = now

    def _draw(self, text):
        cols = shutil.get_terminal_size((100, 20)).columns
        text = text[: max(cols - 1, 10)]  # a wrapped line would defeat the "\r" redraw
        pad = " " * max(self._drawn_len - len(text), 0)  # wipe leftovers of a longer previous line
        self.stream.write("\r" + text + pad)
        self.stream.flush()
        self._drawn_len = len(text)

    def close(self):
        """Finish the bar: a final line (terminal) or the one summary line (logs). Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.quiet:
            return
        if self.live:
            self._draw(self.line(final=True))
            self.stream.write("\n")
        else:
            self.stream.write(self.line(final=True) + "\n")
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _json_default(o):
    # numpy scalars/arrays without importing numpy: they all offer .item() / .tolist().
    for attr in ("tolist", "item"):
        if hasattr(o, attr):
            return getattr(o, attr)()
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


class MetricsLog:
    """Append one JSON object per line; each append is flushed so a crash loses nothing written."""

    def __init__(self, path):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def rewrite(self, rows):
        """Replace the log with ``rows`` (atomically: a crash leaves the old log or the new one)."""
        from ..fsutil import atomic_write
        lines = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
        with atomic_write(self.path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(lines)

    def append(self, row: dict):
        line = json.dumps(row, default=_json_default)  # serialise first: a bad row writes nothing
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
        except OSError as e:
            from ..fsutil import write_error
            raise write_error(self.path, e) from None


class MetricsError(ValueError):
    """A metrics log that cannot be read (the message names the file and line)."""


def read_metrics(path) -> list:
    """The rows of a JSONL metrics log. A torn final line (crash mid-append) is skipped; a bad
    line elsewhere is an error naming the file and line."""
    with open(path, encoding="utf-8") as f:
        lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
    rows = []
    for j, (i, line) in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if j == len(lines) - 1 and not line.endswith("\n"):
                break
            raise MetricsError(f"{path}:{i}: not a JSON line ({e.msg}); fix or delete that line") from None
        if not isinstance(rows[-1], dict):
            raise MetricsError(f"{path}:{i}: not a JSON object (one epoch record per line); fix or delete "
                               f"that line")
    return rows
