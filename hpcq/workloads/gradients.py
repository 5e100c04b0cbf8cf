"""Gradient values for a workload, generated or read one tensor at a time into caller buffers.

A :class:`GradientSource` fills one tensor's float32 buffer for a given rank and step;
nothing here ever holds a whole model's gradient (LLaMA-7B's is 27 GB in fp32), so a
caller can produce and send a model bucket by bucket.

* :class:`Synthetic` (``normal``, ``laplace``, ``student-t:df=3``, ``lognormal:sigma=1``):
  the distribution's standard form times a per-tensor scale, deterministic in
  ``(seed, tensor name, rank, step)``.
* :class:`FromFile` (``file:PATH``): real gradients a user saved as named arrays in an
  ``.npz`` or HDF5 file (format in docs/workloads.md).

:func:`gradient_source` parses either spec.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hpcq.compressors.base import Param, parse_params
from hpcq.workloads.layout import Layout, Tensor

#: Elements generated per draw: bounds the temporaries (8 MiB of float64 for Student-t).
CHUNK = 1 << 20
_TAG_VALUES = 0x6772  # seeds the value streams apart from the scale stream
_TAG_SCALE = 0x7363


class GradientSource(Protocol):
    """Fills ``out`` (a float32 1-D view of ``tensor.size`` elements) with the gradient of
    ``tensor`` on ``rank`` at ``step``."""

    def fill(self, tensor: Tensor, out: np.ndarray, *, rank: int, step: int) -> None: ...


def _check_out(tensor: Tensor, out: np.ndarray, owner: str) -> None:
    if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.ndim == 1
            and out.shape[0] == tensor.size and out.flags.c_contiguous
            and out.flags.writeable):
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"{owner}: out for tensor {tensor.name} must be a writeable "
                         f"C-contiguous float32 vector of {tensor.size}, got {got}")


def _name_key(name: str) -> int:
    """A stable 32-bit key of a tensor name (Python's ``hash`` differs between processes)."""
    return zlib.crc32(name.encode())


class Synthetic:
    """Gradients drawn tensor by tensor: ``scale(tensor) * X`` with X i.i.d. from ``dist``.

    * ``normal``: N(0, 1); ``laplace``: density ``exp(-|x|) / 2`` (variance 2);
      ``student-t``: Student's t with ``df`` degrees of freedom (variance ``df / (df - 2)``
      for df > 2, heavy-tailed); ``lognormal``: ``+-exp(sigma Z)`` with a fair random sign
      (mean 0, ``E x^2 = exp(2 sigma^2)``): magnitudes spread over orders of magnitude.
    * ``layer_scale``: each tensor's scale is ``10^-U``, U uniform on ``[0, layer_scale]``
      (log-uniform over that many decades), drawn from ``(seed, tensor name)`` alone: the
      same on every rank and step, as a layer's gradient scale is a property of the layer.
      Real gradients differ in scale by orders of magnitude across layers, which is what
      makes per-tensor scaling matter; ``layer_scale=0`` gives every tensor scale 1.
    * Values: a numpy ``Generator`` seeded with ``(seed, tensor name, rank, step)``, drawn
      in chunks of :data:`CHUNK` elements straight into ``out`` (float32), so any tensor
      can be regenerated alone and no temporary exceeds a chunk.
    """

    params = (
        Param("df", float, 3.0, "student-t degrees of freedom", minimum=0.1),
        Param("sigma", float, 1.0, "lognormal: standard deviation of log|x|", minimum=0.0,
              maximum=4.0),
        Param("layer_scale", float, 3.0, "per-tensor scales span this many decades",
              minimum=0.0, maximum=30.0),
    )
    DISTS = ("normal", "laplace", "student-t", "lognormal")

    def __init__(self, dist: str = "normal", *, seed: int = 0, **values: Any) -> None:
        if dist not in self.DISTS:
            raise ValueError(f"unknown gradient distribution {dist!r}; valid: "
                             f"{', '.join(self.DISTS)}, file:PATH")
        self.dist, self.seed = dist, int(seed)
        self.p: dict[str, Any] = parse_params(self.params, values, f"gradients {dist}")
        unused = {"normal": ("df", "sigma"), "laplace": ("df", "sigma"),
                  "student-t": ("sigma",), "lognormal": ("df",)}[dist]
        given = [k for k in unused if k in values]
        if given:
            raise ValueError(f"gradients {dist}: parameter(s) {', '.join(given)} unused; "
                             f"leave them out")

    @property
    def spec(self) -> str:
        """The canonical spec, e.g. ``student-t:df=3.0,layer_scale=3.0``."""
        keep = {"normal": (), "laplace": (), "student-t": ("df",), "lognormal": ("sigma",)}
        body = [f"{k}={self.p[k]}" for k in (*keep[self.dist], "layer_scale")]
        return f"{self.dist}:{','.join(body)}"

    def scale(self, tensor: Tensor) -> float:
        """The tensor's scale ``10^-U`` (see the class docstring)."""
        span = self.p["layer_scale"]
        if span == 0:
            return 1.0
        u = np.random.default_rng([self.seed, _TAG_SCALE, _name_key(tensor.name)]).random()
        return float(10.0 ** (-span * u))

    def fill(self, tensor: Tensor, out: np.ndarray, *, rank: int, step: int) -> None:
        """Draw ``tensor``'s gradient on ``rank`` at ``step`` into ``out``."""
        _check_out(tensor, out, "gradients")
        if rank < 0 or step < 0:
            raise ValueError(f"gradients: rank={rank} and step={step} must be >= 0")
        rng = np.random.default_rng([self.seed, _TAG_VALUES, _name_key(tensor.name), rank,
                                     step])
        scale = np.float32(self.scale(tensor))
        for lo in range(0, out.shape[0], CHUNK):
            chunk = out[lo:lo + CHUNK]
            self._draw(rng, chunk)
            chunk *= scale

    def _draw(self, rng: np.random.Generator, chunk: np.ndarray) -> None:
        if self.dist == "normal":
            rng.standard_normal(out=chunk, dtype=np.float32)
        elif self.dist == "student-t":
            chunk[:] = rng.standard_t(self.p["df"], size=chunk.shape[0])
        else:  # laplace and lognormal: a magnitude, then a fair random sign
            if self.dist == "laplace":
                rng.standard_exponential(out=chunk, dtype=np.float32)
            else:
                rng.standard_normal(out=chunk, dtype=np.float32)
                chunk *= np.float32(self.p["sigma"])
                np.exp(chunk, out=chunk)
            neg = rng.integers(0, 2, size=chunk.shape[0], dtype=np.bool_)
            np.negative(chunk, out=chunk, where=neg)


# ------------------------------------------------------------------ saved gradients
_SCOPE = re.compile(r"^(?:rank(\d+)/)?(?:step(\d+)/)?(.+)$")
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
#: (rank or None, step or None, tensor name) -> (key in the file, shape, dtype)
Entries = dict[tuple[int | None, int | None, str], tuple[str, tuple[int, ...], np.dtype]]


def _elements(shape: tuple[int, ...]) -> int:
    """Number of elements of ``shape`` (1 for ``()``)."""
    return int(np.prod(shape, dtype=np.int64))


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in (".h5", ".hdf5"):
        return "h5"
    raise ValueError(f"{path}: gradient files must be .npz, .h5 or .hdf5")


def _npz_arrays(path: Path) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """(key, shape, dtype) of every array of an .npz, read from the headers alone."""
    out = []
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(f)
            out.append((info.filename[:-len(".npy")], tuple(shape), np.dtype(dtype)))
    return out


def _h5_arrays(path: Path) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """(path, shape, dtype) of every dataset of an HDF5 file, in the file's order: creation
    order in groups written with ``track_order=True``, else alphabetical."""
    import h5py

    out: list[tuple[str, tuple[int, ...], np.dtype]] = []

    def walk(group: Any, prefix: str) -> None:
        for key in group:  # iterating a group honours its track_order (visititems does not)
            obj = group[key]
            if isinstance(obj, h5py.Dataset):
                out.append((prefix + key, tuple(obj.shape), obj.dtype))
            elif isinstance(obj, h5py.Group):
                walk(obj, f"{prefix}{key}/")

    with h5py.File(path, "r") as f:
        walk(f, "")
    return out


def _entries(path: Path) -> Entries:
    """Every array of the file under its (rank, step, tensor name); checks dtypes and that
    the arrays of one tensor agree in shape."""
    try:
        arrays = _npz_arrays(path) if _kind(path) == "npz" else _h5_arrays(path)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: cannot read gradient file ({e})") from None
    out: Entries = {}
    shapes: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, shape, dtype in arrays:
        if dtype not in _FLOATS:
            raise ValueError(f"{path}: array {key} has dtype {dtype}; expected float "
                             f"(float16, float32 or float64)")
        m = _SCOPE.match(key.lstrip("/"))
        assert m is not None  # the pattern matches every non-empty key
        name = m.group(3).replace("/", ".")  # HDF5 groups a/b/c stand for the name a.b.c
        scope = (None if m.group(1) is None else int(m.group(1)),
                 None if m.group(2) is None else int(m.group(2)), name)
        first = shapes.setdefault(name, (key, shape))
        if _elements(first[1]) != _elements(shape):
            raise ValueError(f"{path}: array {key} has shape {shape}, but {first[0]} has "
                             f"{first[1]}")
        out[scope] = (key, shape, dtype)
    if not out:
        raise ValueError(f"{path}: holds no arrays")
    return out


def layout_from_file(path: str | Path) -> Layout:
    """The layout of a gradient file: its tensor names in file order (first appearance,
    ``rank``/``step`` prefixes stripped) with their shapes, placed contiguously."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such gradient file")
    shapes: dict[str, tuple[int, ...]] = {}
    for (_, _, name), (_, shape, _) in _entries(path).items():
        shapes.setdefault(name, shape)
    try:
        return Layout.from_shapes(list(shapes.items()))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


class FromFile:
    """Gradients read from a file of named arrays (docs/workloads.md), tensor by tensor.

    The array for tensor ``N`` on rank ``r`` at step ``s`` is the first present of
    ``rank{r}/step{s}/N``, ``rank{r}/N``, ``step{s}/N`` and ``N`` (in HDF5 the name's dots
    may also be groups: ``layer1/0/conv1/weight``).  Opening checks the dtypes (float16,
    float32 or float64) and, with ``layout``, that every tensor has arrays of its size and
    no array names a tensor the layout lacks; :meth:`fill` checks the values are finite.
    Every error is one ValueError line naming the file and the array.
    """

    def __init__(self, path: str | Path, layout: Layout | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such gradient file")
        self.kind = _kind(self.path)
        self.entries = _entries(self.path)
        self.layout = layout_from_file(self.path) if layout is None else layout
        if layout is not None:
            self._check_layout(layout)

    def _check_layout(self, layout: Layout) -> None:
        names = {name for (_, _, name) in self.entries}
        missing = [t.name for t in layout if t.name not in names]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise ValueError(f"{self.path}: no array for tensor(s) {', '.join(missing[:3])}"
                             f"{more} ({len(missing)} of {len(layout)} missing)")
        known = set(layout.names)
        for (_, _, name), (key, shape, _) in self.entries.items():
            if name not in known:
                raise ValueError(f"{self.path}: array {key} is not a tensor of the layout")
            t = layout[name]
            if _elements(shape) != t.size or (len(shape) > 1 and shape != t.shape):
                raise ValueError(f"{self.path}: array {key} has shape {shape}; tensor "
                                 f"{name} has shape {t.shape}")

    def _lookup(self, name: str, rank: int, step: int) -> tuple[str, tuple[int, ...],
                                                                np.dtype]:
        for scope in ((rank, step, name), (rank, None, name), (None, step, name),
                      (None, None, name)):
            if scope in self.entries:
                return self.entries[scope]
        raise ValueError(f"{self.path}: no array for tensor {name} on rank {rank} at step "
                         f"{step} (looked for rank{rank}/step{step}/{name}, rank{rank}/{name}, "
                         f"step{step}/{name}, {name})")

    def check_values(self) -> None:
        """Read every array once and check it is finite in float32 (ValueError naming the
        file and the array): a run then never stops half-way on a bad array."""
        for (rank, step, name) in self.entries:
            t = self.layout[name]
            buf = np.empty(t.size, dtype=np.float32)
            self.fill(t, buf, rank=-1 if rank is None else rank,
                      step=-1 if step is None else step)

    def fill(self, tensor: Tensor, out: np.ndarray, *, rank: int, step: int) -> None:
        """Read ``tensor``'s array for ``rank`` and ``step`` into ``out`` (as float32)."""
        _check_out(tensor, out, f"{self.path}")
        key, shape, dtype = self._lookup(tensor.name, rank, step)
        if _elements(shape) != tensor.size:
            raise ValueError(f"{self.path}: array {key} has shape {shape}; tensor "
                             f"{tensor.name} has shape {tensor.shape}")
        with np.errstate(over="ignore"):  # a float64 beyond float32's range: caught below
            if self.kind == "npz":
                with np.load(self.path) as z:
                    np.copyto(out, z[key].reshape(-1), casting="same_kind")
            else:
                import h5py

                with h5py.File(self.path, "r") as f:
                    dset = f[key]
                    if dtype == np.float64:  # HDF5 would clamp overflows silently
                        np.copyto(out, dset[()].reshape(-1), casting="same_kind")
                    else:
                        dset.read_direct(out.reshape(shape))
        from hpcq.kernels import checks

        bad = checks.first_nonfinite(out)
        if bad >= 0:
            raise ValueError(f"{self.path}: array {key} holds a non-finite value in float32 "
                             f"(element {bad})")


def gradient_source(spec: str, *, seed: int = 0, layout: Layout | None = None
                    ) -> Synthetic | FromFile:
    """``normal``, ``laplace``, ``student-t:df=3``, ``lognormal:sigma=1`` (each with
    ``layer_scale=``) or ``file:PATH`` as a gradient source; ``layout`` is checked
    against a file's arrays."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"gradient spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec.startswith("file:"):
        return FromFile(spec[len("file:"):], layout)
    name, _, text = spec.partition(":")
    values: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"gradients {name}: expected key=value, got {item!r}")
        values[key.strip()] = value.strip()
    return Synthetic(name.strip(), seed=seed, **values)
