"""EDEN (Vargaftik et al., ICML 2022): Lloyd-Max centroids of a randomly rotated vector.

``eden:bits=b,scale=unbiased|mse,code=fixed|rans`` (``1 <= b <= 8``, fractional allowed).
EDEN always rotates: ``eden:bits=2`` is ``hadamard:block=4096+eden:bits=2`` (the spec is
printed that way), and ``hadamard:block=B+eden:...`` sets another block.  Per rotation
block the rotated coordinates ``z = y sqrt(B) / ||y_b||`` are close to N(0, 1), and each
is sent as its nearest Lloyd-Max centroid for N(0, 1) with ``b`` bits
(:func:`lloyd_max`), decoded as ``S_b q`` (:mod:`hpcq.kernels.eden`):

* ``scale=unbiased``: ``S = ||y_b||^2 / <y_b, q>``, EDEN's scale, unbiased over a uniform
  random rotation; NMSE ``D / (1 - D)`` for large blocks, ``D`` the centroids' MSE on
  N(0, 1): 0.571 / 0.133 / 0.036 / 0.0096 at 1..4 bits;
* ``scale=mse``: ``S = <y_b, q> / ||q||^2``, the least-squares scale: NMSE about ``D``
  (0.363 / 0.117 / 0.035 / 0.0095), biased.

Fractional ``b`` gives ``round(f n)`` coordinates ``ceil(b)`` bits and the others
``floor(b)``, chosen by a random cyclic offset of the shared ``(seed, step)`` stream
(``Keys.indices``), so the decoder knows which.

``code=rans`` codes each stream of centroid indices with rANS (:mod:`hpcq.kernels.rans`):
the indices of a Gaussian are far from uniform (entropy 1.91 / 2.83 / 3.77 bits at
2 / 3 / 4 bits), so the same vector costs fewer bits.  Payload: the scales, the rANS hi
stream, the rANS lo stream; the aux word holds the hi stream's length in bytes.  When the
coded streams would not be shorter than the packed ones, the message carries the packed
payload and header flag bit 1 (:data:`FLAG_PACKED`), as ``qsgd:code=``.  Either way the
message decodes to the same vector as ``code=fixed``.

Not ``unbiased`` here: EDEN's unbiasedness needs a uniform random rotation, of which the
randomized Hadamard transform is an approximation (as for DRIVE, ``hadamard+sign:scale=drive``).
All ranks of a step share the rotation, so their errors are not independent
(``independent_errors`` False): identical inputs give identical errors.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.base import (
    DEFAULT_ROTATION_BLOCK,
    FLAG_CODEC,
    HEADER_BYTES,
    Compressor,
    Header,
    Keys,
    NonFiniteInputError,
    Param,
)
from hpcq.kernels import eden, rans
from hpcq.kernels.bitpack import packed_nbytes
from hpcq.kernels.rng import bits64_py

#: Header flag: a rANS-coded spec sent the packed streams (they were not longer).
FLAG_PACKED = 0x2
SCALES = {"unbiased": eden.UNBIASED, "mse": eden.MSE}


def _phi(t: float) -> float:
    return math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi) if math.isfinite(t) else 0.0


def _tail(t: float) -> float:
    """P(Z > t), accurate in the far tail (erfc, not 1 - erf)."""
    return 0.5 * math.erfc(t / math.sqrt(2.0))


def _centroid_map(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``T(c)``: the conditional means of N(0, 1) on the nearest-neighbour cells of the
    positive centroids ``c`` (cells ``[t_j, t_j+1)``, ``t_0 = 0``, ``t_m = inf``), with the
    cells' probabilities and ``dT_j/dt_j``, ``dT_j/dt_j+1`` for Newton's method."""
    m = c.shape[0]
    t = np.concatenate(([0.0], (c[:-1] + c[1:]) / 2, [math.inf]))
    out, prob, grad = np.empty(m), np.empty(m), np.empty((m, 2))
    for j in range(m):
        a, b = float(t[j]), float(t[j + 1])
        p = _tail(a) - _tail(b)
        out[j] = (_phi(a) - _phi(b)) / p
        prob[j] = p
        grad[j] = (_phi(a) * (out[j] - a) / p, _phi(b) * (b - out[j]) / p if j < m - 1 else 0.0)
    return out, prob, grad


