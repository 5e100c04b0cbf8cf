"""The HDF5 result store: one self-describing, versioned file per job run.

The full schema, with the datasets of every case kind, is ``docs/results-schema.md``.

Layout (schema :data:`SCHEMA_VERSION`)
--------------------------------------
::

    /                       root attributes: provenance of the run that created the file
    /runs/run0000           one group per run that wrote to the file (a first run, then
                            every ``--append`` / ``--resume``): the same provenance
                            attributes + ``resumed`` + ``end_time``
    /cases/case00000        one group per completed measurement ("case"), numbered in order
        attrs               kind, label, run (its run number), case_key (when given),
                            complete, finished (ISO 8601), and the case's parameters
                            (nested dicts flattened as ``a.b``; None values left out)
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
:mod:`hpcq.bench.kernels` and :mod:`hpcq.bench.collectives`.

Crash safety
------------
Results are never lost, whenever the writer dies (SIGKILL, node failure, time
limit): the file is never modified in place.  Every change (a new file, a new
run, each case, the end time) is made by HDF5 on a copy of the file in memory,
written with plain writes to ``.NAME.tmp-HOST-PID`` beside it, fsync'ed and
renamed over the original (``os.replace``,
atomic on POSIX); the directory is fsync'ed too.  So ``NAME`` is always either
the file before or the file after one complete change.  A new file is published
with ``os.link``, which fails if the name exists, so two runs racing for one name
cannot overwrite each other (where hard links are not supported, the name is
reserved with ``O_EXCL`` first; a kill in between leaves an empty file, refused
by the next run).  A temporary file left by a killed writer is never read; the
next writer of that file on the same host deletes those whose process is gone
(temporary files of other hosts are left alone).  One writer per file: a writer
that finds the file changed by someone else since its last commit refuses to
overwrite it (the check and the rename are not atomic together; two writers
racing within that instant can still lose one's last change).

A full disk, a read-only or vanished directory fails a plain write, never HDF5
(whose close crashed the process on ENOSPC): one error naming the file and the
errno, the temporary file removed, the file as it was.  :func:`check_output`
refuses an unusable location before a run starts.

The price is a copy of the file per commit, linear in its size (and the file held
in memory while it is changed).  Appending one
case (4 datasets of (4, 100) float64), median of 10, on a VM's virtio disk
(ext4, page cache warm): 1 MB file 3 ms, 10 MB 11-15 ms, 100 MB 70-90 ms (at
100 MB: copy 27, fsync 33, replacing the old file 20); modifying in place (the
1.0.0 writer) took 1 ms at any size.  :meth:`ResultFile.write_cases` commits
several cases with one copy (10 cases: 14, 22 and 84 ms).  Benchmark cases are
a few kB, so files stay small and one commit per case is cheap.

Only one process (rank 0) writes: PyPI h5py wheels are serial.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import h5py
import numpy as np

# Schema history (bump MAJOR for changes old readers would misread, MINOR for
# additions; reading code converts older versions, tests/fixtures/ keeps one file
# of each; see docs/results-schema.md):
#   1.0.0  first version: root provenance attributes, /runs/runNNNN, /cases/caseNNNNN
#          with attributes + raw-sample datasets carrying a `unit` attribute.  The
#          collectives benchmark was kind "mean", with scheme "allreduce" | "allgather".
#   1.1.0  cases: attribute `case_key` (the runner's identity of the case, for --resume);
#          runs: attribute `resumed`; the collectives benchmark is kind "collectives"
#          with the scheme names of hpcq.collectives.SCHEMES ("allreduce-fp32", ...).
#          Files are written atomically (copy, modify, rename), so `complete` is always
#          True in files written by 1.1.0.  Reading converts 1.0.0 cases
#          (_upgrade_case_1_0); appending to a file of another MAJOR.MINOR is refused.
#   1.2.0  case kind "train" (hpcq.bench.train: a training run with its per-iteration trace);
#          collectives cases gain `theory_bits_per_coordinate`.  Nothing else changes, so
#          1.1.0 files are read as they are and can be merged into a 1.2.0 file.
#   1.3.0  case kind "workload" (hpcq.bench.workload: a model's gradient bucket by bucket);
#          case keys written by `hpcq run` hold the rank count (`nprocs`); collectives
#          `scheme` may be a spec with parameters, the timing reference `mpi-allreduce` has
#          no NMSE, and node-aware, pipelined and phased schemes add their attributes.  Only
#          additions for readers: older files are read unchanged and merge into 1.3.0.
SCHEMA_VERSION = "1.3.0"

#: A dataset to write: (values, unit).
Series = tuple[Any, str]

_COMPRESS_ABOVE = 1 << 16  # elements; raw timing samples stay contiguous and small
#: Held while a result file is created or committed: the interrupt watcher (hpcq.interrupt)
#: takes it before aborting, so no commit is cut short and no temporary file is left.
COMMIT_LOCK = threading.RLock()
#: The last :class:`ResultFile` this process opened: what an interrupt of a benchmark
#: (no run tracked by hpcq.interrupt.track) reports as kept.
LAST_WRITER: ResultFile | None = None
_T = TypeVar("_T")


class CaseRecord(NamedTuple):
    """One case for :meth:`ResultFile.write_cases`; fields as in :meth:`ResultFile.write_case`."""

    kind: str
    label: str
    params: Mapping[str, Any]
    data: Mapping[str, Series]
    key: str | None = None


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
        strings = [value] if isinstance(value, str) else value if isinstance(
            value, (list, tuple)) else []
        if any(isinstance(v, str) and "\x00" in v for v in strings):
            raise ValueError(f"attribute {key!r} holds a NUL character, which HDF5 strings "
                             f"cannot store: {str(value)[:80]!r}")
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


# --- atomic file replacement ------------------------------------------------------------


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def _tmp_path(path: Path) -> Path:
    return path.with_name(f"{_tmp_prefix(path)}{socket.gethostname()}-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _clean_stale(path: Path) -> None:
    """Delete temporary copies of ``path`` left on this host by writers that are gone."""
    prefix, host = _tmp_prefix(path), socket.gethostname()
    try:
        names = [p.name for p in path.parent.iterdir()]
    except OSError:
        return
    for name in names:
        owner, _, pid = name[len(prefix) :].rpartition("-")
        if not name.startswith(prefix) or owner != host or not pid.isdigit():
            continue
        if int(pid) == os.getpid() or not _alive(int(pid)):  # ours: no commit is under way
            with contextlib.suppress(OSError):
                (path.parent / name).unlink()


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return  # some systems cannot open a directory; the rename is atomic regardless
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _identity(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _publish_new(tmp: Path, path: Path) -> None:
    """Give the finished file ``tmp`` the name ``path``, failing if that name exists."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links on this file system (some FUSE, SMB): reserve the name
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        tmp.replace(path)
    _fsync(path.parent, directory=True)


