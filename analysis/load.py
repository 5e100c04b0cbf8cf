"""Result files -> one tidy table: a row per (file, case), parameters and run metadata as columns.

::

    from hpcq.analysis.load import load

    table, problems = load(["runs/*.h5", "array-out/"], kind="collectives")
    allgather = table.where(scheme="allgather", nprocs=lambda p: p >= 4)
    allgather["latency_p50_s"], allgather["spec"]          # NumPy columns
    allgather.to_pandas()                                   # when pandas is installed

Every schema version the store has written is read (:func:`hpcq.store.read_cases`
upgrades older cases).  A file that is missing, truncated, not an hpcq result or
from a newer hpcq is reported as one line in ``problems`` naming it, and the other
files still load.  Summaries are honest: for each timed series (``*_s`` datasets
of shape (ranks, iterations)) the columns hold the median, p5 and p95 over
iterations of the slowest rank (the time to complete a collective) and the
median over all samples, never a mean alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Run metadata copied from each file's root attributes into every row (renamed).
META = {"softwareVersion": "hpcq_version", "git_commit": "git_commit", "git_dirty": "git_dirty",
        "mpi_library": "mpi_library", "start_time": "start_time", "slurm_job_id": "slurm_job_id",
        "cpu_model": "cpu_model", "hpcq_format": "file_format", "cpu_binding": "cpu_binding"}


class Table:
    """Named NumPy columns of equal length (object dtype where values are mixed or missing)."""

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.columns[name]
        except KeyError:
            raise KeyError(f"no column {name!r}; columns: {', '.join(sorted(self.columns))}"
                           ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def rows(self) -> list[dict[str, Any]]:
        """The table as a list of dicts (missing values None)."""
        names = list(self.columns)
        return [{k: self.columns[k][i] for k in names} for i in range(len(self))]

    def where(self, **conditions: Any) -> Table:
        """Rows whose column ``k`` equals the value, or for which the callable returns True.

        ``table.where(scheme="allgather", d=lambda d: d >= 2**20)``; a row missing a
        column never matches a condition on it.
        """
        mask = np.ones(len(self), dtype=bool)
        for name, want in conditions.items():
            col = self[name]
            test: Callable[[Any], bool] = want if callable(want) else (lambda v, w=want: v == w)
            mask &= np.array([v is not None and bool(test(v)) for v in col], dtype=bool)
        return Table({k: v[mask] for k, v in self.columns.items()})

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the table (needs pandas: ``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas() needs pandas; the Table's NumPy columns work without "
                              "it") from None
        return pd.DataFrame({k: list(v) for k, v in self.columns.items()})


def expand_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files from paths, glob patterns and directories (``*.h5`` inside), sorted, each once."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: dict[Path, None] = {}
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.glob("*.h5"))
        elif any(ch in str(item) for ch in "*?["):
            # the pattern may hold directories too ("runs/*/out.h5"): glob from its anchor
            anchor = Path(p.anchor) if p.is_absolute() else Path()
            found = sorted(anchor.glob(str(p.relative_to(anchor)) if p.is_absolute() else str(p)))
        else:
            found = [p]
        out.update(dict.fromkeys(found))
    return list(out)


def _percentiles(series: np.ndarray) -> dict[str, float]:
    """Median, p5, p95 over iterations of the slowest rank, and the median of all samples."""
    a = np.asarray(series, dtype=np.float64)
    slowest = a.max(axis=0) if a.ndim == 2 else a
    if slowest.size == 0:
        return {}
    return {"median": float(np.median(slowest)), "p5": float(np.percentile(slowest, 5)),
            "p95": float(np.percentile(slowest, 95)), "median_all": float(np.median(a))}


def _row(case: dict[str, Any], meta: dict[str, Any], path: Path) -> dict[str, Any]:
    units = case.get("units", {})
    row: dict[str, Any] = {"file": str(path), **meta}
    for key, value in case.items():
        if key == "units":
            continue
        if isinstance(value, np.ndarray) and value.ndim >= 1:
            if units.get(key) == "s" and value.size:
                for stat, v in _percentiles(value).items():
                    row[f"{key}.{stat}"] = v
            elif value.ndim == 1 and units.get(key) == "bytes" and value.size:
                row[f"{key}.mean"] = float(value.mean())
            continue
        row[key] = value
    return row


def load(paths: str | Path | Iterable[str | Path], *, kind: str | None = None
         ) -> tuple[Table, list[str]]:
    """Load the complete cases of every file into one :class:`Table`.

    Parameters
    ----------
    paths : path, glob or directory, or a sequence of them
        Result files; a directory stands for the ``*.h5`` files in it.
    kind : str, optional
        Only cases of this kind (``collectives``, ``kernels``, ...).

    Returns
    -------
    table : Table
        One row per (file, case): the case's attributes, summaries of its datasets,
        the file name and the run metadata of :data:`META` plus ``nprocs`` and
        ``nhosts``.
    problems : list of str
        One line per file that could not be read, naming it and why.
    """
    from hpcq.store import read_attrs, read_cases

    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    files = expand_paths(paths)
    for path in files:
        try:
            attrs = read_attrs(path)
            cases = read_cases(path, kind=kind)
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"{path}: {' '.join(str(e).split())}")
            continue
        meta = {new: attrs.get(old) for old, new in META.items()}
        meta["nprocs_file"] = attrs.get("nprocs")
        meta["nhosts"] = len(set(attrs.get("hostnames") or []))
        rows += [_row(c, meta, path) for c in cases]
    if not files:
        problems.append(f"no result files in {paths!r}")
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    columns = {n: _column([r.get(n) for r in rows]) for n in names}
    return Table(columns), problems


def _column(values: Sequence[Any]) -> np.ndarray:
    """A NumPy column: numeric dtype when every value is a number (bools kept), else object."""
    if values and all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=bool)
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.float64 if any(isinstance(v, float) for v in values)
                        else np.int64)
    col = np.empty(len(values), dtype=object)
    col[:] = list(values)
    return col


def summarize(table: Table, by: Sequence[str], value: str) -> Table:
    """Combine repeated runs: per group of ``by``, the median, min, max and count of ``value``."""
    groups: dict[tuple[Any, ...], list[float]] = {}
    for row in table.rows():
        v = row.get(value)
        if v is None:
            continue
        groups.setdefault(tuple(row.get(b) for b in by), []).append(float(v))
    keys = list(groups)
    cols: dict[str, np.ndarray] = {b: _column([k[i] for k in keys]) for i, b in enumerate(by)}
    cols[f"{value}.median"] = np.array([np.median(groups[k]) for k in keys])
    cols[f"{value}.min"] = np.array([min(groups[k]) for k in keys])
    cols[f"{value}.max"] = np.array([max(groups[k]) for k in keys])
    cols["runs"] = np.array([len(groups[k]) for k in keys], dtype=np.int64)
    return Table(cols)
