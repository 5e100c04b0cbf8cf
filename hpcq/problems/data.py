"""Reading the data sets users already have, for the problems' ``data=`` parameter.

:func:`load_dataset` returns ``(X, y)``: X dense float64 (m, n), y float64 (m,).
Sources:

* ``sklearn:NAME``: a data set bundled inside scikit-learn (no download):
  ``breast_cancer``, ``diabetes``, ``digits``, ``iris``, ``wine``.
* ``.npz``: arrays ``X`` and ``y`` (or ``A``/``b``, or ``data``/``target``).
* ``.h5`` / ``.hdf5``: datasets ``X`` and ``y`` at the root (same alternatives).
* anything else: LIBSVM/svmlight text, ``label index:value index:value ...`` with
  1-based increasing indices, ``qid:`` tokens ignored, ``#`` comments and blank
  lines skipped, n = the largest index; ``.gz``, ``.bz2`` and ``.xz`` compressed
  text is read as it is (LIBSVM's own downloads are ``.bz2``).

Relative paths are relative to the working directory.  Every error is a one-line
ValueError naming the file, and for text files the line and column at fault.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from hpcq.compressors.base import Param

SKLEARN_DATASETS = ("breast_cancer", "diabetes", "digits", "iris", "wine")
FORMATS = "LIBSVM/svmlight text (label index:value ...), .npz or .h5 with arrays X and y"
#: Alternative names of the (features, targets) pair in .npz and .h5 files, in order.
KEY_PAIRS = (("X", "y"), ("A", "b"), ("data", "target"))
#: Largest dense matrix a text file may expand to (entries): 2^28 float64 = 2 GiB.
MAX_DENSE = 1 << 28
_OPENERS: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}

#: The data parameters shared by the problems that can read data.
DATA_PARAMS = (
    Param("data", str, "", "sklearn:NAME or a LIBSVM/svmlight, .npz or .h5 file (empty: "
                           "synthetic data); values may not contain ','"),
    Param("standardize", bool, True, "data: zero-mean unit-variance columns (constant "
                                     "columns zero)"),
    Param("bias", bool, False, "append a column of ones"),
)


def load_dataset(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a data set: ``(X, y)``, X float64 (m, n) dense, y float64 (m,).

    Parameters
    ----------
    source
        ``sklearn:NAME`` or a file path (format by extension, see the module docstring).

    Raises
    ------
    ValueError
        One line naming the source: missing file, unknown format, malformed
        content (with line and column for text files), non-finite values.
    """
    if not source.strip():
        raise ValueError(f"empty data source; give sklearn:NAME or a file: {FORMATS}")
    if source.startswith("sklearn:"):
        return _load_sklearn(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise ValueError(f"{source}: no such file")
    if path.is_dir():
        raise ValueError(f"{source}: is a directory, not a data file ({FORMATS})")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path)
    if suffix in (".h5", ".hdf5"):
        return read_h5(path)
    if suffix == ".npy":
        raise ValueError(f"{source}: a .npy file holds one array; save X and y together with "
                         f"numpy.savez (.npz)")
    return read_svmlight(path)


def _load_sklearn(source: str) -> tuple[np.ndarray, np.ndarray]:
    name = source.partition(":")[2].strip()
    if name not in SKLEARN_DATASETS:
        raise ValueError(f"{source}: unknown scikit-learn data set {name!r}; valid: "
                         f"{', '.join(SKLEARN_DATASETS)}")
    try:
        import sklearn.datasets as skd
    except ImportError:
        raise ValueError(f'{source} needs scikit-learn: pip install "hpcq[data]" (or '
                         f"scikit-learn); or give a file: {FORMATS}") from None
    bunch = getattr(skd, f"load_{name}")()
    return (np.ascontiguousarray(bunch.data, dtype=np.float64),
            np.ascontiguousarray(bunch.target, dtype=np.float64))


