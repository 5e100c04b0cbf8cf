"""Where a result came from: versions, git state, hosts, MPI library, threads, time.

:func:`collect` returns the openPMD-style root attributes that :mod:`hpcq.store`
writes into every result file (see its docstring for the list).  It is a
collective call (the hostnames and thread counts of all ranks are gathered), so
every rank of ``comm`` must call it; the result is the same dict on every rank.
Nothing here may fail a run: a missing git, a foreign CPU or an unreadable
``/proc`` only leave the corresponding attribute out or empty.
"""

from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hpcq
from hpcq.affinity import affinity


def utc_now() -> str:
    """The current time in ISO 8601 with its UTC offset, e.g. ``2025-01-31T12:00:00+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def utc_stamp() -> str:
    """A compact UTC timestamp for file names, e.g. ``20250131T120000Z``."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def software_dependencies() -> str:
    """``numpy@X;numba@X;mpi4py@X;h5py@X;hdf5@X;python@X`` (openPMD ``softwareDependencies``)."""
    import h5py
    import mpi4py
    import numba
    import numpy

    parts = {
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "mpi4py": mpi4py.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "python": platform.python_version(),
    }
    return ";".join(f"{k}@{v}" for k, v in parts.items())


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Processor", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_state() -> dict[str, Any]:
    """``{"git_commit": sha, "git_dirty": bool}`` when hpcq runs from a git checkout, else ``{}``.

    Only a checkout whose top level holds this very ``hpcq`` package counts, so a
    regular install inside some other repository (e.g. a venv in a clone) reports
    nothing rather than the wrong commit.
    """
    pkg = Path(hpcq.__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(pkg), *args], capture_output=True, text=True,
                              timeout=10, check=True)
        return done.stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
        if top / "hpcq" != pkg:
            return {}
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": dirty}


def numba_threads() -> int:
    """Numba threads this process uses (NUMBA_NUM_THREADS or ``--threads``)."""
    import numba

    return int(numba.get_num_threads())


def collect(comm: Any, *, config_toml: str = "", command_line: list[str] | None = None
            ) -> dict[str, Any]:
    """Provenance attributes of the current run (collective over ``comm``).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The communicator of the run; every rank must call.
    config_toml : str
        The job file text, stored verbatim ("" for a run without one).
    command_line : list of str, optional
        The command line; defaults to ``sys.argv``.

    Returns
    -------
    dict
        Attribute name -> value (str, int, bool or list), identical on every rank.
    """
    from mpi4py import MPI

    hosts = comm.allgather(socket.gethostname())
    threads = comm.allgather(numba_threads())
    cpus = comm.allgather(affinity())
    now = utc_now()
    attrs: dict[str, Any] = {
        "software": "hpcq",
        "softwareVersion": hpcq.__version__,
        "date": now,
        "start_time": now,
        "softwareDependencies": software_dependencies(),
        # Open MPI pads its version string with NUL bytes, which HDF5 strings cannot hold
        "mpi_library": MPI.Get_library_version().replace("\x00", "").strip(),
        "mpi_version": "{}.{}".format(*MPI.Get_version()),
        "nprocs": int(comm.Get_size()),
        "hostnames": hosts,
        "cpu_model": cpu_model(),
        "threads_per_rank": threads,
        "cpu_affinity": cpus,
        "numba_threads_env": os.environ.get("NUMBA_NUM_THREADS", ""),
        "command_line": shlex.join(command_line if command_line is not None else sys.argv),
        "config_toml": config_toml,
    }
    if os.environ.get("SLURM_JOB_ID"):
        attrs["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    # git runs once, on rank 0, and is shared: N ranks forking git at once is pointless
    attrs.update(comm.bcast(git_state() if comm.Get_rank() == 0 else None, root=0))
    return attrs
