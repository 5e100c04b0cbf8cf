"""Schemes as objects: specs, facts every consumer reads, sessions."""

from __future__ import annotations

import numpy as np
import pytest

from hpcq.collectives import SCHEMES, BoundInputs, Scheme, Session, scheme
from hpcq.collectives.scheme import style_of
from hpcq.compressors import compressor


def test_every_scheme_carries_its_facts() -> None:
    for name, s in SCHEMES.items():
        assert s.name == name and s.summary and s.spec == name
        assert len(s.cost.text) == 4 and s.cost.mpi
        for p in (2, 3, 16, 1024):
            assert s.cost.steps(p) >= 0 and s.cost.volume(p, 1000.0, 250) >= 0
            assert s.cost.encodes(p) > 0 and s.cost.decodes(p) > 0
        assert s.codec_lengths(1000, 4)
        if s.nonblocking:
            assert type(s).start is not Scheme.start
        if s.cast is not None:
            assert s.sums_in(None) == s.cast and not s.takes_feedback
        if not s.takes_compressor:  # it names what it sends, a buildable spec
            assert compressor(str(s.sends)).spec


def test_spec_parsing_like_compressors() -> None:
    assert scheme("allgather") is SCHEMES.get("allgather")
    assert scheme(" two-phase ") is SCHEMES.get("two-phase")
    with pytest.raises(ValueError, match="unknown scheme 'ring-of-fire'; valid: allgather"):
        scheme("ring-of-fire")
    with pytest.raises(ValueError, match=r"scheme allgather: unknown parameter\(s\) chunks"):
        scheme("allgather:chunks=4")
    with pytest.raises(ValueError, match="expected key=value"):
        scheme("allgather:chunks")
    with pytest.raises(ValueError, match="non-empty string"):
        scheme("")


def test_check_names_what_a_scheme_carries() -> None:
    with pytest.raises(ValueError, match="scheme allreduce-fp32 always sends fp32"):
        scheme("allreduce-fp32").check(compressor("sign"))
    with pytest.raises(ValueError, match="scheme two-phase needs a compressor"):
        scheme("two-phase").check(None)
    with pytest.raises(ValueError, match="MPI can only sum plain fp32, fp16, bf16"):
        scheme("ps-reduce").check(compressor("qsgd:bits=4"))


def test_bounds_come_from_the_scheme() -> None:
    from hpcq.bench import guarantees

    inputs = BoundInputs((4.0, 4.0), 4.0, 8.0, 8.0)
    comp = compressor("qsgd:bits=4")
    for name in ("allgather", "two-phase", "ps", "ps-compressed"):  # the benchmark asks here
        assert guarantees.scheme_bound(scheme(name), comp, 1000, 2, inputs) == \
            scheme(name).bound(comp, 1000, 2, inputs)
    assert scheme("allreduce-fp32").bound(None, 8, 2, inputs) == guarantees.cast_bound(
        "allreduce-fp32", "fp32", 2, 8, 8.0, 8.0, 4.0)
    assert scheme("mpi-allreduce").bound(None, 8, 2, inputs) is None
    assert scheme("two-phase").codec_lengths(10, 3) == [3, 4]


def test_model_and_figures_read_the_schemes() -> None:
    from hpcq.analysis import model

    for name, s in SCHEMES.items():  # a scheme with parameters may build its Cost per call
        cost = model.algorithm(name)
        assert cost is not None and (cost.mpi, cost.text) == (s.cost.mpi, s.cost.text)
    assert model.algorithm("no-such-scheme") is None
    assert style_of("allgather", ("#111111",), "o") == SCHEMES.get("allgather").style
    assert style_of("newer-scheme", ("#111111",), "o")[0] == "#111111"


def test_session_reuses_buffers_and_keeps_state() -> None:
    with Session() as s:
        a = s.buffer("x", 100)
        b = s.buffer("x", 60)
        assert np.shares_memory(a, b) and b.shape == (60,)
        c = s.buffer("x", 200)  # grows
        assert c.shape == (200,) and not np.shares_memory(a, c)
        assert s.buffer("x", 10, np.uint16).dtype == np.uint16
        s.slot("powersgd", "fc.weight")["q"] = 1
        assert s.slot("powersgd", "fc.weight") == {"q": 1}
        made = []
        assert s.feedback("ef", lambda: made.append(1) or "mem") == "mem"
        assert s.feedback("ef", lambda: made.append(1) or "other") == "mem" and made == [1]
        assert s.nbytes() > 0
    assert s.nbytes() == 0 and s.slot("powersgd", "fc.weight") == {}


def test_baseline_writes_into_out_and_session() -> None:
    from mpi4py import MPI

    x = np.arange(10, dtype=np.float32)
    out = np.empty(10, dtype=np.float32)
    mean, st = scheme("allreduce-fp32")(MPI.COMM_SELF, x, out=out)
    assert mean is out and np.array_equal(out, x) and st.bytes_sent == 40
    with Session() as s:
        m1, _ = scheme("allreduce-bf16")(MPI.COMM_SELF, x, session=s)
        m2, _ = scheme("allreduce-bf16")(MPI.COMM_SELF, x + 1, session=s)
        assert m1 is not None and np.shares_memory(m1, m2)  # reused, nothing allocated
    with pytest.raises(ValueError, match="out must be a contiguous float32 array of length 10"):
        scheme("allreduce-fp32")(MPI.COMM_SELF, x, out=np.empty(9, dtype=np.float32))
    total, _ = scheme("mpi-allreduce")(MPI.COMM_SELF, x)
    assert np.array_equal(total, x)


@pytest.mark.parametrize("name", ["allgather", "two-phase", "ps", "ps-compressed", "ring", "rhd",
                                  "pipelined", "two-level", "two-level:mode=shard"])
def test_compressed_schemes_decode_into_out(name: str) -> None:
    """The mean lands in ``out`` itself (no copy of a separate array), equal to the mean the
    scheme returns without it; a wrong ``out`` is one line."""
    from mpi4py import MPI

    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    comp = compressor("qsgd:bits=4")
    want, _ = scheme(name)(MPI.COMM_SELF, x, comp, seed=3, step=1)
    out = np.full(1000, np.nan, dtype=np.float32)
    mean, _ = scheme(name)(MPI.COMM_SELF, x, comp, seed=3, step=1, out=out)
    assert mean is out and np.array_equal(out, want)
    with pytest.raises(ValueError, match="out must be a contiguous float32 array of length"):
        scheme(name)(MPI.COMM_SELF, x, comp, out=np.empty(999, dtype=np.float32))
