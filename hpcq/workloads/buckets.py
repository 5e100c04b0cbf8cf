"""Buckets (which tensors travel together) and the per-tensor compression policy.

Rules, each a function ``layout -> tuple[Bucket, ...]`` and a spec (:func:`parse_bucket_rule`):

* ``ddp[:first=1,cap=25]``: PyTorch DDP's rule in its steady state (after the first
  iteration, when the reducer rebuilds its buckets in the order gradients became ready,
  i.e. reverse registration order).  Tensors are taken in reverse layout order and
  appended to the open bucket; the bucket closes as soon as its bytes *reach or exceed*
  its limit (torch's ``compute_bucket_assignment_by_size``: ``size >= limit`` is tested
  after adding).  The first bucket's limit is ``first`` MiB (``_DEFAULT_FIRST_BUCKET_BYTES``
  = 1 MiB), every later one's ``cap`` MiB (``bucket_cap_mb`` = 25).  So a tensor larger
  than the limit closes the bucket it joins: it is alone only if that bucket was empty.
* ``fused:mib=64``: Horovod/CGX tensor fusion: tensors in reverse order fill one buffer of
  ``mib`` MiB; a tensor that would overflow it starts the next buffer, and a tensor
  larger than the buffer travels alone.
* ``single``: one bucket holding every tensor (a flat vector is one such bucket).

A bucket is its own contiguous buffer: its tensors concatenated in bucket order (DDP
copies gradients into bucket buffers), so :attr:`Bucket.offsets` and :attr:`Bucket.layout`
are relative to that buffer while each :class:`Tensor` keeps its offset in the model's
flat buffer.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpcq.compressors.base import Param, parse_params
from hpcq.workloads.layout import Layout, Tensor

MIB = 1 << 20

#: Default of :attr:`Policy.min_size`, from ``analysis/scripts/min_size.py`` (see Policy).
DEFAULT_MIN_SIZE = 4096


@dataclass(frozen=True)
class Bucket:
    """Tensors sent together, in bucket order; ``index`` counts buckets in send order."""

    index: int
    tensors: tuple[Tensor, ...]

    @property
    def size(self) -> int:
        """Number of elements in the bucket buffer."""
        return sum(t.size for t in self.tensors)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Each tensor's offset inside the bucket buffer."""
        out, at = [], 0
        for t in self.tensors:
            out.append(at)
            at += t.size
        return tuple(out)

    @property
    def layout(self) -> Layout:
        """The bucket buffer's layout (offsets relative to the bucket)."""
        return Layout(tuple(Tensor(t.name, t.shape, o)
                            for t, o in zip(self.tensors, self.offsets, strict=True)))


def _check_mib(value: float, key: str, owner: str) -> None:
    if not value > 0:
        raise ValueError(f"{owner}: {key}={value} MiB must be > 0")


def plan_ddp(layout: Layout, first_mib: float = 1.0, cap_mib: float = 25.0,
             itemsize: int = 4) -> tuple[Bucket, ...]:
    """PyTorch DDP's buckets (module docstring): reverse order, first bucket ``first_mib``,
    the rest ``cap_mib``; a bucket closes once its bytes reach its limit."""
    _check_mib(first_mib, "first", "bucket rule ddp")
    _check_mib(cap_mib, "cap", "bucket rule ddp")
    limit, cap = int(first_mib * MIB), int(cap_mib * MIB)  # torch: int(cap_mb * 1024 * 1024)
    buckets: list[Bucket] = []
    cur: list[Tensor] = []
    nbytes = 0
    for t in reversed(layout.tensors):
        cur.append(t)
        nbytes += t.size * itemsize
        if nbytes >= limit:
            buckets.append(Bucket(len(buckets), tuple(cur)))
            cur, nbytes, limit = [], 0, cap
    if cur:
        buckets.append(Bucket(len(buckets), tuple(cur)))
    return tuple(buckets)


def plan_fused(layout: Layout, mib: float = 64.0, itemsize: int = 4) -> tuple[Bucket, ...]:
    """Horovod/CGX fusion buffers of ``mib`` MiB, tensors in reverse order (module docstring)."""
    _check_mib(mib, "mib", "bucket rule fused")
    limit = int(mib * MIB)
    buckets: list[Bucket] = []
    cur: list[Tensor] = []
    nbytes = 0
    for t in reversed(layout.tensors):
        tb = t.size * itemsize
        if cur and nbytes + tb > limit:
            buckets.append(Bucket(len(buckets), tuple(cur)))
            cur, nbytes = [], 0
        cur.append(t)
        nbytes += tb
    if cur:
        buckets.append(Bucket(len(buckets), tuple(cur)))
    return tuple(buckets)


def plan_single(layout: Layout, itemsize: int = 4) -> tuple[Bucket, ...]:
    """One bucket holding every tensor in layout order (a flat vector's only bucket)."""
    return (Bucket(0, layout.tensors),)


