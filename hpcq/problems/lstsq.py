"""Least squares ``f(x) = c * 0.5 * ||A x - y||^2 + reg/2 * ||x||^2``, rows split by rank.

``scale = "sum"`` gives c = 1 (the DQ-GD papers' form), ``"mean"`` c = 1/m (the
ECQ-SGD form).  The matrix:

* ``spectrum`` (default): ``A = U diag(sqrt(lambda / c)) V^T`` with U (m x n) and V
  (n x n) orthonormal (QR of seeded Gaussian matrices), so the eigenvalues of the
  *scaled* Hessian ``c A^T A`` are exactly ``lambda``, evenly (``spacing=linear``) or
  geometrically (``log``) spaced in ``[L/kappa, L]``; ``y = A x_true + noise * eps``.
  L and mu are exactly ``L + reg`` and ``L/kappa + reg``.
* ``gaussian``: ``A = randn(m, n)``, ``y = A x_true + noise * eps`` (ECQ-SGD's Syn-d data).
* ``heavy``: ``A = randn(m, n)**5`` (heavy-tailed), ``y = randn(m)``: the DGD-DEF
  protocol (papers.md T7), 500 x 116 unless m and n are given; ``noise`` is unused.
* ``data=SOURCE``: a real data set (:mod:`hpcq.problems.data`), standardized with y
  centred unless ``standardize=false``; the synthetic parameters must be left out.

Otherwise L and mu are the extreme eigenvalues of ``c A^T A + reg I`` (its n x n
Gram matrix), mu = 0 when below ``1e-12 L`` (rank deficient).  x_star is
the exact minimiser (the normal equations, solved with the known eigenvectors for
``spectrum``, else with the Gram matrix, refined twice with residuals from A; the
minimum-norm one when rank deficient), f_star = f(x_star).
n is at most 4096 (dense n x n work on every rank; the quadratic problem is the
one for large d).

Scaling (the package convention): rank r holds rows ``A_r`` and
``loss_r(x) = c * 0.5 * ||A_r x - y_r||^2 + reg / (2 size) * ||x||^2`` (the sum over
ranks is f) and ``grad_r(x) = size * c * A_r^T (A_r x - y_r) + reg * x`` (the mean
over ranks is grad f); a mini-batch B of local rows scales the data term by
``n_local / |B|`` (sampling with replacement keeps it unbiased).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hpcq.compressors.base import Param
from hpcq.problems import PROBLEMS
from hpcq.problems.base import MAX_GRAM_N, Problem, row_block
from hpcq.problems.data import DATA_PARAMS, design

_SHAPES = {"spectrum": (256, 64), "gaussian": (256, 64), "heavy": (500, 116)}
_SYNTHETIC = ("matrix", "m", "n", "L", "kappa", "spacing", "noise")
_TAG = 0x6C73  # seeds the data stream apart from other problems'
_TAG_X0 = 0x7830
#: (V, lambda) with ``c A^T A = V diag(lambda) V^T``: the spectrum matrix's construction.
Spectral = tuple[np.ndarray, np.ndarray]


@PROBLEMS.register("lstsq")
class LeastSquares(Problem):
    """Least squares with a known spectrum, Gaussian or heavy-tailed matrix, or real data."""

    name = "lstsq"
    summary = "least squares c/2 ||Ax - y||^2 (+ reg/2 ||x||^2): L, mu, x* exact"
    params = (
        Param("matrix", str, "spectrum", "synthetic A: known spectrum, randn, or randn**5",
              choices=("spectrum", "gaussian", "heavy")),
        Param("m", int, 0, "rows (0: 256, or 500 for heavy)", minimum=0),
        Param("n", int, 0, "columns = d (0: 64, or 116 for heavy)", minimum=0),
        Param("L", float, 1.0, "spectrum: largest eigenvalue of the scaled Hessian"),
        Param("kappa", float, 10.0, "spectrum: condition number L/mu", minimum=1.0),
        Param("spacing", str, "linear", "spectrum: eigenvalue spacing",
              choices=("linear", "log")),
        Param("noise", float, 0.0, "standard deviation of the noise added to y = A x_true",
              minimum=0.0),
        Param("scale", str, "sum", "c = 1 (sum) or 1/m (mean)", choices=("sum", "mean")),
        Param("reg", float, 0.0, "l2 regularisation", minimum=0.0),
        Param("x0", str, "zeros", "starting point (randn: seeded N(0, I))",
              choices=("zeros", "randn")),
        *DATA_PARAMS,
    )

    def _setup(self) -> None:
        p = self.p
        rng = np.random.default_rng([self.seed, _TAG])
        spectral: Spectral | None = None
        if p["data"]:
            self._only_defaults(_SYNTHETIC, f"with data={p['data']}")
            A, y = design(p["data"], scale=p["standardize"], bias=p["bias"], center_y=True)
            c = 1.0 / A.shape[0] if p["scale"] == "mean" else 1.0
        else:
            A, y, c, spectral = self._synthetic(rng)
        m, n = A.shape
        if n > MAX_GRAM_N:
            raise ValueError(f"problem lstsq: n={n} is above {MAX_GRAM_N}, too large for the "
                             f"exact Gram matrix (L, mu, x*); use the quadratic problem")
        self.d, self.m, self.c = n, m, c
        if spectral is not None:
            self._constants_spectral(A, y, *spectral)
        else:
            self._constants(A, y)
        rows = row_block(m, self.size, self.rank)
        self.A = np.ascontiguousarray(A[rows])
        self.y = np.ascontiguousarray(y[rows])
        self.n_local = self.A.shape[0]

    def _synthetic(self, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, float, Spectral | None]:
        """The synthetic (A, y), c, and for the spectrum matrix (V, lambda)."""
        p = self.p
        kind = p["matrix"]
        m = p["m"] = p["m"] or _SHAPES[kind][0]
        n = p["n"] = p["n"] or _SHAPES[kind][1]
        c = 1.0 / m if p["scale"] == "mean" else 1.0
        if kind != "spectrum":
            unused = ("L", "kappa", "spacing") + (("noise",) if kind == "heavy" else ())
            self._only_defaults(unused, f"with matrix={kind}")
        if kind == "heavy":
            return rng.standard_normal((m, n)) ** 5, rng.standard_normal(m), c, None
        spectral = None
        if kind == "gaussian":
            A = rng.standard_normal((m, n))
        else:
            if m < n:
                raise ValueError(f"problem lstsq: matrix=spectrum needs m >= n (got m={m}, "
                                 f"n={n}): A^T A has rank at most m")
            if not p["L"] > 0:
                raise ValueError(f"problem lstsq: parameter L={p['L']} must be > 0")
            if n == 1 and p["kappa"] != 1:
                raise ValueError("problem lstsq: n=1 has one eigenvalue; kappa must be 1")
            space = np.geomspace if p["spacing"] == "log" else np.linspace
            lam = space(p["L"] / p["kappa"], p["L"], n)  # both ends exact
            U = np.linalg.qr(rng.standard_normal((m, n)))[0]
            V = np.linalg.qr(rng.standard_normal((n, n)))[0]
            A = (U * np.sqrt(lam / c)) @ V.T
            spectral = (V, lam)
        x_true = rng.standard_normal(n)
        y = A @ x_true + p["noise"] * rng.standard_normal(m)
        return A, y, c, spectral

    def _constants_spectral(self, A: np.ndarray, y: np.ndarray, V: np.ndarray,
                            lam: np.ndarray) -> None:
        """L, mu exact; x_star from the known eigendecomposition ``c A^T A = V diag(lam) V^T``
        (no Gram matrix, no eigensolver: O(m n) after building A)."""
        reg = self.p["reg"]
        self.L, self.mu = float(lam[-1] + reg), float(lam[0] + reg)
        self._solve(A, y, lambda v: V @ ((V.T @ v) / (lam + reg)))

    def _constants(self, A: np.ndarray, y: np.ndarray) -> None:
        """L, mu from the Gram matrix, x_star and f_star on the full data."""
        c, reg, n = self.c, self.p["reg"], A.shape[1]
        gram = c * (A.T @ A)
        gram[np.diag_indices(n)] += reg
        w = np.linalg.eigvalsh(gram)
        self.L, self.mu = float(w[-1]), float(w[0])
        if self.mu >= 1e-12 * self.L:
            self._solve(A, y, lambda v: np.linalg.solve(gram, v))
            return
        # Rank deficient: the minimum-norm minimiser, from A itself (the Gram matrix
        # would square an already infinite condition number).
        self.mu = 0.0
        Aa = np.vstack([np.sqrt(c) * A, np.sqrt(reg) * np.eye(n)]) if reg else np.sqrt(c) * A
        ya = np.concatenate([np.sqrt(c) * y, np.zeros(n)]) if reg else np.sqrt(c) * y
        self._set_star(A, y, np.linalg.lstsq(Aa, ya, rcond=None)[0])

    def _solve(self, A: np.ndarray, y: np.ndarray,
               inverse: Callable[[np.ndarray], np.ndarray]) -> None:
        """x_star from the normal equations, refined with residuals computed from A (not
        from the rounded Gram matrix or eigenvectors)."""
        c, reg = self.c, self.p["reg"]
        x = inverse(c * (A.T @ y))
        for _ in range(2):
            x += inverse(c * (A.T @ (y - A @ x)) - reg * x)
        self._set_star(A, y, x)

    def _set_star(self, A: np.ndarray, y: np.ndarray, x: np.ndarray) -> None:
        r = A @ x - y
        self.x_star = x
        self.f_star = float(0.5 * self.c * (r @ r) + 0.5 * self.p["reg"] * (x @ x))

    def x0(self) -> np.ndarray:
        """Zeros, or seeded N(0, I) (``x0=randn``; identical on every rank)."""
        if self.p["x0"] == "randn":
            return np.random.default_rng([self.seed, _TAG_X0]).standard_normal(self.d)
        return np.zeros(self.d)

    def loss(self, x: np.ndarray) -> float:
        """This rank's share: ``c/2 ||A_r x - y_r||^2 + reg/(2 size) ||x||^2``."""
        r = self.A @ x - self.y
        return float(0.5 * self.c * (r @ r) + 0.5 * self.p["reg"] / self.size * (x @ x))

    def grad(self, x: np.ndarray, batch: np.ndarray | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """``size * c * A_r^T (A_r x - y_r) + reg x`` (the rows of ``batch`` rescaled)."""
        out = self._out(out)
        idx, factor = self._rows(batch)
        A, y = (self.A, self.y) if idx is None else (self.A[idx], self.y[idx])
        r = A @ x
        r -= y
        np.dot(A.T, r, out=out)
        out *= self.size * self.c * factor
        if self.p["reg"]:
            out += self.p["reg"] * x
        return out
