"""What every training method shares: its spec, the run context, the trace and the step size.

A *method* (``gd``, ``ecq-sgd``, ``dqgd`` ...) is a class with parameters
(:class:`~hpcq.compressors.base.Param`, parsed from a spec string such as
``"ecq-sgd:alpha=0.5,beta=0.9"``) and one entry point, :meth:`Method.run`,
which every rank of the communicator calls with the same :class:`Context` and
which returns this rank's :class:`Trace`.

The trace (one row per iteration ``t = 0..T-1``, plus logged points)
--------------------------------------------------------------------
* seconds of this rank in ``compute`` (the local gradient), ``encode``,
  ``comm`` (inside MPI, waiting included), ``decode``, ``update`` (the
  method's own vector arithmetic: x <- x - eta * mean, error memories) and the
  whole ``iter`` (everything the loop does in that iteration; the rest is the
  Python loop's overhead: ``iter - compute - encode - comm - decode - update``);
* bytes: ``bytes_sent`` / ``bytes_recv``, what the collectives moved for this
  rank (hpcq headers included: :class:`hpcq.collectives.Stats`), and
  ``payload_bits`` / ``side_bits``, the bits the papers' theory counts for this
  rank's message (:meth:`~hpcq.compressors.base.Compressor.theory_bits`: values
  or indices, then every scale, norm or range that had to travel; for a
  variable-length (entropy) code moved by allgather, the payload is the message's
  real coded length: its bytes less the header, in bits, less the scales);
* at logged iterations (``log_iter``; 0 is the start, ``k`` the point after
  ``k`` updates): ``loss`` = f(x), ``dist`` = ||x - x*|| when x* is known, and
  ``grad_norm`` = ||grad f(x)|| (exact, fp64 Allreduce: measured outside the
  timed loop, never counted in the bytes).

Evaluating f and grad f at logged points costs an extra gradient and two
Allreduces; they are made after the iteration's clock stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from hpcq.compressors import Compressor
from hpcq.compressors.base import Param, parse_params
from hpcq.problems.base import Problem

#: Per-iteration series of the trace, in the order they are stored.
STEP_FIELDS = ("t_compute", "t_encode", "t_comm", "t_decode", "t_update", "t_iter", "bytes_sent",
               "bytes_recv", "payload_bits", "side_bits")

#: Relative error below which the empirical rate stops fitting (float64's rounding floor
#: is about 1e-16 relative; 1e-12 leaves room for the problem's conditioning).
RATE_FLOOR = 1e-12


@dataclass(frozen=True)
class Context:
    """Everything a method needs for one run (identical on every rank)."""

    comm: Any
    problem: Problem
    compressor: Compressor | None  # None: the method builds its own (dqgd, vqsgd)
    scheme: str = "allgather"
    iterations: int = 100
    step: float = 0.0  # 0: the paper's formula (needs L, mu)
    batch: int = 0  # 0: full local gradient
    staleness: int = 0
    seed: int = 0
    log_every: int = 1


@dataclass
class Trace:
    """One rank's record of a run (see the module docstring)."""

    iterations: int
    step_size: float
    rule: str  # how the step size was chosen
    series: dict[str, np.ndarray] = field(default_factory=dict)
    log_iter: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    dist: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    #: Method-specific per-iteration series (e.g. DQ-GD's range and clip count).
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    #: Method-specific scalars (e.g. DQ-GD's rate bound).
    info: dict[str, Any] = field(default_factory=dict)
    x: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in STEP_FIELDS:
            self.series.setdefault(name, np.zeros(self.iterations))

    def record(self, t: int, **values: float) -> None:
        """Set per-iteration values of iteration ``t``."""
        for k, v in values.items():
            self.series[k][t] = v

    def rate(self) -> float | None:
        """The empirical linear rate ``(||x_t - x*|| / ||x_0 - x*||)^(1/t)`` (None if unknown,
        inf for a run that diverged), over the logged iterations down to :data:`RATE_FLOOR`.

        ``t`` is the last logged iteration whose error is still at least ``RATE_FLOOR``
        times the first: below it float64 rounding sets the error, not the method (GD at
        kappa 1.5 reaches 1e-16 in ~25 iterations and then stays there; over all T the
        rate would be the floor's).  :meth:`rate_iterations` says which ``t`` was used.
        """
        if "diverged_at" in self.info and len(self.dist) >= 1 and not math.isnan(self.dist[0]):
            return math.inf
        fit = self._rate_fit()
        if fit is None:
            return None
        k, t = fit
        ratio = self.dist[k] / self.dist[0]
        return float(ratio ** (1.0 / t)) if ratio > 0 else 0.0

    def rate_iterations(self) -> tuple[int, bool] | None:
        """``(t, floored)``: the iterations :meth:`rate` fits over, and whether later logged
        iterations were left out because the error had reached :data:`RATE_FLOOR`."""
        fit = self._rate_fit()
        if fit is None:
            return None
        return fit[1], fit[0] < len(self.dist) - 1

    def _rate_fit(self) -> tuple[int, int] | None:
        """(index of the last logged point used, iterations from the first to it)."""
        if len(self.dist) < 2 or not self.dist[0] or not np.isfinite(self.dist[-1]):
            return None
        floor = RATE_FLOOR * self.dist[0]
        k = len(self.dist) - 1
        while k > 1 and not self.dist[k] > floor:
            k -= 1  # the last logged point still above the floor
        t = self.log_iter[k] - self.log_iter[0]
        return (k, t) if t > 0 else None


