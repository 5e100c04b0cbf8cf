"""The node-aware two-level scheme: parameters, exactness against tests/naive.py on real ranks,
its bound and cost terms, and the two-link-class model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hpcq.collectives import BoundInputs, Session, scheme
from hpcq.compressors import compressor


def test_parameters_are_checked() -> None:
    s = scheme("two-level:outer=two-phase,inner=bf16,ranks_per_node=2")
    assert s.outer.name == "two-phase" and s.spec == (
        "two-level:outer=two-phase,inner=bf16,ranks_per_node=2")
    with pytest.raises(ValueError, match="outer='nope' is not a compressed scheme"):
        scheme("two-level:outer=nope")
    with pytest.raises(ValueError, match="outer=allreduce-fp32 is an uncompressed baseline"):
        scheme("two-level:outer=allreduce-fp32")
    with pytest.raises(ValueError, match="inner"):
        scheme("two-level:inner=fp16")
    with pytest.raises(ValueError, match="ranks_per_node"):
        scheme("two-level:ranks_per_node=-1")
    with pytest.raises(ValueError, match="needs a compressor"):
        scheme("two-level").check(None)


def test_one_rank_is_the_outer_scheme() -> None:
    from mpi4py import MPI

    x = np.random.default_rng(0).standard_normal(999).astype(np.float32)
    comp = compressor("qsgd:bits=4")
    for inner in ("fp32", "bf16"):
        s = scheme(f"two-level:inner={inner}")
        with Session(MPI.COMM_SELF) as session:
            got, st = s(MPI.COMM_SELF, x, comp, seed=3, step=1, session=session)
            want = scheme("allgather")(MPI.COMM_SELF, x if inner == "fp32" else
                                       _bf16(x), comp, seed=3, step=1)[0]
            assert np.array_equal(got, want)
            assert st.inter_s > 0 and st.intra_s >= 0 and st.inter_bytes == st.bytes_sent


def _bf16(x: np.ndarray) -> np.ndarray:
    from naive import bf16_round

    return bf16_round(x)


@pytest.mark.mpi
@pytest.mark.parametrize(("n", "k"), [(4, 2), (2, 1), (2, 2), (3, 3)])
def test_equals_serial_reference(mpirun, tmp_path: Path, n: int, k: int) -> None:
    out = tmp_path / "tl.json"
    mpirun(n, "257", str(k), str(out), payload="twolevel_check.py", timeout=240)
    report = json.loads(out.read_text())
    assert len(report) == 27
    for key, r in report.items():
        shard = " shard " in key
        # a Reduce_scatter of 3 ranks may add in another order than the serial sum
        exact = not shard or k <= 2
        assert (r["max_abs_diff"] == 0.0 if exact else r["max_abs_diff"] < 1e-5), key
        assert r["same_on_all_ranks"], key
        assert r["leader"] == [i % k == 0 for i in range(n)], key
        assert r["inter"] == [shard or i % k == 0 for i in range(n)], key
        assert r["intra_positive"], key


@pytest.mark.mpi
def test_ranks_per_node_must_divide(mpirun) -> None:
    done = mpirun(3, "bench", "collectives", "--sizes", "8", "--compressors", "qsgd:bits=4",
                  "--schemes", "two-level:ranks_per_node=2", "--iterations", "1",
                  "--warmup", "0", expect=None)
    assert done.returncode != 0
    assert "ranks_per_node=2 does not divide the 3 ranks" in done.stderr


def _inputs(p: int, d: int) -> tuple[list[np.ndarray], BoundInputs]:
    rng = np.random.default_rng(1)
    xs = [(rng.standard_normal(d) + 1.0).astype(np.float32) for _ in range(p)]
    m = np.mean(np.array(xs, dtype=np.float64), axis=0)
    a = np.sum(np.abs(np.array(xs, dtype=np.float64)), axis=0)
    return xs, BoundInputs(tuple(float(np.dot(x, x)) for x in xs), float(m @ m),
                           float(a.sum()), float(a @ a))


def test_bound_composes_outer_and_inner() -> None:
    comp, d, p = compressor("qsgd:bits=4"), 4096, 4
    _, inputs = _inputs(p, d)
    flat = scheme("allgather").bound(comp, d, p, inputs)
    one_node = scheme("allgather").bound(comp, d, 1, BoundInputs(
        (sum(math.sqrt(s) for s in inputs.sq_norms) ** 2 / p ** 2,), inputs.mean_sq))
    k2 = scheme("two-level:ranks_per_node=2").bound(comp, d, p, inputs)
    k1 = scheme("two-level:ranks_per_node=1").bound(comp, d, p, inputs)
    detected = scheme("two-level").bound(comp, d, p, inputs)
    assert flat is not None and one_node is not None
    assert k1 is not None and k2 is not None and detected is not None
    # one rank a node: the flat bound plus the (tiny) fp32 rounding of the inner Reduce
    assert flat <= k1 <= flat * (1 + 1e-5)
    # fewer leaders average fewer independent errors: a larger bound, up to one node's
    assert k1 < k2 < detected and math.isclose(detected, one_node, rel_tol=1e-5)
    bf16 = scheme("two-level:inner=bf16,ranks_per_node=2").bound(comp, d, p, inputs)
    assert bf16 is not None and bf16 > k2
    two_phase = scheme("two-level:outer=two-phase,ranks_per_node=2").bound(comp, d, p, inputs)
    assert two_phase is not None and two_phase > k2


def test_bound_holds_on_a_serial_run() -> None:
    from naive import two_level_mean

    comp, d, p = compressor("qsgd:bits=2"), 1 << 14, 4
    xs, inputs = _inputs(p, d)
    m = np.mean(np.array(xs, dtype=np.float64), axis=0)
    for outer in ("allgather", "two-phase"):
        b = scheme(f"two-level:outer={outer},ranks_per_node=2").bound(comp, d, p, inputs)
        errs = [float(np.sum((two_level_mean(outer, comp, xs, s, 0, 2) - m) ** 2) / (m @ m))
                for s in range(8)]
        assert b is not None and 0 < np.mean(errs) <= b


def test_shard_mode_facts() -> None:
    """mode=shard: the outer scheme's lengths and bound are its shards', its node part moves
    half of what the leader's Reduce + Bcast move."""
    comp, d, p = compressor("qsgd:bits=4"), 4097, 4
    _, inputs = _inputs(p, d)
    leader = scheme("two-level:ranks_per_node=2")
    shard = scheme("two-level:ranks_per_node=2,mode=shard")
    assert leader.codec_lengths(d, p) == [d] and shard.codec_lengths(d, p) == [2048, 2049]
    b_leader, b_shard = leader.bound(comp, d, p, inputs), shard.bound(comp, d, p, inputs)
    assert b_leader is not None and b_shard is not None and 0 < b_shard <= b_leader
    c, o = shard.cost, leader.cost
    assert c.two_level and c.steps(4) == o.steps(4)
    assert c.intra_volume is not None and o.intra_volume is not None
    assert c.intra_volume(4, 4.0 * d, d) == pytest.approx(o.intra_volume(4, 4.0 * d, d) / 2)
    assert "Reduce_scatter" in c.mpi and c.text[2].endswith("/ k")
    with pytest.raises(ValueError, match="mode"):
        scheme("two-level:mode=tree")


