"""Job files: TOML -> validated, frozen dataclasses (defaults live only here).

The format is documented in ``docs/jobs.md``; :func:`parse_job` checks every
table and key (unknown ones are errors naming the file, table and key and
listing the valid keys with their defaults), applies ``--set`` overrides
(:func:`parse_override`) before validation, and :func:`variants` expands the
``[sweep]`` table into one job per point of its cartesian product.  Compressors
and schemes are checked when the runner expands the job into cases
(:func:`hpcq.runner.expand_job`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: setup.cfg installs tomli there (the same API)
    import tomli as tomllib  # type: ignore[no-redef]

FORMAT = "hpcq-job"
VERSION = 1
DEFAULT_JOB = "<embedded default job>"


class JobError(ValueError):
    """A job that cannot run; raised on every rank alike, so no rank needs to abort."""

    #: The process exit code (2: bad input).
    exit_code = 2


class CheckFailed(JobError):
    """``check = true`` and a case's error exceeded its guarantee (its results are written)."""

    exit_code = 1


@dataclass(frozen=True)
class JobTable:
    """``[job]``: identity, seed and output of the run."""

    name: str = "job"
    seed: int = 0
    output: str = ""
    skip_unavailable: bool = False
    setup: tuple[str, ...] = ()  # commands a batch script runs first (hpcq submit)
    max_cases: int = 100_000  # a larger job is refused at validation (a typo in a sweep)


@dataclass(frozen=True)
class KernelsTable:
    """``[kernels]``: :mod:`hpcq.bench.kernels` on rank 0 while the others wait."""

    compressors: tuple[str, ...] = ("fp16", "qsgd:bits=4", "sign", "hadamard+qsgd:bits=2")
    sizes: str = "16,20"
    repeats: int = 5
    warmup: int = 2
    threads: int = 0


@dataclass(frozen=True)
class CollectivesTable:
    """``[collectives]``: :mod:`hpcq.bench.collectives` over all ranks."""

    compressors: tuple[str, ...] = ("qsgd:bits=8", "qsgd:bits=4", "sign")
    schemes: tuple[str, ...] = ("allreduce-fp32", "allgather")
    sizes: str = "16"
    iterations: int = 20
    warmup: int = 3
    check: bool = False
    #: A model's gradient (``hpcq workloads``) instead of ``sizes``: moved bucket by bucket.
    workload: str = ""
    buckets: str = "ddp"  # ddp[:first=MiB,cap=MiB] | fused[:mib=N] | single
    min_size: int = 4096  # tensors with fewer elements go uncompressed (hpcq.workloads.Policy)
    overrides: tuple[str, ...] = ()  # "PATTERN=SPEC": a codec (or none) per tensor name
    gradients: str = "normal"  # normal | laplace | student-t[:df=] | lognormal[:sigma=] | file:P


@dataclass(frozen=True)
class TrainTable:
    """``[train]``: training runs of :mod:`hpcq.algorithms` on a problem of :mod:`hpcq.problems`.

    Cases are the product of ``problems``, ``seeds`` (realizations: the problem's
    data and the run's randomness; empty means the job's seed) and ``methods``;
    a method that runs over a compressor is crossed with ``compressors``, one with
    a ``bits`` parameter its spec does not set with ``bits`` (when non-empty).
    """

    problems: tuple[str, ...] = ("lstsq:m=256,n=64,kappa=10",)
    methods: tuple[str, ...] = ("gd", "dqgd:bits=4")
    compressors: tuple[str, ...] = ("fp32",)
    bits: tuple[float, ...] = ()
    scheme: str = "allgather"
    iterations: int = 100
    step: float = 0.0
    batch: int = 0
    staleness: int = 0
    log_every: int = 1
    seeds: tuple[float, ...] = ()  # realizations (data and randomness); () = [job] seed


@dataclass(frozen=True)
class Job:
    """A validated job: its tables (None or empty where absent), sweep, source and text."""

    job: JobTable
    kernels: KernelsTable | None
    collectives: tuple[CollectivesTable, ...]
    train: tuple[TrainTable, ...]
    sweep: tuple[tuple[str, tuple[Any, ...]], ...]
    source: str
    text: str


_TABLES: dict[str, type] = {"job": JobTable, "kernels": KernelsTable,
                            "collectives": CollectivesTable, "train": TrainTable}
