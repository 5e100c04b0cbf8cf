"""Ctrl-C and SIGTERM: every rank stops within seconds; rank 0 says what is kept and how to resume.

A Python signal handler only runs in the main thread between bytecodes, and a
rank blocked in an MPI collective (waiting for a rank that will never join)
never gets back there.  So :func:`install` turns SIGINT and SIGTERM into a byte
on a pipe (:func:`signal.set_wakeup_fd`; the Python-level handler does
nothing) that a watcher thread reads.  mpi4py releases the GIL in blocking MPI
calls, so the watcher runs whatever the main thread is doing.  It then:

- on rank 0 (or a rank whose rank 0 is on another host, or not known yet): takes
  the result store's commit lock (:data:`hpcq.store.COMMIT_LOCK`, so no case is
  half-written and none starts), records the run's end time, prints one line
  (how many cases the file keeps and the ``--resume`` command), then
  ``MPI_Abort(128 + signal)``, which ends every rank wherever it is;
- on another rank: forwards the signal to rank 0 (same host; ``mpiexec``
  forwards Ctrl-C to every rank anyway) and waits a few seconds for rank 0's
  abort, then aborts itself with its own line.

Before :func:`attach` (MPI may still be starting: aborting inside ``MPI_Init``
can hang, and a rank exiting there leaves the others waiting in it) the watcher
waits for the main thread to get through ``MPI_Init`` to :func:`attach` (a few
seconds at most), then goes on as above; a command that never attaches just
exits with ``128 + signal``.  Python's own start-up (about a second of
imports before ``hpcq.cli.main`` runs) is not covered: a signal there ends the
rank the default way, and the launcher the others.
Exit status: 130 for SIGINT, 143 for SIGTERM.  MPICH adds one line of its own
(``Abort(130) on node 0 ...``).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds a rank other than 0 waits for rank 0's abort before aborting itself.
FORWARD_WAIT_S = 5.0
#: Seconds a signal during start-up waits for MPI to be up (attach) before exiting plainly.
ATTACH_WAIT_S = 10.0
#: Seconds the watcher waits for a commit under way to finish before aborting anyway.
COMMIT_WAIT_S = 20.0
#: Seconds between printing the last line and ``MPI_Abort``: the launcher forwards a rank's
#: stderr through a pipe it may stop reading once the abort reaches it, and a line still in
#: that pipe is lost (seen once with MPICH's hydra at start-up).
LINE_GRACE_S = 0.25


@dataclass
class _Run:
    """What the line printed on an interrupt says about the run under way."""

    output: str
    total: int
    before: int  # cases of this job the file held before this run
    resume: str  # the command that finishes the run
    store: Any = None  # hpcq.store.ResultFile on rank 0, None elsewhere


@dataclass
class _State:
    comm: Any = None
    rank0: tuple[str, int] | None = None  # (host, pid) of rank 0
    run: _Run | None = None
    installed: bool = False
    fired: threading.Event = field(default_factory=threading.Event)
    attached: threading.Event = field(default_factory=threading.Event)


_state = _State()


def install() -> None:
    """Route SIGINT and SIGTERM to the watcher thread (main thread, once; idempotent)."""
    if _state.installed or threading.current_thread() is not threading.main_thread():
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for sig in SIGNALS:
        signal.signal(sig, _ignore)
    threading.Thread(target=_watch, args=(read_fd,), name="hpcq-interrupt", daemon=True).start()
    _state.installed = True


def attach(comm: Any) -> None:
    """Learn rank 0's host and pid (a collective: every rank of ``comm`` calls it)."""
    _state.comm = comm
    _state.rank0 = comm.bcast((socket.gethostname(), os.getpid()), root=0)
    _state.attached.set()


def track(*, output: str, total: int, before: int, command_line: Sequence[str] | None,
          nprocs: int, store: Any = None, resumable: bool = True) -> None:
    """Describe the run under way (every rank; ``store`` on rank 0) for the interrupt line;
    ``resumable`` False (``hpcq bench``, which has no ``--resume``) leaves out the command."""
    resume = resume_command(command_line, output, nprocs) if resumable else ""
    _state.run = _Run(output, total, before, resume, store)


def settle() -> None:
    """If an interrupt is being handled, wait for the watcher to end the process.

    Called before the main thread returns: finalising MPI under the watcher's abort
    would hang or crash instead of printing the line.
    """
    if _state.fired.is_set():
        threading.Event().wait()


