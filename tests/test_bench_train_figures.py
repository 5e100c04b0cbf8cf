"""Training tables and files say what moved: the rate stops at the precision floor, each
phase's time is its own slowest rank's, DQ's gradient Allreduce is shown, units are right."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpcq.algorithms.base import RATE_FLOOR, Trace
from hpcq.bench import train


def _trace(dist: list[float]) -> Trace:
    tr = Trace(iterations=len(dist) - 1, step_size=1.0, rule="fixed")
    tr.log_iter = list(range(len(dist)))
    tr.dist = dist
    return tr


def test_rate_is_fitted_above_the_precision_floor() -> None:
    # 0.5 per iteration down to 2^-40 (about 1e-12 relative), then float64's floor
    dist = [0.5**t for t in range(41)] + [1e-16] * 60
    tr = _trace(dist)
    assert tr.rate() == pytest.approx(0.5, rel=1e-12)
    t, floored = tr.rate_iterations()  # type: ignore[misc]
    assert floored and t == 39 and 0.5**t > RATE_FLOOR >= 0.5**(t + 1)
    # over all 100 iterations the floor would have been reported as the method's rate
    assert (1e-16) ** (1 / 100) > 0.69
    plain = _trace([0.9**t for t in range(50)])
    assert plain.rate() == pytest.approx(0.9) and plain.rate_iterations() == (49, False)


def test_phase_medians_are_each_phases_own_slowest_rank() -> None:
    # rank 0 encodes (DQ-GD), rank 1 waits longer in comm and is the slowest overall
    enc = np.array([[2e-4] * 5, [0.0] * 5])
    assert train._median_max(enc) == pytest.approx(2e-4)
    assert math.isnan(train._median_max(np.full((2, 3), np.nan)))


def test_table_shows_the_gradient_allreduce_and_the_floor() -> None:
    row = {"problem": "p", "d": 64, "label": "dqgd:bits=8", "final_dist": 1e-6,
           "final_loss": 0.0, "rate": 0.79, "rate_floor_reached": True, "diverged": False,
           "bits_per_iteration": 512.0, "wire_bytes_per_iteration": 124.0,
           "grad_bytes_per_iteration": 512.0, "ms_per_iteration": 0.1, "compute_ms": 0.01,
           "encode_ms": 0.05, "comm_ms": 0.02, "decode_ms": 0.01, "update_ms": 0.0,
           "overhead_pct": 5.0}
    table = train.format_table([row], nprocs=2)
    line = table.splitlines()[-1]
    assert "124+512g" in line and "0.7900*" in line
    assert "50" in line.split()[-5]  # enc% of the encoding rank, not the idle one's 0
    assert "gradient Allreduce" in table


def test_dq_units_and_grad_bytes_in_a_run() -> None:
    from mpi4py import MPI

    case = train.TrainCase("lstsq:m=128,n=16,kappa=10", "dqgd:bits=8", None, "allgather",
                           12, 0.0, 0, 0, 1, 4)
    attrs, data, _ = train.run_case(MPI.COMM_SELF, case)  # type: ignore[misc]
    assert data["grad_comm"][1] == "s" and data["grad_bytes"][1] == "bytes"
    assert attrs["grad_bytes_per_iteration"] == 0.0  # one rank: nothing to allreduce
    assert attrs["encode_ms"] > 0 and "rate_iterations" in attrs