def test_shard_bound_holds_on_a_serial_run() -> None:
    from naive import two_level_mean

    comp, d, p = compressor("qsgd:bits=2"), (1 << 14) + 3, 4
    xs, inputs = _inputs(p, d)
    m = np.mean(np.array(xs, dtype=np.float64), axis=0)
    for outer in ("allgather", "two-phase"):
        b = scheme(f"two-level:outer={outer},ranks_per_node=2,mode=shard").bound(comp, d, p,
                                                                                 inputs)
        errs = [float(np.sum((two_level_mean(outer, comp, xs, s, 0, 2, mode="shard") - m) ** 2)
                      / (m @ m)) for s in range(8)]
        assert b is not None and 0 < np.mean(errs) <= b


def test_cost_has_two_link_classes() -> None:
    c = scheme("two-level:outer=two-phase,inner=bf16").cost
    o = scheme("two-phase").cost
    assert c.two_level and not o.two_level
    assert c.steps(4) == o.steps(4) and c.volume(4, 100.0, 8) == o.volume(4, 100.0, 8)
    assert c.intra_steps is not None and c.intra_volume is not None
    assert c.intra_volume(1, 400.0, 100) == 0.0
    assert c.intra_volume(4, 400.0, 100) == pytest.approx(1.5 * (200 + 400))
    assert c.nodes(16, 4) == 4 and c.nodes(2, 4) == 1


