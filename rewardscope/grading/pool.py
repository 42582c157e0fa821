"""A small pool of worker processes that run one task under a deadline enforced from outside.

math-verify's own timeouts use signal.alarm, which works only in a main thread and cannot interrupt a long
computation inside C code (a huge sympy power). Here the parent keeps the clock: a worker past its deadline is
killed (SIGKILL) and replaced, a worker that dies is replaced, so no input can hang or crash the caller.
Workers start with "forkserver" where the platform has it ("spawn" elsewhere), never as a fork of the
parent, which may hold torch, CUDA or threads. Messages are JSON over pipes.

A task is a generator function named "module:function"; it yields JSON-serialisable values and the last one is
its result. Values yielded before a timeout survive it (the grader uses this to keep the parsed answers).
"""

from __future__ import annotations

import ctypes
import importlib
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Sequence

from rewardscope.errors import RewardscopeError

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 0.5  # how often a worker's watchdog looks for its parent
STARTUP_TIMEOUT_S = 300.0  # a fresh worker imports sympy; generous because a shared machine can be slow
ERROR_CHARS = 300  # error messages end up in graded rows: long enough to debug, short enough to read


@dataclass(frozen=True)
class Outcome:
    status: str  # "ok" | "timeout" | "error"
    value: Any = None  # the task's last yielded value (for a timeout or an error: the last one before it)
    error: str | None = None


def _die_with_parent() -> None:
    """Make this worker die with the process that forked it, even when that one is SIGKILLed and this one is
    deep inside sympy (where no Python code runs). Three parts:

    - the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG; Linux only). With forkserver the
      parent is the fork server, so the server must die with the grading process too:
    - forkserver hands every child its "alive" pipe, which keeps the server running as long as any child holds
      it; a worker starts no processes, so it closes its copy: the server then exits (end of file on the pipe)
      as soon as the grading process is gone, and the kernel kills the workers;
    - a watchdog thread exits when the parent changes (other platforms; a worker idle in Python code)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl (an unusual libc): the watchdog still runs
            pass
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    alive = getattr(server, "_forkserver_alive_fd", None)  # None in a spawned worker
    if alive is not None:
        try:
            os.close(alive)
        except OSError:
            pass
        server._forkserver_alive_fd = None

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _serve(conn, task: str, preload: tuple[str, ...]) -> None:
    """Worker loop: import everything, say "ready", then run the task on each request until the parent hangs up."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it then stops us
    for module in preload:
        importlib.import_module(module)
    module, name = task.split(":")
    function = getattr(importlib.import_module(module), name)
    try:
        conn.send_bytes(b'"ready"')
        while True:
            args = json.loads(conn.recv_bytes())
            try:
                for value in function(*args):
                    conn.send_bytes(json.dumps({"value": value}).encode())
                reply = {"done": True}
            except Exception as e:
                reply = {"error": f"{type(e).__name__}: {e}"[:ERROR_CHARS]}
            conn.send_bytes(json.dumps(reply).encode())
    except (EOFError, OSError):  # the parent closed the pool (with our "ready" unread: a reset) or died
        return


class _Worker:
    def __init__(self, ctx, task: str, preload: tuple[str, ...]):
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child_conn, task, preload), daemon=True)
        self.process.start()
        child_conn.close()  # only the worker holds its end now, so its death reads as EOF here
        self.ready = False
        self.deadline = time.monotonic() + STARTUP_TIMEOUT_S  # until ready; then the running job's deadline
        self.job: int | None = None  # index of the arguments in flight
        self.last: Any = None  # the job's last yielded value

    @property
    def waited_on(self) -> bool:
        return not self.ready or self.job is not None

    def send(self, job: int, message: bytes, timeout_s: float) -> None:
        self.conn.send_bytes(message)
        self.job, self.last, self.deadline = job, None, time.monotonic() + timeout_s

    def kill(self) -> None:  # also safe on a dead worker
        self.process.kill()
        self.process.join()
        self.conn.close()

    def close(self) -> None:
        self.conn.close()  # an idle worker exits on EOF
        self.process.join(timeout=2.0)
        if self.process.is_alive():
            self.kill()


