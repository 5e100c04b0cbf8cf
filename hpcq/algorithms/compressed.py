"""Compressed distributed GD/SGD, with error feedback and bounded staleness.

One loop (:class:`CompressedGD`) covers the first-order methods of papers.md
sections 2-5; each registered name fixes what goes around the compressor:

==============  ===========================================================
gd              x <- x - eta * mean_r C(g_r): plain distributed GD/SGD with
                any compressor and scheme; "naive" quantized GD when C is a
                plain quantizer; fp32 is exact distributed GD
vqsgd           gd with the vqSGD compressor of the method's parameters
                (points, reps, norm): Gandikota et al., papers.md section 2
ef-sgd          error feedback (Karimireddy et al.): each rank compresses
                g_r + h_r and keeps h_r = g_r + h_r - C(g_r + h_r)
ef-signsgd      ef-sgd with the scaled sign C(p) = ||p||_1/d sign(p)
ecq-sgd         ECQ-SGD (Wu et al., papers.md section 4): compresses
                g_r + alpha h_r, h_r <- beta h_r + (g_r - C(g_r + alpha h_r))
==============  ===========================================================

Error feedback with the step inside the memory (``p = eta g + e``, as
Karimireddy et al. write it) is the same method for a constant step: every
compressor here is positively homogeneous, ``C(eta v) = eta C(v)``.

Staleness ``tau`` (Khirirat et al., papers.md section 3): the mean started at
iteration t is applied at iteration t + tau, ``x_{t+1} = x_t - eta * mean(C(g(x_{t-tau})))``,
with nothing applied in the first tau iterations.  tau = 1 overlaps the
nonblocking collective (Iallgather, Ialltoall or Iallreduce) with the next
gradient; larger tau keeps a delay line of tau pending requests.  The trace
then shows the overlap as a small ``comm`` time (only posting and the final
wait are counted).  The default step is ``1 / (L (alpha + tau))``
(:func:`~hpcq.algorithms.base.compressed_step`).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from hpcq.algorithms import METHODS
from hpcq.algorithms.base import (
    Context,
    Method,
    Trace,
    compressed_step,
    is_diverged,
    log_point,
    require_constants,
    scale_of,
    stop_diverged,
)
from hpcq.collectives import SCHEMES, Pending, Scheme, Session, Stats, scheme
from hpcq.compressors import HEADER_BYTES, Compressor, compressor
from hpcq.compressors.base import Param
from hpcq.feedback import ErrorFeedback
from hpcq.kernels.update import axpy


def start_mean(comm: Any, g: np.ndarray, comp: Compressor | None, sch: Scheme, *, seed: int,
               step: int, feedback: ErrorFeedback | None, blocking: bool,
               session: Session | None = None, layout: Any = None
               ) -> tuple[np.ndarray, Stats] | Pending:
    """The mean over ranks of ``g`` by scheme ``sch``: ``(mean, stats)``, or a :class:`Pending`."""
    kw: dict[str, Any] = {"seed": seed, "step": step, "session": session}
    if layout is not None and blocking:
        kw["layout"] = layout
    if feedback is not None:
        kw["feedback"] = feedback
    if blocking:
        return sch.mean(comm, g, comp, **kw)
    return sch.start(comm, g, comp, **kw)


class CompressedGD(Method):
    """x <- x - eta * mean_r C(g_r), optionally through error feedback and with staleness."""

    name = "gd"
    summary = "distributed GD/SGD with any compressor and scheme (naive quantized GD)"
    #: (alpha, beta) of the error feedback, or None for none.
    feedback: tuple[float, float] | None = None

    def check(self, ctx: Context) -> None:
        if ctx.step <= 0:
            require_constants(ctx, self.name)
        sch = scheme(ctx.scheme)
        if sch.reference:
            raise ValueError(f"method {self.name}: scheme {sch.name} is a timing reference (the "
                             f"plain MPI sum, not a mean); use allreduce-fp32")
        comp = self.compressor(ctx)
        sch.check(comp if sch.takes_compressor else None)
        if self.feedback_coefficients() is not None and not sch.takes_feedback:
            able = [n for n, s in SCHEMES.items() if s.takes_feedback]
            raise ValueError(f"method {self.name}: error feedback needs a scheme where each "
                             f"rank encodes its own message ({', '.join(able)}); "
                             f"got {ctx.scheme}")
        if ctx.staleness and not sch.nonblocking:
            able = [n for n, s in SCHEMES.items() if s.nonblocking]
            raise ValueError(f"method {self.name}: staleness {ctx.staleness} needs a "
                             f"nonblocking scheme ({', '.join(able)}); got {ctx.scheme}")

    def compressor(self, ctx: Context) -> Compressor:
        """The compressor of the run (the job's, or the method's own)."""
        if ctx.compressor is None:
            raise ValueError(f"method {self.name} needs a compressor ([train] compressors)")
        return ctx.compressor

    def feedback_coefficients(self) -> tuple[float, float] | None:
        """(alpha, beta) of this method's error feedback, None without."""
        return self.feedback

    def run(self, ctx: Context) -> Trace:
        from mpi4py import MPI

        comm, prob = ctx.comm, ctx.problem
        sch = scheme(ctx.scheme)
        comp = self.compressor(ctx)
        # a scheme with its own encoding (casts, PowerSGD, allreduce-fp8) ignores the job's
        # compressor; the step size and the bits then come from what it sends
        send = comp if sch.takes_compressor else None
        d = prob.d
        info_comp = comp if send is not None else compressor(str(sch.sends))
        omega = info_comp.error_bound(d)
        eta, rule = compressed_step(ctx, omega, info_comp.unbiased)
        coeffs = self.feedback_coefficients()
        fb = ErrorFeedback(comp, *coeffs) if coeffs is not None else None
        payload, side = info_comp.theory_bits(d)
        # A variable-length code (entropy-coded qsgd): theory_bits is the fixed-length
        # bound; where the rank sends exactly one message, its real length is known from
        # the bytes sent, and the coded bits are that, less the header and the scales.
        measured = (send is not None and send.wire_bytes(d) is None
                    and sch.one_message)
        # PowerSGD's traffic depends on the layout and the rank: its bytes sent are its bits
        own = send is None and sch.cast is None
        trace = Trace(ctx.iterations, eta, rule)
        trace.info.update(omega=omega if omega is not None else float("nan"),
                          compressor=info_comp.spec)
        x = prob.x0().astype(np.float64, copy=True)
        scale = scale_of(ctx, x)
        gbuf = np.empty(d)
        log_point(ctx, trace, 0, x, gbuf)
        pending: deque[tuple[int, Pending]] = deque()
        tau = ctx.staleness
        # the baselines' output buffer, reused every step; they leave the 1/p to the step
        session = Session(comm, defer_scale=True)
        for t in range(ctx.iterations):
            t0 = MPI.Wtime()
            batch = prob.batch(ctx.batch, ctx.seed, t) if ctx.batch else None
            g = prob.grad(x, batch, out=gbuf)
            t1 = MPI.Wtime()
            res = start_mean(comm, g, send, sch, seed=ctx.seed, step=t, feedback=fb,
                             blocking=tau == 0, session=session,
                             layout=getattr(prob, "layout", None))
            step_scale = 1.0
            if isinstance(res, Pending):
                enc, posted, sent, recv = (res.stats.encode_s, res.stats.comm_s,
                                           res.stats.bytes_sent, res.stats.bytes_recv)
                pending.append((t, res))
                mean, dec, comm_s = None, 0.0, posted
                if len(pending) > tau:
                    _, done = pending.popleft()
                    before_comm, before_dec = done.stats.comm_s, done.stats.decode_s
                    mean, done_st = done.wait()
                    step_scale = done_st.scale
                    comm_s += done.stats.comm_s - before_comm
                    dec = done.stats.decode_s - before_dec
            else:
                mean, st = res
                enc, comm_s, dec, sent, recv = (st.encode_s, st.comm_s, st.decode_s,
                                                st.bytes_sent, st.bytes_recv)
                step_scale = st.scale  # 1/p where a baseline returned the sum
            tu = MPI.Wtime()
            if mean is not None:
                # float64 iterate, float32 mean (or sum: its 1/p folded in), one fused pass
                axpy(x, -eta * step_scale, mean)
            t2 = MPI.Wtime()
            trace.record(t, t_compute=t1 - t0, t_encode=enc, t_comm=comm_s, t_decode=dec,
                         t_update=t2 - tu, t_iter=t2 - t0, bytes_sent=sent, bytes_recv=recv,
                         payload_bits=(8 * (sent - HEADER_BYTES) - side if measured
                                       else 8 * sent - side if own else payload),
                         side_bits=side)
            if is_diverged(x, scale, t + 1):
                stop_diverged(ctx, trace, t, x, gbuf)
                break
            log_point(ctx, trace, t + 1, x, gbuf)
        for _, req in pending:  # requests of the last tau iterations: complete, unused
            req.wait()
        trace.x = x
        return trace