def _in_memory(data: bytes | None, modify: Callable[[h5py.File], _T]) -> tuple[_T, bytes]:
    """Apply ``modify`` to the HDF5 file ``data`` (None: a new file) in memory; the result
    and the new file's bytes."""
    buf = io.BytesIO(data or b"")
    with h5py.File(buf, "r+" if data else "w-") as f:
        result = modify(f)
    return result, buf.getvalue()


def _write_new(tmp: Path, data: bytes, like: Path | None) -> None:
    """Write ``data`` to the new file ``tmp`` and fsync it (permissions of ``like``)."""
    # a stale tmp may be a hard link to the result file (a kill after os.link): never
    # write through it
    tmp.unlink(missing_ok=True)
    with tmp.open("xb") as fo:
        fo.write(data)
        fo.flush()
        os.fsync(fo.fileno())
    if like is not None:
        shutil.copymode(like, tmp)  # a read-only file stays refused


def _write_error(path: Path, e: OSError, kept: int | None) -> OSError:
    """One line naming the result file and the errno, and that its cases are intact."""
    name = errno.errorcode.get(e.errno or 0, "?")
    intact = ("" if kept == 0 else
              "; the cases it held before are intact (add the rest with --resume)")
    err = OSError(f"cannot write result file {str(path)!r}: {e.strerror or e} ({name}){intact}")
    err.errno = e.errno  # str() without the "[Errno N]" prefix; the name says it
    return err


