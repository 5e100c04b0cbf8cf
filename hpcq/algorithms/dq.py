"""Differentially quantized gradient methods (Lin, Kostina, Hassibi; papers.md section 1).

The paper's setting is one link: a *worker* that holds the data and computes
exact gradients, and a *server* that runs the iteration, joined by a channel of
``n R`` bits per iteration.  On p ranks hpcq keeps that setting exactly: the
data is split by rows, the ranks compute the exact gradient together (an fp64
``Allreduce`` of their shares: the worker's own computation, recorded as
``grad_bytes``/``grad_comm`` and not as link traffic), rank 0 quantizes and
sends the one message of the link by ``Bcast``, and every rank decodes what it
*received* and updates the server iterate.  ``bytes_sent`` / ``bytes_recv`` in
the trace are the link's message (rank 0 sends it, even on one rank), so bits
and theory can be compared.  On one rank this is the serial algorithm.

Why not one quantized link per rank: DQ-GD's worker evaluates the gradient at
the *unquantized* trajectory ``x_t = xhat_t + eta e_{t-1}``, which needs the
whole quantization error; with one error per rank no rank knows it, and each
rank's local gradient does not vanish at x*, so a predetermined range that
shrinks to zero cannot hold it.

Methods (``e`` is the quantization error ``q - u``, kept by the worker)
-----------------------------------------------------------------------
=========  ==================================================================
dqgd       u_t = grad f(xhat_t + eta e_{t-1}) - e_{t-1}; xhat <- xhat - eta q_t
dq-hb      heavy ball: u_t = grad f(x_t) - (1+beta) e_{t-1} + beta e_{t-2},
           xhat_{t+1} = xhat_t - eta q_t + beta (xhat_t - xhat_{t-1})
dq-nag     Nesterov: the gradient at y_t, yhat_t = xhat_t + beta (xhat_t -
           xhat_{t-1}), xhat_{t+1} = yhat_t - eta q_t
naive-qgd  x <- x - eta Q_{r_t}(grad f(x)), range r_t = L D c^t with
           c = sigma + eta L a (the baseline DQ-GD is compared with)
hb, nag    the unquantized momentum methods (an fp32 link)
=========  ==================================================================

The quantizer is the cube quantizer ``fixedrange`` (R bits per coordinate,
fractional R allowed) on [-r_t, r_t].  Its worst-case error is
``||e|| <= a r_t`` with ``a = sqrt(sum_i 4^-b_i)`` over the coordinates' bit
counts b_i (``a = sqrt(n) 2^-R = rho_n 2^-R`` for integer R; rho_n = sqrt(n)).

Dynamic range (``range = "predetermined"``: a function of L, mu, D, R, n and t
only, so nothing but the codes travels):
``r_t = G_t D + a ((1 + beta) r_{t-1} + beta r_{t-2})`` where ``G_t D`` bounds
``||grad f|| `` along the unquantized trajectory: ``G_t = L sigma^t`` for GD
(valid for every L-smooth, mu-strongly convex f), and for heavy ball and
Nesterov ``G_t = max_lambda lambda |c_t(lambda)|`` over the scalar recursion of
each eigenvalue lambda in [mu, L] (exact for quadratics, which is where the
papers test them).  ``range = "sent"``: r_t = ||u_t||_inf, sent each step (its
32 bits counted in ``side_bits``).  Every step records the range and how many
coordinates were clipped (0 above the rate threshold; the run reports, never
hides, clipping below it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpcq.algorithms import METHODS
from hpcq.algorithms.base import (
    Context,
    Method,
    Trace,
    is_diverged,
    log_point,
    require_constants,
    scale_of,
    sigma_gd,
    stop_diverged,
)
from hpcq.compressors import Compressor, compressor
from hpcq.compressors.base import Param
from hpcq.compressors.fixedrange import FixedRange
from hpcq.kernels import fixedrange as _fr

_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
#: A range past this is a diverged run (the quantizer's range is a float32).
_RANGE_LIMIT = 1e30


def cube_error_factor(n: int, bits: float) -> float:
    """``a`` with ``||Q(u) - u|| <= a r`` for the cube quantizer of range r, no clipping."""
    total = _fr.total_bits(n, bits)
    b0 = math.floor(float(np.float32(bits)))
    extra = total - n * b0
    return math.sqrt((n - extra) * 4.0 ** -b0 + extra * 4.0 ** -(b0 + 1))


def momentum_gain(kind: str, eta: float, beta: float, L: float, mu: float, steps: int,
                  grid: int = 2049) -> np.ndarray:
    """``G_t = max_lambda lambda |c_t(lambda)|`` for t = 0..steps, lambda in [mu, L].

    ``c_t(lambda)`` is the error factor of an eigen-direction with curvature lambda
    after t steps of the method from ``x_{-1} = x_0``: the bound on ``||grad f(x_t)||
    / D`` for quadratics (``kind``: "gd", "hb" or "nag").
    """
    lam = np.linspace(mu, L, grid)
    prev = np.ones(grid)
    cur = np.ones(grid)
    out = np.empty(steps + 1)
    out[0] = float(np.max(lam))
    for t in range(1, steps + 1):
        if kind == "nag":
            y = cur + beta * (cur - prev)
            nxt = y - eta * lam * y
        else:
            nxt = cur - eta * lam * cur + beta * (cur - prev)
        prev, cur = cur, nxt
        out[t] = float(np.max(lam * np.abs(cur)))
    return out


def method_rate(kind: str, eta: float, beta: float, L: float, mu: float,
                grid: int = 2049) -> float:
    """The unquantized method's worst-case linear rate over curvatures lambda in [mu, L].

    The spectral radius of the method's iteration on one eigen-direction, maximised over
    lambda: ``|1 - eta lambda|`` for GD (= sigma_GD), the 2x2 companion matrices of heavy
    ball (``[[1 + beta - eta lambda, -beta], [1, 0]]``) and Nesterov
    (``(1 - eta lambda) [[1 + beta, -beta], [1, 0]]``).
    """
    if kind == "gd":
        return sigma_gd(eta, L, mu)
    lam = np.linspace(mu, L, grid)
    a = (1.0 - eta * lam) * (1.0 + beta) if kind == "nag" else 1.0 + beta - eta * lam
    b = (1.0 - eta * lam) * beta if kind == "nag" else np.full(grid, beta)
    # eigenvalues of [[a, -b], [1, 0]]: z^2 - a z + b = 0
    disc = np.sqrt((a * a - 4 * b).astype(complex))
    return float(np.max(np.maximum(np.abs((a + disc) / 2), np.abs((a - disc) / 2))))


class DQBase(Method):
    """The DQ family over one quantized link (module docstring)."""

    takes_compressor = False
    #: "gd", "hb" or "nag": the unquantized method this one tracks.
    kind = "gd"
    #: True for the naive baseline (quantize the gradient itself, no compensation).
    naive = False
    #: False for the unquantized hb / nag (an fp32 link).
    quantized = True
    params: tuple[Param, ...] = (
        Param("bits", float, 4.0, "bits per coordinate R (fractional allowed)", minimum=0.0,
              maximum=16.0),
        Param("range", str, "predetermined", "dynamic range: predetermined (no side "
              "information) or sent each step (32 bits)", choices=("predetermined", "sent")),
        Param("D", float, 0.0, "bound on ||x_0 - x*|| (0: the exact distance, needs x*)",
              minimum=0.0),
        Param("momentum", float, -1.0, "momentum beta (-1: the optimal value for kappa)",
              minimum=-1.0, maximum=1.0),
    )

    def _validate(self) -> None:
        if self.quantized and not self.p["bits"] > 0:
            raise ValueError(f"method {self.name}: bits={self.p['bits']} must be > 0 (R bits "
                             f"per coordinate)")

    def check(self, ctx: Context) -> None:
        require_constants(ctx, self.name)
        if self.p["D"] == 0 and ctx.problem.x_star is None:
            raise ValueError(f"method {self.name}: problem {ctx.problem.name} has no known x*; "
                             f"give the bound D on ||x_0 - x*|| (e.g. {self.name}:D=10)")
        if ctx.batch:
            raise ValueError(f"method {self.name} uses exact gradients; set [train] batch = 0")
        if ctx.staleness:
            raise ValueError(f"method {self.name} has no stale form; set [train] staleness = 0")

    def parameters(self, ctx: Context) -> tuple[float, float, str]:
        """(eta, beta, rule): the papers' step and momentum unless given."""
        L, mu = require_constants(ctx, self.name)
        kappa = L / mu if mu > 0 else math.inf
        sk = math.sqrt(kappa)
        if self.kind == "hb":
            eta, beta = 4.0 / (math.sqrt(L) + math.sqrt(mu)) ** 2, ((sk - 1) / (sk + 1)) ** 2
            rule = "4/(sqrt L+sqrt mu)^2"
        elif self.kind == "nag":
            eta, beta, rule = 1.0 / L, (sk - 1) / (sk + 1), "1/L"
        else:
            eta, beta, rule = 2.0 / (L + mu), 0.0, "2/(L+mu)"
        if ctx.step > 0:
            eta, rule = ctx.step, "given"
        if self.p["momentum"] >= 0:
            beta = self.p["momentum"]
        return eta, beta, rule

    def run(self, ctx: Context) -> Trace:
        from mpi4py import MPI

        comm, prob = ctx.comm, ctx.problem
        rank, size, n = comm.Get_rank(), comm.Get_size(), prob.d
        L, mu = require_constants(ctx, self.name)
        eta, beta, rule = self.parameters(ctx)
        sigma = method_rate(self.kind, eta, beta, L, mu)
        x0 = prob.x0().astype(np.float64, copy=True)
        D = self.p["D"] or float(np.linalg.norm(x0 - prob.x_star))
        R = self.p["bits"] if self.quantized else 32.0
        a = cube_error_factor(n, R) if self.quantized else 0.0
        sent_range = self.quantized and self.p["range"] == "sent"
        base: Compressor = (compressor("fixedrange", bits=R) if self.quantized
                            else compressor("fp32"))
        payload, side = base.theory_bits(n)
        side += 32 if sent_range else 0
        T = ctx.iterations
        if self.naive:
            c = sigma_gd(eta, L, mu) + eta * L * a
            gains = np.array([L * c ** t for t in range(T + 1)])
        elif self.kind == "gd":
            gains = np.array([L * sigma ** t for t in range(T + 1)])
        else:
            gains = momentum_gain(self.kind, eta, beta, L, mu, T)
        trace = Trace(T, eta, rule)
        trace.extra.update({name: np.zeros(T) for name in ("range", "clipped", "u_inf",
                                                           "grad_bytes", "grad_comm")})
        rho_n = math.sqrt(n)
        threshold = math.log2(rho_n / sigma) if sigma > 0 else math.inf
        trace.info.update(
            sigma=sigma, beta=beta, D=D, a=a, rho_n=rho_n, bits=R, compressor=base.spec,
            threshold_bits=threshold,
            rate_bound=max(sigma, a) if not self.naive else sigma + eta * L * a,
            lower_bound=max(sigma, 2.0 ** -R), naive_bound=sigma + eta * L * a,
            range_mode=self.p["range"] if self.quantized else "none",
        )
        scale = scale_of(ctx, x0)
        xhat, xhat_prev = x0.copy(), x0.copy()
        e1, e2 = np.zeros(n), np.zeros(n)
        r1 = r2 = 0.0
        gbuf, gsum = np.empty(n), np.empty(n)
        wire = base.wire_bytes(n)
        assert wire is not None
        buf = np.empty(wire, dtype=np.uint8)
        log_point(ctx, trace, 0, xhat, gbuf)
        for t in range(T):
            t0 = MPI.Wtime()
            # the point the worker differentiates at (the unquantized trajectory)
            if self.naive:
                z = xhat
            elif self.kind == "nag":
                z = xhat + beta * (xhat - xhat_prev) + eta * ((1 + beta) * e1 - beta * e2)
            else:
                z = xhat + eta * e1
            g = prob.grad(z, out=gbuf)
            t1 = MPI.Wtime()
            if size > 1:
                comm.Allreduce(g, gsum, op=MPI.SUM)
                gsum /= size
                g = gsum
            t2 = MPI.Wtime()
            u = g if self.naive else g - (1 + beta) * e1 + beta * e2
            u_inf = float(np.max(np.abs(u))) if n else 0.0
            if sent_range:
                r = float(np.float32(u_inf))
                r = float(np.nextafter(np.float32(r), np.float32(np.inf))) if r < u_inf else r
                r = max(r, _FLOAT32_TINY)
            else:
                r = gains[t] * D + a * ((1 + beta) * r1 + beta * r2) if t else gains[0] * D
                if self.naive:
                    r = gains[t] * D
            if not r <= _RANGE_LIMIT or is_diverged(xhat, scale, t, every=1):
                stop_diverged(ctx, trace, t - 1, xhat, gbuf)
                break
            comp = base.with_range(r) if isinstance(base, FixedRange) else base
            if rank == 0:
                buf = comp.encode(u.astype(np.float32), seed=ctx.seed, step=t)
            t3 = MPI.Wtime()
            enc = t3 - t2 if rank == 0 else 0.0
            if size > 1:
                comm.Bcast([buf, MPI.BYTE], root=0)
            t4 = MPI.Wtime()
            q = comp.decode(buf).astype(np.float64)
            clipped = comp.clipped(buf) if isinstance(comp, FixedRange) else 0
            t5 = MPI.Wtime()
            # the update (and the worker's errors), all float64
            if not self.naive:
                e2, e1 = e1, q - u
            if self.kind == "nag":
                new = xhat + beta * (xhat - xhat_prev) - eta * q
            else:
                new = xhat - eta * q + beta * (xhat - xhat_prev)
            xhat_prev, xhat = xhat, new
            r2, r1 = r1, r
            t6 = MPI.Wtime()
            trace.record(t, t_compute=t1 - t0, t_encode=enc, t_comm=(t2 - t1) + (t4 - t3),
                         t_decode=t5 - t4, t_update=t6 - t5, t_iter=t6 - t0,
                         bytes_sent=wire if rank == 0 else 0,
                         bytes_recv=wire if rank != 0 else 0,
                         payload_bits=payload if rank == 0 else 0,
                         side_bits=side if rank == 0 else 0)
            for key, v in (("range", r), ("clipped", clipped), ("u_inf", u_inf),
                           ("grad_bytes", 8 * n if size > 1 else 0), ("grad_comm", t2 - t1)):
                trace.extra[key][t] = v
            log_point(ctx, trace, t + 1, xhat, gbuf)
        clipped = trace.extra["clipped"]
        trace.info["clipped_steps"] = int(np.count_nonzero(clipped[np.isfinite(clipped)]))
        trace.x = xhat
        return trace


