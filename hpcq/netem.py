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
emulated: this kernel has no ``netem`` qdisc, so no added delay (``--delay`` is
refused with one line where ``sch_netem`` is missing).

Several emulated nodes (``--nodes N``)
--------------------------------------
``hpcq netem --nodes 2 --rate 1gbit -- mpiexec -n 4 hpcq bench ...`` makes, inside
one private namespace (as above), a Linux bridge and N node namespaces, each with
its own network and UTS namespace (host name ``hpcq-node<i>``, address
``10.81.0.<i+1>``) held open by a small process, joined to the bridge by a veth pair
shaped by ``tc ... tbf`` at both ends (node to bridge and bridge to node: the rate
per direction, full duplex).  MPICH's launcher (hydra) is pointed at them through
its environment: a host file ``hpcq-node<i>:<slots>`` (the ranks of ``-n`` split into
consecutive blocks, one per node), the ``ssh`` launcher with a launcher executable
that enters the node's namespaces (``nsenter --net --uts``) instead of connecting
anywhere, and the bridge as the interface the proxies call back on.  The ranks use
TCP (``FI_PROVIDER=tcp`` on the node's ``eth0``) between nodes and shared memory
inside a node, as on a cluster.  ``HPCQ_NETEM`` carries ``nodes=N``; the runner then
measures a transfer between rank 0 and the first rank of another node (the link)
and one inside rank 0's node (shared memory), and records both.  MPICH only (the
PyPI wheel); Open MPI would need its own launcher settings.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
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


#: Most emulated nodes (one /24 on the bridge, addresses .1 to .250).
MAX_NODES = 250


def link(rate: str, burst: str | None = None, latency: str = "100ms", nodes: int = 1,
         delay: str | None = None) -> dict[str, Any]:
    """The validated link: rate (tc syntax and bits/s), burst bytes, queue latency, nodes,
    and the one-way delay between nodes (None: none added).

    The default burst holds 4 ms of traffic (one scheduler tick at 250 Hz; less
    would throttle below the rate), at least 128 KiB.
    """
    bits = rate_bits(rate)
    size = burst_bytes(burst) if burst else max(128 * 1024, int(bits / 8 * 0.004))
    if not _MS.match(latency.strip().lower()):
        raise ValueError(f"--latency {latency!r}: expected a time such as 100ms or 50000us")
    if not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"--nodes {nodes!r}: expected a whole number from 1 to {MAX_NODES}")
    if delay is not None and not _MS.match(delay.strip().lower()):
        raise ValueError(f"--delay {delay!r}: expected a time such as 1ms or 500us")
    return {"rate": rate.strip().lower(), "rate_bits": bits, "burst": size,
            "latency": latency.strip().lower(), "nodes": nodes,
            "delay": delay.strip().lower() if delay is not None else None}


def describe(spec: dict[str, Any]) -> str:
    """``rate=1gbit,burst=131072,latency=100ms`` (the value of ``HPCQ_NETEM``), then
    ``,nodes=N`` and ``,delay=D`` when set."""
    text = f"rate={spec['rate']},burst={spec['burst']},latency={spec['latency']}"
    if spec.get("nodes", 1) > 1:
        text += f",nodes={spec['nodes']}"
    if spec.get("delay"):
        text += f",delay={spec['delay']}"
    return text


def parse(text: str) -> dict[str, Any]:
    """The link of an ``HPCQ_NETEM`` value (inverse of :func:`describe`)."""
    fields = dict(item.split("=", 1) for item in text.split(",") if "=" in item)
    nodes = fields.get("nodes", "1")
    return link(fields.get("rate", ""), fields.get("burst"), fields.get("latency", "100ms"),
                int(nodes) if nodes.isdigit() else -1, fields.get("delay"))


def argv(spec: dict[str, Any], command: Sequence[str], *, root: bool) -> list[str]:
    """The command line running ``command`` in a namespace with the shaped loopback.

    The shell only sees fixed text and validated numbers; the user's command goes
    through ``"$@"`` untouched, so nothing in it is re-parsed.
    """
    shape = (f"ip link set lo up && tc qdisc add dev lo root tbf rate {spec['rate']} "
             f"burst {spec['burst']} latency {spec['latency']} && exec \"$@\"")
    ns = ["unshare", "--net"] if root else ["unshare", "--map-root-user", "--net"]
    return [*ns, "sh", "-c", shape, "hpcq-netem", *command]