#: Tables that may be given as arrays of tables (``[[collectives]]``).
_BLOCKS = ("collectives", "train")
_MINIMA = {"seed": 0, "repeats": 1, "warmup": 0, "threads": 0, "iterations": 1, "step": 0.0,
           "batch": 0, "staleness": 0, "log_every": 1, "min_size": 0}
#: List keys whose items are numbers, not strings.
_NUMBER_LISTS = {"bits", "seeds"}


def _toml(value: Any) -> str:
    """A default value as it is written in TOML (JSON's syntax agrees for these types)."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _value(source: str, name: str, key: str, value: Any, default: Any) -> Any:
    """``value`` checked against the type of ``default`` (tuples: lists of strings)."""
    if isinstance(default, tuple) and key in _NUMBER_LISTS:
        ok = isinstance(value, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        want, value = "a list of numbers", tuple(float(v) for v in value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        want, value = "a list of strings", tuple(value) if ok else value
    elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        ok, want, value = True, "a number", float(value)
    else:
        # bool is an int in Python; TOML's true must not pass as a count, nor 1 as a flag
        ok = type(value) is type(default)
        want = type(default).__name__
    if not ok:
        raise JobError(f"{source}: [{name}] {key} = {_toml_repr(value)} must be {want}")
    if key in _MINIMA and value < _MINIMA[key]:
        raise JobError(f"{source}: [{name}] {key} = {value} must be >= {_MINIMA[key]}")
    return value


def _toml_repr(value: Any) -> str:
    try:
        return _toml(value)
    except TypeError:
        return repr(value)


def _valid_keys(cls: type) -> str:
    return ", ".join(f"{f.name} (default {_toml(f.default)})" for f in dataclasses.fields(cls))


def _table(source: str, name: str, raw: Any) -> Any:
    """The dataclass of table ``name`` from its TOML dict, every key checked."""
    cls = _TABLES[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(raw, dict):
        raise JobError(f"{source}: [{name}] must be a table; valid keys: {_valid_keys(cls)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise JobError(f"{source}: [{name}] unknown key {key!r}; valid keys: "
                           f"{_valid_keys(cls)}")
        values[key] = _value(source, name, key, value, fields[key].default)
    return cls(**values)


def _sweep(source: str, raw: Any, doc: dict[str, Any]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """``[sweep]``: ``"table.key" = [values]``, each key naming a field of a table in the job."""
    if not isinstance(raw, dict):
        raise JobError(f'{source}: [sweep] must be a table of "table.key" = [values]')
    out = []
    for path, values in raw.items():
        name, _, key = path.partition(".")
        if name not in _TABLES or not key:
            raise JobError(f"{source}: [sweep] {path!r}: expected \"table.key\" with table one "
                           f"of {', '.join(_TABLES)}")
        fields = {f.name: f for f in dataclasses.fields(_TABLES[name])}
        if key not in fields:
            raise JobError(f"{source}: [sweep] {path!r}: [{name}] has no key {key!r}; valid "
                           f"keys: {_valid_keys(_TABLES[name])}")
        if name != "job" and name not in doc:
            raise JobError(f"{source}: [sweep] {path!r}: the job has no [{name}] table")
        if not isinstance(values, list) or not values:
            raise JobError(f"{source}: [sweep] {path!r} must be a non-empty list of values")
        checked = tuple(_value(source, f"sweep] [{name}", key, v, fields[key].default)
                        for v in values)
        out.append((path, checked))
    return tuple(out)


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"table.key=value"`` (``--set``) -> (table, key, value); the value is read as TOML.

    A value that is not valid TOML is taken as a string, so ``--set job.name=run1``
    works without quotes.
    """
    path, eq, raw = text.partition("=")
    name, _, key = path.strip().partition(".")
    if not eq or not name or not key:
        raise JobError(f"--set {text!r}: expected TABLE.KEY=VALUE, e.g. collectives.sizes=\"20\" "
                       f"or job.seed=3")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return name, key.strip(), value