def check_output(path: str | Path, need_bytes: int = 256 << 10) -> None:
    """Refuse an output location that cannot work, before any MPI work: one line each.

    The directory must exist and be writable, ``path`` must not be a directory, and the
    file system must have ``need_bytes`` free (a new file and its first cases, kB each;
    each commit writes a whole copy, so an existing file's size is added).
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path()
    if p.is_dir():
        raise ValueError(f"output {str(p)!r} is a directory; give a file name, e.g. "
                         f"-o {str(p / 'results.h5')!r}")
    if not parent.is_dir():
        what = "does not exist" if not parent.exists() else "is not a directory"
        raise ValueError(f"output {str(p)!r}: directory {str(parent)!r} {what}; create it "
                         f"(mkdir -p {str(parent)!r}) or choose another -o")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"output {str(p)!r}: directory {str(parent)!r} is not writable; "
                         f"choose another -o")
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"output {str(p)!r} is read-only; choose another -o")
    try:
        st = os.statvfs(parent)
    except (OSError, AttributeError):
        return  # no way to tell: the first commit will say
    need = need_bytes + (p.stat().st_size if p.exists() else 0)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise ValueError(f"output {str(p)!r}: only {free // 1024} KiB free in "
                         f"{str(parent)!r}, about {need // 1024} KiB needed; free some space "
                         f"or choose another -o")


class ResultFile:
    """Writer of one result file; see the module docstring for the layout and crash safety.

    Parameters
    ----------
    path : str or Path
        The HDF5 file to create (or to add to, with ``append`` or ``resume``).
    provenance : dict
        Attributes of this run (:func:`hpcq.provenance.collect`).
    append : bool
        Add cases to an existing hpcq file (of this schema version) instead of refusing it;
        a missing file is created.
    resume : bool
        As ``append``, and mark the new run ``resumed = True`` when the file existed (the
        runner skips the cases of :meth:`completed_keys`).

    Raises
    ------
    FileExistsError
        ``path`` exists (or another process created it meanwhile) and neither ``append``
        nor ``resume`` is given.
    ValueError
        Adding to a file that is not an hpcq result file, or of another schema version.
    """

    def __init__(
        self,
        path: str | Path,
        provenance: Mapping[str, Any],
        *,
        append: bool = False,
        resume: bool = False,
    ) -> None:
        self.path = Path(path)
        self._identity: tuple[int, ...] | None = None
        self.cases_written = 0  # by this writer (the interrupt line counts them)
        _clean_stale(self.path)
        attrs = dict(provenance, hpcq_format=SCHEMA_VERSION)
        global LAST_WRITER
        if not self.path.exists():
            self.run, self._created = 0, True
            self._create(attrs, append or resume)
            LAST_WRITER = self
            return
        if not (append or resume):
            raise FileExistsError(
                f"result file {str(self.path)!r} exists; pass --append or "
                f"--resume to add to it, or choose another output name"
            )
        _check_appendable(self.path)
        self._created = False

        def add_run(f: h5py.File) -> int:
            runs = f.require_group("runs")
            run = len(runs)
            _write_attrs(runs.create_group(f"run{run:04d}"), {**attrs, "resumed": resume})
            f.require_group("cases")
            return run

        self.run = self._commit(add_run)
        LAST_WRITER = self

    def _create(self, attrs: Mapping[str, Any], append: bool) -> None:
        with COMMIT_LOCK:
            self._create_locked(attrs, append)

    def _create_locked(self, attrs: Mapping[str, Any], append: bool) -> None:
        tmp = _tmp_path(self.path)

        def build(f: h5py.File) -> None:
            _write_attrs(f, attrs)
            _write_attrs(f.create_group("runs").create_group("run0000"),
                         {**attrs, "resumed": False})
            f.create_group("cases")

        try:
            tmp.unlink(missing_ok=True)  # may be a hard link to a file of this name
            _write_new(tmp, _in_memory(None, build)[1], None)
            _publish_new(tmp, self.path)
        except FileExistsError:
            raise FileExistsError(
                f"result file {str(self.path)!r} was created by another "
                f"process meanwhile; choose another output name"
                + ("" if append else " or pass --append")
            ) from None
        except OSError as e:
            raise _write_error(self.path, e, kept=0) from None
        finally:
            tmp.unlink(missing_ok=True)
        self._identity = _identity(self.path)

    def _commit(self, modify: Callable[[h5py.File], _T]) -> _T:
        """Apply ``modify`` to a copy of the file, then atomically replace the file by it."""
        with COMMIT_LOCK:
            return self._commit_locked(modify)

    def _commit_locked(self, modify: Callable[[h5py.File], _T]) -> _T:
        tmp = _tmp_path(self.path)
        try:
            before = _identity(self.path)
        except OSError as e:  # the file or its directory vanished
            raise _write_error(self.path, e, kept=None) from None
        if self._identity is not None and before != self._identity:
            raise RuntimeError(
                f"result file {str(self.path)!r} was changed by another process "
                f"since this run last wrote it; not overwriting its changes"
            )
        try:
            # HDF5 works on a copy in memory: it never meets a full disk (h5py's close on
            # ENOSPC crashed the process); only plain writes below can fail, cleanly
            result, data = _in_memory(self.path.read_bytes(), modify)
            _write_new(tmp, data, self.path)
            if _identity(self.path) != before:
                raise RuntimeError(
                    f"result file {str(self.path)!r} was changed by another "
                    f"process while this run wrote it; not overwriting it"
                )
            tmp.replace(self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _write_error(self.path, e, kept=None) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync(self.path.parent, directory=True)
        self._identity = _identity(self.path)
        return result

    def write_case(
        self,
        kind: str,
        label: str,
        params: Mapping[str, Any],
        data: Mapping[str, Series],
        *,
        key: str | None = None,
    ) -> str:
        """Write one completed case atomically; return its group name.

        Parameters
        ----------
        kind : str
            What was measured ("kernels", "kernels.memcpy", "collectives", ...).
        label : str
            Human-readable identity, e.g. ``"qsgd:bits=4 d=2^20"``.
        params : dict
            Parameters and scalar results, stored as attributes (nested dicts flattened,
            None values left out).
        data : dict
            Dataset name -> (values, unit).
        key : str, optional
            The case's canonical identity (attribute ``case_key``), for ``--resume``.
        """
        return self.write_cases([CaseRecord(kind, label, params, data, key)])[0]

    def write_cases(self, cases: Iterable[CaseRecord]) -> list[str]:
        """Write several completed cases in one atomic commit (one file copy); return their names.

        Either all of them reach the file or, if the writer dies first, none.
        """
        from hpcq.provenance import utc_now

        todo = []
        for c in cases:  # check and convert before copying the file
            if c.key is not None and not isinstance(c.key, str):
                raise TypeError(f"case key must be a str or None, not {type(c.key).__name__}")
            todo.append((c, {k: (np.asarray(v), str(u)) for k, (v, u) in c.data.items()}))

        def add(f: h5py.File) -> list[str]:
            cases_group, names = f["cases"], []
            for c, data in todo:
                name = f"case{len(cases_group):05d}"
                g = cases_group.create_group(name)
                _write_attrs(
                    g,
                    {
                        "kind": c.kind,
                        "label": c.label,
                        "run": self.run,
                        "case_key": c.key,
                        "complete": False,
                    },
                )
                _write_attrs(g, c.params)
                for key, (arr, unit) in data.items():
                    big = arr.size > _COMPRESS_ABOVE
                    ds = g.create_dataset(
                        key,
                        data=arr,
                        compression="gzip" if big else None,
                        chunks=True if big else None,
                    )
                    ds.attrs["unit"] = unit
                _write_attrs(g, {"finished": utc_now(), "complete": True})
                names.append(name)
            return names

        names = self._commit(add)
        self.cases_written += len(names)
        return names

    def completed_keys(self) -> set[str]:
        """The keys of the complete cases in the file, over all its runs."""
        return completed_keys(self.path)

    def close(self) -> None:
        """Record the run's end time (the file itself is already closed)."""
        from hpcq.provenance import utc_now

        end = utc_now()

        def finish(f: h5py.File) -> None:
            f["runs"][f"run{self.run:04d}"].attrs["end_time"] = end
            if self._created:
                f.attrs["end_time"] = end

        self._commit(finish)

    def __enter__(self) -> ResultFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading ----------------------------------------------------------------------------