#: Sets up the emulated nodes, runs the command, removes them.  Fixed text: the shell
#: sees only validated numbers and a directory hpcq made; the user's command is "$@".
#: $1 directory, $2 nodes, $3 rate, $4 burst, $5 latency, $6 delay ("" for none).
_NODES_SH = r"""
set -e
dir=$1 nodes=$2 rate=$3 burst=$4 latency=$5 delay=$6
shift 6
holders=
trap 'kill $holders 2>/dev/null || true' EXIT
trap 'exit 143' INT TERM
shape() {  # shape(dev, ns-pid or "") the egress of one end of a veth
  run=; [ -n "$2" ] && run="nsenter --target $2 --net --"
  if [ -n "$delay" ]; then
    $run tc qdisc add dev $1 root handle 1: netem delay $delay
    $run tc qdisc add dev $1 parent 1:1 handle 10: tbf rate $rate burst $burst latency $latency
  else
    $run tc qdisc add dev $1 root tbf rate $rate burst $burst latency $latency
  fi
}
ip link set lo up
ip link add hpcq-br type bridge
ip addr add 10.81.0.254/24 dev hpcq-br
ip link set hpcq-br up
i=0
while [ $i -lt $nodes ]; do
  # the node: its own network and host name, held open while this shell lives
  unshare --net --uts sh -c "hostname hpcq-node$i && ip link set lo up && \
    while kill -0 $$ 2>/dev/null; do sleep 1; done" &
  pid=$!
  holders="$holders $pid"
  while [ "$(readlink /proc/$pid/ns/uts)" = "$(readlink /proc/$$/ns/uts)" ] || \
        [ "$(nsenter --target $pid --uts hostname)" != "hpcq-node$i" ]; do
    kill -0 $pid  # the holder failed (its error is above)
    sleep 0.02
  done
  echo $pid > "$dir/hpcq-node$i.pid"
  ip link add hpcq-v$i type veth peer name eth0 netns $pid
  ip link set hpcq-v$i master hpcq-br up
  nsenter --target $pid --net -- ip addr add 10.81.0.$((i + 1))/24 dev eth0
  nsenter --target $pid --net -- ip link set eth0 up
  shape hpcq-v$i ""   # bridge -> node
  shape eth0 $pid     # node -> bridge
  i=$((i + 1))
done
set +e
"$@"
rc=$?
exit $rc
"""

#: hydra's launcher executable: ``launch [ssh options] HOST COMMAND...`` runs COMMAND (a
#: shell line, as ssh would) inside the namespaces of emulated node HOST.
_LAUNCH_SH = """#!/bin/sh
while [ "${1#-}" != "$1" ]; do shift; done
host=$1
shift
exec nsenter --target "$(cat "%s/$host.pid")" --net --uts -- sh -c "$*"
"""


def ranks_of(command: Sequence[str]) -> int | None:
    """The rank count of an ``mpiexec``/``mpirun`` command line (``-n P``, ``-np P``), else None."""
    for i, word in enumerate(command[:-1]):
        if word in ("-n", "-np") and command[i + 1].isdigit():
            return int(command[i + 1])
    return None


