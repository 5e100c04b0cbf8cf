"""The alpha-beta model: fits recover known alpha and beta, projections, crossovers, flags."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from hpcq.analysis import model

ALPHA, BETA = 5e-6, 1e-9  # 5 us per message step, 1 GB/s
HEADER = 60.0  # bytes of codec header per message (two-phase chunks carry one each)


def lg(p: int) -> int:
    return math.ceil(math.log2(p))


def truth(scheme: str, p: int, d: int, m: float, h: float = HEADER) -> tuple[float, float, float]:
    """(L, B, wire) written out again here, independently of model.ALGORITHMS.

    ``m``: one rank's compressed message of the whole vector (two-phase: without headers).
    """
    ring = 2 * (p - 1) / p
    if scheme == "allgather":
        return lg(p), (p - 1) * m, m
    if scheme == "two-phase":
        return (p - 1) + lg(p), ring * (m + p * h), m + p * h
    if scheme == "ps":  # rank 0 sends the 4d-byte fp32 broadcast, the others their message
        return 2 * lg(p) + (p - 1), (p - 1) * m + ring * 4 * d, ((p - 1) * m + 4 * d) / p
    if scheme == "allreduce-fp32":
        return 2 * lg(p), ring * 4 * d, 4 * d
    raise AssertionError(scheme)


def rows(schemes: tuple[str, ...] = ("allgather", "two-phase", "ps", "allreduce-fp32"),
         ps: tuple[int, ...] = (2, 4, 8, 16), logd: tuple[int, ...] = (10, 12, 14, 16, 18, 20),
         alpha: float = ALPHA, beta: float = BETA, noise: float = 0.01, spec: str = "sign",
         msg: Any = lambda d: d / 8 + 64, enc: float = 1e-9, dec: float = 2e-9,
         machine: str = "CPU", seed: int = 0, header: float = HEADER) -> list[dict[str, Any]]:
    """Collectives rows as report.collective_rows gives them, from known alpha and beta."""
    rng = np.random.default_rng(seed)
    out = []
    for scheme in schemes:
        alg = model.ALGORITHMS[scheme]
        for p in ps:
            for k in logd:
                d = 1 << k
                steps, nbytes, wire = truth(scheme, p, d, msg(d), header)
                comm = (alpha * steps + beta * nbytes) * (1 + noise * rng.standard_normal())
                out.append({"machine": machine, "scheme": scheme,
                            "spec": "fp32" if scheme.startswith("allreduce") else spec,
                            "nprocs": p, "d": d, "wire_bytes_per_rank": wire,
                            "header_bytes": header, "comm_median_s": comm,
                            "encode_median_s": enc * d * alg.encodes(p),
                            "decode_median_s": dec * d * alg.decodes(p)})
    return out


def _by(fits: list[model.Fit], scheme: str, spec: str = "sign") -> model.Fit:
    (f,) = [f for f in fits if f.scheme == scheme and f.compressor in (spec, "fp32")]
    return f


@pytest.mark.parametrize("scheme", ["allgather", "two-phase", "ps", "allreduce-fp32"])
def test_fit_recovers_alpha_and_beta(scheme: str) -> None:
    f = _by(model.fit(rows(schemes=(scheme,))), scheme)
    assert f.status == "ok" and f.p_values == (2, 4, 8, 16) and f.n_points == 24
    assert f.alpha_s == pytest.approx(ALPHA, rel=0.03)
    assert f.beta_s_per_byte == pytest.approx(BETA, rel=0.03)
    assert f.max_rel_residual < 0.05 and f.worst is not None


def test_exact_data_is_fitted_exactly_and_nonnegative() -> None:
    fits = model.fit(rows(noise=0.0))
    for f in fits:
        assert f.alpha_s == pytest.approx(ALPHA, rel=1e-9)
        assert f.beta_s_per_byte == pytest.approx(BETA, rel=1e-9)
        assert f.max_rel_residual < 1e-9
    # pure latency: beta is clipped at 0, never negative
    (f,) = model.fit(rows(schemes=("allgather",), beta=0.0, noise=0.02, seed=3))
    assert f.beta_s_per_byte >= 0 and f.alpha_s == pytest.approx(ALPHA, rel=0.03)


def test_projection_at_the_measured_p_equals_the_fitted_values() -> None:
    data = rows()
    fits = model.fit(data)
    proj = model.project(data, fits)
    assert {r["p"] for r in proj} == {2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}
    measured = {(r["scheme"], r["nprocs"], r["d"]): r for r in data}
    seen = 0
    for r in proj:
        f = _by(fits, r["scheme"])
        q = measured.get((r["scheme"], r["p"], r["d"]))
        assert r["extrapolated"] == (r["p"] > 16) and r["fit"] == "own"
        if q is None:
            assert r["measured_total_s"] is None
            continue
        steps, nbytes, _ = truth(r["scheme"], r["p"], r["d"], r["d"] / 8 + 64)
        assert (r["steps"], r["bytes"]) == pytest.approx((steps, nbytes), rel=1e-12)
        assert r["comm_s"] == pytest.approx(f.alpha_s * steps + f.beta_s_per_byte * nbytes,
                                            rel=1e-12)
        assert r["encode_s"] == pytest.approx(q["encode_median_s"], rel=1e-12)
        assert r["decode_s"] == pytest.approx(q["decode_median_s"], rel=1e-12)
        assert r["measured_comm_s"] == q["comm_median_s"]
        seen += 1
    assert seen == len(data)


def test_projection_scales_decode_with_p_for_allgather_and_headers_for_two_phase() -> None:
    data = rows(ps=(2,), noise=0.0)
    proj = {(r["scheme"], r["p"], r["d"]): r for r in model.project(data, model.fit(data))}
    d = 1 << 20
    for p in (8, 1024):
        ag, tp = proj[("allgather", p, d)], proj[("two-phase", p, d)]
        assert ag["decode_s"] == pytest.approx(2e-9 * d * p)  # p messages to decode
        assert tp["decode_s"] == pytest.approx(2e-9 * d * 2)  # twice a vector, at any p
        assert tp["encode_s"] == pytest.approx(1e-9 * d * (1 + 1 / p))
        assert tp["bytes"] == pytest.approx(2 * (p - 1) / p * (d / 8 + 64 + p * HEADER))
        assert ag["bytes"] == pytest.approx((p - 1) * (d / 8 + 64))


def test_crossover_where_allgather_overtakes_two_phase() -> None:
    # no codec cost, no headers: two-phase - allgather = (p-1) (alpha - beta m (p-2)/p), so
    # with alpha / (beta m) = 0.9 two-phase wins once (p-2)/p > 0.9: from p = 32 (16: 0.875)
    m1 = ALPHA / (0.9 * BETA)
    data = rows(schemes=("allgather", "two-phase"), ps=(2, 4), logd=(16, 17), noise=0.0,
                enc=0.0, dec=0.0, msg=lambda d: m1 * d / 2 ** 16, header=0.0)
    fits = model.fit(data)
    assert {f.status for f in fits} == {"ok"}
    proj = model.project(data, fits)
    (c,) = model.crossovers(proj, d=1 << 16)
    assert (c["slower"], c["faster"], c["p"], c["before"]) == ("allgather", "two-phase", 32, 16)
    # twice the message: alpha / (beta m) = 0.45, two-phase wins from p = 4 (measured)
    (c2,) = model.crossovers(proj, d=1 << 17)
    assert (c2["p"], c2["before"]) == (4, 2)
    # never: pure latency, two-phase takes (p - 1) + lg p steps against lg p
    lat = rows(schemes=("allgather", "two-phase"), ps=(2, 4), logd=(16, 17), noise=0.0,
               enc=0.0, dec=0.0, beta=0.0)
    (c3,) = [c for c in model.crossovers(model.project(lat, model.fit(lat)), d=1 << 16)]
    assert c3["p"] is None and c3["p_max"] == 1024


def test_crossover_with_the_fp32_baseline_compares_every_compressor() -> None:
    data = rows(schemes=("allgather", "allreduce-fp32"), noise=0.0)
    data += [dict(r, spec="qsgd") for r in data if r["scheme"] == "allgather"]
    cross = model.crossovers(model.project(data, model.fit(data)), d=1 << 20)
    assert sorted(c["compressor"] for c in cross) == ["qsgd", "sign"]
    assert all(c["faster"] == "allreduce-fp32" for c in cross)


def test_single_p_is_flagged_and_one_point_is_under_determined() -> None:
    (f,) = model.fit(rows(schemes=("allgather",), ps=(4,)))
    assert f.status == "single p" and "p dependence is the model's" in f.note
    assert f.alpha_s == pytest.approx(ALPHA, rel=0.05)  # from the d dependence alone
    (g,) = model.fit(rows(schemes=("allgather",), ps=(4,), logd=(12,)))
    assert g.status == "under-determined" and not g.determined
    assert math.isnan(g.alpha_s) and math.isnan(g.beta_s_per_byte) and g.n_points == 1
    assert model.project(rows(schemes=("allgather",), ps=(4,), logd=(12,)), [g]) == []


def test_compressors_measured_once_each_are_projected_with_the_pooled_fit() -> None:
    # one (p, d) each, different message sizes: only the pooled fit separates alpha and beta
    data = (rows(schemes=("allgather",), ps=(2,), logd=(16,), spec="a", msg=lambda d: 100.0,
                 noise=0.0)
            + rows(schemes=("allgather",), ps=(2,), logd=(16,), spec="b",
                   msg=lambda d: 1e6, noise=0.0))
    fits = model.fit(data)
    own = [f for f in fits if f.compressor != model.POOLED]
    (pooled,) = [f for f in fits if f.compressor == model.POOLED]
    assert [f.status for f in own] == ["under-determined"] * 2
    assert pooled.status == "single p" and pooled.n_points == 2
    assert pooled.alpha_s == pytest.approx(ALPHA) and pooled.beta_s_per_byte == pytest.approx(BETA)
    proj = model.project(data, fits)
    assert {r["fit"] for r in proj} == {"pooled"} and {r["compressor"] for r in proj} == {"a", "b"}


def test_machines_are_fitted_apart_and_one_rank_is_left_out() -> None:
    data = rows(schemes=("allgather",), machine="A") + rows(
        schemes=("allgather",), machine="B", alpha=2 * ALPHA)
    data.append(dict(data[0], nprocs=1, comm_median_s=1.0))  # no communication on one rank
    fits = {f.machine: f for f in model.fit(data)}
    assert fits["A"].alpha_s == pytest.approx(ALPHA, rel=0.03)
    assert fits["B"].alpha_s == pytest.approx(2 * ALPHA, rel=0.03)
    assert fits["A"].n_points == 24


def test_every_registered_scheme_has_a_model() -> None:
    from hpcq.collectives import SCHEMES

    assert set(SCHEMES.names()) <= set(model.ALGORITHMS)
    for name, alg in model.ALGORITHMS.items():
        assert alg.steps(1) == 0 and alg.volume(1, 1000.0, 256) == 0, name
        assert alg.steps(8) > 0 and alg.volume(8, 1000.0, 256) > 0, name


def test_codec_costs_come_from_the_nearest_measured_p() -> None:
    data = rows(schemes=("allgather",), ps=(2, 16), noise=0.0)
    for r in data:  # the 16-rank run decodes 3x slower per message than the model's D says
        if r["nprocs"] == 16:
            r["decode_median_s"] *= 3
    proj = {(r["p"], r["d"]): r for r in model.project(data, model.fit(data))}
    d = 1 << 20
    assert proj[(2, d)]["decode_s"] == pytest.approx(2e-9 * d * 2)  # measured
    assert proj[(4, d)]["decode_s"] == pytest.approx(2e-9 * d * 4)  # from p = 2
    assert proj[(16, d)]["decode_s"] == pytest.approx(3 * 2e-9 * d * 16)  # measured
    assert proj[(1024, d)]["decode_s"] == pytest.approx(3 * 2e-9 * d * 1024)  # from p = 16


def test_oversubscribed_runs_are_left_out() -> None:
    data = rows(schemes=("allgather",)) + [
        dict(r, cpu_binding="oversubscribed", comm_median_s=100 * r["comm_median_s"])
        for r in rows(schemes=("allgather",), ps=(32,))]
    (f,) = model.fit(data)
    assert f.p_values == (2, 4, 8, 16) and f.alpha_s == pytest.approx(ALPHA, rel=0.03)
    assert not model.usable(data[-1]) and model.usable(data[0])
