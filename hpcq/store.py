"""The HDF5 result store: one self-describing, versioned file per job run.

Layout (schema :data:`SCHEMA_VERSION`)
--------------------------------------
::

    /                       root attributes: provenance of the run that created the file
    /runs/run0000           one group per run that wrote to the file (a first run, then
                            every ``--append``): the same provenance attributes + end_time
    /cases/case00000        one group per completed measurement ("case"), numbered in order
        attrs               kind, label, run (its run number), complete, finished (ISO 8601),
                            and the case's parameters (nested dicts flattened as ``a.b``)
        <dataset>           raw samples, each with a ``unit`` attribute
                            ("s", "bytes", "1" for dimensionless ...)

Root / run attributes (openPMD-style names, :func:`hpcq.provenance.collect`):
``hpcq_format`` (this schema version), ``software`` = "hpcq", ``softwareVersion``,
``git_commit`` + ``git_dirty`` (only when run from a checkout), ``date``,
``start_time``, ``end_time`` (ISO 8601, UTC), ``softwareDependencies``
("numpy@..;numba@..;mpi4py@..;h5py@..;hdf5@..;python@.."), ``mpi_library``,
``mpi_version``, ``nprocs``, ``hostnames`` (one per rank), ``cpu_model``,
``threads_per_rank`` (numba threads, one per rank), ``numba_threads_env``,
``command_line``, ``slurm_job_id`` (when set) and ``config_toml`` (the job file
text verbatim).  Which datasets a case holds depends on its ``kind``; see
:mod:`hpcq.bench.kernels` and :mod:`hpcq.runner` (and README.md).

Results are never lost: an existing file is refused unless ``append=True``; the
file is opened only while one case is written, the case's group is marked
``complete=True`` last, and the file is closed (so flushed) at once.  A job
killed at any moment leaves a readable file; readers skip incomplete cases.
Only one process (rank 0) writes: PyPI h5py wheels are serial.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# Schema history (bump MAJOR for changes old readers would misread, MINOR for
# additions; reading code converts older versions, tests/fixtures/ keeps one file
# of each):
#   1.0.0  first version: root provenance attributes, /runs/runNNNN, /cases/caseNNNNN
#          with attributes + raw-sample datasets carrying a `unit` attribute.
SCHEMA_VERSION = "1.0.0"

#: A dataset to write: (values, unit).
Series = tuple[Any, str]

_COMPRESS_ABOVE = 1 << 16  # elements; raw timing samples stay contiguous and small


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _write_attrs(obj: h5py.Group, attrs: Mapping[str, Any]) -> None:
    for key, value in _flatten(attrs).items():
        if value is None:
            continue  # HDF5 has no null; an absent attribute means "not applicable"
        if isinstance(value, (list, tuple)):
            if all(isinstance(v, str) for v in value) and value:
                value = np.array(value, dtype=h5py.string_dtype())
            else:
                value = np.asarray(value)
        obj.attrs[key] = value


def _py(value: Any) -> Any:
    """An HDF5 attribute value as plain Python (str, int, float, bool, list)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_py(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


class ResultFile:
    """Writer of one result file; see the module docstring for the layout.

    Parameters
    ----------
    path : str or Path
        The HDF5 file to create (or to add to, with ``append=True``).
    provenance : dict
        Attributes of this run (:func:`hpcq.provenance.collect`).
    append : bool
        Add cases to an existing hpcq file instead of refusing it.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``append`` is False.
    ValueError
        ``append=True`` on a file that is not an hpcq result file of a compatible schema.
    """

    def __init__(self, path: str | Path, provenance: Mapping[str, Any], *,
                 append: bool = False) -> None:
        self.path = Path(path)
        exists = self.path.exists()
        if exists and not append:
            raise FileExistsError(f"result file {str(self.path)!r} exists; pass --append to add "
                                  f"to it, or choose another output name")
        if exists:
            schema_version(self.path)  # refuses foreign and incompatible files
        attrs = dict(provenance, hpcq_format=SCHEMA_VERSION)
        # "w-" fails if another process created the file in the meantime (array jobs)
        with h5py.File(self.path, "a" if exists else "w-") as f:
            if not exists:
                _write_attrs(f, attrs)
            runs = f.require_group("runs")
            self.run = len(runs)
            _write_attrs(runs.create_group(f"run{self.run:04d}"), attrs)
            self._next = len(f.require_group("cases"))
            self._created = not exists

    def write_case(self, kind: str, label: str, params: Mapping[str, Any],
                   data: Mapping[str, Series]) -> str:
        """Write one completed case and flush it; return its group name.

        Parameters
        ----------
        kind : str
            What was measured ("kernels", "kernels.memcpy", "mean", ...).
        label : str
            Human-readable identity, e.g. ``"qsgd:bits=4 d=2^20"``.
        params : dict
            Parameters and scalar results, stored as attributes (nested dicts flattened).
        data : dict
            Dataset name -> (values, unit).
        """
        from hpcq.provenance import utc_now

        name = f"case{self._next:05d}"
        with h5py.File(self.path, "a") as f:
            g = f["cases"].create_group(name)
            _write_attrs(g, {"kind": kind, "label": label, "run": self.run, "complete": False})
            _write_attrs(g, params)
            for key, (values, unit) in data.items():
                arr = np.asarray(values)
                big = arr.size > _COMPRESS_ABOVE
                ds = g.create_dataset(key, data=arr, compression="gzip" if big else None,
                                      chunks=True if big else None)
                ds.attrs["unit"] = unit
            _write_attrs(g, {"finished": utc_now()})
            f.flush()  # the data reach the file before the case is declared complete
            g.attrs["complete"] = True
        self._next += 1
        return name

    def close(self) -> None:
        """Record the run's end time (the file itself is already closed)."""
        from hpcq.provenance import utc_now

        end = utc_now()
        with h5py.File(self.path, "a") as f:
            f["runs"][f"run{self.run:04d}"].attrs["end_time"] = end
            if self._created:
                f.attrs["end_time"] = end

    def __enter__(self) -> ResultFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def schema_version(path: str | Path) -> str:
    """The schema version of hpcq result file ``path``; ValueError if this hpcq cannot read it."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            version = _py(f.attrs.get("hpcq_format"))
            software = _py(f.attrs.get("software"))
    except OSError as e:
        raise ValueError(f"{str(path)!r} is not a readable HDF5 file ({e})") from None
    if software != "hpcq" or not isinstance(version, str):
        raise ValueError(f"{str(path)!r} is not an hpcq result file (no hpcq_format attribute)")
    try:
        theirs = _version_tuple(version)
    except ValueError:
        raise ValueError(f"{str(path)!r} has an invalid hpcq_format {version!r}") from None
    if theirs[:2] > _version_tuple(SCHEMA_VERSION)[:2]:
        raise ValueError(f"{str(path)!r} uses result schema {version}, newer than this hpcq's "
                         f"{SCHEMA_VERSION}; upgrade hpcq to read it")
    return version


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The root attributes of result file ``path`` as plain Python values."""
    schema_version(path)
    with h5py.File(path, "r") as f:
        return {k: _py(v) for k, v in f.attrs.items()}


def read_runs(path: str | Path) -> list[dict[str, Any]]:
    """The attributes of every run that wrote to ``path``, in order."""
    schema_version(path)
    with h5py.File(path, "r") as f:
        runs = f.get("runs", {})
        return [{k: _py(v) for k, v in runs[name].attrs.items()} for name in sorted(runs)]


def read_cases(path: str | Path, *, kind: str | None = None,
               include_incomplete: bool = False) -> list[dict[str, Any]]:
    """Every complete case of result file ``path``, in order.

    Parameters
    ----------
    path : str or Path
        An hpcq result file.
    kind : str, optional
        Only cases of this kind.
    include_incomplete : bool
        Also return cases a killed run left unfinished (``complete`` False).

    Returns
    -------
    list of dict
        One dict per case: ``group`` (its group name), its attributes, its datasets as numpy arrays,
        and ``units`` (dataset name -> unit).

    Raises
    ------
    ValueError
        ``path`` is not an hpcq result file or uses a newer schema.
    """
    schema_version(path)
    out: list[dict[str, Any]] = []
    with h5py.File(path, "r") as f:
        cases = f.get("cases", {})
        for name in sorted(cases):
            g = cases[name]
            case: dict[str, Any] = {"group": name}
            case.update({k: _py(v) for k, v in g.attrs.items()})
            if not (case.get("complete") or include_incomplete):
                continue
            if kind is not None and case.get("kind") != kind:
                continue
            case["units"] = {}
            for key, ds in g.items():
                case[key] = ds[()] if ds.shape else _py(ds[()])
                case["units"][key] = _py(ds.attrs.get("unit", ""))
            out.append(case)
    return out
