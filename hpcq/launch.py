"""``hpcq submit``: an sbatch script rendered from a job (a pure function), then submitted.

:func:`render_sbatch` turns a job file and :class:`Resources` into a readable,
commented batch script; it is tested against golden files (``tests/golden/``).
Every value that reaches the script is validated (``#SBATCH`` lines are read by
sbatch, not by a shell, so they cannot be quoted: they must match a strict
pattern) or shell-quoted (paths), and each setup line is one line: a job name or
an option cannot add commands.  The script

* exports ``NUMBA_NUM_THREADS`` (the task's CPUs) and a ``NUMBA_CACHE_DIR`` on
  shared storage, and compiles the kernels once (``hpcq warmup``) before the ranks
  start, so they load them instead of compiling them side by side;
* launches with ``srun --mpi=pmi2`` where that plugin exists (the PyPI MPICH wheel
  needs it: ``--mpi=none`` would silently start singletons) and ``mpiexec``
  otherwise;
* names its output ``hpcq-NAME-JOBID.h5`` (``-ARRAYJOB_TASK`` for array tasks), so
  tasks never collide; with ``--array N`` task k runs the cases ``i % N == k``
  (``hpcq run --shard k/N``), and ``hpcq merge`` combines the task files.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_WORD = re.compile(r"^[A-Za-z0-9_.,:+=-]{1,128}$")  # partition, account, qos, constraint
_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")  # minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]
_MEM = re.compile(r"^\d+[KMGT]?$")


@dataclass(frozen=True)
class Resources:
    """What the batch job asks SLURM for (None: the cluster's default)."""

    nodes: int = 1
    ntasks_per_node: int = 2
    cpus_per_task: int = 1
    time: str = "00:30:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    mem: str | None = None
    constraint: str | None = None
    array: int = 0  # split the job's cases over this many array tasks (0: no array)
    setup: tuple[str, ...] = field(default_factory=tuple)

    def check(self) -> None:
        """ValueError naming the option whose value cannot go into a batch script."""
        for name, value, least in (("--nodes", self.nodes, 1),
                                   ("--ntasks-per-node", self.ntasks_per_node, 1),
                                   ("--cpus-per-task", self.cpus_per_task, 1),
                                   ("--array", self.array, 0)):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name} {value!r}: must be an integer >= {least}")
        if not _TIME.match(self.time):
            raise ValueError(f"--time {self.time!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
        if self.mem is not None and not _MEM.match(self.mem):
            raise ValueError(f"--mem {self.mem!r}: expected a size such as 4G or 512M")
        for name, value in (("--partition", self.partition), ("--account", self.account),
                            ("--qos", self.qos), ("--constraint", self.constraint)):
            if value is not None and not _WORD.match(value):
                raise ValueError(f"{name} {value!r}: only letters, digits and _.,:+=- allowed")
        for line in self.setup:
            if not line.strip() or any(c in line for c in "\n\r\0"):
                raise ValueError(f"--setup {line!r}: each setup command must be one "
                                 f"non-empty line")


def render_sbatch(job: str, name: str, res: Resources, *, output_dir: str = ".",
                  overrides: Sequence[str] = ()) -> str:
    """The batch script running ``hpcq run job`` with ``res`` (pure; validated first).

    Parameters
    ----------
    job : str
        Path of the job file as the batch job will see it.
    name : str
        The job's name (``[job] name``): letters, digits and ``_.+-``.
    res : Resources
        What to ask SLURM for.
    output_dir : str
        Where the result and log files go.
    overrides : sequence of str
        ``--set TABLE.KEY=VALUE`` options passed on to ``hpcq run``.
    """
    if not _NAME.match(name):
        raise ValueError(f"job name {name!r}: only letters, digits and _.+- (at most 64)")
    res.check()
    out = output_dir.rstrip("/") or "."
    log = f"{out}/hpcq-{name}-%A_%a.log" if res.array else f"{out}/hpcq-{name}-%j.log"
    if any(c in out for c in "\n\r\0%"):
        raise ValueError(f"output directory {output_dir!r}: no newlines or % allowed")
    lines = [
        "#!/bin/bash",
        f"# hpcq job {name!r}, rendered by `hpcq submit` from {job}",
        f"#SBATCH --job-name=hpcq-{name}",
        f"#SBATCH --nodes={res.nodes}",
        f"#SBATCH --ntasks-per-node={res.ntasks_per_node}",
        f"#SBATCH --cpus-per-task={res.cpus_per_task}",
        f"#SBATCH --time={res.time}",
        f"#SBATCH --output={log}",
    ]
    for option, value in (("partition", res.partition), ("account", res.account),
                          ("qos", res.qos), ("mem", res.mem), ("constraint", res.constraint)):
        if value is not None:
            lines.append(f"#SBATCH --{option}={value}")
    if res.array:
        lines.append(f"#SBATCH --array=0-{res.array - 1}")
    lines += ["", "set -euo pipefail"]
    if res.setup:
        lines += ["", "# setup (from --setup)", *res.setup]
    tag = ("${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" if res.array else "${SLURM_JOB_ID}")
    run = ["hpcq", "run", shlex.quote(job), "-o", "\"$out\""]
    run += [f"--set {shlex.quote(o)}" for o in overrides]
    if res.array:
        run.append(f"--shard \"${{SLURM_ARRAY_TASK_ID}}/{res.array}\"")
    lines += [
        "",
        "# one numba thread per CPU of the task; kernels compiled once, into a shared cache",
        "export NUMBA_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"",
        "export NUMBA_CACHE_DIR=\"${NUMBA_CACHE_DIR:-$HOME/.cache/hpcq/numba}\"",
        "hpcq warmup",
        "",
        f"out={shlex.quote(out)}/hpcq-{shlex.quote(name)}-{tag}.h5",
        "# srun needs the pmi2 plugin for the PyPI MPICH (--mpi=none would start singletons)",
        "if srun --mpi=list 2>&1 | grep -qw pmi2; then",
        "    launch=(srun --mpi=pmi2)",
        "else",
        "    launch=(mpiexec -n \"${SLURM_NTASKS}\")",
        "fi",
        "\"${launch[@]}\" " + " ".join(run),
        "",
    ]
    return "\n".join(lines)


def submit(script: Path, *, sbatch: str = "sbatch", wait: bool = False) -> str:
    """Submit ``script`` with ``sbatch --parsable``; return the job id (one-line errors)."""
    argv = [sbatch, "--parsable", *(["--wait"] if wait else []), str(script)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{sbatch}: not found; is this a SLURM login node? "
                                f"(--dry-run prints the script without submitting)") from None
    if done.returncode != 0:
        why = " ".join((done.stderr or done.stdout).split()) or f"exit code {done.returncode}"
        raise RuntimeError(f"sbatch refused {script}: {why}")
    job_id = done.stdout.strip().splitlines()[0].split(";")[0] if done.stdout.strip() else ""
    if not job_id.isdigit():
        raise RuntimeError(f"sbatch printed no job id for {script}: {done.stdout.strip()!r}")
    return job_id
