"""Model workloads in the collectives benchmark: plans, validation, one rank exact, two ranks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hpcq.bench import workload as bw
from hpcq.compressors import compressor
from hpcq.config import CollectivesTable
from hpcq.store import read_cases
from hpcq.workloads import gradient_source
from hpcq.workloads import workload as get_workload


def _table(**kw):
    base = dict(workload="tiny", schemes=("allreduce-fp32", "allgather"),
                compressors=("qsgd:bits=4",), min_size=0, iterations=2, warmup=1)
    return CollectivesTable(**{**base, **kw})


def _case(**kw):
    cases, _ = bw.expand(_table(**kw), seed=3)
    return cases


# ------------------------------------------------------------------ expand and plan
def test_expand_baselines_once_then_schemes_by_compressor() -> None:
    cases = _case(schemes=("allgather", "allreduce-fp32", "two-phase"),
                  compressors=("qsgd:bits=4", "sign"))
    assert [c.label for c in cases] == [
        "tiny allreduce-fp32", "tiny allgather qsgd:bits=4", "tiny allgather sign",
        "tiny two-phase qsgd:bits=4", "tiny two-phase sign"]
    keys = [c.params() for c in cases]
    assert all(k["kind"] == "workload" and k["buckets"] == "ddp:first=1.0,cap=25.0"
               for k in keys)
    assert len({str(k) for k in keys}) == len(keys)


@pytest.mark.parametrize(("kw", "match"), [
    ({"workload": "resnet51"}, r"workload: unknown workload 'resnet51'; valid: .*resnet50"),
    ({"buckets": "ddp:cap=0"}, r"buckets: .*cap"),
    ({"buckets": "lumpy"}, r"buckets: unknown bucket rule 'lumpy'"),
    ({"overrides": ("fc.*",)}, r"override 'fc.\*': expected PATTERN=SPEC"),
    ({"min_size": -1}, r"min_size"),
    ({"gradients": "cauchy"}, r"gradients: unknown gradient distribution 'cauchy'"),
    ({"gradients": "file:/nonexistent/g.npz"}, r"gradients: .*g.npz"),
    ({"schemes": ("ring-of-fire",)}, r"schemes: unknown scheme 'ring-of-fire'"),
    ({"schemes": ("ps-reduce",)}, r"schemes: scheme ps-reduce cannot do qsgd"),
    ({"schemes": ("allgather",), "overrides": ("*=nope:x=1",)}, r"unknown compressor 'nope'"),
])
def test_expand_names_the_bad_key(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        bw.expand(_table(**kw), seed=0)


def test_plan_puts_every_tensor_once_codec_groups_first() -> None:
    case = _case(min_size=64, overrides=("*.bias=none", "fc2.weight=sign"),
                 schemes=("allgather",))[0]
    lay = get_workload("tiny").layout
    seen = []
    for groups in bw.plan(case):
        assert groups[0].lo == 0 and all(a.hi == b.lo for a, b in zip(groups, groups[1:]))
        specs = [g.spec for g in groups]
        assert None not in specs[:-1]  # the uncompressed group, if any, comes last
        for g in groups:
            assert g.hi - g.lo == sum(t.size for t in g.tensors)
            for t in g.tensors:
                want = case.policy.codec_for(t, case.spec)
                assert g.spec == want
            seen += [t.name for t in g.tensors]
    assert sorted(seen) == sorted(lay.names)


def test_baseline_plan_sends_whole_buckets() -> None:
    case = _case(schemes=("allreduce-bf16",), min_size=10**9)[0]
    for groups in bw.plan(case):
        assert len(groups) == 1 and groups[0].spec is None


# ------------------------------------------------------------------ one rank, exact
def test_one_rank_tensor_errors_equal_a_serial_computation() -> None:
    from mpi4py import MPI

    case = _case(schemes=("allgather",), compressors=("qsgd:bits=4,bucket=64",),
                 overrides=("*.bias=none",))[0]
    attrs, data, row = bw.run_case(MPI.COMM_SELF, case)
    lay = get_workload("tiny").layout
    src = gradient_source("normal", seed=3, layout=lay)
    comp = compressor("qsgd:bits=4,bucket=64")
    step = case.warmup + case.iterations  # the validation call
    err, ref = np.zeros(len(lay)), np.zeros(len(lay))
    index = {t.name: i for i, t in enumerate(lay)}
    for groups in bw.plan(case):
        for g in groups:
            x = np.concatenate([_draw(src, t) for t in g.tensors])
            y = x if g.spec is None else comp.decode(comp.encode(x, seed=3, step=step))
            lo = 0
            for t in g.tensors:
                d = y[lo:lo + t.size].astype(np.float64) - x[lo:lo + t.size]
                err[index[t.name]] = d @ d
                ref[index[t.name]] = x[lo:lo + t.size].astype(np.float64) @ x[lo:lo + t.size]
                lo += t.size
    np.testing.assert_allclose(data["tensor_nmse"][0], err / ref, rtol=1e-9, atol=1e-15)
    assert attrs["nmse"] == pytest.approx(err.sum() / ref.sum(), rel=1e-9)
    bias = [i for i, t in enumerate(lay) if t.name.endswith(".bias")]
    assert bias and all(data["tensor_nmse"][0][i] == 0 for i in bias)  # sent as fp32, p = 1
    assert attrs["uncompressed_share"] == pytest.approx(
        sum(lay.tensors[i].size for i in bias) / lay.size)
    assert attrs["consistent"] and attrs["workload"] == "tiny" and row["label"]
    assert data["iteration_s"][0].shape == (case.iterations,)
    assert int(data["bucket_elements"][0].sum()) == lay.size


def _draw(src, t):
    out = np.empty(t.size, dtype=np.float32)
    src.fill(t, out, rank=0, step=0)
    return out


def test_format_table_has_a_block_per_workload() -> None:
    from mpi4py import MPI

    rows = [bw.run_case(MPI.COMM_SELF, c)[2] for c in _case()]
    text = bw.format_table(rows, nprocs=1)
    assert "tiny: 3,658 parameters in 8 tensors" in text
    assert "allreduce-fp32" in text and "allgather qsgd:bits=4" in text


# ------------------------------------------------------------------ real ranks
@pytest.mark.mpi
def test_two_ranks_cli_writes_workload_cases(mpirun, tmp_path) -> None:
    out = tmp_path / "w.h5"
    mpirun(2, "bench", "collectives", "--workload", "tiny", "--min-size", "0",
           "--schemes", "allreduce-fp32", "allgather", "two-phase", "--compressors",
           "qsgd:bits=4", "sign", "--iterations", "2", "--warmup", "1", "-o", str(out))
    cases = read_cases(out, kind="workload")
    assert [c["label"] for c in cases] == [
        "tiny allreduce-fp32", "tiny allgather qsgd:bits=4", "tiny allgather sign",
        "tiny two-phase qsgd:bits=4", "tiny two-phase sign"]
    for c in cases:
        assert c["nprocs"] == 2 and c["consistent"]
        assert c["bucket_s"].shape == (2, c["n_buckets"], 2)
        assert c["peak_rss_bytes"].shape == (2,) and c["peak_rss_max_bytes"] > 0
    fp32, q4 = cases[0], cases[1]
    assert fp32["bits_per_parameter"] == 32.0 and fp32["nmse"] < 1e-12
    assert fp32["uncompressed_share"] == 1.0 and q4["uncompressed_share"] == 0.0
    assert 4.0 < q4["bits_per_parameter"] < 6.0 and 0 < q4["nmse"] < 5.0


@pytest.mark.mpi
def test_bad_workload_is_one_line(mpirun) -> None:
    done = mpirun(2, "bench", "collectives", "--workload", "resnet51", expect=2)
    assert done.stderr.strip().splitlines() == [
        "hpcq: error: --workload: unknown workload 'resnet51'; valid: bert-base, gpt2, "
        "llama-7b, resnet50, tiny, file:PATH"]
    done = mpirun(2, "bench", "collectives", "--workload", "tiny", "--buckets", "ddp:cap=0",
                  expect=2)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--buckets" in lines[0] and "cap" in lines[0]


def test_table_reads_like_a_job_file() -> None:
    from hpcq.config import job_from_tables

    args = SimpleNamespace(workload="gpt2", buckets="fused:mib=64", min_size=0,
                           overrides=["*.bias=none"], gradients="student-t:df=3",
                           compressors=None, schemes=None, sizes="16", iterations=3,
                           warmup=1, check=False, seed=5)
    from hpcq.bench.collectives_table import to_job

    job = to_job(args)
    (table,) = job.collectives
    assert table.workload == "gpt2" and table.buckets == "fused:mib=64"
    assert table.overrides == ("*.bias=none",) and job.job.seed == 5
    again = job_from_tables("x", {"collectives": {"workload": "gpt2"}})
    assert again.collectives[0].min_size == 4096


def _saved(tmp_path, **change):
    """The tiny workload's gradient saved as .npz (one array per tensor), with ``change``."""
    lay = get_workload("tiny").layout
    arrays = {t.name: np.ones(t.shape, dtype=np.float32) for t in lay}
    arrays.update(change)
    path = tmp_path / "g.npz"
    np.savez(path, **arrays)
    return path, lay