def merge(inputs: Sequence[str | Path], output: str | Path,
          provenance: Mapping[str, Any]) -> dict[str, int]:
    """Combine result files (e.g. the per-task files of a job array) into a new one.

    The new file's run 0 is the merge itself (``provenance``); every run of every
    input follows as a run of its own with the attribute ``source_file``, and
    every complete case is copied as it is (datasets, units, attributes), its
    ``run`` pointing to its input run and ``source_file`` naming its file.  A case
    whose ``case_key`` an earlier input already holds at the same rank count (its
    run's ``nprocs``) is left out (a case run by two tasks, or a file given twice);
    the same case at another rank count is another measurement and is kept; cases
    without a key are always kept.
    Inputs must be readable hpcq files of this schema version; ``output`` must not
    exist.  Written atomically like every change.

    Returns
    -------
    dict
        ``inputs``, ``cases`` (copied) and ``duplicates`` (left out).
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("merge: give at least one result file")
    if Path(output).exists():
        raise FileExistsError(f"merge: output {str(output)!r} exists; merge writes a new file: "
                              f"choose another -o or remove it first")
    check_output(output)
    for p in paths:
        version = schema_version(p)
        theirs = _version_tuple(version)[:2]
        # cases are copied as they are: only files no converter applies to can be merged
        if theirs > _version_tuple(SCHEMA_VERSION)[:2] or any(theirs <= last
                                                              for last, _ in _UPGRADES):
            raise ValueError(f"merge: {str(p)!r} uses result schema {version}; this hpcq merges "
                             f"files of schema {_MERGEABLE} (it reads older ones)")
    out = ResultFile(output, provenance)
    counts = {"inputs": len(paths), "cases": 0, "duplicates": 0}

    def copy_all(f: h5py.File) -> None:
        seen: set[tuple[str, Any]] = set()
        runs, cases = f["runs"], f["cases"]
        for p in paths:
            with h5py.File(p, "r") as src:
                offset = len(runs)
                nprocs = {int(name[3:]): _py(src["runs"][name].attrs.get("nprocs"))
                          for name in src["runs"]}
                for name in sorted(src["runs"]):
                    g = runs.create_group(f"run{len(runs):04d}")
                    _write_attrs(g, {k: _py(v) for k, v in src["runs"][name].attrs.items()})
                    g.attrs["source_file"] = str(p)
                for name in sorted(src["cases"]):
                    case = src["cases"][name]
                    if not _py(case.attrs.get("complete", False)):
                        continue
                    key = _py(case.attrs.get("case_key"))
                    ident = (key, nprocs.get(int(_py(case.attrs.get("run", 0)))))
                    if key is not None and ident in seen:
                        counts["duplicates"] += 1
                        continue
                    if key is not None:
                        seen.add(ident)
                    new = f"case{len(cases):05d}"
                    src.copy(case, cases, name=new)
                    cases[new].attrs["run"] = offset + int(_py(case.attrs.get("run", 0)))
                    cases[new].attrs["source_file"] = str(p)
                    counts["cases"] += 1

    out._commit(copy_all)
    out.close()
    return counts


def schema_version(path: str | Path) -> str:
    """The schema version of hpcq result file ``path``.

    Raises
    ------
    ValueError
        ``path`` is not a readable hpcq result file, or its MAJOR version is newer than this
        hpcq's (a newer MINOR only adds, so it is read).
    """
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
    if theirs[:1] > _version_tuple(SCHEMA_VERSION)[:1]:
        raise ValueError(
            f"{str(path)!r} uses result schema {version}, newer than this hpcq's "
            f"{SCHEMA_VERSION}; upgrade hpcq to read it"
        )
    return version


def _check_appendable(path: Path) -> None:
    """Refuse to add to a file of another MAJOR.MINOR: that would make a mixed file."""
    version = schema_version(path)
    if _version_tuple(version)[:2] != _version_tuple(SCHEMA_VERSION)[:2]:
        raise ValueError(
            f"{str(path)!r} uses result schema {version}; this hpcq writes "
            f"{SCHEMA_VERSION} and does not add to files of another schema: write "
            f"a new file (another -o) instead; hpcq reads both"
        )


def _upgrade_case_1_0(case: dict[str, Any]) -> dict[str, Any]:
    """Convert a case read from a schema-1.0.0 file to the 1.1.0 form, in place; return it.

    In 1.0.0 the collectives benchmark was kind ``mean``, and its ``scheme`` was
    ``"allreduce"`` (the fp32 ``MPI_Allreduce`` baseline) or ``"allgather"``.  It becomes
    kind ``collectives`` with scheme ``"allreduce-fp32"`` or ``"allgather"``; its datasets
    and other attributes are unchanged.  1.0.0 had no case keys: ``case_key`` is None.
    """
    if case.get("kind") == "mean":
        case["kind"] = "collectives"
        case["scheme"] = {"allreduce": "allreduce-fp32"}.get(case.get("scheme"), case.get("scheme"))
    case.setdefault("case_key", None)
    return case


#: (last version a converter applies to, converter), oldest first: a case read from a file of
#: version v passes through every converter whose version is >= v (MAJOR.MINOR compared).
_UPGRADES: tuple[tuple[tuple[int, int], Callable[[dict[str, Any]], dict[str, Any]]], ...] = (
    ((1, 0), _upgrade_case_1_0),
)
#: The schemas :func:`merge` copies cases from unchanged (for its error message).
_MERGEABLE = "1.1.x and 1.2.x"


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The root attributes of result file ``path`` as plain Python values."""
    schema_version(path)
    with h5py.File(path, "r") as f:
        return {k: _py(v) for k, v in f.attrs.items()}


