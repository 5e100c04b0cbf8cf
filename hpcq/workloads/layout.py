"""A gradient as named tensors laid out in one flat buffer, as frameworks flatten them.

A :class:`Layout` is an ordered tuple of :class:`Tensor` (name, shape, offset into the
flat buffer).  :meth:`Layout.from_shapes` places tensors contiguously in the order given
(a model's ``named_parameters()`` order); :meth:`Layout.flat` is the one-tensor layout of
a plain vector, so every flat-vector job is a layout too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tensor:
    """One named tensor: its shape and its offset (in elements) in the flat buffer."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        """Number of elements (1 for a scalar, shape ``()``)."""
        return math.prod(self.shape)

    @property
    def end(self) -> int:
        """One past the tensor's last element in the flat buffer."""
        return self.offset + self.size


def matrix_shape(t: Tensor) -> tuple[int, int] | None:
    """``(shape[0], prod(shape[1:]))`` for tensors of 2 or more dimensions (how PowerSGD
    views a convolution kernel as a matrix), None for vectors and scalars."""
    if len(t.shape) < 2:
        return None
    return t.shape[0], math.prod(t.shape[1:])


@dataclass(frozen=True)
class Layout:
    """Named tensors in one flat buffer (``tensors`` in buffer order)."""

    tensors: tuple[Tensor, ...]

    @classmethod
    def from_shapes(cls, items: Sequence[tuple[str, tuple[int, ...]]]) -> Layout:
        """Tensors placed contiguously in the order given; ValueError on bad names or shapes."""
        tensors, offset = [], 0
        for name, shape in items:
            t = Tensor(name, tuple(int(s) for s in shape), offset)
            tensors.append(t)
            offset += t.size
        out = cls(tuple(tensors))
        out.validate()
        return out

    @classmethod
    def flat(cls, d: int, name: str = "x") -> Layout:
        """The layout of a plain vector of length ``d``: one tensor of shape ``(d,)``."""
        return cls.from_shapes([(name, (d,))])

    @property
    def size(self) -> int:
        """Total number of elements (the flat buffer's length)."""
        return sum(t.size for t in self.tensors)

    @property
    def names(self) -> tuple[str, ...]:
        """Tensor names in buffer order."""
        return tuple(t.name for t in self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.tensors)

    def __getitem__(self, name: str) -> Tensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def views(self, buf: np.ndarray) -> dict[str, np.ndarray]:
        """Each tensor as a reshaped view of the flat ``buf`` (no copies), by name."""
        if not isinstance(buf, np.ndarray) or buf.ndim != 1 or buf.shape[0] != self.size:
            shape = getattr(buf, "shape", None)
            raise ValueError(f"layout: buffer must be a 1-D array of {self.size} elements, "
                             f"got shape {shape}")
        return {t.name: buf[t.offset:t.end].reshape(t.shape) for t in self.tensors}

    def validate(self, size: int | None = None) -> None:
        """ValueError naming the tensor at fault: an empty or duplicate name, a dimension
        <= 0, an offset that overlaps the previous tensor or leaves a gap, or a total
        other than ``size`` (when given)."""
        seen: set[str] = set()
        expect = 0
        for t in self.tensors:
            if not isinstance(t.name, str) or not t.name:
                raise ValueError(f"layout: tensor at offset {t.offset} has no name")
            if t.name in seen:
                raise ValueError(f"layout: tensor {t.name} appears twice")
            seen.add(t.name)
            if any(s <= 0 for s in t.shape):
                raise ValueError(f"layout: tensor {t.name} has shape {t.shape}; every "
                                 f"dimension must be >= 1")
            if t.offset != expect:
                what = "overlaps the previous tensor" if t.offset < expect else "leaves a gap"
                raise ValueError(f"layout: tensor {t.name} at offset {t.offset} {what} "
                                 f"(expected offset {expect})")
            expect = t.end
        if size is not None and expect != size:
            raise ValueError(f"layout: tensor sizes add up to {expect}, not {size}")
