"""A scheme: one way to compute the mean over ranks, as an object that carries all its facts.

Each scheme module defines one subclass of :class:`Scheme` and registers a default
instance with :func:`register`; ``scheme("ring:chunks=4")`` builds a configured one
from a spec (parsed like compressor specs).  Everything else in hpcq reads the
scheme's facts from here instead of keeping its own table of names:

* what it can carry (``cast``: a baseline's fixed format; ``codecs``: the only codecs
  MPI can sum for it; else any compressor) and :meth:`Scheme.check`;
* its forms: :meth:`Scheme.mean` (blocking) and, with ``nonblocking``,
  :meth:`Scheme.start` (returns a :class:`~hpcq.collectives.allgather.Pending`);
* ``takes_feedback`` (each rank encodes its own whole vector, so an error-feedback
  memory can wrap it) and ``one_message`` (a rank's ``bytes_sent`` is exactly its own
  one message, so a variable-length code's real length can be read from it);
* its accuracy guarantee (:meth:`Scheme.bound`, the ``nmse_bound`` of the benchmark,
  built from :mod:`hpcq.bench.guarantees`);
* its cost-model terms (:attr:`Scheme.cost`: the MPI algorithm assumed, the message
  steps L(p), the bytes B(p, m, d) per rank, the codec work E(p), D(p)) that the
  alpha-beta model (:mod:`hpcq.analysis.model`) fits and projects;
* the vector lengths its codec sees (:meth:`Scheme.codec_lengths`: two-phase
  compresses chunks), for compiling the kernels ahead and for the bounds;
* its figure style (``style``: colour, marker, line style).

State across calls (error-feedback memories, reused buffers, cached sub-communicators)
lives in a :class:`~hpcq.collectives.session.Session` that the caller passes in;
scheme objects hold parameters only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hpcq.compressors.base import Param, parse_params
from hpcq.registry import Registry

if TYPE_CHECKING:
    from hpcq.collectives import Stats
    from hpcq.collectives.session import Session
    from hpcq.compressors import Compressor
    from hpcq.feedback import ErrorFeedback
    from hpcq.workloads.layout import Layout


def lg(p: int) -> int:
    """ceil(log2 p): the rounds of recursive doubling or halving."""
    return max(0, math.ceil(math.log2(p))) if p >= 1 else 0


def check_out(out: np.ndarray, d: int, owner: str) -> np.ndarray:
    """``out`` when it can receive a mean of ``d`` entries (contiguous float32 of length
    ``d``); else ValueError naming ``owner``."""
    if out.dtype != np.float32 or out.shape != (d,) or not out.flags.c_contiguous:
        raise ValueError(f"{owner}: out must be a contiguous float32 array of length {d}")
    return out


def ring(p: int) -> float:
    """2 (p - 1) / p: the bytes factor of a bandwidth-optimal allreduce."""
    return 2.0 * (p - 1) / p


@dataclass(frozen=True)
class Cost:
    """How a scheme moves its data, for the alpha-beta model.

    ``comm(p, d) = alpha * steps(p) + beta * volume(p, m, d)``, with m one rank's
    message of the whole vector (the uncompressed n = 4d bytes for the casts);
    the codec's encode and decode work of the slowest rank, in whole vectors, is
    ``encodes(p)`` and ``decodes(p)``.
    """

    mpi: str
    steps: Callable[[int], float]
    volume: Callable[[int, float, int], float]
    encodes: Callable[[int], float]
    decodes: Callable[[int], float]
    #: (L, B, E, D) as text for the report's table.
    text: tuple[str, str, str, str]
    #: m of the message from the measured wire (mean over ranks of bytes_sent), d and p.
    message: Callable[[float, int, int], float] = lambda wire, d, p: wire
    #: Each of the p chunk messages carries the codec's header (two-phase).
    chunk_headers: bool = False
    #: Two link classes (node-aware schemes): the message steps and bytes of the slowest
    #: rank on the intra-node links, functions of the ranks per node k (and n, d); the
    #: terms above are then those among the node leaders, functions of the node count
    #: :meth:`nodes` instead of p.  None: one link class.
    intra_steps: Callable[[int], float] | None = None
    intra_volume: Callable[[int, float, int], float] | None = None
    #: (L, B) of the intra-node part as text.
    intra_text: tuple[str, str] | None = None

    @property
    def two_level(self) -> bool:
        """Whether the scheme has an intra-node part."""
        return self.intra_steps is not None

    @staticmethod
    def nodes(p: int, ranks_per_node: int) -> int:
        """The node count of p ranks, ``ranks_per_node`` to a node (at least 1)."""
        return max(1, p // ranks_per_node) if ranks_per_node > 0 else 1


@dataclass(frozen=True)
class BoundInputs:
    """What the guarantees need about the inputs: every rank's ``||x_i||^2``, ``||m||^2``,
    and for the casts ``sum_j a_j`` and ``sum_j a_j^2`` of ``a = sum_i |x_i|``."""

    sq_norms: tuple[float, ...]
    mean_sq: float
    abs_sum: float = 0.0
    abs_sq: float = 0.0


class Scheme:
    """Base class of the schemes; a subclass sets the class facts and implements :meth:`mean`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    #: The format a baseline always sends (fp32, fp16, bf16); None: it takes a compressor.
    cast: ClassVar[str | None] = None
    #: The only codecs it can carry (MPI sums them); None: any.
    codecs: ClassVar[tuple[str, ...] | None] = None
    #: Whether it sends the job's compressor.  False for schemes with their own fixed
    #: encoding (the casts, PowerSGD's low-rank factors, allreduce-fp8): they take
    #: ``comp=None``, and tables name them by :attr:`sends` instead of a compressor.
    takes_compressor: ClassVar[bool] = True
    #: Whether :meth:`start` exists.
    nonblocking: ClassVar[bool] = False
    #: Whether an error-feedback memory around the rank's own message can work through it.
    takes_feedback: ClassVar[bool] = False
    #: Whether a rank's bytes_sent is exactly its own one message.
    one_message: ClassVar[bool] = False
    #: The alpha-beta terms.
    cost: ClassVar[Cost]
    #: (colour, marker, line style) in figures; None: chosen from the scheme's rank.
    style: ClassVar[tuple[Any, str, Any] | None] = None
    #: A timing reference (the plain MPI call), not a mean: no accuracy, never used to train.
    reference: ClassVar[bool] = False

    def __init__(self, **values: Any) -> None:
        self.p: dict[str, Any] = parse_params(self.params, values, f"scheme {self.name}")
        self._validate()

    def _validate(self) -> None:
        """Check combinations of parameters; ValueError naming them."""

    @property
    def spec(self) -> str:
        """The canonical spec: the name, then the parameters that differ from their defaults."""
        given = [f"{p.name}={self.p[p.name]}" for p in self.params if self.p[p.name] != p.default]
        return f"{self.name}:{','.join(given)}" if given else self.name

    def __repr__(self) -> str:
        return f"scheme({self.spec!r})"

    @property
    def baseline(self) -> bool:
        """True for an uncompressed baseline (a fixed cast)."""
        return self.cast is not None

    @property
    def sends(self) -> str | None:
        """For a scheme that takes no compressor, the compressor spec naming what it sends
        (the casts' format; a benchmark case's ``spec``); None for the others."""
        return None if self.takes_compressor else self.cast or "fp32"

    def check(self, comp: Compressor | None) -> None:
        """Raise ValueError naming the scheme and what it can carry if ``comp`` is not that."""
        if not self.takes_compressor:
            if comp is not None and comp.spec != self.sends:
                raise ValueError(f"scheme {self.name} always sends {self.sends}; it takes no "
                                 f"compressor (got {comp.spec})")
            return
        if comp is None:
            raise ValueError(f"scheme {self.name} needs a compressor")
        if self.codecs is not None and (comp.name not in self.codecs or comp.rotation):
            raise ValueError(f"scheme {self.name} cannot do {comp.spec}: MPI can only sum "
                             f"plain {', '.join(self.codecs)}")

    # ------------------------------------------------------------------ the collective
    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: ErrorFeedback | None = None,
             session: Session | None = None, out: np.ndarray | None = None,
             layout: Layout | None = None) -> tuple[np.ndarray, Stats]:
        """The float32 mean over the ranks of ``comm`` of every rank's ``x``: ``(mean, stats)``.

        ``out``, when given, receives the mean (and is returned); ``session`` lends
        buffers and state kept across calls; ``feedback`` is this rank's
        error-feedback memory (schemes with ``takes_feedback``); ``layout`` names the
        tensors ``x`` holds, in order (None: one flat tensor), for schemes that work per
        tensor or on matrix shapes (PowerSGD).
        """
        raise NotImplementedError

    def start(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
              step: int = 0, feedback: ErrorFeedback | None = None,
              session: Session | None = None) -> Any:
        """Start the mean without blocking: a ``Pending``; ``wait()`` gives ``(mean, stats)``."""
        raise ValueError(f"scheme {self.name} has no nonblocking form")

    def __call__(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *,
                 seed: int = 0, step: int = 0, **kw: Any) -> tuple[np.ndarray, Stats]:
        """:meth:`mean` (``comp`` ignored by the schemes that take no compressor)."""
        return self.mean(comm, x, comp if self.takes_compressor else None, seed=seed,
                         step=step, **kw)

    def _need(self, comp: Compressor | None) -> Compressor:
        if comp is None:
            raise ValueError(f"scheme {self.name} needs a compressor")
        return comp

    # ------------------------------------------------------------------ facts for the others
    def codec_lengths(self, d: int, p: int) -> list[int]:
        """The distinct vector lengths the codec encodes in one call (default: ``[d]``)."""
        return [d]

    def check_layout(self, layout: Layout) -> None:
        """ValueError when this scheme can do nothing meaningful with a whole gradient of
        ``layout`` (PowerSGD with no matrix to compress); default: any layout will do."""

    def compressed_size(self, layout: Layout) -> int:
        """Entries of ``layout`` a scheme that takes no compressor compresses itself (PowerSGD's
        matrices; default 0: the casts send everything in their format)."""
        return 0

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        """A guarantee on the NMSE of the mean (None: the scheme gives none)."""
        return None

    def check_ranks(self, p: int) -> None:
        """ValueError (one line) when the scheme cannot run on ``p`` ranks; the runner asks
        before any MPI work, so a bad rank count never stops a run half-way."""

    def sums_in(self, comp: Compressor | None) -> str | None:
        """The format MPI adds in (fp32, fp16, bf16) when the scheme sums with MPI, else None."""
        return self.cast