def read_runs(path: str | Path) -> list[dict[str, Any]]:
    """Attributes of every run that wrote to ``path``, in order (``resumed`` False if absent)."""
    schema_version(path)
    with h5py.File(path, "r") as f:
        runs = f.get("runs", {})
        out = [{k: _py(v) for k, v in runs[name].attrs.items()} for name in sorted(runs)]
    for run in out:
        run.setdefault("resumed", False)  # 1.0.0 had no --resume
    return out


def case_key(params: Mapping[str, Any]) -> str:
    """The canonical key of a case: its defining parameters as sorted, compact JSON."""
    import json

    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"), default=str)


def check_resume(path: str | Path, config_toml: str, nprocs: int) -> None:
    """Refuse to resume ``path`` from another job text or rank count (one line, what differs).

    A case key holds the case's parameters, not the job file or the number of ranks, so
    resuming with either changed would silently mix two runs' cases in one file (the
    root's ``config_toml`` staying the first job's).  ``hpcq run --allow-mixed`` skips this.
    """
    for i, run in enumerate(read_runs(path)):
        theirs = run.get("nprocs")
        if theirs is not None and int(theirs) != nprocs:
            raise ValueError(f"--resume: {str(path)!r} was written on {theirs} rank(s) (run "
                             f"{i}), this run has {nprocs}; use the same rank count, another "
                             f"-o, or --allow-mixed to mix them on purpose")
        text = run.get("config_toml")
        if text is not None and text != config_toml:
            raise ValueError(f"--resume: {str(path)!r} was written by another job file (run "
                             f"{i}: its job text differs); resume with that job, use another "
                             f"-o, or --allow-mixed to mix them on purpose")


