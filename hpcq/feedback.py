"""Error feedback: a per-rank memory around any compressor (never sent on the wire).

One rule covers the schemes of papers.md: with memory ``h`` (zero at start),

    p = g + alpha * h            # compensated input
    buf = C(p)                   # the only thing that travels
    h <- beta * h + (g - D(buf)) # D = decode

* ``alpha = beta = 1`` is classic error feedback (EF-SGD, EF-signSGD with the
  step folded into ``g``): ``h`` becomes ``p - D(buf)``, the last compression error,
  so ``g + h_old == D(buf) + h_new`` exactly (up to float32 rounding).
* ECQ-SGD (Wu et al. 2018, papers.md section 4) is the same rule with its
  compensation coefficient ``alpha`` and time-decay factor ``beta``: the memory is
  then the beta-discounted sum of all past errors ``g - Q(g + alpha h)``.

Usage::

    ef = feedback("ecq:alpha=0.5,beta=0.9", compressor("qsgd:s=4,bucket=0"))
    buf, q = ef.encode(g, seed=seed, step=t, rank=r)   # q = D(buf), reused by the caller
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpcq.compressors.base import Compressor, _as_vector
from hpcq.kernels import feedback as _k
from hpcq.registry import Registry

FEEDBACK: Registry[type[ErrorFeedback]] = Registry("error feedback")


class ErrorFeedback:
    """Error-feedback memory with coefficients ``alpha`` (compensation) and ``beta`` (decay).

    Parameters
    ----------
    comp : the compressor applied to the compensated vector
    alpha : weight of the memory added to the gradient, >= 0
    beta : decay of the memory per step, in [0, 1]
    """

    name = "ef"

    def __init__(self, comp: Compressor, alpha: float = 1.0, beta: float = 1.0) -> None:
        for label, v in (("alpha", alpha), ("beta", beta)):
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{self.name}: {label}={v!r} must be a finite number")
        if alpha < 0:
            raise ValueError(f"{self.name}: alpha={alpha} must be >= 0")
        if not 0 <= beta <= 1:
            raise ValueError(f"{self.name}: beta={beta} must be in [0, 1] (a decay factor)")
        self.comp = comp
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.memory: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the memory (it restarts at zero on the next call)."""
        self.memory = None

    def _memory_for(self, g: np.ndarray) -> np.ndarray:
        if self.memory is None:
            self.memory = np.zeros(g.shape[0], dtype=np.float32)
        elif self.memory.shape != g.shape:
            raise ValueError(f"{self.name}: gradient length changed from "
                             f"{self.memory.shape[0]} to {g.shape[0]}; call reset() first")
        return self.memory

    def compensate(self, g: np.ndarray) -> np.ndarray:
        """The vector to compress: ``g + alpha * h`` (float32)."""
        g = _as_vector(g, self.name)
        return _k.compensate(g, self._memory_for(g), self.alpha)

    def update(self, g: np.ndarray, decoded: np.ndarray) -> None:
        """Fold this step's error into the memory: ``h = beta * h + (g - decoded)``."""
        g = _as_vector(g, self.name)
        h = self._memory_for(g)
        q = _as_vector(decoded, self.name)
        if q.shape != g.shape:
            raise ValueError(f"{self.name}: decoded length {q.shape[0]} != gradient length "
                             f"{g.shape[0]}")
        _k.update(g, q, h, self.beta)

    def encode(self, g: np.ndarray, *, seed: int = 0, step: int = 0,
               rank: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Compensate, encode, decode and update: ``(message, decoded message)``."""
        g = _as_vector(g, self.name)
        buf = self.comp.encode(self.compensate(g), seed=seed, step=step, rank=rank)
        q = self.comp.decode(buf)
        self.update(g, q)
        return buf, q

    def describe(self) -> dict[str, Any]:
        """Name, coefficients and the compressor's description."""
        return {"feedback": self.name, "alpha": self.alpha, "beta": self.beta,
                "compressor": self.comp.describe()}


FEEDBACK.register("ef")(ErrorFeedback)


@FEEDBACK.register("ecq")
class ECQFeedback(ErrorFeedback):
    """ECQ-SGD's error compensation: same rule, defaults alpha = 0.5, beta = 0.9.

    papers.md 4(b) notes that alpha = beta = 1 diverges for QSGD with l2 scaling,
    s = 4 at d = 256, while alpha <= 0.5 is stable; the paper's values are not known.
    """

    name = "ecq"

    def __init__(self, comp: Compressor, alpha: float = 0.5, beta: float = 0.9) -> None:
        super().__init__(comp, alpha, beta)


def feedback(spec: str, comp: Compressor) -> ErrorFeedback:
    """Build error feedback from ``"ef"`` or ``"ecq:alpha=0.5,beta=0.9"`` around ``comp``."""
    name, _, text = spec.strip().partition(":")
    cls = FEEDBACK.get(name)
    kw: dict[str, float] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in ("alpha", "beta"):
            raise ValueError(f"{name}: expected alpha=<number> or beta=<number>, got {item!r}")
        try:
            kw[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{name}: {key.strip()}={value!r} is not a number") from None
    return cls(comp, **kw)