SCHEMES: Registry[Scheme] = Registry("scheme")


def register(s: Scheme) -> Scheme:
    """Add the default instance ``s`` to :data:`SCHEMES` under its name."""
    return SCHEMES.register(s.name)(s)


def scheme(spec: str | Scheme) -> Scheme:
    """The scheme of a spec (``"allgather"``, ``"ring:chunks=4"``); ValueError naming the fault."""
    if isinstance(spec, Scheme):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"scheme spec must be a non-empty string, got {spec!r}")
    name, colon, text = spec.strip().partition(":")
    base = SCHEMES.get(name.strip())
    if not colon:
        return base
    values: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"scheme {name}: expected key=value, got {item!r} in {spec!r}")
        if key.strip() in values:
            raise ValueError(f"scheme {name}: parameter {key.strip()} given twice")
        values[key.strip()] = value.strip()
    return type(base)(**values)


def style_of(name: str, palette: tuple[str, ...], markers: str) -> tuple[Any, str, Any]:
    """(colour, marker, line style) of scheme ``name`` for figures: its own, else by its rank."""
    s = SCHEMES.get(name) if name in SCHEMES else None
    if s is not None and s.style is not None:
        return s.style
    i = SCHEMES.names().index(name) if s is not None else len(SCHEMES.names())
    return (palette[i % len(palette)], markers[i % len(markers)], "-")


def uncompressed(name: str) -> bool:
    """Whether scheme ``name`` (a spec, or a name from an older file) moves uncompressed
    values: a baseline, the MPI reference, or a scheme that only sums casts (ps-reduce)."""
    try:
        s = scheme(name)
    except ValueError:
        return str(name).startswith("allreduce-")
    return s.cast is not None or s.codecs is not None
