"""The problem interface: one rank's share of a finite-sum objective.

Every problem is ``f(x) = sum_r f_r(x)`` over the ranks of a communicator; the
samples (rows) are split across ranks in contiguous blocks
(:func:`row_block`), every rank building or reading the same full data from the
same seed or file and keeping its own rows.  Conventions every problem keeps:

* :meth:`Problem.loss` is this rank's share: the sum over ranks is ``f(x)``.
* :meth:`Problem.grad` is scaled so that the **mean** over ranks is ``grad f(x)``
  (full batch), or an unbiased estimate of it (mini-batch): the collectives of
  :mod:`hpcq.collectives` compute means.
* ``L``, ``mu``, ``x_star`` and ``f_star`` describe the *global* objective and are
  None where unknown (non-convex problems); they are identical on every rank.
* Parameters are float64 vectors of length ``d``; gradients are float64.
* Mini-batches are drawn from ``(seed, rank, step)`` alone (:meth:`Problem.batch`),
  so a run is reproducible whatever else happened before.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from hpcq.compressors.base import Param, parse_params
from hpcq.workloads.layout import Layout

#: Largest matrix side for which problems form a Gram matrix (eigenvalues, exact solves):
#: an eigendecomposition of 4096 x 4096 takes seconds, and every rank makes its own.
MAX_GRAM_N = 4096


def lambda_max(A: np.ndarray, owner: str, limit: int = MAX_GRAM_N) -> float:
    """Largest eigenvalue of ``A^T A``, from the smaller of the two Gram matrices.

    ValueError naming ``owner`` when both sides of ``A`` exceed ``limit``.
    """
    m, n = A.shape
    if min(m, n) > limit:
        raise ValueError(f"{owner}: {m} x {n} data is too large for an exact Gram matrix "
                         f"(limit {limit} on the smaller side)")
    if min(m, n) == 0:
        return 0.0
    gram = A.T @ A if n <= m else A @ A.T
    return float(np.linalg.eigvalsh(gram)[-1])


def row_block(m: int, size: int, rank: int) -> slice:
    """Rows of rank ``rank`` of ``size``: contiguous, the first ``m % size`` ranks one longer."""
    base, extra = divmod(m, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


class Problem:
    """Base class of a problem (see the module docstring for the conventions).

    Subclasses set ``name``, ``params`` and ``summary`` and implement
    :meth:`_setup`, :meth:`loss`, :meth:`grad` and (for mini-batches)
    ``n_local``.  ``self.p`` holds the parsed parameters.
    """

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    summary: ClassVar[str] = ""

    #: Number of parameters.
    d: int
    #: Total number of samples over all ranks (0 for data-free problems).
    m: int = 0
    #: This rank's number of samples (mini-batches are drawn from 0..n_local-1).
    n_local: int = 0
    L: float | None = None
    mu: float | None = None
    x_star: np.ndarray | None = None
    f_star: float | None = None

    def __init__(self, *, rank: int = 0, size: int = 1, seed: int = 0, **values: Any) -> None:
        self.p: dict[str, Any] = parse_params(self.params, values, f"problem {self.name}")
        if not (0 <= rank < size):
            raise ValueError(f"problem {self.name}: rank {rank} not in [0, {size})")
        self.rank, self.size, self.seed = rank, size, seed
        self._setup()

    # ------------------------------------------------------------ subclass hooks
    def _setup(self) -> None:
        """Build or read the data, keep this rank's rows; set d, m, n_local, L, mu,
        x_star, f_star."""
        raise NotImplementedError

    def loss(self, x: np.ndarray) -> float:
        """This rank's share of ``f(x)`` (the sum over ranks is ``f(x)``)."""
        raise NotImplementedError

    def grad(self, x: np.ndarray, batch: np.ndarray | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """This rank's gradient share: the mean over ranks is ``grad f(x)``.

        ``batch``: local sample indices (from :meth:`batch`); the share is then an
        unbiased estimate of the full-batch share.  ``out``: a float64 vector of
        length d to write into (returned).
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ common
    @property
    def layout(self) -> Layout:
        """The parameter vector as named tensors: one tensor ``x`` of length d unless the
        problem has layers (mlp, softmax)."""
        return Layout.flat(self.d)

    @property
    def kappa(self) -> float | None:
        """Condition number ``L / mu`` where both are known."""
        if self.L is None or not self.mu:
            return None
        return self.L / self.mu

    def x0(self) -> np.ndarray:
        """The starting point (float64, identical on every rank): zeros unless overridden."""
        return np.zeros(self.d)

    def batch(self, size: int, seed: int, step: int) -> np.ndarray:
        """``size`` local sample indices drawn with replacement from ``(seed, rank, step)``."""
        if self.n_local <= 0:
            raise ValueError(f"problem {self.name}: rank {self.rank} holds no samples to draw "
                             f"a mini-batch from")
        rng = np.random.default_rng([seed, self.rank, step, 0x6261])
        return rng.integers(0, self.n_local, size=size)

    # ----------------------------------------------------------- subclass helpers
    def _out(self, out: np.ndarray | None) -> np.ndarray:
        """``out`` checked (float64, shape (d,), C-contiguous), or a new vector."""
        if out is None:
            return np.empty(self.d)
        if (not isinstance(out, np.ndarray) or out.dtype != np.float64 or out.shape != (self.d,)
                or not out.flags.c_contiguous):
            raise ValueError(f"problem {self.name}: out must be a C-contiguous float64 vector "
                             f"of length {self.d}")
        return out

    def _rows(self, batch: np.ndarray | None) -> tuple[np.ndarray | None, float]:
        """The local rows a gradient uses (None: all) and the unbiasing factor
        ``n_local / len(batch)`` (1 for the full batch)."""
        if batch is None:
            return None, 1.0
        idx = np.asarray(batch)
        if idx.ndim != 1 or idx.shape[0] == 0 or idx.dtype.kind not in "iu":
            raise ValueError(f"problem {self.name}: batch must be a non-empty 1-D array of "
                             f"local sample indices")
        if self.n_local == 0 or idx.min() < 0 or idx.max() >= self.n_local:
            raise ValueError(f"problem {self.name}: batch indices must lie in "
                             f"[0, {self.n_local}) on rank {self.rank}")
        return idx, self.n_local / idx.shape[0]

    def _only_defaults(self, names: tuple[str, ...], why: str) -> None:
        """ValueError if any of ``names`` was given a value other than its default."""
        given = [p.name for p in self.params if p.name in names and self.p[p.name] != p.default]
        if given:
            raise ValueError(f"problem {self.name}: parameter(s) {', '.join(given)} unused "
                             f"{why}; leave them out")

    @property
    def spec(self) -> str:
        """The canonical spec string, e.g. ``lstsq:m=256,n=64,...``."""
        body = ",".join(f"{k}={v}" for k, v in self.p.items())
        return f"{self.name}:{body}" if body else self.name

    def describe(self) -> dict[str, Any]:
        """Name, spec, sizes and the known constants, for result files."""
        out: dict[str, Any] = {"name": self.name, "spec": self.spec, "d": self.d, "m": self.m}
        for key in ("L", "mu", "kappa", "f_star"):
            v = getattr(self, key)
            if v is not None:
                out[key] = float(v)
        out["x_star_known"] = self.x_star is not None
        return out