@dataclass(frozen=True)
class BucketRule:
    """A parsed bucket rule: ``rule(layout, itemsize=4)`` gives the buckets."""

    name: str
    params: tuple[tuple[str, Any], ...]
    plan: Callable[..., tuple[Bucket, ...]]

    def __call__(self, layout: Layout, itemsize: int = 4) -> tuple[Bucket, ...]:
        return self.plan(layout, *(v for _, v in self.params), itemsize=itemsize)

    @property
    def spec(self) -> str:
        """The canonical spec, e.g. ``ddp:first=1.0,cap=25.0``."""
        body = ",".join(f"{k}={v}" for k, v in self.params)
        return f"{self.name}:{body}" if body else self.name


#: rule name -> (plan function, its parameters in call order)
RULES: dict[str, tuple[Callable[..., tuple[Bucket, ...]], tuple[Param, ...]]] = {
    "ddp": (plan_ddp, (Param("first", float, 1.0, "first bucket's limit in MiB"),
                       Param("cap", float, 25.0, "later buckets' limit in MiB"))),
    "fused": (plan_fused, (Param("mib", float, 64.0, "fusion buffer in MiB"),)),
    "single": (plan_single, ()),
}


def parse_bucket_rule(spec: str) -> BucketRule:
    """``"ddp"``, ``"ddp:first=1,cap=25"``, ``"fused:mib=64"`` or ``"single"`` as a
    :class:`BucketRule`; one-line ValueError naming an unknown rule or key, or a bad value."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"bucket rule must be a non-empty string, got {spec!r}")
    name, _, text = spec.strip().partition(":")
    name = name.strip()
    if name not in RULES:
        raise ValueError(f"unknown bucket rule {name!r}; valid: {', '.join(sorted(RULES))}")
    plan, params = RULES[name]
    owner = f"bucket rule {name}"
    values: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{owner}: expected key=value, got {item!r}")
        values[key.strip()] = value.strip()
    parsed = parse_params(params, values, owner)
    for p in params:
        _check_mib(parsed[p.name], p.name, owner)
    return BucketRule(name, tuple((p.name, parsed[p.name]) for p in params), plan)


@dataclass(frozen=True)
class Policy:
    """Which tensors of a bucket are compressed, and with which codec.

    ``codec_for`` decides per tensor: the first ``overrides`` pattern (fnmatch on the
    tensor name) that matches gives its spec (``"none"``: send uncompressed); otherwise a
    tensor of fewer than ``min_size`` elements is sent uncompressed, and any other gets
    the default codec.  Uncompressed tensors of a bucket travel together in one fp32
    allreduce, so they add no message of their own.

    Why ``min_size = 4096`` (``analysis/scripts/min_size.py``, one thread of a loaded
    2-core machine, so times are upper bounds): one ``encode`` plus one accumulating
    ``decode`` per tensor costs a fixed ~55 us per call with qsgd:bits=4 (~36 us with
    sign: header, CRC, key derivation, Python) plus ~1.9 ns (qsgd) or ~0.2 ns (sign) per
    element, and every message carries the 60-byte header.  Sending ``n`` floats as fp32
    instead costs ``4 n`` bytes and no codec time, so compressing pays only on links
    slower than the break-even rate ``8 (4 n - wire) / t_codec``:

    ======  ==================  ==================
    n       qsgd:bits=4 Gbit/s  sign Gbit/s
    ======  ==================  ==================
    256     0.12                0.20
    1024    0.46                0.83
    2048    0.88                1.60
    4096    1.65                3.08
    16384   4.73                11.5
    65536   9.57                36.1
    ======  ==================  ==================

    Below 4096 elements compressing loses for both codecs even on a 1 Gbit/s link, the
    slowest one hpcq models; the per-call overhead, not the bytes, decides there.  The cut
    is cheap: it leaves 0.21 % of ResNet-50's parameters uncompressed (66 % of its
    tensors: batch-norm weights and biases, the fc bias), 0.11 % of BERT-base's, 0.10 % of
    GPT-2's and none of LLaMA-7B's (its smallest tensors, the RMSNorm weights, have 4096
    elements), as CGX and PowerSGD keep biases and norms uncompressed.  This assumes one
    codec call per tensor; raise ``min_size`` (to about 65536 for qsgd) on 10 Gbit/s links.
    """

    min_size: int = DEFAULT_MIN_SIZE
    overrides: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.min_size, int) or self.min_size < 0:
            raise ValueError(f"policy: min_size={self.min_size!r} must be an integer >= 0")
        for item in self.overrides:
            if (not isinstance(item, tuple) or len(item) != 2 or not all(
                    isinstance(s, str) and s.strip() for s in item)):
                raise ValueError(f"policy: override {item!r} must be a (pattern, spec) pair "
                                 f"of non-empty strings")

    def codec_for(self, tensor: Tensor, default_spec: str) -> str | None:
        """The codec spec for ``tensor``, or None to send it uncompressed."""
        for pattern, spec in self.overrides:
            if fnmatch.fnmatchcase(tensor.name, pattern):
                return None if spec.strip() == "none" else spec
        if tensor.size < self.min_size:
            return None
        return default_spec

    def split(self, bucket: Bucket, default_spec: str = "default"
              ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """``(compressed, uncompressed)`` tensors of ``bucket``, each in bucket order."""
        comp: list[Tensor] = []
        plain: list[Tensor] = []
        for t in bucket.tensors:
            (plain if self.codec_for(t, default_spec) is None else comp).append(t)
        return tuple(comp), tuple(plain)