class Method:
    """Base class of a training method (subclasses: name, params, summary, :meth:`run`)."""

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    summary: ClassVar[str] = ""
    #: True when the method runs over a compressor chosen by the job (crossed with
    #: ``[train] compressors``); False when it builds its own from its parameters.
    takes_compressor: ClassVar[bool] = True

    def __init__(self, **values: Any) -> None:
        self.p: dict[str, Any] = parse_params(self.params, values, f"method {self.name}")
        self._validate()

    def _validate(self) -> None:
        """Check combinations of parameters; raise ValueError naming them."""

    @property
    def spec(self) -> str:
        """The canonical spec string."""
        body = ",".join(f"{k}={v}" for k, v in self.p.items())
        return f"{self.name}:{body}" if body else self.name

    def check(self, ctx: Context) -> None:
        """Raise ValueError if this method cannot run in ``ctx`` (called before any rank starts)."""

    def run(self, ctx: Context) -> Trace:
        """Run on every rank of ``ctx.comm``; this rank's trace."""
        raise NotImplementedError


#: An iterate whose largest entry grows past this many times its scale (1 + the
#: largest entry of x_0 and x*) has diverged: the run stops there and says so, long
#: before a float32 message could overflow.
DIVERGENCE = 1e12
#: How often (iterations) a large iterate is checked for divergence (a pass over x).
CHECK_EVERY = 8


def scale_of(ctx: Context, x0: np.ndarray) -> float:
    """The reference size of the iterates (for :func:`is_diverged`)."""
    s = 1.0 + (float(np.max(np.abs(x0))) if x0.size else 0.0)
    if ctx.problem.x_star is not None and ctx.problem.x_star.size:
        s += float(np.max(np.abs(ctx.problem.x_star)))
    return s


def is_diverged(x: np.ndarray, scale: float, t: int, *, every: int = CHECK_EVERY) -> bool:
    """True when ``x`` is not finite or past ``DIVERGENCE * scale`` (checked every
    ``every`` iterations: the same answer on every rank, whose iterates are equal)."""
    if t % every or not x.size:
        return False
    s = float(np.max(np.abs(x)))
    return not math.isfinite(s) or s > DIVERGENCE * scale


