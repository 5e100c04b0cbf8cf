"""l2-regularised logistic regression.

``f(x) = (1/m) sum_i log(1 + exp(-y_i a_i^T x)) + reg/2 ||x||^2``.

Labels: any two distinct values, the smaller mapped to -1 and the larger to +1.
Data: ``data=SOURCE`` (:mod:`hpcq.problems.data`; standardized unless
``standardize=false``), else synthetic: ``m x n`` Gaussian features, labels the
side of a random hyperplane, a fraction ``flip`` of them flipped (``bias`` appends
a column of ones to either).

Constants: ``L = lambda_max(A^T A) / (4 m) + reg`` (the logistic loss has curvature
at most 1/4), ``mu = reg`` (> 0 required), x_star by Newton's method on the full
data to ``||grad|| <= 1e-12 max(1, ||grad(0)||)``, f_star = f(x_star).

Scaling (the package convention): rank r holds rows ``A_r``, with
``loss_r(x) = (1/m) sum_{i in r} log(1 + exp(-y_i a_i^T x)) + reg / (2 size) ||x||^2``
(the sum over ranks is f) and ``grad_r(x) = (size/m) A_r^T (-y_r * sigmoid(-y_r A_r x)) +
reg x`` (the mean over ranks is grad f); a mini-batch B of local rows scales the data
term by ``n_local / |B|``.
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors.base import Param
from hpcq.problems import PROBLEMS
from hpcq.problems.base import MAX_GRAM_N, Problem, lambda_max, row_block
from hpcq.problems.data import DATA_PARAMS, design

#: Logistic regression reads data with up to this many features (gisette has 5000):
#: Newton's method solves n x n systems, on every rank.
MAX_N = 2 * MAX_GRAM_N
_SYNTHETIC = ("m", "n", "flip")
_TAG = 0x6C67


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow for any z."""
    return np.exp(-np.logaddexp(0.0, -z))


@PROBLEMS.register("logistic")
class Logistic(Problem):
    """Binary logistic regression with l2 regularisation (strongly convex)."""

    name = "logistic"
    summary = "l2-regularised logistic regression (two classes): L bound, mu, x* exact"
    params = (
        Param("reg", float, 1e-3, "l2 regularisation (> 0): mu"),
        Param("m", int, 1000, "synthetic samples", minimum=1),
        Param("n", int, 50, "synthetic features", minimum=1),
        Param("flip", float, 0.1, "synthetic: fraction of labels flipped", minimum=0.0,
              maximum=1.0),
        *DATA_PARAMS,
    )

    def _setup(self) -> None:
        p = self.p
        if not p["reg"] > 0:
            raise ValueError(f"problem logistic: parameter reg={p['reg']} must be > 0 "
                             f"(strong convexity, a finite minimiser)")
        if p["data"]:
            self._only_defaults(_SYNTHETIC, f"with data={p['data']}")
            A, labels = design(p["data"], scale=p["standardize"], bias=p["bias"])
            y = self._signs(labels)
        else:
            A, y = self._synthetic()
        m, n = A.shape
        if n > MAX_N:
            raise ValueError(f"problem logistic: {n} features is above {MAX_N} (Newton's "
                             f"method for x* solves n x n systems)")
        self.d, self.m = n, m
        self.L = lambda_max(A, "problem logistic", MAX_N) / (4 * m) + p["reg"]
        self.mu = p["reg"]
        self.x_star = self._newton(A, y)
        self.f_star = self._f(A, y, self.x_star)
        rows = row_block(m, self.size, self.rank)
        self.A, self.y = np.ascontiguousarray(A[rows]), np.ascontiguousarray(y[rows])
        self.n_local = self.A.shape[0]

    def _signs(self, labels: np.ndarray) -> np.ndarray:
        """Two distinct label values as -1 / +1."""
        values = np.unique(labels)
        if values.shape[0] != 2:
            what = "a single label value" if values.shape[0] < 2 else \
                f"{values.shape[0]} classes"
            raise ValueError(f"problem logistic: data {self.p['data']} has {what}; logistic "
                             f"needs exactly two (use softmax for more)")
        return np.where(labels == values[1], 1.0, -1.0)

    def _synthetic(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        rng = np.random.default_rng([self.seed, _TAG])
        A = rng.standard_normal((p["m"], p["n"]))
        y = np.where(A @ rng.standard_normal(p["n"]) >= 0, 1.0, -1.0)
        y[rng.random(p["m"]) < p["flip"]] *= -1.0
        if p["bias"]:
            A = np.hstack([A, np.ones((p["m"], 1))])
        return A, y

    def _f(self, A: np.ndarray, y: np.ndarray, x: np.ndarray) -> float:
        """f on the full data."""
        return float(np.logaddexp(0.0, -y * (A @ x)).mean() + 0.5 * self.p["reg"] * (x @ x))

    def _newton(self, A: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The minimiser by Newton's method with backtracking, from 0."""
        m, n = A.shape
        reg = self.p["reg"]
        x = np.zeros(n)

        def grad(x: np.ndarray) -> np.ndarray:
            return A.T @ (-y * sigmoid(-y * (A @ x))) / m + reg * x

        g = grad(x)
        tol = 1e-12 * max(1.0, float(np.linalg.norm(g)))
        f = self._f(A, y, x)
        for _ in range(100):
            gnorm = float(np.linalg.norm(g))
            if gnorm <= tol:
                return x
            s = sigmoid(A @ x)
            H = A.T @ (A * (s * (1.0 - s))[:, None]) / m
            H[np.diag_indices(n)] += reg
            step = np.linalg.solve(H, g)
            t = 1.0
            while True:  # Armijo, or a smaller gradient where f no longer resolves the step
                x_new = x - t * step
                f_new, g_new = self._f(A, y, x_new), grad(x_new)
                if (f_new <= f - 1e-4 * t * (g @ step) or np.linalg.norm(g_new) < gnorm
                        or t < 1e-10):
                    break
                t *= 0.5
            x, f, g = x_new, f_new, g_new
        raise ValueError(f"problem logistic: Newton's method did not reach ||grad|| <= "
                         f"{tol:.3g} in 100 steps (||grad|| = {np.linalg.norm(g):.3g})")

    def loss(self, x: np.ndarray) -> float:
        """This rank's share: its rows' terms over m, plus ``reg/(2 size) ||x||^2``."""
        z = -self.y * (self.A @ x)
        return float(np.logaddexp(0.0, z).sum() / self.m
                     + 0.5 * self.p["reg"] / self.size * (x @ x))

    def grad(self, x: np.ndarray, batch: np.ndarray | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """``(size/m) A_r^T (-y_r sigmoid(-y_r A_r x)) + reg x`` (``batch`` rows rescaled)."""
        out = self._out(out)
        idx, factor = self._rows(batch)
        A, y = (self.A, self.y) if idx is None else (self.A[idx], self.y[idx])
        w = sigmoid(-y * (A @ x))
        w *= -y
        np.dot(A.T, w, out=out)
        out *= self.size * factor / self.m
        out += self.p["reg"] * x
        return out
