"""Gradient sources: synthetic determinism and moments, file round trips and bad files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcq.workloads import workload
from hpcq.workloads.gradients import (
    CHUNK,
    FromFile,
    Synthetic,
    gradient_source,
    layout_from_file,
)
from hpcq.workloads.layout import Layout, Tensor


def _fill(src, lay: Layout, rank: int = 0, step: int = 0) -> np.ndarray:
    buf = np.full(lay.size, np.nan, dtype=np.float32)
    for t in lay:
        src.fill(t, buf[t.offset:t.end], rank=rank, step=step)
    return buf


def test_synthetic_is_deterministic_per_tensor_rank_step() -> None:
    lay = workload("tiny").layout
    g = gradient_source("normal", seed=7)
    a = _fill(g, lay)
    assert np.array_equal(a, _fill(gradient_source("normal", seed=7), lay))
    assert not np.array_equal(a, _fill(g, lay, rank=1))
    assert not np.array_equal(a, _fill(g, lay, step=1))
    assert not np.array_equal(a, _fill(gradient_source("normal", seed=8), lay))
    # a tensor regenerated alone, at another offset, gives the same values
    t = lay["fc1.weight"]
    alone = np.empty(t.size, dtype=np.float32)
    g.fill(Tensor(t.name, t.shape, 0), alone, rank=0, step=0)
    assert np.array_equal(alone, a[t.offset:t.end])


def test_layer_scales_are_log_uniform_and_shared_by_ranks() -> None:
    lay = workload("resnet50").layout
    g = Synthetic("normal", layer_scale=3.0)
    scales = np.array([g.scale(t) for t in lay])
    assert scales.max() <= 1.0 and scales.min() >= 1e-3
    assert scales.max() / scales.min() > 100  # spread over orders of magnitude
    u = -np.log10(scales) / 3.0
    assert abs(u.mean() - 0.5) < 0.1 and abs(u.var() - 1 / 12) < 0.03
    assert Synthetic("normal", layer_scale=0).scale(lay.tensors[0]) == 1.0
    t = lay["layer3.0.conv2.weight"]
    x = np.empty(t.size, dtype=np.float32)
    y = np.empty(t.size, dtype=np.float32)
    g.fill(t, x, rank=0, step=0)
    g.fill(t, y, rank=3, step=5)
    assert np.std(x) == pytest.approx(np.std(y), rel=0.02)
    assert np.std(x) == pytest.approx(g.scale(t), rel=0.02)


@pytest.mark.parametrize(("spec", "var", "kurt"), [
    ("normal", 1.0, 3.0),
    ("laplace", 2.0, 6.0),
    ("student-t:df=5", 5 / 3, 9.0),
    ("lognormal:sigma=0.5", float(np.exp(0.5)), float(np.exp(1.0))),  # exp(4 sigma^2)
])
def test_distribution_moments(spec: str, var: float, kurt: float) -> None:
    n = CHUNK + 300_001  # spans two chunks
    t = Tensor("w", (n,), 0)
    x = np.empty(n, dtype=np.float32)
    gradient_source(spec + (",layer_scale=0" if ":" in spec else ":layer_scale=0")).fill(
        t, x, rank=0, step=0)
    x64 = x.astype(np.float64)
    assert abs(x64.mean()) < 5 * np.sqrt(var / n)
    assert x64.var() == pytest.approx(var, rel=0.03)
    k = np.mean(x64**4) / x64.var() ** 2
    assert k == pytest.approx(kurt, rel=0.25 if spec.startswith("student") else 0.05)


@pytest.mark.parametrize(("spec", "match"), [
    ("cauchy", "unknown gradient distribution 'cauchy'; valid: normal, laplace"),
    ("student-t:df=0", "parameter df=0.0 is below its minimum"),
    ("normal:df=3", r"gradients normal: parameter\(s\) df unused"),
    ("lognormal:sigma=9", "above its maximum"),
    ("normal:scale=2", "unknown parameter"),
    ("normal:layer_scale", "expected key=value"),
    ("file:/no/such/file.npz", "no such gradient file"),
])
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as e:
        gradient_source(spec)
    assert "\n" not in str(e.value)


def test_fill_checks_out() -> None:
    g = Synthetic("normal")
    t = Tensor("w", (4, 4), 0)
    with pytest.raises(ValueError, match="out for tensor w must be"):
        g.fill(t, np.empty(16, dtype=np.float64), rank=0, step=0)
    with pytest.raises(ValueError, match="out for tensor w must be"):
        g.fill(t, np.empty(15, dtype=np.float32), rank=0, step=0)


# ---------------------------------------------------------------- files
def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"conv.weight": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
            "conv.bias": rng.standard_normal(4).astype(np.float16),
            "fc.weight": rng.standard_normal((3, 4)),  # float64
            "fc.bias": rng.standard_normal(3).astype(np.float32)}


def _save(path: Path, arrays: dict[str, np.ndarray], groups: bool = False) -> Path:
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        with h5py.File(path, "w", track_order=True) as f:
            for k, v in arrays.items():
                f.create_dataset(k.replace(".", "/") if groups else k, data=v)
    return path


@pytest.mark.parametrize(("suffix", "groups"), [(".npz", False), (".h5", False),
                                                (".h5", True)])
def test_file_round_trip(tmp_path: Path, suffix: str, groups: bool) -> None:
    arrays = _arrays()
    path = _save(tmp_path / f"g{suffix}", arrays, groups)
    lay = layout_from_file(path)
    if groups:  # HDF5 groups are iterated in creation order only with track_order
        assert sorted(lay.names) == sorted(arrays)
    else:
        assert lay.names == tuple(arrays)
    assert {t.name: t.shape for t in lay} == {k: v.shape for k, v in arrays.items()}
    src = gradient_source(f"file:{path}", layout=lay)
    buf = _fill(src, lay)
    for name, view in lay.views(buf).items():
        np.testing.assert_array_equal(view, arrays[name].astype(np.float32))
    assert workload(f"file:{path}").layout == lay


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_file_per_rank_and_step(tmp_path: Path, suffix: str) -> None:
    shared = {"w": np.zeros(3, np.float32), "b": np.zeros(2, np.float32)}
    arrays = {**shared, "rank1/w": np.ones(3, np.float32),
              "rank1/step2/w": np.full(3, 2, np.float32), "step3/b": np.full(2, 3, np.float32)}
    path = _save(tmp_path / f"g{suffix}", arrays)
    lay = Layout.from_shapes([("w", (3,)), ("b", (2,))])
    assert layout_from_file(path) == lay
    src = FromFile(path, lay)
    assert _fill(src, lay, rank=0, step=0).tolist() == [0] * 5
    assert _fill(src, lay, rank=1, step=0).tolist() == [1, 1, 1, 0, 0]
    assert _fill(src, lay, rank=1, step=2).tolist() == [2, 2, 2, 0, 0]
    assert _fill(src, lay, rank=0, step=3).tolist() == [0, 0, 0, 3, 3]


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_bad_files_name_file_and_array(tmp_path: Path, suffix: str) -> None:
    lay = Layout.from_shapes([("w", (2, 3)), ("b", (2,))])
    good = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}

    def err(arrays: dict[str, np.ndarray], fill: bool = False) -> str:
        path = _save(tmp_path / f"bad{suffix}", arrays)
        with pytest.raises(ValueError) as e:
            src = FromFile(path, lay)
            if fill:
                _fill(src, lay)
        text = str(e.value)
        assert "\n" not in text and text.startswith(str(path))
        return text

    assert "no array for tensor(s) b (1 of 2 missing)" in err({"w": good["w"]})
    assert "array w has dtype int64; expected float" in err(
        {**good, "w": np.zeros((2, 3), np.int64)})
    assert "array b has shape (3,); tensor b has shape (2,)" in err(
        {**good, "b": np.zeros(3, np.float32)})
    assert "array x is not a tensor of the layout" in err({**good, "x": np.zeros(1)})
    assert "array b holds a non-finite value in float32 (element 1)" in err(
        {**good, "b": np.array([0, np.nan], np.float32)}, fill=True)
    assert "array w holds a non-finite value" in err(
        {**good, "w": np.full((2, 3), 1e300)}, fill=True)  # float64 beyond float32


def test_bad_file_kinds(tmp_path: Path) -> None:
    p = tmp_path / "g.txt"
    p.write_text("x")
    with pytest.raises(ValueError, match="must be .npz, .h5 or .hdf5"):
        FromFile(p)
    q = tmp_path / "g.npz"
    q.write_text("not a zip")
    with pytest.raises(ValueError, match=f"{q}: cannot read gradient file"):
        FromFile(q)
    with pytest.raises(ValueError, match="no such gradient file"):
        layout_from_file(tmp_path / "none.h5")
