"""Guaranteed bounds on the NMSE of a mean over ranks, per scheme (``nmse_bound`` of the benchmark).

Notation: p ranks, rank i holds float32 ``x_i`` of length d, ``m = (1/p) sum_i x_i``
the exact mean, ``mhat`` what the scheme returns, NMSE ``= ||mhat - m||^2 / ||m||^2``.

Casts (``allreduce-fp32/fp16/bf16``, ``ps-reduce``): a worst-case rounding bound
------------------------------------------------------------------------------
Standard model of rounding to nearest with unit roundoff ``u`` (fp32 2^-24, fp16
2^-11, bf16 2^-8: the casts of :mod:`hpcq.kernels.cast` round to nearest even) and
gradual underflow: ``fl(z) = z (1 + delta) + eta``, ``|delta| <= u``, ``|eta| <= eta_f``
(half the smallest subnormal: fp32 2^-150, fp16 2^-25, bf16 2^-134), and an addition
whose exact result is subnormal is exact (so sums carry no ``eta``).  Per coordinate j,
with ``a_j = sum_i |x_ij|``:

1. input cast (fp16/bf16; none for fp32): ``xt_i = x_i (1 + delta_i) + eta_i``, so
   ``|sum_i xt_i - s| <= u_in a_j + p eta_in`` where ``s = sum_i x_ij``;
2. the sum: any reduction tree (ring, recursive halving, a Reduce) adds p terms with
   p - 1 additions and each term passes through at most p - 1 of them, so
   ``|shat - sum_i xt_i| <= gamma_{p-1}(u_a) sum_i |xt_i|`` (Higham, *Accuracy and
   Stability of Numerical Algorithms*, 2nd ed., eq. 4.4), ``gamma_n(u) = n u / (1 - n u)``.
   The 16-bit sum adds in float32 and rounds to 16 bits (:func:`hpcq.kernels.cast.sum16`):
   a double rounding, so ``u_a = u16 + u32 + u16 u32``; fp32 sums have ``u_a = u32``;
3. scaling by 1/p in float32 (and, for ``ps-reduce`` in fp16/bf16, the cast of the
   scaled mean back to 16 bits): ``mhat = (shat / p)(1 + theta) + eta_out`` with
   ``1 + theta <= (1 + u32)(1 + u_out)``.

Together ``|mhat_j - m_j| <= c1 a_j + c0`` with ``B1 = u_in + gamma (1 + u_in)``,
``c1 = (B1 (1 + theta) + theta) / p`` and ``c0 = (1 + gamma) eta_in (1 + theta) + eta_out``,
so ``NMSE <= sum_j (c1 a_j + c0)^2 / ||m||^2`` (closed form from ``sum a_j``,
``sum a_j^2``).  This is about ``(p u)^2 ||sum_i |x_i| ||^2 / ||sum_i x_i||^2``, it holds
for every run, and it is None (no guarantee) once ``(p - 1) u_a >= 1`` (bf16 beyond
256 ranks).

Compressed schemes: the codecs' guarantee ``omega``, composed
------------------------------------------------------------
``Compressor.error_bound(n)`` is the omega of ``E||D(E(x)) - x||^2 <= omega ||x||^2``
for a vector of n entries; :func:`hpcq.compressors.mean_nmse_bound` turns it into a
bound ``b1`` on the NMSE of the mean of p independently compressed vectors (unbiased
codecs: the errors' variances add; biased ones: their norms add, by Minkowski).
A codec whose error depends on randomness shared by all ranks (random-k with
``shared=true``: every rank keeps the same coordinates) does not compress
independently; its ``b1`` uses the biased (Minkowski) form, valid for any dependence.

* ``allgather``, ``ps``: ``(sqrt(b1) + R)^2``;
* ``two-phase``, ``ps-compressed`` re-compress the average (w2 = omega of that second
  compression; two-phase compresses chunks, so omega is the largest over the chunk
  lengths, for both phases: summed over chunks, each chunk's bound is at most the
  largest): unbiased ``(sqrt(b1 + w2 (sqrt(1 + b1) + R)^2) + R)^2``, which is
  ``b1 + w2 (1 + b1)`` for R = 0 (the second error has mean zero given the first
  average, and ``E||average||^2 <= (1 + b1)||m||^2``); biased
  ``(sqrt(b1) + R + sqrt(w2) (1 + sqrt(b1) + R))^2``, i.e.
  ``(sqrt(b1) + sqrt(w2)(1 + sqrt(b1)))^2`` for R = 0 (triangle inequality).  This
  assumes the second compression draws fresh randomness, as the collectives state.

``R`` is the float32 rounding of the averaging (:func:`hpcq.collectives.average_messages`:
p - 1 additions then a division by p) of decoded vectors ``y_i`` with
``sqrt(E||y_i||^2) <= (1 + sqrt(omega)) ||x_i||``:
``R = (gamma_{p-1}(u32)(1 + u32) + u32)(1 + sqrt(omega)) sum_i ||x_i|| / (p ||m||)``
(about 1e-7: invisible next to any lossy codec, but it keeps lossless codecs honest).
The codecs' own float32 arithmetic in decoding is assumed inside their omega.
None when the codec gives no guarantee (``error_bound`` None, e.g. fixedrange).

The check (``--check``)
-----------------------
The NMSE is measured on K = :func:`validation_draws` (d) independent calls (K d >= 2^20
coordinates, 4 <= K <= 32) and averaged.  A case fails when that mean exceeds
``min(CAP b, max(FACTOR b, b + Z se)) + ABS`` (:func:`allowed`), b the bound, se the
standard error of the mean over the K draws, FACTOR 1.5, Z 3, CAP 4, ABS 1e-12:

* deterministic codecs and the casts: the bound holds for every call, se = 0, and the
  factor 1.5 is only a margin;
* stochastic codecs: b bounds an *expectation*.  The mean of K draws of a sum of many
  independent roundings (every rank's every coordinate or bucket) concentrates: with
  the K d >= 2^20 coordinates its relative standard deviation is a few percent, so 1.5
  leaves many standard deviations even when b is tight (random-k's and vqSGD's omegas
  are exact: their mean NMSE sits at b);
* heavy tails: an error carried by few coordinates (random-k re-compressed by two-phase
  or ps-compressed keeps about ``p ratio^2 n`` of the first phase's nonzeros; one
  draw's NMSE then has a standard deviation of 1 to 4 times its mean at small d) gets
  the 3-standard-error allowance, estimated from the draws themselves.  Resampling
  400 recorded draws of each codec of the test suite at d = 2^10..2^16, this rule
  fails a correct scheme at most 2 times in 10^3 (random-k, ratio 0.01, re-compressed),
  and never otherwise;
* the cap 4 b keeps a heavy tail from hiding a real bug: an error 4 times its
  guarantee or more always fails (a codec re-using its shared random subset when
  re-compressing gave 20 times).

``ABS`` (1e-12) absorbs float64 rounding in computing the NMSE and the bound themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Unit roundoff of round-to-nearest in each format.
UNIT_ROUNDOFF = {"fp32": 2.0**-24, "fp16": 2.0**-11, "bf16": 2.0**-8}
#: Largest absolute error of rounding into the subnormal range (half the smallest subnormal).
UNDERFLOW = {"fp32": 2.0**-150, "fp16": 2.0**-25, "bf16": 2.0**-134}
#: The ``--check`` rule (see the module docstring and :func:`allowed`).
CHECK_FACTOR = 1.5
CHECK_Z = 3.0
CHECK_CAP = 4.0
CHECK_ABS = 1e-12


def gamma(n: int, u: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``; inf when ``n u >= 1``."""
    return n * u / (1.0 - n * u) if n * u < 1.0 else math.inf


