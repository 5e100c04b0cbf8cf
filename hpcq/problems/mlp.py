"""A one-hidden-layer perceptron: the non-convex problem.

``f(theta) = (1/m) sum_i CE(softmax(W2^T act(W1^T a_i + b1) + b2), y_i) + reg/2 ||theta||^2``
with ``act`` tanh or relu and theta = (W1 (n x h), b1 (h), W2 (h x K), b2 (K))
flattened in that order, each row-major.  Data and labels as for
:mod:`hpcq.problems.softmax` (the synthetic teacher here is itself a tanh network,
so a linear model cannot fit it).  ``x0`` is Glorot-uniform weights and zero biases
from the seed, identical on every rank.  L, mu, x_star and f_star are unknown (None).

Scaling (the package convention): ``loss_r = (1/m) sum_{i in r} CE_i + reg / (2 size)
||theta||^2`` (the sum over ranks is f); ``grad_r = size * (gradient of the rank's
data term) + reg theta`` (the mean over ranks is grad f), computed by vectorised
backpropagation; a mini-batch B of local rows scales the data term by ``n_local / |B|``.
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors.base import Param
from hpcq.problems import PROBLEMS
from hpcq.problems.base import Problem, row_block
from hpcq.problems.data import DATA_PARAMS
from hpcq.problems.softmax import SYNTHETIC_PARAMS, ce_residual, ce_terms, classification_data
from hpcq.workloads.layout import Layout

_TAG = 0x6D6C
_TAG_X0 = 0x7830
_TEACHER_HIDDEN = 16


@PROBLEMS.register("mlp")
class MLP(Problem):
    """One hidden layer, softmax output, mean cross-entropy (non-convex)."""

    name = "mlp"
    summary = "one-hidden-layer perceptron, softmax cross-entropy (non-convex; no L, mu, x*)"
    params = (
        Param("hidden", int, 32, "hidden units", minimum=1),
        Param("activation", str, "tanh", "hidden activation", choices=("tanh", "relu")),
        Param("reg", float, 0.0, "l2 regularisation of all parameters", minimum=0.0),
        *SYNTHETIC_PARAMS,
        *DATA_PARAMS[:2],  # no bias column: the layers have their own biases
    )

    def _setup(self) -> None:
        A, labels, K = classification_data(self, _TAG, hidden=_TEACHER_HIDDEN)
        m, n = A.shape
        h = self.p["hidden"]
        self.m, self.n_features, self.K = m, n, K
        # offsets of W1, b1, W2, b2 in theta
        self._cuts = np.cumsum([0, n * h, h, h * K, K])
        self.d = int(self._cuts[-1])
        rows = row_block(m, self.size, self.rank)
        self.A, self.labels = np.ascontiguousarray(A[rows]), labels[rows]
        self.n_local = self.A.shape[0]

    @property
    def layout(self) -> Layout:
        """W1 (n x h), b1 (h), W2 (h x K), b2 (K), in theta's order."""
        n, h, K = self.n_features, self.p["hidden"], self.K
        return Layout.from_shapes([("W1", (n, h)), ("b1", (h,)), ("W2", (h, K)), ("b2", (K,))])

    def _split(self, theta: np.ndarray) -> tuple[np.ndarray, ...]:
        """Views W1, b1, W2, b2 of ``theta``."""
        n, h, K, c = self.n_features, self.p["hidden"], self.K, self._cuts
        return (theta[c[0]:c[1]].reshape(n, h), theta[c[1]:c[2]],
                theta[c[2]:c[3]].reshape(h, K), theta[c[3]:c[4]])

    def x0(self) -> np.ndarray:
        """Glorot-uniform weights, zero biases (seeded; identical on every rank)."""
        theta = np.zeros(self.d)
        W1, _, W2, _ = self._split(theta)
        rng = np.random.default_rng([self.seed, _TAG_X0])
        for W in (W1, W2):
            limit = np.sqrt(6.0 / (W.shape[0] + W.shape[1]))
            W[...] = rng.uniform(-limit, limit, size=W.shape)
        return theta

    def _forward(self, A: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hidden activations H and output logits Z."""
        W1, b1, W2, b2 = self._split(theta)
        pre = A @ W1
        pre += b1
        H = np.tanh(pre) if self.p["activation"] == "tanh" else np.maximum(pre, 0.0)
        Z = H @ W2
        Z += b2
        return H, Z

    def loss(self, x: np.ndarray) -> float:
        """This rank's share: its rows' cross-entropy over m, plus ``reg/(2 size) ||x||^2``."""
        ce = ce_terms(self._forward(self.A, x)[1], self.labels).sum()
        return float(ce / self.m + 0.5 * self.p["reg"] / self.size * (x @ x))

    def grad(self, x: np.ndarray, batch: np.ndarray | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """Backpropagation of the rank's (or ``batch``'s, rescaled) rows, plus ``reg x``."""
        out = self._out(out)
        idx, factor = self._rows(batch)
        A, labels = (self.A, self.labels) if idx is None else (self.A[idx], self.labels[idx])
        H, Z = self._forward(A, x)
        dZ = ce_residual(Z, labels)
        dZ *= self.size * factor / self.m
        _, _, W2, _ = self._split(x)
        gW1, gb1, gW2, gb2 = self._split(out)
        np.dot(H.T, dZ, out=gW2)
        np.sum(dZ, axis=0, out=gb2)
        dH = dZ @ W2.T
        if self.p["activation"] == "tanh":
            dH *= 1.0 - H * H
        else:
            dH *= H > 0
        np.dot(A.T, dH, out=gW1)
        np.sum(dH, axis=0, out=gb1)
        if self.p["reg"]:
            out += self.p["reg"] * x
        return out
