"""Training methods on one rank (in-process): the papers' targets and exact equivalences.

papers.md section 6: T1, T2 and T4 (DQ-GD's rate, its breakdown below the
threshold, no loss above it), the fp32 runs of every method equal to plain GD, the
trace's bytes equal to the messages' length, and the errors for bad parameters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpcq.algorithms import method, methods, train
from hpcq.algorithms.base import Context
from hpcq.algorithms.dq import cube_error_factor, method_rate
from hpcq.compressors import compressor
from hpcq.problems import problem

MPI = pytest.importorskip("mpi4py.MPI")
COMM = MPI.COMM_WORLD


def _ctx(prob, comp: str | None = None, **kw) -> Context:
    return Context(COMM, prob, compressor(comp) if comp else None, **kw)


def _lstsq(n: int, kappa: float = 10.0, seed: int = 0, m: int = 256):
    return problem(f"lstsq:m={m},n={n},kappa={kappa}", seed=seed)


def _serial_gd(prob, eta: float, steps: int, beta: float = 0.0, nesterov: bool = False
               ) -> np.ndarray:
    x = prob.x0().copy()
    prev = x.copy()
    for _ in range(steps):
        if nesterov:
            y = x + beta * (x - prev)
            prev, x = x, y - eta * prob.grad(y)
        else:
            prev, x = x, x - eta * prob.grad(x) + beta * (x - prev)
    return x


# ---------------------------------------------------------------------- DQ-GD targets
@pytest.mark.parametrize("n,seed", [(32, 1), (64, 0), (128, 2)])
def test_t1_dqgd_rate_above_threshold(n: int, seed: int) -> None:
    """T1: rho_emp <= max(sigma, rho_n 2^-R) + 0.02 for R >= log2(rho_n / sigma) + 1."""
    prob = _lstsq(n, seed=seed)
    sigma = 9 / 11
    threshold = math.log2(math.sqrt(n) / sigma)
    for R in (math.ceil(threshold + 1), math.ceil(threshold + 1) + 1, 8):
        tr = train(_ctx(prob, iterations=80), f"dqgd:bits={R}")
        assert tr.info["sigma"] == pytest.approx(sigma, rel=1e-12)
        assert tr.info["threshold_bits"] == pytest.approx(threshold)
        bound = max(sigma, math.sqrt(n) * 2.0 ** -R)
        assert tr.rate() <= bound + 0.02, (n, R, tr.rate(), bound)
        # T2's invariant above the threshold: the input never leaves the range
        assert tr.info["clipped_steps"] == 0
        assert np.all(tr.extra["u_inf"] <= tr.extra["range"])


def test_t1_matches_the_reference_simulation() -> None:
    """papers.md's own numbers (n = 64, seed 0): R=4: 0.824, R=5: 0.810, R=8: 0.804, GD 0.804."""
    prob = _lstsq(64, seed=0)
    got = {R: train(_ctx(prob, iterations=80), f"dqgd:bits={R}").rate() for R in (4, 5, 8)}
    gd = train(_ctx(prob, "fp32", iterations=80), "gd").rate()
    assert gd == pytest.approx(0.804, abs=0.005)
    for R, want in ((4, 0.824), (5, 0.810), (8, 0.804)):
        assert got[R] == pytest.approx(want, abs=0.005), (R, got[R])


def test_t2_breakdown_below_threshold() -> None:
    """T2: at R = 3 (8 * 2^-3 = 1, n = 64) the iterates do not converge: rate >= 0.98."""
    prob = _lstsq(64, seed=0)
    tr = train(_ctx(prob, iterations=80), "dqgd:bits=3")
    assert tr.rate() >= 0.98
    assert train(_ctx(prob, iterations=80), "dqgd:bits=2").rate() > 1.5


def test_clipping_is_reported_not_hidden() -> None:
    """A range bound D that is too small clips the quantizer input: the trace counts it."""
    prob = _lstsq(64, seed=0)
    tr = train(_ctx(prob, iterations=20), "dqgd:bits=6,D=0.01")
    assert tr.info["clipped_steps"] > 0
    assert tr.extra["clipped"].sum() > 0
    assert np.any(tr.extra["u_inf"] > tr.extra["range"])


@pytest.mark.parametrize("n", [32, 64, 128])
def test_t4_no_loss_above_threshold(n: int) -> None:
    """T4: R >= log2(rho_n/sigma) + 2: rate <= sigma + 0.01 and within 0.02 of GD's."""
    prob = _lstsq(n, seed=0)
    sigma = 9 / 11
    R = math.ceil(math.log2(math.sqrt(n) / sigma) + 2)
    dq = train(_ctx(prob, iterations=80), f"dqgd:bits={R}").rate()
    gd = train(_ctx(prob, "fp32", iterations=80), "gd").rate()
    assert dq <= sigma + 0.01
    assert dq - gd <= 0.02