def parse_job(text: str, source: str, overrides: Sequence[str] = ()) -> Job:
    """Parse and validate job text with ``--set`` overrides (compressors: :func:`expand_job`)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise JobError(f"{source}: invalid TOML: {e}") from None
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise JobError(f"{source}: expected format = {FORMAT!r} and version = {VERSION} at the "
                       f"top of the file, got format = {doc.get('format')!r}, "
                       f"version = {doc.get('version')!r}")
    for item in overrides:
        name, key, value = parse_override(item)
        if name not in (*_TABLES, "sweep"):
            raise JobError(f"--set {item!r}: unknown table {name!r}; valid: "
                           f"{', '.join((*_TABLES, 'sweep'))}")
        target = doc.setdefault(name, {} if name in ("job", "sweep") else None)
        if target is None:
            raise JobError(f"--set {item!r}: the job has no [{name}] table")
        for block in target if isinstance(target, list) else [target]:
            block[key] = value
    unknown = sorted(set(doc) - {"format", "version", "sweep", *_TABLES})
    if unknown:
        raise JobError(f"{source}: unknown table or key {unknown[0]!r}; valid: format, version, "
                       + ", ".join(f"[{t}]" for t in (*_TABLES, "sweep")))
    if not any(t in doc for t in ("kernels", "collectives", "train")):
        raise JobError(f"{source}: nothing to run; add a [kernels], [collectives] or [train] "
                       f"table")
    blocks = {}
    for name in _BLOCKS:
        raw = doc.get(name, [])
        blocks[name] = tuple(_table(source, name, b)
                             for b in (raw if isinstance(raw, list) else [raw]))
    sweep = _sweep(source, doc["sweep"], doc) if "sweep" in doc else ()
    return Job(_table(source, "job", doc.get("job", {})),
               _table(source, "kernels", doc["kernels"]) if "kernels" in doc else None,
               blocks["collectives"], blocks["train"], sweep, source, text)


def job_from_tables(source: str, tables: dict[str, dict[str, Any]]) -> Job:
    """A job built in code (``hpcq bench ...``): ``{"job": {...}, "collectives": {...}}``
    rendered as job text and parsed like a file, so it is validated the same way and its
    text is what the result file records.  None values are left out (their defaults)."""
    lines = [f'format = "{FORMAT}"', f"version = {VERSION}"]
    for name, values in tables.items():
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {_toml(v)}" for k, v in values.items() if v is not None]
    return parse_job("\n".join(lines) + "\n", source)


def read_job(path: str | None, overrides: Sequence[str] = ()) -> Job:
    """Read and parse a job file (None: the embedded default ``jobs/default.toml``)."""
    if path is None:
        text, source = resources.files("hpcq.jobs").joinpath("default.toml").read_text(), \
            DEFAULT_JOB
    else:
        try:
            text, source = Path(path).read_text(encoding="utf-8"), path
        except OSError as e:
            raise JobError(f"{path}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise JobError(f"{path}: not a text file (byte {e.start} is not UTF-8); a job "
                           f"file is TOML text, see docs/jobs.md") from None
    return parse_job(text, source, overrides)


def check_case_count(job: Job, count: int, what: str = "cases") -> None:
    """Refuse a job of more than ``[job] max_cases`` cases (or sweep points): JobError."""
    limit = job.job.max_cases
    if count > limit:
        raise JobError(f"{job.source}: the job makes {'at least ' if what == 'cases' else ''}"
                       f"{count} {what}, above [job] max_cases = {limit}; narrow the [sweep] "
                       f"or the lists, or raise the limit (--set job.max_cases={count})")


def variants(job: Job) -> list[tuple[tuple[tuple[str, Any], ...], Job]]:
    """Every point of the ``[sweep]`` product, (point, job with its values), in file order.

    Counts the points before building any (JobError above ``[job] max_cases``)."""
    check_case_count(job, math.prod(len(values) for _, values in job.sweep), "sweep points")
    if not job.sweep:
        return [((), job)]
    out = []
    for combo in itertools.product(*(values for _, values in job.sweep)):
        point = tuple(zip((path for path, _ in job.sweep), combo, strict=True))
        j = job
        for path, value in point:
            name, _, key = path.partition(".")
            if name in _BLOCKS:
                j = dataclasses.replace(j, **{name: tuple(
                    dataclasses.replace(b, **{key: value}) for b in getattr(j, name))})
            else:
                j = dataclasses.replace(j, **{name: dataclasses.replace(getattr(j, name),
                                                                          **{key: value})})
        out.append((point, j))
    return out
