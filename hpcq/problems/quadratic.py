"""A data-free separable quadratic for large d: ``f(x) = 0.5 sum_i lam_i (x_i - c_i)^2``.

For benchmarks at d = 2^16..2^22, where no dense matrix fits.  ``lam`` is evenly
(``spacing=linear``) or geometrically (``log``) spaced in ``[L/kappa, L]``, ``c ~ N(0, I)``
from the seed: L, mu are exact, x_star = c, f_star = 0.

Heterogeneity: rank r's share is shifted by ``s_r = spread * (z_r - z_{(r+1) mod size})``
with ``z_k ~ N(0, I)`` seeded by (seed, k), so the shifts sum to zero over ranks and
each rank generates only two vectors (O(d) memory whatever the number of ranks).

Scaling (the package convention): ``grad_r(x) = lam * (x - c - s_r)``, whose mean over
ranks is ``lam * (x - c)`` = grad f; ``loss_r(x) = (1/size) * 0.5 sum_i lam_i
((x_i - c_i - s_r,i)^2 - s_r,i^2)``, computed as ``(1/size) * 0.5 sum lam e (e - 2 s_r)``
with ``e = x - c``, whose sum over ranks is exactly f(x) (the cross terms cancel
because the shifts sum to zero).  There are no samples (m = n_local = 0): gradients
are full, and asking for a mini-batch is an error.
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors.base import Param
from hpcq.problems import PROBLEMS
from hpcq.problems.base import Problem

_TAG_C = 0x7163
_TAG_Z = 0x717A


@PROBLEMS.register("quadratic")
class Quadratic(Problem):
    """Separable quadratic with a known spectrum and rank-dependent shifts."""

    name = "quadratic"
    summary = "separable quadratic 1/2 sum lam_i (x_i - c_i)^2 for large d: L, mu, x* exact"
    params = (
        # three float64 vectors of d per rank: 24 GiB at the maximum; more fails at
        # validation rather than at the first allocation
        Param("d", int, 1 << 16, "dimension", minimum=1, maximum=1 << 30),
        Param("L", float, 1.0, "largest curvature"),
        Param("kappa", float, 10.0, "condition number L/mu", minimum=1.0),
        Param("spacing", str, "linear", "curvature spacing", choices=("linear", "log")),
        Param("spread", float, 1.0, "size of the per-rank shifts (heterogeneity)",
              minimum=0.0),
    )

    def _setup(self) -> None:
        p = self.p
        d = self.d = p["d"]
        if not p["L"] > 0:
            raise ValueError(f"problem quadratic: parameter L={p['L']} must be > 0")
        if d == 1 and p["kappa"] != 1:
            raise ValueError("problem quadratic: d=1 has one curvature; kappa must be 1")
        space = np.geomspace if p["spacing"] == "log" else np.linspace
        self.lam = space(p["L"] / p["kappa"], p["L"], d)
        self.L, self.mu = p["L"], p["L"] / p["kappa"]
        self.x_star = np.random.default_rng([self.seed, _TAG_C]).standard_normal(d)
        self.f_star = 0.0
        # Only c + s_r is kept (a gradient is then two passes over d; loss, the rarer
        # call, recovers s_r): three vectors of d per rank.
        self.centre = self.x_star + self._shift() if self.size > 1 else self.x_star

    def _shift(self) -> np.ndarray:
        """``spread * (z_r - z_{r+1 mod size})``: zero sum over ranks, O(d) memory."""
        if self.size == 1 or self.p["spread"] == 0:
            return np.zeros(self.d)

        def z(k: int) -> np.ndarray:
            return np.random.default_rng([self.seed, _TAG_Z, k]).standard_normal(self.d)

        s = z(self.rank)
        s -= z((self.rank + 1) % self.size)
        s *= self.p["spread"]
        return s

    def batch(self, size: int, seed: int, step: int) -> np.ndarray:
        """No samples to draw from: always a ValueError."""
        raise ValueError("problem quadratic has no samples: use full gradients (batch = 0)")

    def loss(self, x: np.ndarray) -> float:
        """This rank's share ``(1/size) * 0.5 sum lam e (e - 2 s_r)``, ``e = x - c``."""
        e = x - self.x_star
        s = self.centre - self.x_star
        return float(0.5 / self.size * np.dot(self.lam * e, e - 2.0 * s))

    def grad(self, x: np.ndarray, batch: np.ndarray | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """``lam * (x - c - s_r)``, written into ``out``."""
        if batch is not None:
            self.batch(0, 0, 0)
        out = self._out(out)
        np.subtract(x, self.centre, out=out)
        out *= self.lam
        return out
