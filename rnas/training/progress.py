"""Human-readable progress lines on stderr, with throughput and an ETA.

One line per epoch, and inside an epoch longer than ``interval_s`` one line every ``interval_s``:
``[warmup] epoch 3/10  loss 1.234  acc 45.6%  312 img/s  elapsed 1m02s  ETA 2m10s``.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Tracks the epochs ``first_epoch .. stop_epoch - 1`` (0-based) of one call.

    Epochs are shown 1-based out of ``stop_epoch``, so a run resumed after epoch 30 reads
    ``epoch 31/150``. When the call trains part of a longer learning-rate schedule that others
    continue (``total_epochs``: warmup, then the search rounds, on one supernet schedule), the
    line counts this call's epochs and gives the place in the schedule:
    ``[warmup] epoch 3/20 (schedule 3/30)``. The ETA covers this call only.
    """

    def __init__(self, label: str, first_epoch: int, stop_epoch: int, total_epochs: int | None = None, *,
                 unit: str = "img", interval_s: float = 60.0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.label, self.unit = label, unit
        self.first_epoch, self.stop_epoch = first_epoch, stop_epoch
        self.total_epochs = total_epochs if total_epochs is not None else stop_epoch
        self.part_of_schedule = total_epochs is not None and (first_epoch, stop_epoch) != (0, total_epochs)
        self.interval_s = interval_s
        self.stream = stream
        self.clock = clock
        self.run_start = self.epoch_start = self.last_line = clock()
        self.epoch = first_epoch

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epoch_start = self.last_line = self.clock()

    def due(self) -> bool:
        """Whether an in-epoch line is due (callers fetch the numbers only then: it syncs the GPU)."""
        return self.clock() - self.last_line >= self.interval_s

    def batch(self, done: int, n_batches: int, loss: float, accuracy: float, images: int) -> None:
        """An in-epoch line after ``done`` of ``n_batches`` batches (``images`` seen so far)."""
        rate = images / max(self.clock() - self.epoch_start, 1e-9)
        self._write(f"batch {done}/{n_batches}", loss, accuracy, rate, done / max(n_batches, 1), "")

    def end_epoch(self, loss: float, accuracy: float, images_per_s: float, note: str = "") -> None:
        self._write("", loss, accuracy, images_per_s, 1.0, note)

    def _write(self, where: str, loss: float, accuracy: float, images_per_s: float, epoch_fraction: float,
               note: str) -> None:
        now = self.clock()
        self.last_line = now
        elapsed = now - self.run_start
        done = self.epoch - self.first_epoch + epoch_fraction
        remaining = self.stop_epoch - self.first_epoch - done
        eta = format_duration(elapsed / done * remaining) if done > 0 else "?"
        parts = [f"[{self.label}] {self._position()}", where,
                 f"loss {loss:.3f}", f"acc {accuracy:.1%}", f"{images_per_s:.0f} {self.unit}/s", note,
                 f"elapsed {format_duration(elapsed)}", f"ETA {eta}"]
        stream = self.stream if self.stream is not None else sys.stderr
        print("  ".join(p for p in parts if p), file=stream, flush=True)


    def _position(self) -> str:
        if not self.part_of_schedule:
            return f"epoch {self.epoch + 1}/{self.total_epochs}"
        return (f"epoch {self.epoch - self.first_epoch + 1}/{self.stop_epoch - self.first_epoch} "
                f"(schedule {self.epoch + 1}/{self.total_epochs})")


class CountProgress:
    """Progress through ``total`` items, one line every ``interval_s`` and one at the end:
    ``[round 2] scored 40/100 architectures  elapsed 1m02s  ETA 1m33s``."""

    def __init__(self, label: str, verb: str, total: int, unit: str, *, interval_s: float = 30.0,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.label, self.verb, self.total, self.unit = label, verb, total, unit
        self.interval_s, self.stream, self.clock = interval_s, stream, clock
        self.start = self.last_line = clock()

    def update(self, done: int) -> None:
        now = self.clock()
        if done < self.total and now - self.last_line < self.interval_s:
            return
        self.last_line = now
        elapsed = now - self.start
        eta = format_duration(elapsed / done * (self.total - done)) if done > 0 else "?"
        print(f"[{self.label}] {self.verb} {done}/{self.total} {self.unit}  elapsed {format_duration(elapsed)}  "
              f"ETA {eta}", file=self.stream if self.stream is not None else sys.stderr, flush=True)