def _dq(name: str, summary: str, kind: str, naive: bool = False, quantized: bool = True
        ) -> type[DQBase]:
    attrs: dict[str, Any] = {"name": name, "summary": summary, "kind": kind, "naive": naive,
                             "quantized": quantized, "__doc__": summary}
    if not quantized:
        attrs["params"] = tuple(p for p in DQBase.params if p.name in ("D", "momentum"))
    cls = type(name.replace("-", "_").upper(), (DQBase,), attrs)
    return METHODS.register(name)(cls)


DQGD = _dq("dqgd", "DQ-GD: quantize grad f(x_t) - e_{t-1} at the unquantized trajectory "
           "(Lin et al.)", "gd")
DQHB = _dq("dq-hb", "DQ heavy ball: u = grad f(x_t) - (1+beta) e_{t-1} + beta e_{t-2}", "hb")
DQNAG = _dq("dq-nag", "DQ Nesterov: the gradient at y_t, same compensation as dq-hb", "nag")
NAIVE = _dq("naive-qgd", "naive quantized GD: Q_{r_t}(grad f(x_t)), r_t = L D c^t", "gd",
            naive=True)
HB = _dq("hb", "heavy ball, unquantized (fp32 link)", "hb", quantized=False)
NAG = _dq("nag", "Nesterov's accelerated gradient, unquantized (fp32 link)", "nag",
          quantized=False)
