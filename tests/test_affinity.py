"""Rank binding: the share of cores each local rank gets, and the CPU-list format."""

from __future__ import annotations

import os

import pytest

from hpcq.affinity import affinity, bind_local_ranks, cpu_list, share


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