@cache
def lloyd_max(bits: int) -> np.ndarray:
    """The ``2^(bits-1)`` positive Lloyd-Max centroids of N(0, 1) for ``bits`` bits (float64).

    The fixed point ``c = T(c)`` of Lloyd's iteration (every centroid the mean of its
    nearest-neighbour cell; the negative half mirrors it), solved by Newton's method on
    ``c - T(c)`` from Panter and Dite's asymptotic centroids (quantiles of N(0, 3)),
    with the exact normal pdf and tail (``erfc``): quadratic convergence to a residual
    of a few ulps, where Lloyd's own iteration needs 10^5 steps at 6 bits.  Read-only.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    from statistics import NormalDist

    m = 1 << (bits - 1)
    panter = NormalDist(0.0, math.sqrt(3.0))
    c = np.array([panter.inv_cdf(0.5 + (j + 0.5) / (2 * m)) for j in range(m)])
    polish = 2  # Newton steps after the step falls to 1e-12: quadratic, so to rounding noise
    for _ in range(60):
        t, _, g = _centroid_map(c)
        jac = np.eye(m)  # d(c - T(c))/dc; t_j = (c_j-1 + c_j)/2 for j >= 1
        for j in range(m):
            if j > 0:
                jac[j, j - 1] -= g[j, 0] / 2
                jac[j, j] -= g[j, 0] / 2
            if j < m - 1:
                jac[j, j] -= g[j, 1] / 2
                jac[j, j + 1] -= g[j, 1] / 2
        step = np.linalg.solve(jac, c - t)
        c = c - step
        if np.max(np.abs(step)) <= 1e-12 * c[-1]:
            polish -= 1
            if polish < 0:
                break
    else:  # pragma: no cover - Newton from Panter-Dite converges in < 10 steps
        raise RuntimeError(f"Lloyd-Max centroids for {bits} bits did not converge")
    c.flags.writeable = False
    return c


def lloyd_max_mse(bits: int) -> float:
    """``D = E(Z - Q(Z))^2`` of the ``bits``-bit Lloyd-Max quantizer of N(0, 1): ``1 - E Q^2``
    (a Lloyd-Max quantizer has ``E[Z Q] = E[Q^2]``)."""
    c = lloyd_max(bits)
    _, prob, _ = _centroid_map(c)
    return 1.0 - 2.0 * float(np.sum(prob * c * c))


@REGISTRY.register("eden")
class Eden(Compressor):
    """EDEN: randomized Hadamard rotation, Lloyd-Max centroids, one scale per rotation block."""

    name = "eden"
    codec_id = 30
    summary = ("EDEN: rotated, scaled to N(0,1), nearest Lloyd-Max centroid; fractional bits, "
               "unbiased or MSE scale, optional rANS")
    params = (
        Param("bits", float, 2.0, "bits per entry (1..8; a fraction mixes floor and ceil)",
              minimum=1.0, maximum=8.0, slot=0),
        Param("scale", str, "unbiased", "unbiased = ||y||^2/<y,q> (EDEN), mse = <y,q>/||q||^2",
              choices=tuple(SCALES), slot=1),
        Param("code", str, "fixed", "fixed-length packing, or rans (variable length)",
              choices=("fixed", "rans"), slot=2),
    )
    #: The rotation is shared by all ranks of a step: errors are not independent.
    independent_errors = False

    def __init__(self, *, rotation: int = 0, **values: Any) -> None:
        # EDEN always rotates: without a hadamard prefix, the default block
        super().__init__(rotation=rotation or DEFAULT_ROTATION_BLOCK, **values)

    def _widths(self, n: int) -> tuple[int, int, int]:
        return eden.layout(n, self._block(n), self.p["bits"])

    def _block(self, n: int) -> int:
        return min(self.rotation, n) if n else 1

    def _centroids(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi, _ = self._widths(n)
        return lloyd_max(lo), lloyd_max(hi)

    def _offset(self, keys: Keys) -> int:
        return bits64_py(int(keys.indices), 0)

    # ----------------------------------------------------------------- sizes, bounds
    def _fixed_nbytes(self, n: int) -> int:
        return eden.payload_nbytes(n, self._block(n), self.p["bits"])

    def _payload_nbytes(self, n: int) -> int | None:
        return self._fixed_nbytes(n) if self.p["code"] == "fixed" else None

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(K hi + (n - K) lo, 32 per block)``: EDEN's ``b`` bits per coordinate (``K =
        round(f n)`` of them ``ceil(b)``) and one float32 scale per rotation block (EDEN
        sends one per vector; hpcq's rotation is blockwise).  Wire padding < 8 bits per
        stream, plus up to 3 bytes aligning the hi stream.  For ``code=rans`` this is the
        fixed-length count, which bounds every message (it falls back to packing)."""
        lo, hi, k = self._widths(n)
        return k * hi + (n - k) * lo, 32 * (n // self._block(n))

    @property
    def unbiased(self) -> bool:
        """False: EDEN's scale is unbiased over a uniform rotation, not a Hadamard one."""
        return False

    def _error_bound(self, n: int) -> float:
        """Deterministic, for every rotation, per block of ``B = min(block, n)`` entries.

        ``q`` has the signs of ``z`` and ``c_min <= |q_i| <= c_max`` (the smallest and
        largest positive centroid of either width), so ``<z, q> >= c_min ||z||_1 >= c_min
        ||z||`` and ``||q|| <= c_max sqrt(B)``: ``cos(z, q) >= rho = c_min / (c_max sqrt(B))``.

        * unbiased, ``S = ||y||^2 / <y, q>``: ``||S q - y||^2 = (1/cos^2 - 1) ||y||^2 <=
          (1/rho^2 - 1) ||y||^2 = (B c_max^2 / c_min^2 - 1) ||y||^2`` (1 bit: ``B - 1``, as
          DRIVE's sign);
        * mse, the projection of ``y`` on ``q``: ``(1 - cos^2) ||y||^2 <= (1 - rho^2) ||y||^2``.

        Very loose: a random rotation makes ``z`` near N(0, 1) and the error near EDEN's
        (class docstring), but a bound for every input cannot use that.
        """
        lo_c, hi_c = self._centroids(n)
        c_min = min(lo_c[0], hi_c[0])
        c_max = max(lo_c[-1], hi_c[-1])
        rho2 = (c_min / c_max) ** 2 / self._block(n)
        return 1.0 / rho2 - 1.0 if self.p["scale"] == "unbiased" else 1.0 - rho2

    # ----------------------------------------------------------------- encode, decode
    def _quantize(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> None:
        n = y.shape[0]
        lo_c, hi_c = self._centroids(n)
        if eden.encode(y, out, block=self._block(n), bits=self.p["bits"],
                       offset=self._offset(keys), centroids_lo=lo_c, centroids_hi=hi_c,
                       mode=SCALES[self.p["scale"]]):
            raise NonFiniteInputError

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        self._quantize(y, out, keys)
        return 0

    def _streams(self, n: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """(offset, bytes, codes, width) of the hi and the lo stream in the fixed payload."""
        lo, hi, k = self._widths(n)
        sb = 4 * (n // self._block(n))
        ph = eden.hi_nbytes(k, hi)
        return (sb, ph, k, hi), (sb + ph, packed_nbytes(n - k, lo), n - k, lo)

    def _encode_message(self, y: np.ndarray, keys: Keys) -> tuple[np.ndarray, int, int]:
        """Quantize into a fixed-length message, rANS-code each stream into a buffer one
        byte shorter than the packed ones, and keep whichever is shorter."""
        n = y.shape[0]
        fixed = self._fixed_nbytes(n)
        msg = np.empty(HEADER_BYTES + fixed, np.uint8)
        self._quantize(y, msg[HEADER_BYTES:], keys)
        payload = msg[HEADER_BYTES:]
        sb = self._streams(n)[0][0]
        coded = np.empty(max(fixed - sb - 1, 0), np.uint8)
        used, lengths = 0, []
        for off, _, cnt, width in self._streams(n):
            w = rans.encode(payload[off:off + packed_nbytes(cnt, width)], cnt, width,
                            1 << width, coded[used:])
            if w < 0:
                return msg, 0, FLAG_PACKED
            lengths.append(w)
            used += w
        end = HEADER_BYTES + sb + used
        msg[HEADER_BYTES + sb:end] = coded[:used]
        return (msg[:end].copy() if 2 * end < msg.shape[0] else msg[:end]), lengths[0], 0

    def _fixed_payload(self, payload: np.ndarray, n: int, h: Header) -> np.ndarray:
        """The fixed-length payload (scales, packed streams) of a message's payload."""
        flags = h.flags & FLAG_CODEC
        fixed = self._fixed_nbytes(n)
        coded = self.p["code"] == "rans"
        if (flags and not coded) or flags & ~FLAG_PACKED or (h.aux and (flags or not coded)):
            raise ValueError(f"corrupted message: codec flags {flags:#x}, aux {h.aux}")
        if not coded or flags:
            if payload.shape[0] != fixed:
                raise ValueError(f"payload is {payload.shape[0]} bytes; packed codes take "
                                 f"{fixed}")
            return payload
        (sb, _, _, _), _ = self._streams(n)
        if not sb <= payload.shape[0] < fixed:
            raise ValueError(f"payload of {payload.shape[0]} bytes: a rANS-coded message of "
                             f"{n} entries takes {sb} to {fixed - 1}")
        if h.aux > payload.shape[0] - sb:
            raise ValueError(f"corrupted message: hi stream of {h.aux} bytes overruns the "
                             f"payload")
        out = np.zeros(fixed, np.uint8)
        out[:sb] = payload[:sb]
        pos = sb
        for (off, _, cnt, width), size in zip(self._streams(n),
                                              (h.aux, payload.shape[0] - sb - h.aux), strict=False):
            rans.decode(payload[pos:pos + size], cnt, width, 1 << width,
                        out[off:off + packed_nbytes(cnt, width)])
            pos += size
        return out

    decodes_into = True

    def _decode_message(self, payload: np.ndarray, n: int, keys: Keys, h: Header,
                        **into: Any) -> np.ndarray:
        fixed = self._fixed_payload(payload, n, h)
        lo_c, hi_c = self._centroids(n)
        y: np.ndarray = eden.decode(fixed, n, block=self._block(n), bits=self.p["bits"],
                                    offset=self._offset(keys), centroids_lo=lo_c,
                                    centroids_hi=hi_c, **into)
        return y

    def message_bits(self, buf: np.ndarray) -> tuple[int, int]:
        """``(payload_bits, side_bits)`` of one message as sent: the scales (32 each) and
        the rANS tables are side bits, the coded streams (byte-padded, rANS's 16 bytes of
        final states included) or the packed streams payload."""
        h, _, n = self._check_message(buf)
        payload = buf[HEADER_BYTES:]
        self._fixed_payload(payload, n, h)  # a message that decodes
        (sb, _, _, _), _ = self._streams(n)
        if self.p["code"] == "fixed" or h.flags & FLAG_PACKED or n == 0:
            return self._theory_bits(n)[0], 8 * sb
        table, pos = 0, sb
        for (_, _, cnt, width), size in zip(self._streams(n),
                                            (h.aux, payload.shape[0] - sb - h.aux), strict=False):
            if cnt:
                table += rans.table_nbytes(payload[pos:pos + size], 1 << width)
            pos += size
        return 8 * (payload.shape[0] - sb - table), 8 * (sb + table)