def _context(preload: tuple[str, ...]):
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    # The server imports these once and every worker forks from it, so a replacement starts in milliseconds.
    ctx.set_forkserver_preload(list(preload))
    return ctx


class DeadlinePool:
    """Run `task` ("module:function") on many argument tuples in `workers` processes, each call at most
    `timeout_s` seconds. `preload`: modules imported before a worker takes work (with forkserver, imported once
    in the server: they must not start threads; pyarrow does). Reuse one pool across calls; close() it."""

    def __init__(self, task: str, workers: int = 2, timeout_s: float = 5.0, preload: Sequence[str] = ()):
        if workers < 1:
            raise RewardscopeError(f"grade.workers: must be at least 1, got {workers}")
        if not timeout_s > 0:
            raise RewardscopeError(f"grade.timeout_s: must be positive, got {timeout_s}")
        self.task, self.workers, self.timeout_s, self.preload = task, workers, timeout_s, tuple(preload)
        self._ctx = _context(self.preload)
        self._workers: list[_Worker] = []

    def map(self, args_list: Sequence[Sequence]) -> list[Outcome]:
        """One Outcome per argument tuple, in order."""
        outcomes: list[Outcome | None] = [None] * len(args_list)
        messages: list[bytes | None] = [None] * len(args_list)
        for job, args in enumerate(args_list):
            try:
                messages[job] = json.dumps(list(args)).encode()
            except (TypeError, ValueError) as e:  # arguments that cannot be sent: that job's error, not the batch's
                error = f"cannot send the arguments: {type(e).__name__}: {e}"
                outcomes[job] = Outcome("error", None, error[:ERROR_CHARS])
        queue = deque(job for job in range(len(args_list)) if messages[job] is not None)
        try:
            while queue or any(w.job is not None for w in self._workers):
                while len(self._workers) < self.workers:
                    self._workers.append(_Worker(self._ctx, self.task, self.preload))
                for w in self._workers:
                    if queue and w.ready and w.job is None:
                        job = queue.popleft()
                        try:
                            w.send(job, messages[job], self.timeout_s)
                        except OSError:  # it died while idle: the job never started, so it goes back in line
                            queue.appendleft(job)
                            self._replace(w)
                next_deadline = min(w.deadline for w in self._workers if w.waited_on)
                by_conn = {w.conn: w for w in self._workers}
                for conn in wait(list(by_conn), timeout=max(0.0, next_deadline - time.monotonic())):
                    self._receive(by_conn[conn], outcomes)
                self._enforce_deadlines(outcomes)
        except BaseException:
            self.close()  # workers may be mid-job: never let a later call read their stale replies
            raise
        return outcomes

    def _receive(self, w: _Worker, outcomes: list) -> None:
        try:
            message = json.loads(w.conn.recv_bytes())
        except (EOFError, OSError):  # the worker died
            w.kill()  # reaps it, so its exit code is known
            if not w.ready:
                raise RewardscopeError(
                    f"grading worker for {self.task} failed to start (exit code {w.process.exitcode}); its error "
                    f"is printed above (a script that grades needs the `if __name__ == \"__main__\":` guard)") from None
            if w.job is not None:
                outcomes[w.job] = Outcome("error", w.last, f"worker died (exit code {w.process.exitcode})")
            self._replace(w)
            return
        if message == "ready":
            w.ready = True
        elif "value" in message:
            w.last = message["value"]
        else:
            done = message.get("done", False)
            outcomes[w.job] = Outcome("ok", w.last) if done else Outcome("error", w.last, message["error"])
            w.job = None

    def _enforce_deadlines(self, outcomes: list) -> None:
        now = time.monotonic()
        for w in list(self._workers):
            if not w.waited_on or now < w.deadline:
                continue
            if not w.ready:
                raise RewardscopeError(f"grading worker for {self.task} did not start in {STARTUP_TIMEOUT_S:.0f} s")
            outcomes[w.job] = Outcome("timeout", w.last)
            self._replace(w)

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._workers[self._workers.index(w)] = _Worker(self._ctx, self.task, self.preload)

    def close(self) -> None:
        for w in self._workers:
            w.close()
        self._workers = []

    def __enter__(self) -> DeadlinePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
