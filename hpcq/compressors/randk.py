"""Random-k sparsification: k coordinates uniformly without replacement, scaled by d/k.

Payload layout: as :mod:`hpcq.compressors.topk` (k fp32 values, or an fp32 scale
m and k b-bit codes, then the indices), except that with ``shared=true`` no
indices are sent: the subset is drawn from the shared index stream of
(seed, step), which the decoder re-derives from the header.  With
``shared=false`` it is drawn from a stream of the private key and the sorted
indices (ceil(log2 n) bits each) follow the values.  The decoder multiplies the
values by n/k, so the estimate is unbiased (omega = n/k - 1; b-bit values add
the variance of stochastic rounding and stay unbiased).
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.base import Keys, Param
from hpcq.compressors.topk import SPARSE_PARAMS, SparseCodec, read_sparse, sparse_nbytes
from hpcq.kernels import sparsify, subset
from hpcq.kernels.rng import PURPOSE_INDICES, derive_key


@REGISTRY.register("randk")
class RandK(SparseCodec):
    """k uniformly random coordinates, scaled by d/k; shared or sent indices."""

    name = "randk"
    codec_id = 21
    summary = "random-k, scaled d/k (unbiased); shared=true sends values only"
    params = SPARSE_PARAMS + (
        Param("shared", bool, True, "indices from the shared (seed, step) stream, not sent",
              slot=3),
    )

    @property
    def unbiased(self) -> bool:
        return True

    def _payload_nbytes(self, n: int) -> int:
        return sparse_nbytes(n, self.k_for(n), self.p["bits"], not self.p["shared"])

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        n, k, shared = y.shape[0], self.k_for(y.shape[0]), self.p["shared"]
        # a private subset uses its own stream: the rounding draws of keys.private stay independent
        key = keys.indices if shared else derive_key(int(keys.private), PURPOSE_INDICES)
        bitmap = subset.sample_bitmap(n, k, key)
        return self._write(out, sparsify.randk_encode(y, bitmap, k, self.p["bits"], not shared,
                                                      keys.private))

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int) -> np.ndarray:
        k, bits = self.k_for(n), self.p["bits"]
        vals, codes, m, idx = read_sparse(payload, k, bits)
        mult = n / k if k else 1.0
        if self.p["shared"]:
            bitmap = subset.sample_bitmap(n, k, keys.indices)
            return sparsify.sparse_decode(n, k, vals, codes, bits, m, mult, bitmap=bitmap)
        return sparsify.sparse_decode(n, k, vals, codes, bits, m, mult, idx_buf=idx)