def stop_diverged(ctx: Context, trace: Trace, t: int, x: np.ndarray, gbuf: np.ndarray) -> None:
    """End a diverged run after iteration ``t``: the later iterations' series become NaN,
    the point reached is logged, and ``info.diverged_at`` says when (the rate is inf)."""
    for name in STEP_FIELDS:
        trace.series[name][t + 1:] = math.nan
    for v in trace.extra.values():
        v[t + 1:] = math.nan
    trace.info["diverged_at"] = t + 1
    log_point(ctx, trace, t + 1, x, gbuf, force=True)


def log_point(ctx: Context, trace: Trace, t: int, x: np.ndarray,
              gbuf: np.ndarray, *, force: bool = False) -> None:
    """Record f(x), ||x - x*|| and ||grad f(x)|| after ``t`` updates (outside the clock).

    Every rank calls it at the same ``t`` (two Allreduces: the loss and the gradient).
    """
    from mpi4py import MPI

    if not (force or t == 0 or t == ctx.iterations or t % ctx.log_every == 0):
        return
    if trace.log_iter and trace.log_iter[-1] == t:
        return
    prob, comm = ctx.problem, ctx.comm
    with np.errstate(all="ignore"):  # a diverged iterate: inf is the honest value
        loss = comm.allreduce(float(prob.loss(x)), op=MPI.SUM)
        prob.grad(x, out=gbuf)
    g = np.empty_like(gbuf)
    comm.Allreduce(gbuf, g, op=MPI.SUM)
    g /= comm.Get_size()
    trace.log_iter.append(t)
    trace.loss.append(loss)
    trace.grad_norm.append(float(np.linalg.norm(g)))
    trace.dist.append(float(np.linalg.norm(x - prob.x_star)) if prob.x_star is not None
                      else math.nan)


def require_constants(ctx: Context, who: str) -> tuple[float, float]:
    """(L, mu) of the problem, or ValueError telling the user to set the step size."""
    prob = ctx.problem
    if prob.L is None or prob.mu is None:
        raise ValueError(f"method {who}: problem {prob.name} has no known L and mu, so the "
                         f"paper's step size cannot be computed; set [train] step")
    return float(prob.L), float(prob.mu)


def sigma_gd(eta: float, L: float, mu: float) -> float:
    """GD's contraction factor ``max(|1 - eta mu|, |1 - eta L|)``."""
    return max(abs(1.0 - eta * mu), abs(1.0 - eta * L))


def compressed_step(ctx: Context, omega: float | None, unbiased: bool) -> tuple[float, str]:
    """The step size of compressed (stale) GD and the rule that gave it.

    * uncompressed (``omega`` = 0 up to float32 rounding) and no staleness:
      ``2 / (L + mu)``, the optimal constant step;
    * otherwise ``1 / (L (alpha + tau))`` (papers.md section 3(c)), with
      ``alpha = 1 + omega / p`` for an unbiased compressor averaged over ``p``
      independent ranks (the variance of the mean shrinks by ``p``) and
      ``alpha = 1 + omega`` for a biased one, ``tau`` the staleness.
    """
    if ctx.step > 0:
        return ctx.step, "given"
    L, mu = require_constants(ctx, "step size")
    w = 1.0 if omega is None else float(omega)
    if w < 1e-6 and ctx.staleness == 0:
        return 2.0 / (L + mu), "2/(L+mu)"
    alpha = 1.0 + (w / ctx.comm.Get_size() if unbiased else w)
    return 1.0 / (L * (alpha + ctx.staleness)), "1/(L(alpha+tau))"


def gather_trace(comm: Any, trace: Trace) -> dict[str, np.ndarray]:
    """Every rank's per-iteration series stacked to (p, T) arrays on rank 0 (else {})."""
    out: dict[str, np.ndarray] = {}
    for name in STEP_FIELDS:
        rows = comm.gather(trace.series[name], root=0)
        if rows is not None:
            out[name] = np.vstack(rows)
    return out

