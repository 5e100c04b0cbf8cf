"""Rank binding: the share of cores each local rank gets, and the CPU-list format."""

from __future__ import annotations

import os

import pytest

from hpcq.affinity import affinity, bind_local_ranks, cpu_list, fit_threads, machine_key, share


def test_share_splits_cores_evenly_in_rank_order() -> None:
    assert share([0, 1], 0, 2) == [0] and share([0, 1], 1, 2) == [1]
    assert share(range(16), 3, 4) == [12, 13, 14, 15]
    assert share([5, 1, 3, 7], 1, 2) == [5, 7]  # sorted first
    assert share(range(10), 2, 3) == [6, 7, 8]  # the remainder stays unused
    assert share([0, 1], 0, 3) is None  # more ranks than cores: leave them alone
    assert share([0, 1], 2, 2) is None


def test_cpu_list() -> None:
    assert cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert cpu_list([3]) == "3" and cpu_list([]) == ""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_single_rank_binds_to_all_it_had(monkeypatch: pytest.MonkeyPatch) -> None:
    from mpi4py import MPI

    before = os.sched_getaffinity(0)
    try:
        monkeypatch.setenv("HPCQ_BIND", "0")
        assert bind_local_ranks(MPI.COMM_SELF) == "off"
        monkeypatch.setenv("HPCQ_BIND", "1")
        assert bind_local_ranks(MPI.COMM_SELF) == "bound"  # one rank: every core it had
        assert os.sched_getaffinity(0) == before
        assert affinity() == cpu_list(sorted(before))
    finally:
        os.sched_setaffinity(0, before)


def test_machine_key_names_this_kernel() -> None:
    key = machine_key()
    assert key and key == machine_key()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_fit_threads_caps_numba_at_the_cores_it_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import numba
    from mpi4py import MPI

    before, threads = os.sched_getaffinity(0), numba.get_num_threads()
    try:
        monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
        os.sched_setaffinity(0, {min(before)})
        assert fit_threads(MPI.COMM_SELF) == 1 and numba.get_num_threads() == 1
        os.sched_setaffinity(0, before)
        assert fit_threads(MPI.COMM_SELF) == 1  # a cap: never raised
        most = numba.config.NUMBA_NUM_THREADS
        numba.set_num_threads(most)
        assert fit_threads(MPI.COMM_SELF) == min(len(before), most)
        numba.set_num_threads(1)  # the user's NUMBA_NUM_THREADS is kept as it is
        monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
        assert fit_threads(MPI.COMM_SELF) == 1
    finally:
        os.sched_setaffinity(0, before)
        numba.set_num_threads(threads)


@pytest.mark.mpi
@pytest.mark.parametrize("tcp", [False, True], ids=["shared-memory", "tcp-only"])
def test_ranks_of_one_machine_get_disjoint_cores_and_threads_to_match(
        mpirun, monkeypatch: pytest.MonkeyPatch, tcp: bool) -> None:
    """MPI told to use TCP only (as under ``hpcq netem``) makes every rank its own
    shared-memory node; the ranks still share this machine's cores."""
    from hpcq.netem import MPI_OVER_TCP

    if tcp:
        for k, v in MPI_OVER_TCP.items():
            monkeypatch.setenv(k, v)
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.delenv("HPCQ_BIND", raising=False)
    rows = [line.split("|")[2:] for line in mpirun(2, payload="affinity_check.py").stdout
            .splitlines() if line.startswith("rank|")]
    assert len(rows) == 2
    cores = len(os.sched_getaffinity(0))
    if cores >= 2 and all(b == "bound" for b, _, _ in rows):
        assert rows[0][1] != rows[1][1]  # disjoint shares
        assert [int(n) for _, _, n in rows] == [cores // 2] * 2  # a thread per core of the share
    if cores == 2:  # CI's machine: one core and one numba thread per rank, whoever bound it
        # (Open MPI's mpiexec binds 2 ranks itself: "already bound")
        assert all(b in ("bound", "already bound") for b, _, _ in rows)
        assert rows[0][1] != rows[1][1] and [int(n) for _, _, n in rows] == [1, 1]