# ------------------------------------------------------------------ svmlight
def read_svmlight(path: str | Path, *, zero_based: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Read a LIBSVM/svmlight text file (optionally gz/bz2/xz compressed) into dense arrays.

    The fast path converts each line with list comprehensions; any line that
    fails a check is parsed again by :func:`_fail_line`, which names the line,
    column and token at fault.
    """
    path = Path(path)
    lines = _read_lines(path)
    labels: list[float] = []
    counts: list[int] = []
    numbers: list[int] = []  # line number of each data row
    cols: list[int] = []
    vals: list[float] = []
    for no, raw in enumerate(lines, 1):
        toks = raw.split("#", 1)[0].split()
        if not toks:
            continue
        try:
            label = float(toks[0])
            pairs = [t.split(":", 1) for t in toks[1:] if not t.startswith("qid:")]
            idx = [int(i) for i, _ in pairs]
            val = [float(v) for _, v in pairs]
        except ValueError:
            _fail_line(path, no, raw, zero_based)
        labels.append(label)
        counts.append(len(idx))
        numbers.append(no)
        cols.extend(idx)
        vals.extend(val)
    if not labels:
        raise ValueError(f"{path}: empty file (no data lines)")
    return _densify(path, lines, labels, counts, numbers, cols, vals, zero_based)


def _read_lines(path: Path) -> list[str]:
    opener = _OPENERS.get(path.suffix.lower())
    try:
        if opener is not None:
            with opener(path, "rt", encoding="utf-8") as fh:
                return str(fh.read()).splitlines()
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file; expected {FORMATS} (by extension)") from None
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:  # zlib: corrupt .gz data
        raise ValueError(f"{path}: cannot read ({e}); a corrupt or truncated "
                         f"{path.suffix or 'data'} file?") from None


def _densify(path: Path, lines: list[str], labels: list[float], counts: list[int],
             numbers: list[int], cols: list[int], vals: list[float], zero_based: bool
             ) -> tuple[np.ndarray, np.ndarray]:
    """Check the collected entries with numpy, then fill the dense matrix."""
    y = np.asarray(labels, dtype=np.float64)
    c = np.asarray(cols, dtype=np.int64) - (0 if zero_based else 1)
    v = np.asarray(vals, dtype=np.float64)
    row = np.repeat(np.arange(len(counts)), counts)
    same_row = row[1:] == row[:-1]
    checks = (np.flatnonzero(c < 0), np.flatnonzero(~np.isfinite(v)),
              1 + np.flatnonzero(same_row & (c[1:] <= c[:-1])))
    bad_rows = [int(row[bad[0]]) for bad in checks if bad.size]
    bad_rows += [int(i) for i in np.flatnonzero(~np.isfinite(y))[:1]]
    if bad_rows:  # the first line at fault, whatever its fault
        no = numbers[min(bad_rows)]
        _fail_line(path, no, lines[no - 1], zero_based)
    m, n = len(labels), int(c.max()) + 1 if c.size else 0
    if n == 0:
        raise ValueError(f"{path}: no features on any line")
    if m * n > MAX_DENSE:
        raise ValueError(f"{path}: {m} x {n} is too large to hold dense (limit {MAX_DENSE} "
                         f"entries)")
    X = np.zeros((m, n))
    X[row, c] = v
    return X, y


def _fail_line(path: Path, no: int, raw: str, zero_based: bool) -> NoReturn:
    """Parse one line token by token and raise the ValueError naming what is wrong."""
    first = 0 if zero_based else 1
    toks = [(mt.start() + 1, mt.group()) for mt in re.finditer(r"\S+", raw.split("#", 1)[0])]

    def fail(col: int, what: str) -> NoReturn:
        raise ValueError(f"{path}: line {no}, column {col}: {what}")

    col, tok = toks[0]
    try:
        label = float(tok)
    except ValueError:
        fail(col, f"label {tok!r} is not a number")
    if not np.isfinite(label):
        fail(col, f"label {tok!r} is not finite")
    seen: dict[int, int] = {}
    prev: int | None = None
    for col, tok in toks[1:]:
        if tok.startswith("qid:"):
            continue
        i, sep, v = tok.partition(":")
        if not sep:
            fail(col, f"{tok!r} is not index:value")
        try:
            idx = int(i)
        except ValueError:
            fail(col, f"index {i!r} of {tok!r} is not an integer")
        if idx < first:
            hint = "" if zero_based else (" (indices are 1-based, as in LIBSVM; scikit-learn's "
                                          "dump_svmlight_file needs zero_based=False)")
            fail(col, f"index {idx} of {tok!r} is below {first}{hint}")
        try:
            value = float(v)
        except ValueError:
            fail(col, f"value {v!r} of {tok!r} is not a number")
        if not np.isfinite(value):
            fail(col, f"value {v!r} of {tok!r} is not finite")
        if idx in seen:
            fail(col, f"duplicate index {idx} (also at column {seen[idx]})")
        if prev is not None and idx < prev:
            fail(col, f"index {idx} after index {prev}: indices must increase along a line")
        seen[idx], prev = col, idx
    raise ValueError(f"{path}: line {no}: malformed line")


# ------------------------------------------------------------------ npz / h5
def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read arrays X and y (or A/b, data/target) of a .npz file, checked."""
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single .npy array, not an .npz archive with X and y")
    with npz:
        kx, ky = _pick_keys(path, npz.files)
        return _checked(path, kx, _npz_array(path, npz, kx), ky, _npz_array(path, npz, ky))


def _npz_array(path: Path, npz: Any, key: str) -> np.ndarray:
    try:
        return np.asarray(npz[key])
    except ValueError:
        raise ValueError(f"{path}: array {key} holds Python objects (pickled); save numeric "
                         f"arrays") from None


def read_h5(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read datasets X and y (or A/b, data/target) at the root of an HDF5 file, checked."""
    import h5py

    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
    with fh:
        names = [k for k, v in fh.items() if isinstance(v, h5py.Dataset)]
        kx, ky = _pick_keys(path, names)
        return _checked(path, kx, np.asarray(fh[kx][()]), ky, np.asarray(fh[ky][()]))


def _pick_keys(path: Path, keys: list[str]) -> tuple[str, str]:
    for kx, ky in KEY_PAIRS:
        if kx in keys and ky in keys:
            return kx, ky
    wanted = ", ".join(f"{a}/{b}" for a, b in KEY_PAIRS)
    raise ValueError(f"{path}: no arrays {wanted}; it holds: {', '.join(sorted(keys)) or 'none'}")


def _checked(path: Path, kx: str, X: np.ndarray, ky: str, y: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Shape, type and finiteness checks; float64 C-contiguous copies."""
    if X.ndim != 2:
        raise ValueError(f"{path}: array {kx} must be 2-D (samples x features), has shape "
                         f"{X.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{path}: array {ky} must be 1-D (one target per sample), has shape "
                         f"{y.shape}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: array {kx} has {X.shape[0]} rows but {ky} has "
                         f"{y.shape[0]} values")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{path}: array {kx} is empty (shape {X.shape})")
    return _numeric(path, kx, X), _numeric(path, ky, y)


def _numeric(path: Path, key: str, a: np.ndarray) -> np.ndarray:
    """``a`` as float64, or a ValueError naming the array and its first bad entry."""
    if a.dtype.kind == "c":
        raise ValueError(f"{path}: array {key} is complex; real values are needed")
    try:
        out = np.ascontiguousarray(a, dtype=np.float64)
    except (ValueError, TypeError):
        out = None
    if out is not None:
        bad = np.argwhere(~np.isfinite(out))
        if not bad.size:
            return out
        where = tuple(int(i) for i in bad[0])
        raise ValueError(f"{path}: array {key} holds {out[where]} at {_at(where)}; values "
                         f"must be finite")
    for where in np.ndindex(a.shape):  # the slow search runs only to name the entry
        try:
            float(a[where])
        except (ValueError, TypeError):
            raise ValueError(f"{path}: array {key} holds non-numeric {a[where]!r} at "
                             f"{_at(where)}") from None
    raise ValueError(f"{path}: array {key} is not numeric (dtype {a.dtype})")


def _at(where: tuple[int, ...]) -> str:
    return f"(row {where[0]}, column {where[1]})" if len(where) == 2 else f"row {where[0]}"


# ------------------------------------------------------------------ preparation
def standardize(X: np.ndarray) -> np.ndarray:
    """Columns centred to mean 0 and scaled to variance 1 (a new array).

    A column is constant when its standard deviation is below ``1e-12`` of its
    largest magnitude (the mean of equal values need not be exact), and is set to 0.
    """
    Xc = X - X.mean(axis=0)
    std = np.sqrt(np.mean(Xc * Xc, axis=0))
    const = std <= 1e-12 * np.abs(X).max(axis=0, initial=0.0)
    std[const] = 1.0
    Xc /= std
    Xc[:, const] = 0.0
    return Xc


def design(source: str, *, scale: bool, bias: bool, center_y: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    """The problem's data: :func:`load_dataset`, then standardized (``scale``; y centred
    too when ``center_y``) and a column of ones appended (``bias``)."""
    X, y = load_dataset(source)
    if scale:
        X = standardize(X)
        if center_y:
            y = y - y.mean()
    if bias:
        X = np.hstack([X, np.ones((X.shape[0], 1))])
    return np.ascontiguousarray(X), y


def class_codes(y: np.ndarray, source: str, owner: str) -> tuple[np.ndarray, int]:
    """Labels of any K >= 2 distinct values as codes 0..K-1 (in sorted order), and K."""
    values, codes = np.unique(y, return_inverse=True)
    K = values.shape[0]
    if K < 2:
        raise ValueError(f"{owner}: data {source} has a single label value; two or more "
                         f"classes are needed")
    if K > max(2, y.shape[0] // 5):  # fewer than 5 samples a class: not a classification
        raise ValueError(f"{owner}: data {source} has {K} distinct labels for {y.shape[0]} "
                         f"samples: a regression target? (use lstsq)")
    return codes.astype(np.int64), int(K)


def synthetic_classes(rng: np.random.Generator, m: int, n: int, classes: int,
                      hidden: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features and labels from a random teacher: ``argmax`` of linear
    (``hidden=0``) or one-hidden-layer tanh logits plus Gumbel noise (soft labels)."""
    X = rng.standard_normal((m, n))
    if hidden:
        W1 = rng.standard_normal((n, hidden)) / np.sqrt(n)
        logits = np.tanh(X @ W1) @ rng.standard_normal((hidden, classes)) * 2.0
    else:
        logits = X @ rng.standard_normal((n, classes)) / np.sqrt(n) * 2.0
    return X, np.argmax(logits + rng.gumbel(size=(m, classes)), axis=1).astype(np.int64)
