"""The iteration-time model with overlap (hpcq.analysis.iteration) on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpcq.analysis.iteration import (
    Part,
    breakeven,
    compute_seconds,
    rate_text,
    ready_times,
    schedule,
)
from hpcq.collectives import SCHEMES


def test_one_bucket_waits_for_the_whole_backward() -> None:
    # the only bucket is ready when the backward ends (9 s), then encode+comm+decode = 6 s
    t = schedule([10], [(1.0, 2.0, 3.0)], compute_s=9.0, optimizer_s=0.5)
    assert t.ready_s == (9.0,) and t.start_s == (9.0,) and t.end_s == (15.0,)
    assert t.iteration_s == 15.5 and t.exposed_s == 6.0 and t.comm_s == 6.0


def test_ready_times_split_the_backward_by_parameters() -> None:
    # forward 1 s, backward 2 s; buckets of 1 and 3 parameters: 1/4 and all of the backward
    assert np.allclose(ready_times([1, 3], 3.0), [1.5, 3.0])
    with pytest.raises(ValueError, match="compute time"):
        ready_times([1], -1.0)
    with pytest.raises(ValueError, match="elements"):
        ready_times([], 1.0)


def test_compute_bound_hides_all_but_the_last_bucket() -> None:
    # ready at 2 and 3; 0.1 s each: bucket 0 done at 2.1 (hidden), bucket 1 at 3.1
    t = schedule([1, 1], [(0.0, 0.1, 0.0)] * 2, compute_s=3.0)
    assert t.start_s == (2.0, 3.0)
    assert t.iteration_s == pytest.approx(3.1) and t.exposed_s == pytest.approx(0.1)


def test_comm_bound_queues_buckets_on_one_stream() -> None:
    # bucket 0: 2 -> 7; bucket 1 is ready at 3 but waits for the stream: 7 -> 12
    t = schedule([1, 1], [(1.0, 3.0, 1.0)] * 2, compute_s=3.0)
    assert t.start_s == (2.0, 7.0) and t.end_s == (7.0, 12.0)
    assert t.iteration_s == 12.0 and t.exposed_s == 9.0
    with pytest.raises(ValueError, match="costs"):
        schedule([1, 1], [(0.0, 1.0, 0.0)], compute_s=1.0)


def test_breakeven_where_the_codec_and_the_reference_cross() -> None:
    # reference 8e9/r s, codec 0.5 + 2e9/r s: equal at r = 12e9 bit/s; codec wins below
    rate, kind = breakeven(lambda r: 0.5 + 2e9 / r, lambda r: 8e9 / r)
    assert kind == "crossing" and rate == pytest.approx(12e9, rel=1e-6)
    assert breakeven(lambda r: 1.0, lambda r: 0.5) == (None, "never")
    assert breakeven(lambda r: 0.5, lambda r: 1.0)[1] == "always"
    rate, kind = breakeven(lambda r: 2e9 / r, lambda r: 0.5 + 1e9 / r)  # wins on fast links
    assert kind == "only above" and rate == pytest.approx(2e9, rel=1e-6)


def test_breakeven_of_a_whole_iteration_hand_computed() -> None:
    # one bucket of 1e9 elements, compute 3 s: fp32 sends 4 bytes/elem, the codec 0.5 bytes/elem
    # plus 0.075 s of encode (0.05) and decode (0.025, D(2)/D(2) = 1 times the measured); at
    # p = 2 the allreduce moves n bytes and the allgather m:
    # 3 + 8*4e9/r = 3 + 0.075 + 8*0.5e9/r  ->  r = 8*3.5e9/0.075 bit/s
    ar, ag = SCHEMES.get("allreduce-fp32").cost, SCHEMES.get("allgather").cost
    fp32 = Part("allreduce-fp32", "fp32", ar, 0.0, 0.0, 4.0, 0.0, 2)
    codec = Part("allgather", "c", ag, 0.0, 0.0, 0.5, 0.0, 2, (10 ** 9,), (0.05,), (0.025,))
    n = 10 ** 9

    def it(part: Part) -> object:
        return lambda r: schedule([n], [part.call(n, 2, r)], 3.0).iteration_s

    rate, kind = breakeven(it(codec), it(fp32))
    assert kind == "crossing" and rate == pytest.approx(8 * 3.5e9 / 0.075, rel=1e-6)


def test_part_call_uses_the_scheme_cost_terms() -> None:
    ar = SCHEMES.get("allreduce-fp32").cost
    part = Part("allreduce-fp32", "fp32", ar, 1e-5, 1e-10, 4.0, 0.0, 2,
                (1024, 4096), (1e-6, 2e-6), (1e-6, 4e-6))
    e, c, d = part.call(4096, 8, 1e9)
    steps, vol = ar.steps(8), ar.volume(8, 4.0 * 4096, 4096)
    assert c == pytest.approx(1e-5 * steps + (1e-10 + 8e-9) * vol)
    assert e == pytest.approx(2e-6) and d == pytest.approx(4e-6)
    assert part.call(8192, 2, 1e9)[0] == pytest.approx(4e-6)  # proportional above the range
    assert part.call(2048, 2, 1e9)[0] == pytest.approx(math.sqrt(2) * 1e-6)  # log-log inside
    assert part.call(0, 2, 1e9) == (0.0, 0.0, 0.0)


def test_part_call_uses_its_measured_comm_at_the_measured_ranks_and_link() -> None:
    ar = SCHEMES.get("allreduce-fp32").cost
    part = Part("allreduce-fp32", "fp32", ar, 1e-5, 1e-10, 4.0, 0.0, 2,
                (1024, 4096), (0.0, 0.0), (0.0, 0.0), (), (1e-3, 4e-3), 1e9)

    def fitted(n: float, p: int, r: float) -> float:
        return 1e-5 * ar.steps(p) + (1e-10 + 8 / r) * ar.volume(p, 4.0 * n, int(n))

    assert part.call(1024, 2, 1e9)[1] == pytest.approx(1e-3)  # the measurement itself
    assert part.call(2048, 2, 1e9)[1] == pytest.approx(2e-3)  # log-log between
    # beyond the measured lengths: the nearest measurement scaled as the fit scales
    assert part.call(8192, 2, 1e9)[1] == pytest.approx(
        4e-3 * fitted(8192, 2, 1e9) / fitted(4096, 2, 1e9))
    assert part.call(512, 2, 1e9)[1] == pytest.approx(
        1e-3 * fitted(512, 2, 1e9) / fitted(1024, 2, 1e9))
    # another rank count over the same link: the measurement scaled as the fit scales in p
    assert part.call(2048, 4, 1e9)[1] == pytest.approx(
        2e-3 * fitted(2048, 4, 1e9) / fitted(2048, 2, 1e9))
    # another link: the fit
    assert part.call(2048, 2, 1e10)[1] == pytest.approx(fitted(2048, 2, 1e10))


def test_compute_seconds() -> None:
    assert compute_seconds(1e9, compute_ms=120)[0] == pytest.approx(0.12)
    s, how = compute_seconds(4e9, flops=96e12, batch=32)
    assert s == pytest.approx(4e9 * 2 * 32 * 3 / 96e12) and "FLOP/s" in how
    for kw, match in (({"compute_ms": 0}, "compute-ms"), ({"flops": -1.0}, "flops"),
                      ({}, "compute-ms or --flops")):
        with pytest.raises(ValueError, match=match):
            compute_seconds(1e9, **kw)
    with pytest.raises(ValueError, match="MAC"):
        compute_seconds(None, flops=1e12)
    assert rate_text(1.5e9) == "1.5 Gbit/s" and rate_text(None) == "-"
