"""hpcq netem: the link's validation, the namespace command line, and a real shaped run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import find_mpiexec

from hpcq import netem
from hpcq.store import read_attrs


def test_rates_and_sizes() -> None:
    assert netem.rate_bits("1gbit") == 1e9 and netem.rate_bits("100mbit") == 1e8
    assert netem.rate_bits("125mbps") == 1e9 and netem.rate_bits("2.5Gbit") == 2.5e9
    assert netem.burst_bytes("128kb") == 131072 and netem.burst_bytes("4096") == 4096
    for bad in ("fast", "10", "0gbit", "-1gbit", "1 gbit; rm -rf /"):
        with pytest.raises(ValueError, match="--rate"):
            netem.rate_bits(bad)
    with pytest.raises(ValueError, match="--burst"):
        netem.burst_bytes("lots")
    with pytest.raises(ValueError, match="--latency"):
        netem.link("1gbit", latency="soon")


def test_link_defaults_and_round_trip() -> None:
    spec = netem.link("10gbit")
    assert spec["burst"] == 5_000_000  # 4 ms of 10 Gbit/s
    assert netem.link("1mbit")["burst"] == 128 * 1024  # the floor
    assert netem.parse(netem.describe(spec)) == spec


def test_argv_passes_the_command_untouched() -> None:
    spec = netem.link("1gbit")
    cmd = ["mpiexec", "-n", "2", "echo", "$(touch /tmp/x)", "a b"]
    as_root = netem.argv(spec, cmd, root=True)
    assert as_root[:2] == ["unshare", "--net"] and as_root[-len(cmd):] == cmd
    assert as_root[2:4] == ["sh", "-c"] and "tc qdisc add dev lo root tbf rate 1gbit" in as_root[4]
    assert netem.argv(spec, cmd, root=False)[:3] == ["unshare", "--map-root-user", "--net"]


def test_no_command_is_an_error() -> None:
    with pytest.raises(ValueError, match="give the command after --"):
        netem.run(netem.link("1gbit"), [])


def _namespaces_work() -> bool:
    if not all(shutil.which(t) for t in ("unshare", "ip", "tc")):
        return False
    ns = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]
    done = subprocess.run([*ns, "sh", "-c", "ip link set lo up && tc qdisc add dev lo root tbf "
                           "rate 1gbit burst 128kb latency 100ms"], capture_output=True)
    return done.returncode == 0


@pytest.mark.mpi
@pytest.mark.skipif(not _namespaces_work(), reason="no network namespaces or tc here")
def test_shaped_link_is_used_and_recorded(warm_cache: None, tmp_path: Path) -> None:
    launcher = find_mpiexec()
    if launcher is None:
        pytest.skip("no MPI launcher")
    from conftest import mpi_env

    out = tmp_path / "out.h5"
    done = subprocess.run(
        [sys.executable, "-m", "hpcq", "netem", "--rate", "200mbit", "--", launcher, "-n", "2",
         sys.executable, "-m", "hpcq", "bench", "collectives", "--sizes", "18",
         "--compressors", "sign", "--schemes", "allreduce-fp32", "allgather",
         "--iterations", "3", "--warmup", "1", "-o", str(out)],
        capture_output=True, text=True, timeout=240, env=mpi_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "warning" not in done.stderr
    attrs = read_attrs(out)
    assert attrs["emulated_link"].startswith("rate=200mbit")
    assert abs(attrs["emulated_link_measured_gbit"] / 0.2 - 1) < 0.2
    # 1 MiB of fp32 per rank through 200 Mbit/s takes tens of ms, not shared memory's 0.1 ms
    from hpcq.store import read_cases

    fp32 = read_cases(out, kind="collectives")[0]
    assert fp32["scheme"] == "allreduce-fp32" and fp32["latency_p50_s"] > 0.02


def test_nodes_validation_and_slots() -> None:
    spec = netem.link("1gbit", nodes=2)
    assert netem.describe(spec).endswith(",nodes=2") and netem.parse(netem.describe(spec)) == spec
    assert netem.ranks_of(["mpiexec", "-n", "4", "hpcq", "run"]) == 4
    assert netem.ranks_of(["mpirun", "-np", "3", "x"]) == 3 and netem.ranks_of(["sh"]) is None
    assert netem.slots(2, 4) == [2, 2] and netem.slots(2, 3) == [2, 1]
    assert netem.slots(3, None) == [1, 1, 1]
    with pytest.raises(ValueError, match="--nodes 3 is more than the 2 ranks"):
        netem.slots(3, 2)
    for bad in (0, 251):
        with pytest.raises(ValueError, match="--nodes"):
            netem.link("1gbit", nodes=bad)
    with pytest.raises(ValueError, match="--delay"):
        netem.link("1gbit", nodes=2, delay="soon")
    with pytest.raises(ValueError, match="--nodes 3 is more than the 2 ranks"):
        netem.run(netem.link("1gbit", nodes=3), ["mpiexec", "-n", "2", "true"])


def test_nodes_argv_passes_the_command_untouched() -> None:
    spec = netem.link("1gbit", nodes=2)
    cmd = ["mpiexec", "-n", "2", "echo", "$(touch /tmp/x)", "a b"]
    full = netem.nodes_argv(spec, "/tmp/d", cmd, root=True)
    assert full[:4] == ["unshare", "--net", "sh", "-c"] and full[-len(cmd):] == cmd
    assert full[5:11] == ["hpcq-netem", "/tmp/d", "2", "1gbit", str(spec["burst"]), "100ms"]
    env = netem.nodes_env(spec, "/tmp/d")
    assert env["HYDRA_LAUNCHER_EXEC"] == "/tmp/d/launch" and env["FI_TCP_IFACE"] == "eth0"
    assert "MPIR_CVAR_NOLOCAL" not in env  # shared memory inside a node


@pytest.mark.skipif(not _namespaces_work(), reason="no network namespaces or tc here")
def test_delay_needs_the_netem_qdisc() -> None:
    spec = netem.link("1gbit", nodes=2, delay="1ms")
    if netem.has_netem_qdisc(os.geteuid() == 0):
        pytest.skip("this kernel has the netem qdisc")
    with pytest.raises(ValueError, match="--delay 1ms: this kernel has no netem qdisc"):
        netem.run(spec, ["mpiexec", "-n", "2", "true"])


@pytest.mark.mpi
@pytest.mark.skipif(not _namespaces_work() or shutil.which("nsenter") is None,
                    reason="no network namespaces, tc or nsenter here")
def test_emulated_nodes_are_separate_hosts(warm_cache: None, tmp_path: Path) -> None:
    launcher = find_mpiexec()
    if launcher is None:
        pytest.skip("no MPI launcher")
    from conftest import mpi_env

    out = tmp_path / "out.h5"
    done = subprocess.run(
        [sys.executable, "-m", "hpcq", "netem", "--nodes", "2", "--rate", "1gbit", "--",
         launcher, "-n", "4", sys.executable, "-m", "hpcq", "bench", "collectives", "--sizes",
         "14", "--compressors", "qsgd:bits=4", "--schemes", "allreduce-fp32",
         "two-level:outer=allgather", "two-level:outer=allgather,mode=shard",
         "--iterations", "3", "--warmup", "1", "--check",
         "-o", str(out)],
        capture_output=True, text=True, timeout=300, env=mpi_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "warning" not in done.stderr
    attrs = read_attrs(out)
    assert attrs["emulated_link"].endswith("nodes=2") and attrs["emulated_nodes"] == 2
    assert attrs["emulated_ranks_per_node"] == "2 2"
    assert abs(attrs["emulated_link_measured_gbit"] - 1) < 0.2
    assert attrs["emulated_intra_measured_gbit"] > 2  # shared memory, not the 1 Gbit/s link
    from hpcq.store import read_cases

    cases = read_cases(out, kind="collectives")
    for two in cases[1:3]:
        assert two["scheme"].startswith("two-level") and two["leaders"] == 2  # two hosts
        assert two["ranks_per_node"] == 2
        assert two["intra_median_s"] > 0 and two["inter_median_s"] > 0
        assert two["check"] == "pass"
    # a node sends one vector's compressed bytes either way: its leader's, or 2 shards'
    leader, shard = cases[1]["inter_wire_bytes_per_leader"], cases[2]["inter_wire_bytes_per_leader"]
    assert abs(shard - leader) <= 2 * 64  # a second header
