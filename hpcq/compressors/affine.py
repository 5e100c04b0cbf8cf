"""The shared shape of the bucketed affine quantizers (``uniform``, ``qsgd``).

Both are :func:`hpcq.kernels.quantize.quantize` with a different level set per
bucket; a subclass says which through :meth:`AffineQuantizer._layout_args`.
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors.base import Compressor, Keys, NonFiniteInputError
from hpcq.kernels import quantize


def check_bucket(name: str, bucket: int) -> None:
    """Buckets hold whole groups of 8 codes (so every bucket starts on a byte)."""
    if bucket % 8:
        raise ValueError(f"{name}: bucket={bucket} must be 0 (the whole vector) or a "
                         f"multiple of 8")


class AffineQuantizer(Compressor):
    """A codec over the bucketed affine kernel; needs ``bucket`` and ``rounding`` params."""

    def _layout_args(self) -> dict[str, int]:
        """``bucket``, ``nlev`` and ``mode`` for the kernel."""
        raise NotImplementedError

    def _validate(self) -> None:
        check_bucket(self.name, self.p["bucket"])

    @property
    def unbiased(self) -> bool:
        return bool(self.p["rounding"] == "stochastic")

    def _payload_nbytes(self, n: int) -> int:
        return quantize.payload_nbytes(n, **self._layout_args())

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        if quantize.quantize(y, out, stochastic=self.p["rounding"] == "stochastic",
                             key=int(keys.private), **self._layout_args()):
            raise NonFiniteInputError
        return 0

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int) -> np.ndarray:
        return quantize.dequantize(payload, n, **self._layout_args())
