"""Top-k sparsification: the k largest |x_i|, sent as sorted indices and values.

Payload layout (n = encoded length, k = entries kept, w = ceil(log2 n) >= 1):
``bits=0``: k fp32 values, then k indices of w bits (LSB-first, ascending);
``bits=b``: fp32 scale m = max |x|, k b-bit value codes, then the k indices;
each bit stream is padded to a whole byte.  Value code c decodes to
``-m + c * 2m / (2^b - 1)`` (stochastic rounding, unbiased for the kept values).

k = min(k, n) when ``k > 0``, else ``max(1, floor(ratio * n + 0.5))`` (n > 0),
with ratio as the float32 the header carries.  Ties in |x| go to the lower
index, so the message is deterministic (apart from stochastic value codes).
Biased: use it with error feedback.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.affine import ROUND_DELTA
from hpcq.compressors.base import ROUNDING_ERROR, Compressor, Keys, NonFiniteInputError, Param
from hpcq.kernels import sparsify


def kept(n: int, k: int, ratio: float) -> int:
    """Entries kept out of ``n`` for parameters ``k`` (0: use ratio) and ``ratio``."""
    if n == 0:
        return 0
    if k:
        return min(k, n)
    return min(n, max(1, math.floor(float(np.float32(ratio)) * n + 0.5)))


def sparse_nbytes(n: int, k: int, bits: int, send_idx: bool) -> int:
    """Payload bytes of k values (fp32 or b-bit plus a scale) and optionally k indices."""
    vals = 4 * k if bits == 0 else 4 + (k * bits + 7) // 8
    return vals + ((k * sparsify.index_width(n) + 7) // 8 if send_idx else 0)


def sparse_theory_bits(n: int, k: int, bits: int, send_idx: bool) -> tuple[int, int]:
    """``(payload_bits, side_bits)`` of :func:`sparse_nbytes`'s payload, before byte padding."""
    idx = k * sparsify.index_width(n) if send_idx else 0
    return (32 * k + idx, 0) if bits == 0 else (bits * k + idx, 32)


def write_sparse(out: np.ndarray, idx: np.ndarray, vals: np.ndarray, codes: np.ndarray,
                 m: float, bits: int) -> None:
    """Lay out the values (or scale + codes) then the packed indices in ``out``."""
    if bits == 0:
        nv = 4 * vals.shape[0]
        out[:nv].view(np.float32)[:] = vals
    else:
        out[:4].view(np.float32)[0] = m
        out[4:4 + codes.shape[0]] = codes
        nv = 4 + codes.shape[0]
    out[nv:nv + idx.shape[0]] = idx


