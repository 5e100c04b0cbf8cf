"""``hpcq netem``: run a command over an emulated link, in a private network namespace.

On one machine MPI ranks talk through shared memory, where bytes are nearly free
and compression never pays.  ``hpcq netem --rate 1gbit -- mpiexec -n 2 hpcq run``
runs the command in a new network namespace (``unshare --net`` as root,
``unshare --map-root-user --net`` otherwise) whose loopback is shaped by a
token-bucket qdisc (``tc ... tbf``), and tells the MPI library to use TCP over
it instead of shared memory, so every byte crosses the shaped link:

* MPICH (the PyPI wheel): ``MPIR_CVAR_NOLOCAL=1``, ``MPIR_CVAR_CH4_NETMOD=ofi``,
  ``FI_PROVIDER=tcp``; an MPICH built on UCX (Debian's) also needs ``UCX_TLS=tcp,self``,
  or UCX moves the bytes through shared memory anyway;
* Open MPI: ``OMPI_MCA_pml=ob1``, ``OMPI_MCA_btl=tcp,self``,
  ``OMPI_MCA_btl_tcp_if_include=lo``.

The link is passed on as ``HPCQ_NETEM`` (``rate=1gbit,burst=...,latency=...``);
``hpcq run`` and ``hpcq bench`` record it (``emulated_link``) and check at start
that a 4 MiB transfer between ranks 0 and 1 achieves the rate
(:func:`verify`), warning when it is off by more than 20%.  Only the rate can be
emulated: this kernel has no ``netem`` qdisc, so no added delay.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
          "bps": 8.0, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9}
_SIZE = {"b": 1, "kb": 1024, "k": 1024, "mb": 1 << 20, "m": 1 << 20}
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps)$")
_BYTES = re.compile(r"^(\d+)(b|kb|k|mb|m)?$")
_MS = re.compile(r"^(\d+(?:\.\d+)?)(ms|us|s)$")

#: Environment that makes the MPI libraries use TCP over the (shaped) loopback.
MPI_OVER_TCP = {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp",
                "UCX_TLS": "tcp,self",
                "OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "tcp,self",
                "OMPI_MCA_btl_tcp_if_include": "lo"}


def rate_bits(rate: str) -> float:
    """Bits per second of a tc rate (``10gbit``, ``100mbit``, ``125mbps`` = bytes/s)."""
    m = _RATE.match(rate.strip().lower())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"--rate {rate!r}: expected a positive number and a unit, e.g. 1gbit, "
                         f"10gbit, 100mbit (units: {', '.join(_UNITS)})")
    return float(m.group(1)) * _UNITS[m.group(2)]


def burst_bytes(burst: str) -> int:
    """Bytes of a tc size (``128kb``, ``4mb``, ``65536``)."""
    m = _BYTES.match(burst.strip().lower())
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"--burst {burst!r}: expected a positive size, e.g. 128kb or 4mb")
    return int(m.group(1)) * _SIZE[m.group(2) or "b"]


def link(rate: str, burst: str | None = None, latency: str = "100ms") -> dict[str, Any]:
    """The validated link: rate (tc syntax and bits/s), burst bytes, queue latency.

    The default burst holds 4 ms of traffic (one scheduler tick at 250 Hz; less
    would throttle below the rate), at least 128 KiB.
    """
    bits = rate_bits(rate)
    size = burst_bytes(burst) if burst else max(128 * 1024, int(bits / 8 * 0.004))
    if not _MS.match(latency.strip().lower()):
        raise ValueError(f"--latency {latency!r}: expected a time such as 100ms or 50000us")
    return {"rate": rate.strip().lower(), "rate_bits": bits, "burst": size,
            "latency": latency.strip().lower()}


def describe(spec: dict[str, Any]) -> str:
    """``rate=1gbit,burst=131072,latency=100ms`` (the value of ``HPCQ_NETEM``)."""
    return f"rate={spec['rate']},burst={spec['burst']},latency={spec['latency']}"


def parse(text: str) -> dict[str, Any]:
    """The link of an ``HPCQ_NETEM`` value (inverse of :func:`describe`)."""
    fields = dict(item.split("=", 1) for item in text.split(",") if "=" in item)
    return link(fields.get("rate", ""), fields.get("burst"), fields.get("latency", "100ms"))


def argv(spec: dict[str, Any], command: Sequence[str], *, root: bool) -> list[str]:
    """The command line running ``command`` in a namespace with the shaped loopback.

    The shell only sees fixed text and validated numbers; the user's command goes
    through ``"$@"`` untouched, so nothing in it is re-parsed.
    """
    shape = (f"ip link set lo up && tc qdisc add dev lo root tbf rate {spec['rate']} "
             f"burst {spec['burst']} latency {spec['latency']} && exec \"$@\"")
    ns = ["unshare", "--net"] if root else ["unshare", "--map-root-user", "--net"]
    return [*ns, "sh", "-c", shape, "hpcq-netem", *command]


def run(spec: dict[str, Any], command: Sequence[str]) -> int:
    """Run ``command`` over the emulated link; return its exit code."""
    if not command:
        raise ValueError("hpcq netem: give the command after --, e.g. "
                         "hpcq netem --rate 1gbit -- mpiexec -n 2 hpcq run")
    missing = [tool for tool in ("unshare", "ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise FileNotFoundError(f"hpcq netem needs {', '.join(missing)} (util-linux and "
                                f"iproute2 packages)")
    env = dict(os.environ, **MPI_OVER_TCP, HPCQ_NETEM=describe(spec))
    full = argv(spec, command, root=os.geteuid() == 0)
    done = subprocess.run(full, env=env, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(done.stderr)
    if done.returncode and ("unshare failed" in done.stderr or "Operation not permitted"
                            in done.stderr or "RTNETLINK" in done.stderr):
        raise PermissionError("hpcq netem could not make a network namespace or shape its "
                              "loopback: run as root, or allow unprivileged user namespaces "
                              "(sysctl kernel.unprivileged_userns_clone=1); "
                              + " ".join(done.stderr.split())[:200])
    return done.returncode


def verify(comm: Any, spec: dict[str, Any], nbytes: int = 4 << 20) -> dict[str, Any]:
    """Measure the link between ranks 0 and 1 (collective); rank 0 gets the result.

    Sends ``nbytes`` from rank 0 to rank 1 three times (after one untimed) and
    takes the fastest: ``{"measured_gbit": ..., "ratio": measured / requested}``.
    """
    import numpy as np
    from mpi4py import MPI

    rank = comm.Get_rank()
    if comm.Get_size() < 2:
        return {}
    buf = np.zeros(nbytes, dtype=np.uint8)
    best = float("inf")
    for i in range(4):
        comm.Barrier()
        t0 = MPI.Wtime()
        if rank == 0:
            comm.Send([buf, MPI.BYTE], dest=1)
            comm.Recv([buf[:1], MPI.BYTE], source=1)
        elif rank == 1:
            comm.Recv([buf, MPI.BYTE], source=0)
            comm.Send([buf[:1], MPI.BYTE], dest=0)
        if i:
            best = min(best, MPI.Wtime() - t0)
    gbit = 8 * nbytes / best / 1e9
    return {"measured_gbit": gbit, "ratio": gbit * 1e9 / spec["rate_bits"]}


def check_link(comm: Any) -> dict[str, Any]:
    """When ``HPCQ_NETEM`` is set: verify the link, warn on rank 0 if off by > 20%.

    Returns attributes for the result file (empty when no link is emulated).
    """
    text = os.environ.get("HPCQ_NETEM")
    if not text:
        return {}
    spec = parse(text)
    # well past the bucket's burst, which would otherwise pass at memory speed
    got = verify(comm, spec, nbytes=max(4 << 20, 8 * spec["burst"]))
    out: dict[str, Any] = {"emulated_link": describe(spec)}
    if got:
        out["emulated_link_measured_gbit"] = got["measured_gbit"]
        if comm.Get_rank() == 0 and abs(got["ratio"] - 1) > 0.2:
            print(f"hpcq: warning: the emulated link ({spec['rate']}) measured "
                  f"{got['measured_gbit']:.3g} Gbit/s between ranks 0 and 1, "
                  f"{got['ratio']:.0%} of the rate; is MPI using the network "
                  f"(not shared memory)?", file=sys.stderr)
    return out
