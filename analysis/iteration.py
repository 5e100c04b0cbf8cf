"""The iteration-time model with overlap: does compressing the gradient make a training step faster?

::

    from hpcq.analysis.iteration import Part, schedule, ready_times

    t = schedule(elements, [(enc, comm, dec), ...], compute_s=0.12)
    t.iteration_s, t.exposed_s

One data-parallel iteration, as PyTorch DDP runs it (:func:`schedule`):

* the compute of one iteration, ``compute_s``, is a forward pass (1/3) and a backward
  pass (2/3, :data:`BACKWARD_SHARE`: a backward does about twice a forward's work);
* the backward produces the buckets in order (:func:`hpcq.workloads.plan_ddp`: reverse
  layout order), bucket b ready once the backward has done the share of its work that
  the parameters of buckets 0..b hold (:func:`ready_times`; work proportional to
  parameters);
* one communication stream: bucket b's encode, communication and decode start when it
  is ready and bucket b-1's are done, ``start_b = max(ready_b, end_{b-1})``, and run
  while the rest of the backward goes on;
* the optimizer step (``optimizer_s``) follows when both the backward and the last
  bucket are done: ``iteration = max(compute, end_last) + optimizer``.

The exposed communication is ``iteration - compute - optimizer``: what the overlap does
not hide.  Assumed: codec work runs on the communication stream and does not slow the
backward (on a GPU its kernels would share the device; on the CPUs of the validation
the backward sleeps), and the buckets' collectives do not slow each other.

One call's cost of a (scheme, codec) at n elements and p ranks over a link of r bit/s is a
:class:`Part`.  At the rank count and link it was measured on, its communication is the
measurement (log-log interpolated between the measured lengths; beyond them the nearest
measured time scaled as the fit scales), and over that link at other rank counts that
time scaled as the fit scales from the measured rank count: an emulated link is not an
alpha-beta line (a token bucket's burst, TCP's slow start make small messages cost what
no straight fit through the large ones gives).  Over other links
``comm = alpha L(p) + (beta_cpu + 8 / r) B(p, m(n), n)`` with L, B the
scheme's :class:`~hpcq.collectives.scheme.Cost` terms, alpha and beta fitted to measured
collectives (:mod:`hpcq.analysis.model`), ``beta_cpu`` the per-byte time the fit holds
beyond the wire of the measured link (``beta - 8 / r_measured``, >= 0: copies, the
reduction arithmetic), m(n) the message from the measured bytes per element; encode and
decode interpolated from the measured times at the measured lengths and scaled by the
scheme's codec work E(p), D(p).

Break-even bandwidth (:func:`breakeven`): the link rate at which the codec's iteration
equals the reference's (the faster of the fp32 and bf16 allreduce at that rate);
compression pays on slower links.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hpcq.collectives.scheme import Cost

#: Share of one iteration's compute in the backward pass (forward 1, backward 2).
BACKWARD_SHARE = 2.0 / 3.0
#: Multiply-accumulates -> floating-point operations.
FLOPS_PER_MAC = 2.0
#: The link rates (bit/s) :func:`breakeven` searches: 1 Mbit/s .. 10 Tbit/s.
RATE_RANGE = (1e6, 1e13)


@dataclass(frozen=True)
class Timeline:
    """One modelled iteration: per bucket ready/start/end times (s from the iteration start)."""

    compute_s: float
    optimizer_s: float
    ready_s: tuple[float, ...]
    start_s: tuple[float, ...]
    end_s: tuple[float, ...]
    #: Sum over buckets of encode + comm + decode (the stream's busy time).
    comm_s: float

    @property
    def iteration_s(self) -> float:
        """max(compute, last bucket done) + optimizer."""
        last = self.end_s[-1] if self.end_s else 0.0
        return max(self.compute_s, last) + self.optimizer_s

    @property
    def exposed_s(self) -> float:
        """Communication the overlap does not hide: iteration - compute - optimizer."""
        return self.iteration_s - self.compute_s - self.optimizer_s


def ready_times(elements: Sequence[int], compute_s: float,
                backward_share: float = BACKWARD_SHARE) -> np.ndarray:
    """When each bucket's gradient is complete: after the forward and the backward's share
    of work that buckets 0..b hold, in proportion to their parameters."""
    if not compute_s >= 0:
        raise ValueError(f"compute time must be >= 0 s, got {compute_s}")
    n = np.asarray(elements, dtype=np.float64)
    if n.size == 0 or (n < 0).any() or n.sum() <= 0:
        raise ValueError("elements: need at least one bucket and a positive total")
    backward = backward_share * compute_s
    return (compute_s - backward) + backward * np.cumsum(n) / n.sum()


def schedule(elements: Sequence[int], costs: Sequence[tuple[float, float, float]],
             compute_s: float, optimizer_s: float = 0.0,
             backward_share: float = BACKWARD_SHARE) -> Timeline:
    """The iteration of buckets ``elements`` whose (encode, comm, decode) are ``costs``
    (module docstring): one stream, a bucket starts when ready and the previous is done."""
    if len(costs) != len(elements):
        raise ValueError(f"costs: {len(costs)} entries for {len(elements)} buckets")
    if not optimizer_s >= 0:
        raise ValueError(f"optimizer time must be >= 0 s, got {optimizer_s}")
    ready = ready_times(elements, compute_s, backward_share)
    start, end = [], []
    done = 0.0
    for r, c in zip(ready, costs, strict=True):
        s = max(float(r), done)
        done = s + float(sum(c))
        start.append(s)
        end.append(done)
    return Timeline(float(compute_s), float(optimizer_s), tuple(float(r) for r in ready),
                    tuple(start), tuple(end), float(sum(sum(c) for c in costs)))


def compute_seconds(forward_macs: float | None, *, compute_ms: float | None = None,
                    flops: float | None = None, batch: int = 32) -> tuple[float, str]:
    """One iteration's compute in s and how it was obtained.

    ``compute_ms`` given: that.  Else ``flops`` (the device's sustained FLOP/s): forward MACs
    per sample x 2 FLOP/MAC x ``batch`` x 3 (forward + backward) / ``flops``.
    """
    if compute_ms is not None:
        if not compute_ms > 0:
            raise ValueError(f"--compute-ms must be > 0, got {compute_ms}")
        return compute_ms / 1e3, f"given: {compute_ms:g} ms"
    if flops is None:
        raise ValueError("give --compute-ms or --flops (the device's FLOP/s)")
    if not flops > 0:
        raise ValueError(f"--flops must be > 0, got {flops}")
    if not batch > 0:
        raise ValueError(f"--batch must be > 0, got {batch}")
    if forward_macs is None:
        raise ValueError("this workload has no forward MAC count: give --compute-ms")
    s = forward_macs * FLOPS_PER_MAC * batch * 3.0 / flops
    return s, (f"{forward_macs:.3g} MAC/sample x 2 x batch {batch} x 3 / {flops:.3g} FLOP/s "
               f"= {1e3 * s:.4g} ms")


def _interp_time(n: float, lengths: np.ndarray, times: np.ndarray) -> float:
    """Time at length n from measured (length, time): log-log interpolation inside the
    range, proportional to n above it, the smallest's time below it."""
    if not len(lengths):
        return 0.0
    if n >= lengths[-1]:
        return float(times[-1] * n / lengths[-1])
    if n <= lengths[0]:
        return float(times[0])
    t = np.maximum(times, 1e-12)
    return float(np.exp(np.interp(math.log(n), np.log(lengths), np.log(t))))


@dataclass(frozen=True)
class Part:
    """One (scheme, codec)'s per-call cost at any length, rank count and link (module docstring).

    ``lengths``/``encode_s``/``decode_s``: measured codec times at ``p0`` ranks;
    ``bytes_per_element`` and ``header_bytes``: m(n) = bytes_per_element n + header;
    ``alpha_s``, ``beta_cpu_s_per_byte``: the fit, less the measured link's wire time.
    """

    scheme: str
    spec: str
    cost: Cost
    alpha_s: float
    beta_cpu_s_per_byte: float
    bytes_per_element: float
    header_bytes: float
    p0: int
    lengths: tuple[int, ...] = ()
    encode_s: tuple[float, ...] = ()
    decode_s: tuple[float, ...] = ()
    #: Where the numbers come from (fit status, measured link), for the verdict's notes.
    notes: tuple[str, ...] = field(default=())
    #: The measured communication times at ``lengths`` (``p0`` ranks) over the link of
    #: ``rate_bits`` bit/s: used instead of the fit at that (p, link), see :meth:`call`.
    comm_s: tuple[float, ...] = ()
    rate_bits: float | None = None

    def message(self, n: float, p: int) -> float:
        """m: one rank's message of n elements at p ranks."""
        m = self.bytes_per_element * n + self.header_bytes
        if self.cost.chunk_headers:
            m += (p - self.p0) * self.header_bytes
        return m

    def call(self, n: float, p: int, rate_bits: float) -> tuple[float, float, float]:
        """(encode, comm, decode) seconds of one call on n elements, p ranks, r bit/s."""
        if n <= 0:
            return (0.0, 0.0, 0.0)
        lengths = np.asarray(self.lengths, dtype=np.float64)
        e = _interp_time(n, lengths, np.asarray(self.encode_s)) * \
            self.cost.encodes(p) / self.cost.encodes(self.p0)
        d = _interp_time(n, lengths, np.asarray(self.decode_s)) * \
            self.cost.decodes(p) / self.cost.decodes(self.p0)
        comm = self._fitted(n, p, rate_bits)
        if self.comm_s and self.rate_bits and abs(rate_bits / self.rate_bits - 1.0) < 1e-9:
            # over the measured link the measurements themselves at p0: log-log interpolation
            # inside the measured lengths, outside the nearest one scaled as the fit scales;
            # at another p that time scaled as the fit scales from p0 to p
            p0, lo, hi = self.p0, lengths[0], lengths[-1]
            fit_p0 = self._fitted(n, p0, rate_bits)
            if lo <= n <= hi:
                at_p0 = _interp_time(n, lengths, np.asarray(self.comm_s))
            else:
                k = 0 if n < lo else -1
                ref = self._fitted(float(lengths[k]), p0, rate_bits)
                at_p0 = self.comm_s[k] * fit_p0 / ref if ref > 0 else fit_p0
            comm = at_p0 * comm / fit_p0 if fit_p0 > 0 else at_p0
        return (e, float(comm), d)

    def _fitted(self, n: float, p: int, rate_bits: float) -> float:
        """The alpha-beta model's communication seconds."""
        beta = self.beta_cpu_s_per_byte + 8.0 / rate_bits
        return float(self.alpha_s * self.cost.steps(p) + beta * self.cost.volume(
            p, self.message(n, p), int(n)))


def breakeven(codec: Callable[[float], float], reference: Callable[[float], float],
              lo: float = RATE_RANGE[0], hi: float = RATE_RANGE[1]) -> tuple[float | None, str]:
    """The link rate (bit/s) below which ``codec(rate)`` (an iteration time) beats
    ``reference(rate)``, and a word: ``crossing``, ``always`` (faster over the whole range;
    rate = hi), ``never`` (rate None) or ``only above`` (faster on fast links only; the
    rate above which it pays)."""
    grid = np.geomspace(lo, hi, 61)
    gain = np.array([reference(r) - codec(r) for r in grid])
    wins = gain > 0
    if wins.all():
        return hi, "always"
    if not wins.any():
        return None, "never"
    i = int(np.argmax(wins != wins[0]))  # first change of sign
    a, b = math.log(grid[i - 1]), math.log(grid[i])
    first = bool(wins[0])
    for _ in range(40):  # bisection in log rate
        mid = 0.5 * (a + b)
        if (reference(math.exp(mid)) - codec(math.exp(mid)) > 0) == first:
            a = mid
        else:
            b = mid
    return math.exp(0.5 * (a + b)), "crossing" if first else "only above"


def rate_text(bits: float | None) -> str:
    """``1.2 Gbit/s``, ``350 Mbit/s``, or ``-``."""
    if bits is None:
        return "-"
    for unit, scale in (("Tbit/s", 1e12), ("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits >= scale:
            return f"{bits / scale:.3g} {unit}"
    return f"{bits:.3g} bit/s"
