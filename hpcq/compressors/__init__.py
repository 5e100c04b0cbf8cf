"""The compressor library: every codec behind one API.

``compressor("hadamard+qsgd:bits=2")`` parses a spec and returns a
:class:`~hpcq.compressors.base.Compressor`; ``compressors()`` lists them all.
Spec grammar::

    spec    := [prefix "+"]* codec
    prefix  := "hadamard" [":block=" power-of-two]      # randomized Hadamard rotation
    codec   := name [":" key "=" value ("," key "=" value)*]

Keyword arguments override values given in the string.  Each codec lives in its
own module and registers itself with ``@REGISTRY.register(name)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcq.compressors.base import (
    DEFAULT_ROTATION_BLOCK,
    HEADER_BYTES,
    Compressor,
    Header,
    NonFiniteInputError,
    mean_nmse_bound,
    parse_header,
)
from hpcq.registry import Registry

REGISTRY: Registry[type[Compressor]] = Registry("compressor")

PREFIXES = ("hadamard",)


def _split_kv(text: str, owner: str, colon: bool = False) -> dict[str, str]:
    """``key=value,...`` after a spec's colon (``colon``: one was written, so it must be
    followed by something); stray commas, empty items and non-ASCII text are errors."""
    out: dict[str, str] = {}
    if not text.isascii():
        raise ValueError(f"{owner}: parameters {text!r} hold non-ASCII characters; write "
                         f"plain ASCII, e.g. bits=4")
    if colon and not text.strip():
        raise ValueError(f"{owner}: nothing after ':'; give key=value parameters or drop the "
                         f"colon")
    for item in (t.strip() for t in text.split(",")) if text.strip() else ():
        if not item:
            raise ValueError(f"{owner}: an empty parameter in {text!r} (a stray comma)")
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{owner}: expected key=value, got {item!r}")
        if key.strip() in out:
            raise ValueError(f"{owner}: parameter {key.strip()} given twice")
        out[key.strip()] = value.strip()
    return out


def compressor(spec: str, **overrides: Any) -> Compressor:
    """Build a compressor from a spec string, e.g. ``"qsgd:bits=4,bucket=256"``.

    Raises ValueError naming the unknown codec, prefix or parameter and listing
    the valid ones.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"compressor spec must be a non-empty string, got {spec!r}")
    *prefixes, body = [part.strip() for part in spec.split("+")]
    rotation = 0
    for pre in prefixes:
        pname, pcolon, ptext = pre.partition(":")
        if pname != "hadamard":
            raise ValueError(f"unknown prefix {pname!r} in {spec!r}; valid: {', '.join(PREFIXES)}")
        if rotation:
            raise ValueError(f"hadamard given twice in {spec!r}")
        pkv = _split_kv(ptext, "hadamard", bool(pcolon))
        bad = sorted(set(pkv) - {"block"})
        if bad:
            raise ValueError(f"hadamard: unknown parameter(s) {', '.join(bad)}; valid: block "
                             f"(default {DEFAULT_ROTATION_BLOCK})")
        try:
            rotation = int(pkv.get("block", DEFAULT_ROTATION_BLOCK))
        except ValueError:
            raise ValueError(f"hadamard: block={pkv['block']!r} is not an integer") from None
        if rotation < 1:
            raise ValueError(f"hadamard: block={rotation} must be a power of two >= 1")
    name, colon, text = body.partition(":")
    cls = REGISTRY.get(name.strip())
    values: dict[str, Any] = dict(_split_kv(text, name, bool(colon)))
    values.update(overrides)
    return cls(rotation=rotation, **values)


def compressors() -> dict[str, dict[str, Any]]:
    """Every registered codec: summary, parameters (type, default, choices), and bits per
    coordinate and error bound omega (:meth:`Compressor.error_bound`) at defaults, d = 2^20."""
    out: dict[str, dict[str, Any]] = {}
    for name, cls in REGISTRY.items():
        c = cls()
        out[name] = {
            "summary": cls.summary,
            "params": {
                p.name: {"type": p.kind.__name__, "default": p.default, "doc": p.doc,
                         **({"choices": list(p.choices)} if p.choices else {})}
                for p in cls.params
            },
            "unbiased": c.unbiased,
            "bits_per_coordinate_d1M": c.bits_per_coordinate(1 << 20),
            "error_bound_d1M": c.error_bound(1 << 20),
        }
    return out


def from_header(buf: np.ndarray) -> Compressor:
    """The compressor that made message ``buf`` (rebuilt from its header alone)."""
    h = parse_header(buf)
    for _, cls in REGISTRY.items():
        if cls.codec_id == h.codec_id:
            params = cls.params_from_header(h.params)
            rotation = 1 << ((h.flags >> 8) & 0x1F) if h.flags & 1 else 0
            return cls(rotation=rotation, **params)
    raise ValueError(f"message has unknown codec id {h.codec_id}")


def decode(buf: np.ndarray) -> np.ndarray:
    """Decode any hpcq message, whatever compressor made it."""
    return from_header(buf).decode(buf)


# Importing the codec modules registers them (order irrelevant).
from hpcq.compressors import (  # noqa: E402,F401,E501  # noqa: E402,F401
    casts,
    eden,
    fixedrange,
    fp8,
    mx,
    natural,
    qsgd,
    randk,
    sign,
    terngrad,
    topk,
    uniform,
    vqsgd,
)

__all__ = [
    "HEADER_BYTES",
    "REGISTRY",
    "Compressor",
    "Header",
    "NonFiniteInputError",
    "compressor",
    "compressors",
    "decode",
    "from_header",
    "mean_nmse_bound",
    "parse_header",
]