def test_naive_qgd_is_slower_than_dqgd_at_equal_bits() -> None:
    prob = _lstsq(64, seed=0)
    dq = train(_ctx(prob, iterations=80), "dqgd:bits=5").rate()
    naive = train(_ctx(prob, iterations=80), "naive-qgd:bits=5")
    assert naive.info["clipped_steps"] == 0  # its range schedule holds its input too
    assert naive.rate() > dq + 0.05
    assert naive.rate() <= naive.info["naive_bound"] + 0.02


def test_range_sent_counts_its_32_bits() -> None:
    prob = _lstsq(32, seed=0)
    pre = train(_ctx(prob, iterations=5), "dqgd:bits=2")
    sent = train(_ctx(prob, iterations=5), "dqgd:bits=2,range=sent")
    assert np.all(sent.series["side_bits"] == pre.series["side_bits"] + 32)
    assert np.all(pre.series["payload_bits"] == math.floor(32 * 2))
    # range sent: the input is always inside it, and it converges where the
    # predetermined range (R = 2 < threshold 2.8) does not
    assert sent.info["clipped_steps"] == 0
    assert sent.rate() < 0.9 < pre.rate()


def test_cube_error_factor() -> None:
    assert cube_error_factor(64, 4.0) == pytest.approx(8 * 2.0 ** -4)
    # fractional R: floor(n R) bits, the extra ones on some coordinates
    a = cube_error_factor(10, 2.5)
    assert a == pytest.approx(math.sqrt(5 * 4.0 ** -2 + 5 * 4.0 ** -3))


def test_momentum_rates_and_unquantized_equivalence() -> None:
    prob = _lstsq(32, kappa=100.0, seed=0)
    sk = 10.0
    hb = train(_ctx(prob, iterations=40), "hb")
    assert hb.info["sigma"] == pytest.approx((sk - 1) / (sk + 1), rel=1e-3)
    ref = _serial_gd(prob, hb.step_size, 40, beta=hb.info["beta"])
    assert np.linalg.norm(hb.x - ref) <= 1e-6 * np.linalg.norm(ref)
    nag = train(_ctx(prob, iterations=40), "nag")
    ref = _serial_gd(prob, nag.step_size, 40, beta=nag.info["beta"], nesterov=True)
    assert np.linalg.norm(nag.x - ref) <= 1e-6 * np.linalg.norm(ref)
    assert method_rate("gd", 2 / 1.01, 0.0, 1.0, 0.01) == pytest.approx(0.99 / 1.01)


@pytest.mark.parametrize("name", ["dq-hb", "dq-nag"])
def test_dq_momentum_keeps_the_rate_above_threshold(name: str) -> None:
    prob = _lstsq(32, kappa=100.0, seed=0)
    plain = train(_ctx(prob, iterations=60), name.removeprefix("dq-")).rate()
    dq = train(_ctx(prob, iterations=60), f"{name}:bits=10")
    assert dq.rate() <= plain + 0.02
    assert dq.info["clipped_steps"] == 0


# ---------------------------------------------------------------- fp32 equivalences
@pytest.mark.parametrize("spec", ["gd", "ef-sgd", "ecq-sgd:alpha=0.5,beta=0.9"])
def test_fp32_runs_equal_distributed_gd(spec: str) -> None:
    prob = _lstsq(32, seed=3)
    tr = train(_ctx(prob, "fp32", iterations=30), spec)
    ref = _serial_gd(prob, tr.step_size, 30)
    assert tr.step_size == pytest.approx(2 / (1 + 0.1))
    assert np.linalg.norm(tr.x - ref) <= 1e-5 * np.linalg.norm(ref)


def test_dqgd_high_rate_tracks_gd() -> None:
    prob = _lstsq(32, seed=3)
    tr = train(_ctx(prob, iterations=30), "dqgd:bits=16")
    ref = _serial_gd(prob, tr.step_size, 30)
    assert np.linalg.norm(tr.x - ref) <= 1e-3 * np.linalg.norm(prob.x0() - prob.x_star)


def test_staleness_is_the_delayed_recursion() -> None:
    """tau = 2: x_{t+1} = x_t - eta grad f(x_{t-2}), nothing applied in the first 2 steps."""
    prob = _lstsq(32, seed=4)
    tr = train(_ctx(prob, "fp32", iterations=25, staleness=2), "gd")
    assert tr.rule == "1/(L(alpha+tau))"
    xs = [prob.x0().copy()]
    grads = []
    for t in range(25):
        grads.append(prob.grad(xs[-1]))
        xs.append(xs[-1] - tr.step_size * grads[t - 2] if t >= 2 else xs[-1].copy())
    assert np.linalg.norm(tr.x - xs[-1]) <= 1e-5 * np.linalg.norm(xs[-1])