def cast_kind(scheme: str, comp: Any) -> str | None:
    """The format a summing scheme adds in (``allreduce-*`` and ``ps-reduce``), else None."""
    from hpcq.collectives import scheme as make

    return make(scheme).sums_in(comp)


def cast_bound(
    scheme: str, kind: str, p: int, d: int, abs_sum: float, abs_sq: float, mean_sq: float
) -> float | None:
    """NMSE bound of a summing scheme in format ``kind`` (see the module docstring).

    ``abs_sum``, ``abs_sq`` are ``sum_j a_j`` and ``sum_j a_j^2`` of
    ``a = sum_i |x_i|``; ``mean_sq`` is ``||m||^2``.
    """
    if kind not in UNIT_ROUNDOFF or mean_sq <= 0:
        return None
    u32 = UNIT_ROUNDOFF["fp32"]
    if kind == "fp32":
        u_in, eta_in, u_a = 0.0, 0.0, u32
    else:
        u_in, eta_in = UNIT_ROUNDOFF[kind], UNDERFLOW[kind]
        u_a = u_in + u32 + u_in * u32
    g = gamma(p - 1, u_a)
    if not math.isfinite(g):
        return None
    requantize = scheme == "ps-reduce" and kind != "fp32"
    theta = (1 + u32) * (1 + (u_in if requantize else 0.0)) - 1
    eta_out = UNDERFLOW["fp32"] + (UNDERFLOW[kind] if requantize else 0.0)
    b1 = u_in + g * (1 + u_in)
    c1 = (b1 * (1 + theta) + theta) / p
    c0 = (1 + g) * eta_in * (1 + theta) + eta_out
    return (c1 * c1 * abs_sq + 2 * c1 * c0 * abs_sum + d * c0 * c0) / mean_sq