def read_sparse(payload: np.ndarray, k: int, bits: int
                ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Inverse of :func:`write_sparse`: ``(vals, codes, m, index bytes)``."""
    if bits == 0:
        nv = 4 * k
        return payload[:nv].view(np.float32), payload[:0], 0.0, payload[nv:]
    nv = 4 + (k * bits + 7) // 8
    return (np.empty(0, np.float32), payload[4:nv], float(payload[:4].view(np.float32)[0]),
            payload[nv:])


SPARSE_PARAMS = (
    Param("k", int, 0, "entries kept (0: use ratio)", minimum=0, maximum=2**32 - 1, slot=0),
    Param("ratio", float, 0.01, "fraction kept when k=0: max(1, round(ratio*d))",
          minimum=0.0, maximum=1.0, slot=1),
    Param("bits", int, 0, "value bits: 0 = fp32, 1..8 = stochastic uniform on [-m, m]",
          minimum=0, maximum=8, slot=2),
)


class SparseCodec(Compressor):
    """What top-k and random-k share: k from (k, ratio), and the values-then-indices payload."""

    params = SPARSE_PARAMS

    def _validate(self) -> None:
        # ratio must be > 0 and survive the float32 header slot
        if not float(np.float32(self.p["ratio"])) > 0:
            raise ValueError(f"{self.name}: ratio={self.p['ratio']!r} must be > 0")

    def k_for(self, n: int) -> int:
        """Entries kept for an encoded length ``n``."""
        return kept(n, self.p["k"], self.p["ratio"])

    def _write(self, out: np.ndarray, encoded: tuple[Any, ...]) -> int:
        """Lay out a kernel's ``(idx, vals, codes, m, bad)`` in ``out``; the aux word (0)."""
        idx, vals, codes, m, bad = encoded
        if bad:
            raise NonFiniteInputError
        write_sparse(out, idx, vals, codes, m, self.p["bits"])
        return 0

    def _scale(self, n: int, k: int) -> float:
        """The factor every kept value is decoded with (random-k: n/k)."""
        return 1.0

    def _shared_bitmap(self, n: int, k: int, keys: Keys) -> np.ndarray | None:
        """The kept positions when both ends derive them (random-k shared); None: sent."""
        return None

    decodes_into = True

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int,
                        out: np.ndarray | None = None, add: bool = False) -> np.ndarray:
        k, bits = self.k_for(n), self.p["bits"]
        vals, codes, m, idx = read_sparse(payload, k, bits)
        bitmap = self._shared_bitmap(n, k, keys)
        return sparsify.sparse_decode(n, k, vals, codes, bits, m, self._scale(n, k),
                                      idx_buf=idx if bitmap is None else None, bitmap=bitmap,
                                      out=out, add=add)


@REGISTRY.register("topk")
class TopK(SparseCodec):
    """The k largest magnitudes with their indices (selection in O(d), no sort)."""

    name = "topk"
    codec_id = 20
    summary = "top-k |x_i|: ceil(log2 d)-bit sorted indices + fp32 or b-bit values; biased"
    def _payload_nbytes(self, n: int) -> int:
        return sparse_nbytes(n, self.k_for(n), self.p["bits"], True)

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(k (32 + ceil(log2 n)), 0)`` for fp32 values (papers.md 5; the index width is at
        least 1 bit), ``(k (b + ceil(log2 n)), 32)`` for b-bit values and their scale.
        Wire padding < 8 bits per stream (indices, and the b-bit codes)."""
        return sparse_theory_bits(n, self.k_for(n), self.p["bits"], True)

    def _error_bound(self, n: int) -> float:
        """``1 - k/n`` for fp32 values: the n - k dropped entries are the smallest, so their
        mean square is at most the mean square of all, ``||x_drop||^2 <= (1 - k/n) ||x||^2``.

        With ``bits=b`` (``L = 2^b - 1`` steps of ``2m/L`` on [-m, m], ``m = max |x|`` on an
        end level, exact) the other k - 1 kept values add at most ``step^2/4 = m^2/L^2``
        each (stochastic rounding variance; terms in ROUND_DELTA added), and ``m^2 <=
        ||x_kept||^2 = ||x||^2 - ||x_drop||^2``: with ``q = (k - 1)(1 + 4 delta^2) / L^2``,
        ``E||Q - x||^2 <= ||x_drop||^2 (1 - q) + q ||x||^2``, at most
        ``max(q, 1 - k/n + q k/n)``.  Attained by a spike on near-zero kept values, so
        very loose on typical data (gaussian top-1% with 4 bits: ~50x).
        """
        k = self.k_for(n)
        if self.p["bits"] == 0:
            return 1.0 - k / n
        big_l = (1 << self.p["bits"]) - 1
        q = (k - 1) * (1.0 + 4.0 * ROUND_DELTA**2) / big_l**2
        return max(q, 1.0 - k / n + q * k / n)

    def _rounding_error(self, n: int) -> float:
        return 0.0 if self.p["bits"] == 0 else ROUNDING_ERROR  # fp32 values are copied

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        return self._write(out, sparsify.topk_encode(y, self.k_for(y.shape[0]), self.p["bits"],
                                                     keys.private))