def test_file_gradients_run_and_bad_arrays_are_named(tmp_path) -> None:
    from mpi4py import MPI

    path, lay = _saved(tmp_path)
    (case,) = _case(gradients=f"file:{path}", schemes=("allreduce-fp32",))
    attrs, data, _ = bw.run_case(MPI.COMM_SELF, case)
    assert attrs["nmse"] == 0.0 and attrs["parameters"] == lay.size
    name = lay.tensors[0].name
    bad = np.ones(lay.tensors[0].shape, dtype=np.float32)
    bad.flat[3] = np.inf
    ints = np.ones(lay.tensors[0].shape, np.int64)
    for change, match in (({name: bad}, rf"g.npz: array {name} holds a non-finite value"),
                          ({name: ints}, rf"array {name} has dtype int64"),
                          ({name: np.ones(7, np.float32)}, rf"array {name} has shape \(7,\)")):
        p, _ = _saved(tmp_path, **change)
        with pytest.raises(ValueError, match=match):
            bw.expand(_table(gradients=f"file:{p}"), seed=0)
    lay_missing = {t.name: np.ones(t.shape, np.float32) for t in lay.tensors[1:]}
    p = tmp_path / "m.npz"
    np.savez(p, **lay_missing)
    with pytest.raises(ValueError, match=rf"m.npz: no array for tensor\(s\) {name}"):
        bw.expand(_table(gradients=f"file:{p}"), seed=0)