def independent_errors(comp: Any) -> bool:
    """Whether ``comp``'s errors on different ranks are independent (no shared error draws).

    Random-k with ``shared=true`` keeps the same coordinates on every rank.  A
    codec may state it itself with an ``independent_errors`` attribute.
    """
    flag = getattr(comp, "independent_errors", None)
    if flag is not None:
        return bool(flag)
    return not (comp.name == "randk" and bool(comp.p.get("shared", False)))


def sum_rounding(p: int) -> float:
    """Relative bound of :func:`~hpcq.collectives.average_messages`' float32 sum and scaling."""
    u32 = UNIT_ROUNDOFF["fp32"]
    return gamma(p - 1, u32) * (1 + u32) + u32


def first_bound(comp: Any, lengths: Sequence[int], p: int, sq_norms: Sequence[float],
                mean_sq: float) -> tuple[float, float, float] | None:
    """``(b1, w1, R)`` of one compression per rank averaged (see the module docstring).

    ``lengths``: the vector lengths the codec compresses (chunks); omega is the largest.
    None without a guarantee.
    """
    from hpcq.compressors import mean_nmse_bound

    if mean_sq <= 0:
        return None
    omegas = [comp.error_bound(n) for n in lengths]
    if any(w is None for w in omegas):
        return None
    w1 = max(float(w) for w in omegas)
    b1 = mean_nmse_bound(w1, bool(comp.unbiased) and independent_errors(comp), list(sq_norms),
                         mean_sq)
    if b1 is None:
        return None
    norms = float(np.sum(np.sqrt(np.asarray(sq_norms, dtype=np.float64))))
    r = sum_rounding(p) * (1 + math.sqrt(w1)) * norms / (p * math.sqrt(mean_sq))
    return float(b1), w1, r


def averaged_bound(comp: Any, lengths: Sequence[int], p: int, sq_norms: Sequence[float],
                   mean_sq: float) -> float | None:
    """NMSE bound of one compression per rank, averaged once (allgather, ps)."""
    first = first_bound(comp, lengths, p, sq_norms, mean_sq)
    if first is None:
        return None
    b1, _, r = first
    return (math.sqrt(b1) + r) ** 2


def recompressed_bound(comp: Any, lengths: Sequence[int], p: int, sq_norms: Sequence[float],
                       mean_sq: float) -> float | None:
    """NMSE bound when the average is compressed once more (two-phase, ps-compressed)."""
    first = first_bound(comp, lengths, p, sq_norms, mean_sq)
    if first is None:
        return None
    b1, w1, r = first
    w2 = w1
    if comp.unbiased:
        return (math.sqrt(b1 + w2 * (math.sqrt(1 + b1) + r) ** 2) + r) ** 2
    return (math.sqrt(b1) + r + math.sqrt(w2) * (1 + math.sqrt(b1) + r)) ** 2


def scheme_bound(scheme: Any, comp: Any, d: int, p: int, inputs: Any) -> float | None:
    """The scheme's own guarantee (:meth:`hpcq.collectives.Scheme.bound`); the benchmark
    asks here, so a test can replace the rule in one place."""
    return scheme.bound(comp, d, p, inputs)


def validation_draws(d: int) -> int:
    """Validation calls K at length ``d``: enough for K d >= 2^20 coordinates, 4 <= K <= 32."""
    return min(32, max(4, (1 << 20) // max(d, 1)))


def allowed(bound: float | None, draws: Sequence[float] = ()) -> float | None:
    """The largest mean NMSE ``--check`` accepts for ``bound`` given the NMSE of each draw.

    None when there is no guarantee to check.
    """
    if bound is None:
        return None
    k = len(draws)
    se = float(np.std(draws, ddof=1)) / math.sqrt(k) if k >= 2 else 0.0
    limit = min(CHECK_CAP * bound, max(CHECK_FACTOR * bound, bound + CHECK_Z * se))
    return limit + CHECK_ABS
