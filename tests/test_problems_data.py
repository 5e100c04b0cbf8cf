"""Data readers: round trips through svmlight, npz and h5 files, one error per
malformed case (naming file, line and column), scikit-learn's bundled data sets."""

from __future__ import annotations

import bz2
import re
import sys

import h5py
import numpy as np
import pytest

from hpcq.problems import problem
from hpcq.problems.data import load_dataset, read_svmlight, standardize


def _dataset(m: int = 12, n: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n))
    X[rng.random((m, n)) < 0.4] = 0.0  # sparse, as svmlight files are
    X[:, -1] = np.where(np.arange(m) % 2, 1.5, 0.0)  # n is the largest index present
    y = rng.integers(0, 3, size=m).astype(np.float64)
    return X, y


def _svmlight_text(X: np.ndarray, y: np.ndarray) -> str:
    lines = ["# written by the test", ""]
    for i, (row, label) in enumerate(zip(X, y)):
        feats = " ".join(f"{j + 1}:{float(v)!r}" for j, v in enumerate(row) if v != 0)
        qid = f" qid:{i % 2}" if i % 3 == 0 else ""
        lines.append(f"{label:g}{qid} {feats}  # row {i}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- round trips
def test_svmlight_round_trip(tmp_path) -> None:
    X, y = _dataset()
    path = tmp_path / "d.svm"
    path.write_text(_svmlight_text(X, y))
    X2, y2 = load_dataset(str(path))
    assert X2.dtype == np.float64 and X2.flags.c_contiguous
    assert np.array_equal(X2, X) and np.array_equal(y2, y)
    packed = tmp_path / "d.svm.bz2"
    packed.write_bytes(bz2.compress(path.read_bytes()))
    X3, y3 = load_dataset(str(packed))
    assert np.array_equal(X3, X) and np.array_equal(y3, y)


def test_svmlight_agrees_with_scikit_learn(tmp_path) -> None:
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn not installed")
    X, y = _dataset(m=40, n=9, seed=3)
    path = tmp_path / "sk.txt"
    datasets.dump_svmlight_file(X, y, str(path), zero_based=False)
    Xs, ys = datasets.load_svmlight_file(str(path), zero_based=False)
    X2, y2 = read_svmlight(path)
    assert np.array_equal(X2, Xs.toarray()) and np.array_equal(y2, ys)
    zero = tmp_path / "zero.txt"
    datasets.dump_svmlight_file(X, y, str(zero), zero_based=True)
    assert np.allclose(read_svmlight(zero, zero_based=True)[0], X, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="1-based"):
        read_svmlight(zero)


@pytest.mark.parametrize("names", [("X", "y"), ("A", "b"), ("data", "target")])
def test_npz_and_h5_round_trips(tmp_path, names: tuple[str, str]) -> None:
    X, y = _dataset()
    kx, ky = names
    np.savez(tmp_path / "d.npz", **{kx: X.astype(np.float32), ky: y.astype(np.int32)})
    with h5py.File(tmp_path / "d.h5", "w") as fh:
        fh[kx], fh[ky], fh["other"] = X, y.reshape(-1, 1), np.zeros(3)
    for name in ("d.npz", "d.h5"):
        X2, y2 = load_dataset(str(tmp_path / name))
        assert X2.dtype == np.float64 and y2.shape == (12,)
        assert np.allclose(X2, X, rtol=1e-7) and np.array_equal(y2, y)


def test_problems_read_files(tmp_path) -> None:
    X, y = _dataset(m=60, n=4, seed=1)
    np.savez(tmp_path / "reg.npz", X=X, y=X @ np.arange(1.0, 5.0) + 2.0)
    prob = problem(f"lstsq:data={tmp_path / 'reg.npz'},bias=true")
    assert prob.d == 5 and prob.m == 60
    assert np.linalg.norm(prob.grad(prob.x_star)) <= 1e-10 * prob.L
    assert prob.f_star == pytest.approx(0.0, abs=1e-18)  # standardized, y centred, exact fit
    np.savez(tmp_path / "two.npz", X=X, y=np.where(y > 0, 7.0, 3.0))
    logistic = problem(f"logistic:data={tmp_path / 'two.npz'}")
    assert set(np.unique(logistic.y)) == {-1.0, 1.0}
    np.savez(tmp_path / "three.npz", X=X, y=y)
    with pytest.raises(ValueError, match=r"three\.npz has 3 classes.*softmax"):
        problem(f"logistic:data={tmp_path / 'three.npz'}")
    soft = problem(f"softmax:data={tmp_path / 'three.npz'}", rank=1, size=2)
    assert soft.K == 3 and soft.d == 12
    with pytest.raises(ValueError, match="no such file"):
        problem(f"lstsq:data={tmp_path / 'missing.svm'}")


# ---------------------------------------------------------------------- svmlight errors
BAD_TEXT = [
    ("1 1:2\nabc 1:2\n", 2, 1, "label 'abc' is not a number"),
    ("nan 1:2\n", 1, 1, "label 'nan' is not finite"),
    ("1 1:2 3\n", 1, 7, "'3' is not index:value"),
    ("1  x:2\n", 1, 4, "index 'x' of 'x:2' is not an integer"),
    ("1 1.5:2\n", 1, 3, "index '1.5' of '1.5:2' is not an integer"),
    ("1 0:2\n", 1, 3, "index 0 of '0:2' is below 1"),
    ("1 -3:2\n", 1, 3, "index -3 of '-3:2' is below 1"),
    ("1 1:abc\n", 1, 3, "value 'abc' of '1:abc' is not a number"),
    ("# c\n1 1:1\n\n2 1:nan\n", 4, 3, "value 'nan' of '1:nan' is not finite"),
    ("1 1:1e999\n", 1, 3, "value '1e999' of '1:1e999' is not finite"),
    ("1 2:1 2:3\n", 1, 7, "duplicate index 2 \\(also at column 3\\)"),
    ("1 1:1 3:1 2:3\n", 1, 11, "index 2 after index 3: indices must increase"),
    ("1 qid:4 5:1 3:1\n", 1, 13, "index 3 after index 5"),
]


@pytest.mark.parametrize("text,line,col,what", BAD_TEXT)
def test_svmlight_errors_name_file_line_and_column(tmp_path, text: str, line: int, col: int,
                                                   what: str) -> None:
    path = tmp_path / "bad.svm"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_dataset(str(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}: line {line}, column {col}: "), msg
    assert re.search(what, msg), msg
    assert "\n" not in msg


def test_svmlight_first_bad_line_wins(tmp_path) -> None:
    path = tmp_path / "two.svm"
    path.write_text("1 1:1\n1 2:1 1:1\n1 1:inf\n")
    with pytest.raises(ValueError, match=r"line 2, column 7: index 1 after index 2"):
        load_dataset(str(path))


@pytest.mark.parametrize("content,match", [
    ("", "empty file"),
    ("# nothing\n\n   \n", "empty file"),
    ("1\n2\n", "no features"),
    (b"\x89PNG\r\n\x1a\n\x00\xff", "not a text file"),
])
def test_unreadable_text_files(tmp_path, content, match: str) -> None:
    path = tmp_path / "f.dat"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: .*{match}"):
        load_dataset(str(path))


# ---------------------------------------------------------------------- npz / h5 errors
def _npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def _h5(tmp_path, **arrays):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as fh:
        for k, v in arrays.items():
            fh[k] = v
    return path


X3 = np.arange(12.0).reshape(4, 3)
Y3 = np.arange(4.0)
X_NAN = X3.copy()
X_NAN[1, 2] = np.nan


@pytest.mark.parametrize("writer", [_npz, _h5])
@pytest.mark.parametrize("arrays,match", [
    ({"features": X3, "labels": Y3},
     r"no arrays X/y, A/b, data/target; it holds: features, labels"),
    ({"X": Y3, "y": Y3}, r"array X must be 2-D \(samples x features\), has shape \(4,\)"),
    ({"X": X3, "y": X3}, r"array y must be 1-D .* has shape \(4, 3\)"),
    ({"X": X3, "y": Y3[:3]}, r"array X has 4 rows but y has 3 values"),
    ({"X": X_NAN, "y": Y3}, r"array X holds nan at \(row 1, column 2\); values must be finite"),
    ({"X": X3, "y": np.array([0, 1, np.inf, 2])}, r"array y holds inf at row 2"),
    ({"X": np.zeros((0, 3)), "y": np.zeros(0)}, r"array X is empty"),
    ({"X": X3.astype(complex), "y": Y3}, r"array X is complex"),
    ({"X": np.array([["1", "2"], ["3", "abc"]]), "y": np.array([1, 2])},
     r"array X holds non-numeric .*abc.* at \(row 1, column 1\)"),
])
def test_array_file_errors_name_file_and_array(tmp_path, writer, arrays, match: str) -> None:
    if writer is _h5 and arrays.get("X", X3).dtype.kind == "U":
        arrays = {k: v.astype("S") for k, v in arrays.items()}  # h5py stores bytes
    path = writer(tmp_path, **arrays)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: {match}"):
        load_dataset(str(path))


def test_pickled_npz_and_broken_containers(tmp_path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, X=np.array([[1, None]], dtype=object), y=np.array([1.0]))
    with pytest.raises(ValueError, match=r"obj\.npz: array X holds Python objects"):
        load_dataset(str(path))
    for name, what in (("junk.npz", "not a readable .npz file"),
                       ("junk.h5", "not a readable HDF5 file")):
        (tmp_path / name).write_bytes(b"not a container at all")
        with pytest.raises(ValueError, match=rf"{name}: {what}"):
            load_dataset(str(tmp_path / name))
    np.save(tmp_path / "one.npy", X3)
    with pytest.raises(ValueError, match=r"one\.npy: a \.npy file holds one array"):
        load_dataset(str(tmp_path / "one.npy"))


def test_missing_sources(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"^/no/such/file\.svm: no such file$"):
        load_dataset("/no/such/file.svm")
    with pytest.raises(ValueError, match="is a directory"):
        load_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="empty data source"):
        load_dataset(" ")


# ---------------------------------------------------------------------- scikit-learn
@pytest.mark.parametrize("name,shape,classes", [("breast_cancer", (569, 30), 2),
                                                ("digits", (1797, 64), 10)])
def test_sklearn_datasets_load(name: str, shape: tuple[int, int], classes: int) -> None:
    pytest.importorskip("sklearn", reason="scikit-learn not installed")
    X, y = load_dataset(f"sklearn:{name}")
    assert X.shape == shape and y.shape == (shape[0],) and X.dtype == np.float64
    assert len(np.unique(y)) == classes


def test_sklearn_unknown_or_missing(monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"unknown scikit-learn data set 'mnist'; valid: "
                                         r"breast_cancer, diabetes"):
        load_dataset("sklearn:mnist")
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ValueError, match=r'sklearn:iris needs scikit-learn: pip install '
                                         r'"hpcq\[data\]".*\.npz or \.h5'):
        load_dataset("sklearn:iris")


# ---------------------------------------------------------------------- standardize
def test_standardize_leaves_constant_columns_at_zero() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.standard_normal(50) * 7 + 3, np.full(50, 0.1), np.zeros(50),
                         rng.integers(0, 2, 50)])
    Z = standardize(X)
    assert np.allclose(Z.mean(axis=0), 0, atol=1e-15)
    assert np.allclose(Z.std(axis=0), [1, 0, 0, 1])
    assert not Z[:, 1:3].any()
    assert X[0, 1] == 0.1  # the input is untouched