def completed_keys(path: str | Path) -> set[str]:
    """The ``case_key`` of every complete case in result file ``path`` (empty if it is missing).

    Raises
    ------
    ValueError
        ``path`` exists but is not an hpcq result file this hpcq can read.
    """
    if not Path(path).exists():
        return set()
    schema_version(path)
    with h5py.File(path, "r") as f:
        return {
            str(_py(g.attrs["case_key"]))
            for g in f.get("cases", {}).values()
            if g.attrs.get("complete", False) and "case_key" in g.attrs
        }


def read_cases(
    path: str | Path, *, kind: str | None = None, include_incomplete: bool = False
) -> list[dict[str, Any]]:
    """Every complete case of result file ``path``, in order, in the current schema's form.

    Parameters
    ----------
    path : str or Path
        An hpcq result file of this or an older schema (older cases are converted:
        :func:`_upgrade_case_1_0`).
    kind : str, optional
        Only cases of this kind (after conversion: ``"collectives"`` finds 1.0.0 ``mean``).
    include_incomplete : bool
        Also return cases a killed 1.0.0 run left unfinished (``complete`` False).

    Returns
    -------
    list of dict
        One dict per case: ``group`` (its group name), its attributes (``case_key`` None
        when absent), its datasets as numpy arrays (0-d ones as Python scalars),
        ``units`` (dataset name -> unit) and ``hpcq_format`` (the schema version the file
        was written in).

    Raises
    ------
    ValueError
        ``path`` is not an hpcq result file or uses a newer MAJOR schema.
    """
    version = schema_version(path)
    ours = _version_tuple(version)[:2]
    upgrades = [fn for last, fn in _UPGRADES if ours <= last]
    out: list[dict[str, Any]] = []
    with h5py.File(path, "r") as f:
        cases = f.get("cases", {})
        for name in sorted(cases):
            g = cases[name]
            case: dict[str, Any] = {"group": name}
            case.update({k: _py(v) for k, v in g.attrs.items()})
            if not (case.get("complete") or include_incomplete):
                continue
            for upgrade in upgrades:
                case = upgrade(case)
            case.setdefault("case_key", None)
            if kind is not None and case.get("kind") != kind:
                continue
            case["units"] = {}
            for key, ds in g.items():
                case[key] = ds[()] if ds.shape else _py(ds[()])
                case["units"][key] = _py(ds.attrs.get("unit", ""))
            case["hpcq_format"] = version
            out.append(case)
    return out