# -------------------------------------------------------------------- bit accounting
@pytest.mark.parametrize("spec", ["qsgd:bits=4", "sign", "topk:ratio=0.1", "vqsgd:reps=4",
                                  "hadamard+qsgd:bits=2"])
def test_trace_bytes_equal_the_messages(spec: str) -> None:
    prob = _lstsq(48, seed=0)
    comp = compressor(spec)
    tr = train(_ctx(prob, spec, iterations=4), "gd")
    assert np.all(tr.series["bytes_sent"] == comp.wire_bytes(prob.d))
    payload, side = comp.theory_bits(prob.d)
    assert np.all(tr.series["payload_bits"] == payload)
    assert np.all(tr.series["side_bits"] == side)


def test_vqsgd_method_bits() -> None:
    prob = _lstsq(16, seed=0)
    tr = train(_ctx(prob, iterations=3), "vqsgd:reps=4")
    assert np.all(tr.series["payload_bits"] + tr.series["side_bits"] == 4 * 5 + 32)


def test_trace_log_points_and_rate() -> None:
    prob = _lstsq(32, seed=0)
    tr = train(_ctx(prob, "fp32", iterations=10, log_every=4), "gd")
    assert tr.log_iter == [0, 4, 8, 10]
    assert tr.dist[0] == pytest.approx(np.linalg.norm(prob.x0() - prob.x_star))
    assert tr.loss[-1] >= prob.f_star - 1e-12
    assert tr.rate() == pytest.approx((tr.dist[-1] / tr.dist[0]) ** 0.1)


# -------------------------------------------------------------------------- errors
@pytest.mark.parametrize("spec,ctx_kw,match", [
    ("dqgd:bits=0", {}, "bits=0"),
    ("dqgd:bits=-1", {}, "bits"),
    ("dqgd", {"batch": 8}, "batch"),
    ("gd", {"staleness": 1, "scheme": "ps"}, "staleness"),
    ("ef-sgd", {"scheme": "allreduce-fp32"}, "error feedback"),
    ("dqgd:colour=red", {}, "unknown parameter"),
    ("newton", {}, "unknown method"),
])
def test_bad_parameters(spec: str, ctx_kw: dict, match: str) -> None:
    prob = _lstsq(16, seed=0)
    with pytest.raises(ValueError, match=match):
        train(_ctx(prob, "fp32", iterations=2, **ctx_kw), spec)


def test_methods_listing() -> None:
    listing = methods()
    for name in ("gd", "ef-sgd", "ef-signsgd", "ecq-sgd", "vqsgd", "dqgd", "dq-hb", "dq-nag",
                 "naive-qgd", "hb", "nag"):
        assert name in listing
    assert listing["gd"]["takes_compressor"] and not listing["dqgd"]["takes_compressor"]
    assert method("ecq-sgd:alpha=0.3").p == {"alpha": 0.3, "beta": 0.9}


def test_a_diverged_run_stops_and_says_so() -> None:
    """Below the threshold: the run stops once its iterate blows up (no float32 overflow
    error), the iterations never made are NaN, the rate is inf, and no clipping is invented."""
    prob = _lstsq(32, seed=0)
    tr = train(_ctx(prob, iterations=80), "naive-qgd:bits=3")
    stop = tr.info["diverged_at"]
    assert 0 < stop < 80 and tr.rate() == math.inf
    t_iter = tr.series["t_iter"]
    assert np.isnan(t_iter[stop:]).all() and np.isfinite(t_iter[:stop]).all()
    assert tr.info["clipped_steps"] == 0  # its range schedule holds its input, even diverging
    assert tr.log_iter[-1] == stop
    gd = train(_ctx(prob, "qsgd:bits=4", iterations=200, step=5.0), "gd")
    assert gd.rate() == math.inf and gd.info["diverged_at"] < 200


def test_entropy_coded_messages_count_their_real_bits() -> None:
    """qsgd with code=rans: the trace's bits are the coded message's (the bytes really sent,
    less the header), below the fixed-length count, and training equals code=fixed."""
    prob = _lstsq(256, seed=0, m=512)
    fixed = train(_ctx(prob, "qsgd:s=4,bucket=0", iterations=5), "ecq-sgd")
    coded = train(_ctx(prob, "qsgd:s=4,bucket=0,code=rans", iterations=5), "ecq-sgd")
    bits = coded.series["payload_bits"] + coded.series["side_bits"]
    assert np.all(bits == 8 * (coded.series["bytes_sent"] - 60))
    assert np.all(coded.series["payload_bits"] < fixed.series["payload_bits"])
    assert np.array_equal(coded.x, fixed.x)