def slots(nodes: int, ranks: int | None) -> list[int]:
    """Ranks per emulated node: ``ranks`` in consecutive blocks (the first nodes one more when
    it does not divide); 1 each when unknown (hydra then deals ranks round-robin).

    ValueError when there are more nodes than ranks.
    """
    if ranks is None:
        return [1] * nodes
    if ranks < nodes:
        raise ValueError(f"--nodes {nodes} is more than the {ranks} ranks of the command; "
                         f"every emulated node needs at least one rank")
    return [ranks // nodes + (1 if i < ranks % nodes else 0) for i in range(nodes)]


def nodes_env(spec: dict[str, Any], directory: str) -> dict[str, str]:
    """The environment pointing MPICH's hydra at the emulated nodes in ``directory``."""
    return {"HYDRA_HOST_FILE": str(Path(directory) / "hosts"), "HYDRA_LAUNCHER": "ssh",
            "HYDRA_LAUNCHER_EXEC": str(Path(directory) / "launch"),
            "HYDRA_IFACE": "hpcq-br", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp",
            "FI_TCP_IFACE": "eth0", "HPCQ_NETEM": describe(spec)}


def nodes_argv(spec: dict[str, Any], directory: str, command: Sequence[str], *,
               root: bool) -> list[str]:
    """The command line that makes the emulated nodes and runs ``command`` among them."""
    ns = ["unshare", "--net"] if root else ["unshare", "--map-root-user", "--net"]
    return [*ns, "sh", "-c", _NODES_SH, "hpcq-netem", directory, str(spec["nodes"]),
            spec["rate"], str(spec["burst"]), spec["latency"], spec.get("delay") or "",
            *command]


def has_netem_qdisc(root: bool) -> bool:
    """Whether this kernel can add delay (the ``netem`` qdisc), tried in a scratch namespace."""
    ns = ["unshare", "--net"] if root else ["unshare", "--map-root-user", "--net"]
    done = subprocess.run([*ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                           "1ms"], capture_output=True)
    return done.returncode == 0


def _permission(stderr: str) -> PermissionError:
    return PermissionError("hpcq netem could not make a network namespace or shape its "
                           "links: it needs CAP_NET_ADMIN and CAP_SYS_ADMIN (run as root), or "
                           "unprivileged user namespaces (sysctl "
                           "kernel.unprivileged_userns_clone=1); "
                           + " ".join(stderr.split())[:200])


def _denied(stderr: str) -> bool:
    return any(w in stderr for w in ("unshare failed", "Operation not permitted", "RTNETLINK",
                                     "Permission denied"))


def run(spec: dict[str, Any], command: Sequence[str]) -> int:
    """Run ``command`` over the emulated link (or among the emulated nodes); its exit code."""
    if not command:
        raise ValueError("hpcq netem: give the command after --, e.g. "
                         "hpcq netem --rate 1gbit -- mpiexec -n 2 hpcq run")
    tools = ("unshare", "ip", "tc") + (("nsenter",) if spec.get("nodes", 1) > 1 else ())
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise FileNotFoundError(f"hpcq netem needs {', '.join(missing)} (util-linux and "
                                f"iproute2 packages)")
    root = os.geteuid() == 0
    if spec.get("delay") and not has_netem_qdisc(root):
        raise ValueError(f"--delay {spec['delay']}: this kernel has no netem qdisc (sch_netem), "
                         f"so no delay can be added; run without --delay (rate only)")
    if spec.get("nodes", 1) > 1:
        return _run_nodes(spec, command, root)
    if spec.get("delay"):
        raise ValueError("--delay needs --nodes 2 or more (the delay is on the links between "
                         "emulated nodes)")
    env = dict(os.environ, **MPI_OVER_TCP, HPCQ_NETEM=describe(spec))
    full = argv(spec, command, root=root)
    done = subprocess.run(full, env=env, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(done.stderr)
    if done.returncode and _denied(done.stderr):
        raise _permission(done.stderr)
    return done.returncode


def _run_nodes(spec: dict[str, Any], command: Sequence[str], root: bool) -> int:
    """:func:`run` with ``nodes`` > 1: the bridge, the node namespaces, hydra's settings."""
    import tempfile

    per_node = slots(spec["nodes"], ranks_of(command))
    with tempfile.TemporaryDirectory(prefix="hpcq-netem-") as directory:
        Path(directory, "hosts").write_text(
            "".join(f"hpcq-node{i}:{k}\n" for i, k in enumerate(per_node)))
        launch = Path(directory, "launch")
        launch.write_text(_LAUNCH_SH % directory)
        launch.chmod(0o755)
        env = dict(os.environ, **nodes_env(spec, directory))
        for key in ("MPIR_CVAR_NOLOCAL", "HYDRA_HOSTS"):  # shared memory inside a node
            env.pop(key, None)
        done = subprocess.run(nodes_argv(spec, directory, command, root=root), env=env,
                              stderr=subprocess.PIPE, text=True)
    sys.stderr.write(done.stderr)
    if done.returncode and _denied(done.stderr):
        raise _permission(done.stderr)
    return done.returncode


def verify(comm: Any, spec: dict[str, Any], nbytes: int = 4 << 20, peer: int = 1
           ) -> dict[str, Any]:
    """Measure the link between ranks 0 and ``peer`` (collective); rank 0 gets the result.

    Sends ``nbytes`` from rank 0 to ``peer`` three times (after one untimed) and
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
            comm.Send([buf, MPI.BYTE], dest=peer)
            comm.Recv([buf[:1], MPI.BYTE], source=peer)
        elif rank == peer:
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
    if spec["nodes"] > 1:
        return _check_nodes(comm, spec)
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


def _check_nodes(comm: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`check_link` among emulated nodes: the link between rank 0 and the first rank of
    another node, and shared memory inside rank 0's node (when it holds two ranks)."""
    from mpi4py import MPI

    p, nodes = comm.Get_size(), spec["nodes"]
    if p < nodes:
        raise ValueError(f"--nodes {nodes} is more than the {p} ranks; every emulated node "
                         f"needs at least one rank")
    hosts = comm.allgather(MPI.Get_processor_name())
    if len(set(hosts)) != nodes:
        raise ValueError(f"hpcq netem --nodes {nodes}: the ranks run on {len(set(hosts))} "
                         f"host(s) ({', '.join(sorted(set(hosts)))}); was mpiexec started "
                         f"inside hpcq netem, with its host file?")
    nbytes = max(4 << 20, 8 * spec["burst"])
    other = next(r for r in range(p) if hosts[r] != hosts[0])
    link_got = verify(comm, spec, nbytes=nbytes, peer=other)
    same = [r for r in range(1, p) if hosts[r] == hosts[0]]
    local = verify(comm, spec, nbytes=nbytes, peer=same[0]) if same else {}
    out: dict[str, Any] = {"emulated_link": describe(spec), "emulated_nodes": nodes,
                           "emulated_ranks_per_node": " ".join(
                               str(hosts.count(h)) for h in dict.fromkeys(hosts))}
    if link_got:
        out["emulated_link_measured_gbit"] = link_got["measured_gbit"]
        if comm.Get_rank() == 0 and abs(link_got["ratio"] - 1) > 0.2:
            print(f"hpcq: warning: the emulated link ({spec['rate']}) measured "
                  f"{link_got['measured_gbit']:.3g} Gbit/s between ranks 0 and {other} "
                  f"(two nodes), {link_got['ratio']:.0%} of the rate", file=sys.stderr)
    if local:
        out["emulated_intra_measured_gbit"] = local["measured_gbit"]
    return out
