"""Uncompressed baselines: fp32 (identity), fp16 and bf16 casts.

Payloads: ``d`` little-endian float32 / IEEE binary16 / bfloat16 values.  The
casts are deterministic (round to nearest even) and biased only by rounding.
A value that rounds past fp16's largest (65504) is an error, never a silent Inf.
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.base import Compressor, Keys, NonFiniteInputError
from hpcq.kernels import cast, checks

FP16_MAX = 65504.0


@REGISTRY.register("fp32")
class FP32(Compressor):
    """No compression: the float32 values themselves (the Allreduce baseline's payload)."""

    name = "fp32"
    codec_id = 1
    summary = "identity: 32 bits per coordinate"

    @property
    def unbiased(self) -> bool:
        return True

    def _error_bound(self, n: int) -> float:
        """0: the float32 values are copied bit for bit."""
        return 0.0

    def _rounding_error(self, n: int) -> float:
        return 0.0

    def _payload_nbytes(self, n: int) -> int:
        return 4 * n

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(32 n, 0)``: the values, nothing else; the wire adds no padding."""
        return 32 * n, 0

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        if checks.first_nonfinite(y) >= 0:
            raise NonFiniteInputError
        out.view(np.float32)[:] = y
        return 0

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int) -> np.ndarray:
        return payload.view(np.float32).copy()


@REGISTRY.register("fp16")
class FP16(Compressor):
    """IEEE half precision: 16 bits per coordinate, |x| <= 65504."""

    name = "fp16"
    codec_id = 2
    summary = "IEEE binary16 cast (round to nearest even); |x| must be <= 65504"

    def _error_bound(self, n: int) -> float:
        """2^-22: round to nearest with an 11-bit significand, ``|fl(x) - x| <= 2^-11 |x|``
        per entry, so ``||fl(x) - x||^2 <= 2^-22 ||x||^2``.

        Caveat: only for entries in fp16's *normal* range, 0 or ``2^-14 <= |x| <= 65504``
        (after the rotation, if any).  Below 2^-14 fp16 is subnormal and the error is
        absolute (up to 2^-25 per entry), so a vector of tiny entries can lose everything
        (``x = 1e-8`` decodes to 0); above 65504 encode raises.
        """
        return 2.0**-22

    def _rounding_error(self, n: int) -> float:
        return 0.0  # integer bit manipulation: exactly round to nearest even

    def _payload_nbytes(self, n: int) -> int:
        return 2 * n

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(16 n, 0)``: the values, nothing else; the wire adds no padding."""
        return 16 * n, 0

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        if cast.to_fp16(y, out.view(np.uint16)):
            if checks.first_nonfinite(y) >= 0:
                raise NonFiniteInputError
            m, _ = checks.maxabs_nonfinite(y)
            raise ValueError(f"fp16: max |x| = {m:.6g} rounds past the largest fp16 "
                             f"({FP16_MAX}); scale the vector or use bf16")
        return 0

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int) -> np.ndarray:
        return cast.from_fp16(payload.view(np.uint16))


@REGISTRY.register("bf16")
class BF16(Compressor):
    """bfloat16: float32's exponent range with 8 bits of mantissa, 16 bits per coordinate."""

    name = "bf16"
    codec_id = 3
    summary = "bfloat16 cast (round to nearest even): fp32 range, 8-bit mantissa"

    def _error_bound(self, n: int) -> float:
        """2^-16: :func:`hpcq.kernels.cast.to_bf16` rounds to nearest even on the 16 dropped
        bits (it does not truncate, which would give 2^-14), an 8-bit significand, so
        ``|fl(x) - x| <= 2^-8 |x|`` for float32-normal entries (bf16 has float32's exponent
        range); values rounding past the largest bf16 make encode raise."""
        return 2.0**-16

    def _rounding_error(self, n: int) -> float:
        return 0.0  # integer bit manipulation: exactly round to nearest even

    def _payload_nbytes(self, n: int) -> int:
        return 2 * n

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(16 n, 0)``: the values, nothing else; the wire adds no padding."""
        return 16 * n, 0

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        if cast.to_bf16(y, out.view(np.uint16)):
            if checks.first_nonfinite(y) < 0:
                raise ValueError("bf16: a value rounds past the largest bfloat16 (3.39e38)")
            raise NonFiniteInputError
        return 0

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int) -> np.ndarray:
        return cast.from_bf16(payload.view(np.uint16))