@METHODS.register("gd")
class GD(CompressedGD):
    """Plain distributed GD/SGD over the job's compressor."""


@METHODS.register("ef-sgd")
class EFSGD(CompressedGD):
    """Error-feedback SGD (alpha = beta = 1) over the job's compressor."""

    name = "ef-sgd"
    summary = "error feedback: compress g + h, keep h = g + h - C(g + h) (Karimireddy et al.)"
    feedback = (1.0, 1.0)


@METHODS.register("ef-signsgd")
class EFSignSGD(CompressedGD):
    """EF-signSGD: error feedback around the scaled sign ``||p||_1/d sign(p)`` (one scale)."""

    name = "ef-signsgd"
    summary = "error feedback around the scaled sign ||p||_1/d sign(p)"
    takes_compressor = False
    feedback = (1.0, 1.0)

    def compressor(self, ctx: Context) -> Compressor:
        return compressor("sign:bucket=0,scale=l1")


@METHODS.register("ecq-sgd")
class ECQSGD(CompressedGD):
    """ECQ-SGD: compensation coefficient alpha, time-decay beta (Wu et al. 2018)."""

    name = "ecq-sgd"
    summary = "ECQ-SGD: compress g + alpha h, h <- beta h + (g - C(g + alpha h))"
    params = (
        Param("alpha", float, 0.5, "compensation coefficient (>= 0)", minimum=0.0),
        Param("beta", float, 0.9, "time-decay factor of the error memory (0..1)",
              minimum=0.0, maximum=1.0),
    )

    def feedback_coefficients(self) -> tuple[float, float]:
        return (self.p["alpha"], self.p["beta"])


@METHODS.register("vqsgd")
class VQSGDMethod(CompressedGD):
    """vqSGD: GD/SGD over the vqSGD compressor (points, reps, norm)."""

    name = "vqsgd"
    summary = "vqSGD (Gandikota et al.): norm + s indices of polytope points, unbiased"
    takes_compressor = False
    params = (
        Param("points", str, "cross", "point set", choices=("cross", "simplex", "hadamard")),
        Param("reps", int, 1, "repetitions s averaged", minimum=1),
        Param("norm", str, "l2", "normalisation", choices=("l2", "l1")),
    )

    def compressor(self, ctx: Context) -> Compressor:
        return compressor("vqsgd", **self.p)
