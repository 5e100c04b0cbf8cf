"""Multinomial logistic regression ``f(W) = (1/m) sum_i CE(softmax(a_i^T W), y_i) + reg/2 ||W||^2``.

The parameters are ``W`` (n features x K classes) flattened row-major, d = n K
(a bias is a column of ones in A: ``bias=true``, regularised like the rest).
Labels: any K >= 2 distinct values, mapped to 0..K-1 in sorted order.  Data:
``data=SOURCE`` (:mod:`hpcq.problems.data`), else synthetic ``m x n`` Gaussian
features labelled by a random linear teacher with Gumbel noise (``classes`` K).

Constants: ``L = lambda_max(A^T A) / (2 m) + reg`` is a valid smoothness bound (the
Hessian of one sample is ``(diag(p) - p p^T) kron a a^T`` and ``||diag(p) - p p^T||
<= 1/2``); ``mu = reg`` (None when reg = 0); x_star and f_star are not computed.

Scaling (the package convention): rank r holds rows ``A_r``, with
``loss_r = (1/m) sum_{i in r} CE_i + reg / (2 size) ||W||^2`` (the sum over ranks is f)
and ``grad_r = (size/m) A_r^T (P_r - Y_r) + reg W`` (the mean over ranks is grad f;
P the softmax probabilities, Y one-hot labels); a mini-batch B of local rows scales
the data term by ``n_local / |B|``.
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors.base import Param
from hpcq.problems import PROBLEMS
from hpcq.problems.base import MAX_GRAM_N, Problem, lambda_max, row_block
from hpcq.problems.data import DATA_PARAMS, class_codes, design, synthetic_classes
from hpcq.workloads.layout import Layout

_SYNTHETIC = ("m", "n", "classes")
_TAG = 0x736D

#: The parameters of the synthetic classification data shared with :mod:`mlp`.
SYNTHETIC_PARAMS = (
    Param("m", int, 1000, "synthetic samples", minimum=1),
    Param("n", int, 20, "synthetic features", minimum=1),
    Param("classes", int, 4, "synthetic classes", minimum=2),
)


def log_softmax(Z: np.ndarray) -> np.ndarray:
    """Row-wise ``Z - logsumexp(Z)``, shifted by the row maximum so nothing overflows."""
    if Z.shape[0] == 0:
        return Z.copy()
    out = Z - Z.max(axis=1, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=1, keepdims=True))
    return out


def classification_data(prob: Problem, tag: int, hidden: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, int]:
    """(A, labels 0..K-1, K) from ``data=`` or the synthetic teacher; checks the params."""
    p = prob.p
    if p["data"]:
        prob._only_defaults(_SYNTHETIC, f"with data={p['data']}")
        A, y = design(p["data"], scale=p["standardize"], bias=p.get("bias", False))
        codes, K = class_codes(y, p["data"], f"problem {prob.name}")
        return A, codes, K
    rng = np.random.default_rng([prob.seed, tag])
    A, codes = synthetic_classes(rng, p["m"], p["n"], p["classes"], hidden)
    if p.get("bias"):
        A = np.hstack([A, np.ones((A.shape[0], 1))])
    return A, codes, p["classes"]


def ce_terms(Z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row cross-entropy of logits Z against integer labels."""
    return -log_softmax(Z)[np.arange(Z.shape[0]), labels]


def ce_residual(Z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``softmax(Z) - onehot(labels)``, the gradient of the CE sum with respect to Z."""
    P = np.exp(log_softmax(Z))
    P[np.arange(Z.shape[0]), labels] -= 1.0
    return P


@PROBLEMS.register("softmax")
class Softmax(Problem):
    """Multinomial logistic regression (convex; strongly convex when reg > 0)."""

    name = "softmax"
    summary = "multinomial logistic regression (K classes, W flattened): L bound, mu = reg"
    params = (
        Param("reg", float, 1e-4, "l2 regularisation (mu)", minimum=0.0),
        *SYNTHETIC_PARAMS,
        *DATA_PARAMS,
    )

    def _setup(self) -> None:
        A, labels, K = classification_data(self, _TAG)
        m, n = A.shape
        self.m, self.n_features, self.K, self.d = m, n, K, n * K
        reg = self.p["reg"]
        self.L = lambda_max(A, "problem softmax", 2 * MAX_GRAM_N) / (2 * m) + reg
        self.mu = reg if reg > 0 else None
        rows = row_block(m, self.size, self.rank)
        self.A, self.labels = np.ascontiguousarray(A[rows]), labels[rows]
        self.n_local = self.A.shape[0]

    @property
    def layout(self) -> Layout:
        """The weight matrix W (n x K; a bias is its last row when ``bias=true``)."""
        return Layout.from_shapes([("W", (self.n_features, self.K))])

    def _W(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(self.n_features, self.K)

    def loss(self, x: np.ndarray) -> float:
        """This rank's share: its rows' cross-entropy over m, plus ``reg/(2 size) ||W||^2``."""
        ce = ce_terms(self.A @ self._W(x), self.labels).sum()
        return float(ce / self.m + 0.5 * self.p["reg"] / self.size * (x @ x))

    def grad(self, x: np.ndarray, batch: np.ndarray | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """``(size/m) A_r^T (P_r - Y_r) + reg W``, flattened (``batch`` rows rescaled)."""
        out = self._out(out)
        idx, factor = self._rows(batch)
        A, labels = (self.A, self.labels) if idx is None else (self.A[idx], self.labels[idx])
        np.dot(A.T, ce_residual(A @ self._W(x), labels), out=self._W(out))
        out *= self.size * factor / self.m
        if self.p["reg"]:
            out += self.p["reg"] * x
        return out