def resume_command(command_line: Sequence[str] | None, output: str, nprocs: int) -> str:
    """The command that finishes an interrupted ``hpcq run``: same job and ranks, ``--resume``."""
    argv = list(command_line or ["hpcq", "run"])
    argv = [a for a in argv if a != "--append"]  # --resume implies it
    if "-o" not in argv and "--output" not in argv and not any(
            a.startswith("--output=") for a in argv):
        argv += ["-o", output]
    if "--resume" not in argv:
        argv.append("--resume")
    prefix = ["mpiexec", "-n", str(nprocs)] if nprocs > 1 else []
    return shlex.join(prefix + argv)


def _ignore(signum: int, frame: Any) -> None:
    """The Python-level handler: the watcher thread does the work (see the module doc)."""


def _world() -> Any:
    """The communicator to abort: the attached one, else None (MPI may still be starting;
    aborting inside MPI_Init can hang, and exiting makes the launcher end the others)."""
    return _state.comm


def _watch(read_fd: int) -> None:
    while True:
        data = os.read(read_fd, 1)
        if not data:
            return
        if data[0] in SIGNALS and not _state.fired.is_set():
            _state.fired.set()
            _stop(signal.Signals(data[0]))


def _stop(sig: signal.Signals) -> None:
    code = 128 + int(sig)
    try:
        _stop_world(sig, code)
    except BaseException as e:  # noqa: BLE001 - say why, then end the process all the same
        print(f"hpcq: interrupted by {sig.name}; stopping failed: {e!r}", file=sys.stderr,
              flush=True)
    finally:
        os._exit(code)  # whatever failed above, this process ends


def _stop_world(sig: signal.Signals, code: int) -> None:
    # MPI still starting: let the main thread finish MPI_Init and attach() (every rank
    # gets there), then abort; exiting inside MPI_Init leaves the other ranks waiting
    _state.attached.wait(ATTACH_WAIT_S)
    comm = _world()
    rank = comm.Get_rank() if comm is not None else 0
    if comm is not None and rank != 0 and _state.rank0 is not None:
        host, pid = _state.rank0
        if host == socket.gethostname():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
            else:
                threading.Event().wait(FORWARD_WAIT_S)  # rank 0's abort ends this process
    _report(sig, rank, comm)
    if comm is not None:
        abort(comm, code)


def abort(comm: Any, code: int) -> None:
    """``MPI_Abort(code)`` after giving the launcher :data:`LINE_GRACE_S` to forward the line
    just printed (stdout and stderr flushed first)."""
    import time

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe must not stop the abort
            pass
    time.sleep(LINE_GRACE_S)
    comm.Abort(code)


def _close(writer: Any) -> None:
    """Record the run's end time (its cases are already committed); never raises."""
    try:
        writer.close()
    except Exception:  # noqa: BLE001 - the cases are safe whatever this does
        pass


def _report(sig: signal.Signals, rank: int, comm: Any) -> None:
    """Close the run's store under the commit lock, then print the one line."""
    run = _state.run
    prefix = f"[rank {rank}] " if comm is not None and comm.Get_size() > 1 and rank else ""
    store = sys.modules.get("hpcq.store")  # not imported yet: no file is being written
    if store is not None:
        store.COMMIT_LOCK.acquire(timeout=COMMIT_WAIT_S)  # never released: the process ends
    writer = getattr(store, "LAST_WRITER", None)
    if run is None and writer is not None:  # a benchmark writing its own file
        _close(writer)
        text = f"{writer.cases_written} case(s) of this run kept in {writer.path}"
    elif run is None:
        text = "stopped before this run wrote any case (a result file keeps what it held)"
    else:
        kept = run.before
        if run.store is not None:
            kept += run.store.cases_written
            _close(run.store)
            where = f"{kept} of {run.total} cases kept in {run.output}"
        else:
            where = f"the cases finished so far are kept in {run.output}"
        if not run.resume:
            text = where
        else:
            text = (f"{where}; finish with: {run.resume}" if kept < run.total
                    or run.store is None else f"{where}; all done")
    print(f"{prefix}hpcq: interrupted by {sig.name}: {text}", file=sys.stderr, flush=True)
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - a closed pipe must not stop the abort
        pass