def _rows(alpha: float, beta: float, alpha_in: float, beta_in: float) -> list[dict]:
    """Synthetic two-level allgather rows (4-bit messages) at k = 2 and 4, several d."""
    from hpcq.collectives.scheme import lg

    out = []
    for p, k in ((4, 2), (8, 2), (16, 4)):
        for logd in (16, 18, 20):
            d = 1 << logd
            m = d / 2.0
            nodes = p // k
            inter = alpha * lg(nodes) + beta * (nodes - 1) * m
            c = scheme("two-level").cost
            intra = alpha_in * c.intra_steps(k) + beta_in * c.intra_volume(k, 4.0 * d, d)
            out.append({"machine": "m", "scheme": "two-level", "spec": "qsgd:bits=4",
                        "nprocs": p, "d": d, "comm_median_s": inter + intra,
                        "intra_median_s": intra, "inter_wire_bytes_per_leader": m,
                        "ranks_per_node": k, "wire_bytes_per_rank": m,
                        "encode_median_s": 1e-3, "decode_median_s": 2e-3})
    return out


def test_model_fits_both_link_classes_and_projects() -> None:
    from hpcq.analysis import model

    rows = _rows(alpha=2e-5, beta=8e-9, alpha_in=1e-6, beta_in=2e-10)
    fits = model.fit(rows)
    inter = next(f for f in fits if f.scheme == "two-level" and f.compressor == "qsgd:bits=4")
    intra = next(f for f in fits if f.scheme == model.INTRA)
    assert inter.status == "ok" and intra.status == "ok"
    assert inter.alpha_s == pytest.approx(2e-5, rel=1e-6)
    assert inter.beta_s_per_byte == pytest.approx(8e-9, rel=1e-6)
    assert intra.alpha_s == pytest.approx(1e-6, rel=1e-6)
    assert intra.beta_s_per_byte == pytest.approx(2e-10, rel=1e-6)
    proj = model.project(rows, fits)
    big = [r for r in proj if r["p"] == 1024 and r["d"] == 1 << 20]
    assert big and all(r["extrapolated"] for r in big)
    for r in proj:
        if r["measured_total_s"] is not None:
            assert r["total_s"] == pytest.approx(r["measured_total_s"], rel=1e-6)


def test_model_assumes_bandwidth_only_from_one_point() -> None:
    from hpcq.analysis import model

    rows = [r for r in _rows(2e-5, 8e-9, 1e-6, 2e-10) if r["nprocs"] == 4][:1]
    intra = next(f for f in model.fit(rows) if f.scheme == model.INTRA)
    assert intra.status == "assumed" and intra.alpha_s == 0.0 and intra.beta_s_per_byte > 0


def test_shard_peer_groups_draw_their_own_streams() -> None:
    """Peer group j compresses with shard_seed(seed, j): group 0 keeps the seed, the others
    differ from it and from every hop or second-compression seed (seed + h G) of a chain."""
    from hpcq.collectives.hops import hop_seed
    from hpcq.collectives.twolevel import shard_seed

    for seed in (0, 7, 2**64 - 1):
        seeds = [shard_seed(seed, j) for j in range(64)]
        assert seeds[0] == seed and len(set(seeds)) == 64
        assert all(0 <= s < 2**64 for s in seeds)
        chains = {hop_seed(seed, h) for h in range(256)}
        assert not chains & set(seeds[1:])
    # and the shards' rounding differs: equal shards of two nodes, one codec, one seed
    from naive import two_level_mean

    comp, half = compressor("qsgd:bits=2"), 4096
    v = np.random.default_rng(3).standard_normal(half).astype(np.float32)
    xs = [np.concatenate([v, v]) for _ in range(4)]
    mean = two_level_mean("allgather", comp, xs, 5, 0, 2, mode="shard")
    assert not np.array_equal(mean[:half], mean[half:])
