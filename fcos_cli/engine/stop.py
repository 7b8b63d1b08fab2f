"""Stopping training at a step boundary: Ctrl-C, SIGTERM from a scheduler or launcher, or a time budget."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = ["TrainingInterrupted", "TIME_LIMIT", "stop_on_signals", "ignore_stop_signals", "start_workers",
           "TimeBudget"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
TIME_LIMIT = 1  # a stop cause beside the signal numbers (SIGINT 2, SIGTERM 15); ranks agree on the largest
SAME_STOP_S = 1.0  # a stop signal repeated within this many seconds is the same stop (delivered twice), not a second


class TrainingInterrupted(Exception):
    """A stop signal or the time budget: the step in progress finished and `last` holds it; `--resume last`
    continues from there. `cause` is the signal's number, or `TIME_LIMIT`."""

    def __init__(self, last: Path, epoch: int, step: int, cause: int = signal.SIGINT) -> None:
        self.last, self.epoch, self.step, self.cause = last, epoch, step, cause
        why = "time limit reached" if cause == TIME_LIMIT else signal.Signals(cause).name
        super().__init__(f"{why}: stopped at step {step} (epoch {epoch}); saved {last}")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Callable[[], int]]:
    """SIGINT (Ctrl-C) or SIGTERM (torchrun, Slurm, `timeout`, container runtimes) asks the loop to stop at the
    next step boundary: yields a function that returns the signal's number (0: none yet).

    A second stop signal acts at once, as it would without us; one sent twice within `SAME_STOP_S` counts once
    (GNU `timeout` signals the process and then its whole group).
    """
    received, first = [0], [0.0]
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield lambda: received[0]
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def handler(signum, frame) -> None:
        if not received[0]:
            received[0], first[0] = signum, time.monotonic()
        elif time.monotonic() - first[0] > SAME_STOP_S:
            for other, old in previous.items():
                signal.signal(other, old)
            if callable(previous[signum]):
                previous[signum](signum, frame)  # Ctrl-C's KeyboardInterrupt, the CLI's unwinding on SIGTERM
            elif previous[signum] == signal.SIG_DFL:
                signal.raise_signal(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    try:
        yield lambda: received[0]
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def ignore_stop_signals(_: int) -> None:
    """DataLoader `worker_init_fn`. Schedulers, `timeout` and container runtimes signal the whole process group:
    a worker that died of it would make the main process raise before it saves. So workers ignore SIGINT, and
    SIGTERM unless their parent sends it (its `terminate()` at shutdown, which PyTorch's own handler obeys too);
    the main process shuts them down, or PyTorch's watchdog ends them when it is gone."""
    parent = os.getppid()

    def obey_parent_only() -> None:
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
            pass
        os._exit(0)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM blocked (held since the fork by `start_workers`) in this thread and every thread started from it:
    # only the waiting thread takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=obey_parent_only, daemon=True).start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start_workers(loader: Iterable) -> Iterator:
    """`iter(loader)` with the stop signals held back while its workers fork: a worker inherits the mask, so a
    signal sent meanwhile waits for `ignore_stop_signals` instead of reaching PyTorch's worker SIGTERM handler,
    which dies of it. This process takes its own copy once the workers are started."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


class TimeBudget:
    """Whether one more step and what must follow it still fit in `seconds` (counted from `start`).

    A step is followed by a save if training stops after it, or by the epoch end (evaluation, metrics, saves)
    if it is the epoch's last. Each is reserved at the slowest seen so far; before the first is seen, a save
    counts as one step, and an epoch end as one step per validation batch, one for metrics and plots and two
    saves (best and last). `seconds=None`: no budget. The first step always runs, so every start makes progress.
    """

    def __init__(self, seconds: float | None, start: float, val_batches: int = 0) -> None:
        self.seconds, self.start, self.val_batches = seconds, start, val_batches
        self.mark, self.slowest = time.perf_counter(), {"step": 0.0}

    def lap(self, what: str) -> None:
        """The time since the last lap was a `"step"` (loading its batch included) or an epoch `"end"`."""
        now = time.perf_counter()
        self.slowest[what] = max(self.slowest.get(what, 0.0), now - self.mark)
        self.mark = now

    def saved(self, seconds: float) -> None:
        self.slowest["save"] = max(self.slowest.get("save", 0.0), seconds)

    def exhausted(self, epoch_ends: bool) -> bool:
        """Whether to stop now rather than run a step (the epoch's last if `epoch_ends`) and what follows it."""
        if self.seconds is None:
            return False
        step = self.slowest["step"]
        save = self.slowest.get("save", step)
        after = self.slowest.get("end", step * (self.val_batches + 1) + 2 * save) if epoch_ends else save
        return time.perf_counter() - self.start + step + after > self.seconds
