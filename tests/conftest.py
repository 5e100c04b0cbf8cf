"""Shared test setup: the numba cache, and spawning real MPI ranks with a timeout.

MPI tests never run ranks inside pytest: :func:`mpirun` starts
``mpiexec -n N python -m hpcq ...`` (or a payload script from ``tests/mpi/``) as
a subprocess with a timeout, so a deadlock is a failing test with its output,
not a hung CI job.  They are marked ``mpi`` (``pytest -m "not mpi"`` skips them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MPI_PAYLOADS = Path(__file__).resolve().parent / "mpi"

# Before numba is imported anywhere: one cache inside the checkout, shared by the
# ranks spawned below (they inherit the environment).
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

import pytest  # noqa: E402

#: Codecs the MPI tests and the default job use; warmed once before any spawn.
MPI_TEST_SPECS = ("fp32", "fp16", "bf16", "qsgd:bits=4", "uniform:bits=2", "sign",
                  "hadamard+sign:scale=drive",
                  "hadamard+qsgd:bits=2", "terngrad", "topk:ratio=0.05", "randk:ratio=0.05",
                  "vqsgd:reps=4", "fixedrange:bits=3,range=4")


def find_mpiexec() -> str | None:
    """The MPI launcher: ``$MPIEXEC``, else ``mpiexec`` beside this Python, else on PATH."""
    if os.environ.get("MPIEXEC"):
        return os.environ["MPIEXEC"]
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    return shutil.which("mpiexec")


def mpi_env() -> dict[str, str]:
    """Environment of spawned ranks: unbuffered, oversubscription allowed, one numba thread."""
    env = dict(os.environ)
    env.update({
        "PYTHONUNBUFFERED": "1",
        "NUMBA_NUM_THREADS": "1",  # ranks x threads must not exceed the cores we measure on
        "OMPI_MCA_rmaps_base_oversubscribe": "1",  # Open MPI 4
        "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",  # Open MPI 5
        "OMPI_MCA_btl_vader_single_copy_mechanism": "none",  # containers without CMA
        # Open MPI 4: no launcher banner on stderr when a rank exits non-zero (tests read stderr)
        "OMPI_MCA_orte_execute_quiet": "1",
    })
    return env


Runner = Callable[..., subprocess.CompletedProcess[str]]


def _run(argv: Sequence[str], *, timeout: float, cwd: Path | None, expect: int | None
         ) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env=mpi_env(), cwd=cwd, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(argv)} did not finish in {timeout} s (deadlock?)\n"
                    f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}")
    report = f"{' '.join(argv)} exited {done.returncode}\nstdout:\n{done.stdout}\n" \
             f"stderr:\n{done.stderr}"
    assert "Traceback" not in done.stderr, report
    if expect is not None:
        assert done.returncode == expect, report
    return done


@pytest.fixture(scope="session")
def warm_cache() -> None:
    """Compile the kernels of :data:`MPI_TEST_SPECS` once, here, before ranks are spawned.

    N ranks compiling the same functions at once would write the same cache
    files concurrently and take N times the CPU.
    """
    from hpcq.bench import resolve_compressors
    from hpcq.bench.kernels import compile_kernels

    comps, _ = resolve_compressors(MPI_TEST_SPECS, skip_unavailable=True)
    compile_kernels([c for _, c in comps])


@pytest.fixture
def mpirun(warm_cache: None, tmp_path: Path) -> Iterator[Runner]:
    """``mpirun(n, *args, payload=None, timeout=120, expect=0)`` -> CompletedProcess.

    Runs ``mpiexec -n n python -m hpcq *args`` (or ``python tests/mpi/<payload> *args``)
    in ``tmp_path``; asserts no ``Traceback`` on stderr and, unless ``expect`` is None,
    the exit code.  Skips the test when no launcher is found.
    """
    launcher = find_mpiexec()
    if launcher is None:
        pytest.skip("no MPI launcher: set $MPIEXEC or install one (pip install mpich)")

    def run(n: int, *args: str, payload: str | None = None, timeout: float = 120,
            expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        target = [str(MPI_PAYLOADS / payload)] if payload else ["-m", "hpcq"]
        argv = [launcher, "-n", str(n), sys.executable, *target, *args]
        return _run(argv, timeout=timeout, cwd=tmp_path, expect=expect)

    yield run


@pytest.fixture
def hpcq_cli(tmp_path: Path) -> Runner:
    """``hpcq_cli(*args, expect=0)``: ``python -m hpcq *args`` as one plain process."""
    def run(*args: str, timeout: float = 120, expect: int | None = 0
            ) -> subprocess.CompletedProcess[str]:
        return _run([sys.executable, "-m", "hpcq", *args], timeout=timeout, cwd=tmp_path,
                    expect=expect)

    return run
