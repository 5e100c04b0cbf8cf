"""``hpcq bench kernels``: encode/decode throughput of every codec, single process.

For each size d (outer loop) the run measures a plain memory copy
(``np.copyto`` of d float32), then for each compressor: the first encode and
decode (compilation or cache load + run, recorded apart), ``warmup`` untimed
calls (kept), then ``repeats`` timed encodes and decodes through the public API
(``time.perf_counter``), decodes into a fresh array (``decode_s``, "dec") and into one
reused buffer (``decode_into_s``, "into": how every collective decodes, so without the
page faults of a new d-length array), and the same for the straightforward NumPy version of
the scheme (:mod:`hpcq.bench.numpy_ref`) where there is one.  Throughput is in
input-GB/s (4 bytes per float32 element, 10^9 bytes).  Each compressor also
reports its achieved bits per coordinate and the NMSE
``||decode(encode(x)) - x||^2 / ||x||^2`` of one message of a fixed random
normal vector.

Entropy-coded compressors (``qsgd:...,code=elias|huffman|huffman-static|rans``) also
report, from the same message: the bits per coordinate of their coded levels (stream
and table, the norms left out), against the empirical entropy of the level sequence
(``sum_k d_k log2(d / d_k)``, papers.md T11) and the optimal Huffman length; and, on the
fixed-length packed codes of the same quantization (same seed), the sizes and the
compress / decompress times of zstandard (levels 1 and 3) and lz4 (frame, default
level), in the same input-GB/s.  zstandard and lz4 are optional (``pip install
hpcq[bench]``); without them their columns are left out, with a note.

The same run also times, per d, the FWHT alone (in place, one block of d, the
transform every ``hadamard+`` codec pays) against the NumPy butterfly, so the
rotation's cost and the quantizers' share of a rotated encode can be read off.

Cases written (see :mod:`hpcq.store`): kind ``kernels.memcpy`` per d (dataset
``copy_s``); kind ``kernels.fwht`` per d (``fwht_s``, ``numpy_fwht_s``); kind
``kernels`` per compressor and d (datasets ``encode_first_s``,
``decode_first_s``, ``encode_warmup_s``, ``decode_warmup_s``, ``encode_s``,
``decode_s``, ``decode_into_s`` and, with a reference, ``numpy_encode_s``,
``numpy_decode_s``; all in seconds; attributes spec, d, repeats, warmup, threads, wire_bytes,
bits_per_coordinate, nmse and the compressor's description).  Entropy-coded ones add
the attributes ``entropy.coded_bits``, ``entropy.table_bits``, ``entropy.entropy_bits``,
``entropy.huffman_bits``, ``entropy.packed_bytes`` and ``entropy.<tool>_bytes``, and the
datasets ``<tool>_compress_s`` / ``<tool>_decompress_s`` for each tool available
(``zstd1``, ``zstd3``, ``lz4``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np

from hpcq.bench import BENCHES, Bench
from hpcq.bench.numpy_ref import fwht as numpy_fwht
from hpcq.bench.numpy_ref import reference
from hpcq.compressors import HEADER_BYTES, Compressor, compressor
from hpcq.kernels import hadamard

#: A useful spread: casts, 8..1-bit scalar quantizers, rotation, sparsifiers, vqSGD, DQ-GD's.
DEFAULT_SPECS = (
    "fp16", "bf16", "qsgd:bits=8", "qsgd:bits=4", "uniform:bits=4", "uniform:bits=2", "sign",
    "terngrad", "hadamard+qsgd:bits=2", "hadamard+sign:scale=drive", "topk:ratio=0.01",
    "randk:ratio=0.01", "vqsgd:reps=8", "fixedrange:bits=3,range=1",
)
DEFAULT_SIZES = "12:24:2"
LEGEND = ("input-GB/s (4 bytes per element), median (min-max); x memcpy: fraction of the "
          "memory-copy bandwidth, x numpy: speed-up over NumPy, both measured in this run")

#: A case: (kind, label, attributes, datasets as name -> (values, unit)).
OnCase = Callable[[str, str, dict[str, Any], dict[str, tuple[Any, str]]], object]


def parse_sizes(text: str) -> list[int]:
    """Vector lengths from ``"lo:hi[:step]"`` (log2, inclusive) or ``"12,16,20"`` (log2 list)."""
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] < 1):
                raise ValueError(text)
            logs = list(range(parts[0], parts[1] + 1, parts[2] if len(parts) == 3 else 1))
        else:
            logs = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"{text!r}: expected log2 sizes as LO:HI[:STEP] or a comma "
                         f"list, e.g. 12:24 or 12,16,20") from None
    if not text.strip():
        raise ValueError(f"{text!r} is empty: give log2 sizes as LO:HI[:STEP] or a comma list, "
                         f"e.g. 12:24 or 12,16,20")
    if not logs:
        raise ValueError(f"{text!r} holds no size: LO is above HI; write LO:HI with LO <= HI, "
                         f"e.g. 3:5")
    if min(logs) < 0 or max(logs) > 30:
        raise ValueError(f"{text!r}: log2 sizes must lie in 0..30")
    return [1 << k for k in logs]


def repeats_for(d: int, repeats: int) -> int:
    """Timed repeats at size ``d``: all of ``repeats`` up to 2^20, fewer above (at least 3)."""
    return max(min(repeats, 3), min(repeats, repeats * (1 << 20) // max(d, 1)))


def compile_kernels(comps: Sequence[Compressor], sizes: Sequence[int] = ()) -> float:
    """Run every codec once on the code paths ``sizes`` will take; return the seconds spent.

    Compiles (or loads from the numba cache) the serial kernels, and the
    parallel ones when a size reaches the parallel threshold and numba has more
    than one thread, so that later timed runs and other ranks find them cached.
    """
    import numba

    from hpcq.kernels._config import PARALLEL_MIN_ELEMENTS

    lengths = [1000]
    if numba.get_num_threads() > 1 and any(d >= PARALLEL_MIN_ELEMENTS for d in sizes):
        lengths.append(PARALLEL_MIN_ELEMENTS)
    t0 = time.perf_counter()
    for d in lengths:
        x = np.random.default_rng(0).standard_normal(d).astype(np.float32)
        for c in comps:
            c.decode(c.encode(x))
    return time.perf_counter() - t0


def compile_sums(kinds: Sequence[str] = ("fp16", "bf16"), big: bool = False) -> float:
    """Compile (or load) the 16-bit sums of the fp16/bf16 baselines and ``ps-reduce``.

    ``big``: the parallel variant too, when numba has more than one thread.
    """
    import numba

    from hpcq.kernels import cast
    from hpcq.kernels._config import PARALLEL_MIN_ELEMENTS

    t0 = time.perf_counter()
    lengths = [1000]
    if big and numba.get_num_threads() > 1:
        lengths.append(PARALLEL_MIN_ELEMENTS)
    for kind in kinds:
        for n in lengths:
            words = np.zeros(n, dtype=np.uint16)
            cast.sum16(kind, words, words.copy())
    return time.perf_counter() - t0


def _samples(fn: Callable[[], Any], n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def _gbs(d: int, seconds: np.ndarray) -> tuple[float, float, float]:
    """(median, min, max) input-GB/s from per-call seconds."""
    gb = 4.0 * d / 1e9
    return gb / float(np.median(seconds)), gb / float(seconds.max()), gb / float(seconds.min())


def measure(comp: Compressor, x: np.ndarray, *, repeats: int, warmup: int, seed: int
            ) -> tuple[dict[str, Any], dict[str, tuple[Any, str]]]:
    """Time ``comp`` on ``x`` (and its NumPy reference); return (attributes, datasets)."""
    import numba

    d = x.shape[0]
    t0 = time.perf_counter()
    buf = comp.encode(x, seed=seed)
    t1 = time.perf_counter()
    y = comp.decode(buf)
    t2 = time.perf_counter()
    x64 = x.astype(np.float64)
    nmse = float(np.sum((y - x64) ** 2) / max(float(np.dot(x64, x64)), 1e-300))
    data: dict[str, tuple[Any, str]] = {
        "encode_first_s": (t1 - t0, "s"), "decode_first_s": (t2 - t1, "s"),
        "encode_warmup_s": (_samples(lambda: comp.encode(x, seed=seed), warmup), "s"),
        "decode_warmup_s": (_samples(lambda: comp.decode(buf), warmup), "s"),
        "encode_s": (_samples(lambda: comp.encode(x, seed=seed), repeats), "s"),
        "decode_s": (_samples(lambda: comp.decode(buf), repeats), "s"),
    }
    # into a reused buffer, as every collective decodes: the kernel without the page faults
    # of a fresh d-length array (at 2^24 they are about a third of a 4-bit decode)
    out = np.empty(d, np.float32)
    comp.decode(buf, out=out)
    data["decode_into_s"] = (_samples(lambda: comp.decode(buf, out=out), repeats), "s")
    # the entropy columns read QSGD's levels; other coded codecs (eden:code=rans) show bits only
    if getattr(comp, "p", {}).get("code", "fixed") != "fixed" and hasattr(comp, "levels"):
        ent, ent_data = entropy_stats(comp, x, buf, repeats=repeats, seed=seed)
        data.update(ent_data)
    else:
        ent = None
    ref = reference(comp, x, seed)
    if ref is not None:
        payload = ref.encode(x)
        ref.decode(payload)  # one untimed call each: page faults, NumPy's own caches
        data["numpy_encode_s"] = (_samples(lambda: ref.encode(x), repeats), "s")
        data["numpy_decode_s"] = (_samples(lambda: ref.decode(payload), repeats), "s")
    attrs = {
        "spec": comp.spec, "d": d, "log2_d": int(d).bit_length() - 1, "repeats": repeats,
        "warmup": warmup, "seed": seed, "threads": int(numba.get_num_threads()),
        "wire_bytes": int(buf.shape[0]), "bits_per_coordinate": 8.0 * buf.shape[0] / d,
        "nmse": nmse, "numpy_reference": ref is not None, "compressor": comp.describe(),
    }
    if ent is not None:
        attrs["entropy"] = ent
    return attrs, data


def _tools() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    """The general-purpose compressors installed: name -> (compress, decompress)."""
    tools: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {}
    try:
        import zstandard
    except ImportError:
        pass
    else:
        unz = zstandard.ZstdDecompressor()
        for level in (1, 3):
            tools[f"zstd{level}"] = (zstandard.ZstdCompressor(level=level).compress, unz.decompress)
    try:
        import lz4.frame
    except ImportError:
        pass
    else:
        tools["lz4"] = (lz4.frame.compress, lz4.frame.decompress)
    return tools


def missing_tools() -> list[str]:
    """Notes for the optional compressors that are not installed."""
    have = _tools()
    return [f"{mod} is not installed: its columns are left out (pip install hpcq[bench])"
            for mod, key in (("zstandard", "zstd1"), ("lz4", "lz4")) if key not in have]


def entropy_stats(comp: Compressor, x: np.ndarray, buf: np.ndarray, *, repeats: int, seed: int
                  ) -> tuple[dict[str, Any], dict[str, tuple[Any, str]]]:
    """An entropy-coded message ``buf`` of ``x``: its coded bits against the entropy of its
    levels, and zstandard / lz4 on the packed codes of the same quantization."""
    from hpcq.compressors import lengths
    from hpcq.compressors.qsgd import QSGD

    assert isinstance(comp, QSGD)  # the one codec with a code= parameter
    payload, side = comp.message_bits(buf)
    n = comp._layout(x.shape[0])[1]
    scales = 8 * comp._scale_bytes(n)
    counts = lengths.level_counts(comp.levels(buf))
    fixed = compressor(comp.spec.replace(f",code={comp.p['code']}", ""))
    packed = fixed.encode(x, seed=seed)[HEADER_BYTES + comp._scale_bytes(n):].tobytes()
    attrs: dict[str, Any] = {
        "coded_bits": payload, "table_bits": side - scales, "scale_bits": scales,
        "entropy_bits": lengths.huffman_bound_bits(counts),
        "huffman_bits": lengths.huffman_bits(counts), "packed_bytes": len(packed)}
    data: dict[str, tuple[Any, str]] = {}
    for name, (pack, unpack) in _tools().items():
        small = pack(packed)
        if unpack(small) != packed:  # pragma: no cover - a broken library
            raise RuntimeError(f"{name} did not round-trip the packed codes")
        attrs[f"{name}_bytes"] = len(small)
        data[f"{name}_compress_s"] = (_samples(partial(pack, packed), repeats), "s")
        data[f"{name}_decompress_s"] = (_samples(partial(unpack, small), repeats), "s")
    return attrs, data


@dataclass(frozen=True)
class KernelCase:
    """One measurement of the kernels table: ``what`` is "memcpy", "fwht" or a compressor spec."""

    what: str
    d: int
    repeats: int
    warmup: int
    seed: int
    label_given: str = ""

    @property
    def kind(self) -> str:
        """The result-file kind: ``kernels.memcpy``, ``kernels.fwht`` or ``kernels``."""
        return f"kernels.{self.what}" if self.what in ("memcpy", "fwht") else "kernels"

    @property
    def label(self) -> str:
        """``qsgd:bits=4 d=2^20``, ``memcpy d=2^20``."""
        return f"{self.label_given or self.what} d=2^{self.d.bit_length() - 1}"

    def params(self) -> dict[str, Any]:
        """The identity of the case (its resume key)."""
        return {"kind": self.kind, "what": self.what, "d": self.d, "repeats": self.repeats,
                "warmup": self.warmup, "seed": self.seed}


def expand(specs: Sequence[tuple[str, Compressor]], sizes: Sequence[int], *, repeats: int = 10,
           warmup: int = 2, seed: int = 0) -> list[KernelCase]:
    """The cases of a kernels table: per size, memcpy, the FWHT, then every compressor."""
    out: list[KernelCase] = []
    for d in sizes:
        reps = repeats_for(d, repeats)
        out += [KernelCase("memcpy", d, reps, warmup, seed), KernelCase("fwht", d, reps, warmup,
                                                                         seed)]
        out += [KernelCase(c.spec, d, reps, warmup, seed, label) for label, c in specs]
    return out


@lru_cache(maxsize=2)
def _input(seed: int, d: int) -> np.ndarray:
    # a prefix of one fixed stream (every size measures the same data), kept for the
    # next case of the same size: drawing 2^24 normals costs more than some codecs
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


def run_case(case: KernelCase, comp: Compressor | None = None, *, memcpy_gbs: float | None = None
             ) -> tuple[dict[str, Any], dict[str, tuple[Any, str]], dict[str, Any]]:
    """Measure one case: (attributes, datasets, table row).

    ``comp`` is the compressor of a compressor case (built from ``case.what``
    when not given); ``memcpy_gbs`` the memory-copy bandwidth of the same size,
    for the rows' "x memcpy" ratios (None leaves them out).
    """
    d, reps = case.d, case.repeats
    x = _input(case.seed, d)
    if case.what == "memcpy":
        dst = np.empty(d, dtype=np.float32)
        np.copyto(dst, x)  # first touch of dst outside the timing
        copy_s = _samples(lambda: np.copyto(dst, x), reps)
        gbs = _gbs(d, copy_s)
        return ({"d": d, "repeats": reps, "gbs_median": gbs[0]}, {"copy_s": (copy_s, "s")},
                {"label": "memcpy (np.copyto)", "d": d, "enc": gbs})
    if case.what == "fwht":
        return _fwht_case(d, x, reps, memcpy_gbs)
    comp = comp if comp is not None else compressor(case.what)
    attrs, data = measure(comp, x, repeats=reps, warmup=case.warmup, seed=case.seed)
    attrs["spec_given"] = case.label_given or case.what
    return attrs, data, _row(attrs["spec_given"], d, attrs, data, memcpy_gbs)


def run(specs: Sequence[tuple[str, Compressor]], sizes: Sequence[int], *, repeats: int = 10,
        warmup: int = 2, seed: int = 0, on_case: OnCase | None = None,
        progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Benchmark every (label, compressor) at every size; return one summary row each.

    ``on_case`` receives every completed case (to store it at once),
    ``progress`` the label of each (:class:`hpcq.bench.Progress`); there are
    ``len(sizes) * (len(specs) + 2)`` cases.  Rows: label, d, bits, nmse, encode/decode
    GB/s (median, min, max), their ratios to memcpy and to NumPy, first-call seconds.
    """
    comps = {c.spec: c for _, c in specs}
    rows: list[dict[str, Any]] = []
    memcpy: dict[int, float] = {}
    for case in expand(specs, sizes, repeats=repeats, warmup=warmup, seed=seed):
        attrs, data, row = run_case(case, comps.get(case.what), memcpy_gbs=memcpy.get(case.d))
        if case.what == "memcpy":
            memcpy[case.d] = row["enc"][0]
        rows.append(row)
        if on_case is not None:
            on_case(case.kind, case.label, attrs, data)
        if progress is not None:
            progress(case.label)
    return rows


def _fwht_case(d: int, x: np.ndarray, reps: int, memcpy: float | None
               ) -> tuple[dict[str, Any], dict[str, tuple[Any, str]], dict[str, Any]]:
    """Time the in-place FWHT of one block of ``d`` (orthonormal, so repeats stay bounded)."""
    buf = x.copy()
    hadamard.fwht(buf)  # compile / load outside the timing
    own = _samples(lambda: hadamard.fwht(buf), reps)
    ref = _samples(lambda: numpy_fwht(buf.reshape(1, d)), max(1, min(reps, 3)))
    row = {"label": "fwht (in place, 1 block)", "d": d, "enc": _gbs(d, own),
           "enc_x_memcpy": _gbs(d, own)[0] / memcpy if memcpy else None,
           "enc_x_numpy": float(np.median(ref) / np.median(own))}
    return {"d": d, "repeats": reps}, {"fwht_s": (own, "s"), "numpy_fwht_s": (ref, "s")}, row


def _row(label: str, d: int, attrs: dict[str, Any], data: dict[str, tuple[Any, str]],
         memcpy: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {"label": label, "d": d, "bits": attrs["bits_per_coordinate"],
                           "nmse": attrs["nmse"], "first": data["encode_first_s"][0]
                           + data["decode_first_s"][0]}
    if "entropy" in attrs:
        ent = dict(attrs["entropy"])
        for name in ("zstd1", "zstd3", "lz4"):
            if f"{name}_compress_s" in data:
                ent[f"{name}_gbs"] = (_gbs(d, data[f"{name}_compress_s"][0])[0],
                                      _gbs(d, data[f"{name}_decompress_s"][0])[0])
        row["entropy"] = ent
    for side in ("enc", "dec"):
        own = data[f"{'encode' if side == 'enc' else 'decode'}_s"][0]
        row[side] = _gbs(d, own)
        row[f"{side}_x_memcpy"] = row[side][0] / memcpy if memcpy else None
        ref = data.get(f"numpy_{'encode' if side == 'enc' else 'decode'}_s")
        row[f"{side}_x_numpy"] = (float(np.median(ref[0]) / np.median(own))
                                  if ref is not None else None)
    row["into"] = _gbs(d, data["decode_into_s"][0])
    row["into_x_memcpy"] = row["into"][0] / memcpy if memcpy else None
    return row


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`run` as an aligned text table (one line per compressor and size)."""
    def ratio(v: float | None) -> str:
        return f"{v:8.2f}" if v is not None else f"{'-':>8}"

    wl = max([28] + [len(r["label"]) + 1 for r in rows if "bits" in r])  # labels in full
    head = (f"{'# compressor':<{wl}}{'log2 d':>6}{'bits/c':>8}{'NMSE':>10}"
            f"{'enc GB/s':>10}{'(min-max)':>14}{'x memcpy':>9}{'x numpy':>8}"
            f"{'dec GB/s':>10}{'(min-max)':>14}{'x memcpy':>9}{'x numpy':>8}"
            f"{'into GB/s':>10}{'x memcpy':>9}{'first s':>9}")
    lines = [head]
    for r in rows:
        lo2 = r["d"].bit_length() - 1
        enc = r["enc"]
        if "bits" not in r:  # the reference rows: memory copy, FWHT
            extra = (f"{ratio(r['enc_x_memcpy'])}{ratio(r['enc_x_numpy'])}"
                     if "enc_x_numpy" in r else "")
            lines.append(f"{r['label']:<{wl}}{lo2:>6}{'-':>8}{'-':>10}{enc[0]:>10.2f}"
                         f"{f'{enc[1]:.1f}-{enc[2]:.1f}':>14}{extra}")
            continue
        dec = r["dec"]
        lines.append(
            f"{r['label']:<{wl}}{lo2:>6} {r['bits']:>7.3g}{r['nmse']:>10.2e}"
            f"{enc[0]:>10.2f}{f'{enc[1]:.2f}-{enc[2]:.2f}':>14}{ratio(r['enc_x_memcpy'])}"
            f"{ratio(r['enc_x_numpy'])}{dec[0]:>10.2f}{f'{dec[1]:.2f}-{dec[2]:.2f}':>14}"
            f"{ratio(r['dec_x_memcpy'])}{ratio(r['dec_x_numpy'])}{r['into'][0]:>10.2f}"
            f"{ratio(r['into_x_memcpy'])}{r['first']:>9.3f}")
    ent = [r for r in rows if "entropy" in r]
    if ent:
        lines += ["", format_entropy_table(ent)]
    return "\n".join(lines)


ENTROPY_LEGEND = ("entropy-coded levels, bits per coordinate: coded = stream + table (the "
                  "norms left out), x H = coded / empirical entropy of the levels, huffman = "
                  "optimal Huffman length; zstd/lz4 on the fixed-length packed codes of the "
                  "same quantization: bits per coordinate (compress / decompress input-GB/s)")


def format_entropy_table(rows: Sequence[dict[str, Any]]) -> str:
    """The entropy columns of the rows of entropy-coded compressors (see module docstring)."""
    tools = [t for t in ("zstd1", "zstd3", "lz4") if any(f"{t}_bytes" in r["entropy"]
                                                         for r in rows)]
    wl = max([28] + [len(r["label"]) + 1 for r in rows])
    head = (f"{'# ' + ENTROPY_LEGEND}\n{'# compressor':<{wl}}{'log2 d':>6}{'coded':>9}"
            f"{'table':>8}{'entropy':>9}{'x H':>7}{'huffman':>9}{'packed':>8}"
            + "".join(f"{t:>22}" for t in tools) + f"{'enc GB/s':>10}{'dec GB/s':>10}")
    lines = [head]
    for r in rows:
        e, d = r["entropy"], r["d"]
        coded = (e["coded_bits"] + e["table_bits"]) / d
        xh = coded / (e["entropy_bits"] / d) if e["entropy_bits"] else float("inf")
        cells = ""
        for t in tools:
            if f"{t}_bytes" in e:
                enc, dec = e[f"{t}_gbs"]
                cells += f"{8 * e[t + '_bytes'] / d:>9.4f} ({enc:>4.2f}/{dec:>5.2f})"
            else:
                cells += f"{'-':>22}"
        lines.append(f"{r['label']:<{wl}}{d.bit_length() - 1:>6}{coded:>9.4f}"
                     f"{e['table_bits']:>8d}{e['entropy_bits'] / d:>9.4f}{xh:>7.3f}"
                     f"{e['huffman_bits'] / d:>9.4f}{8 * e['packed_bytes'] / d:>8.3f}{cells}"
                     f"{r['enc'][0]:>10.2f}{r['dec'][0]:>10.2f}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``hpcq bench kernels``."""
    p.add_argument("--compressors", nargs="+", metavar="SPEC",
                   help="compressor specs (default: a spread of the registered codecs)")
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help=f"log2 vector lengths, LO:HI[:STEP] inclusive or a comma list "
                        f"(default {DEFAULT_SIZES})")
    p.add_argument("--repeats", type=int, default=10,
                   help="timed calls per case; fewer above d=2^20 (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
    p.add_argument("--threads", type=int, help="numba threads (default: NUMBA_NUM_THREADS)")
    p.add_argument("--seed", type=int, default=0, help="seed of the input vector and codecs")
    p.add_argument("-o", "--output", metavar="FILE.h5", help="write the results to this file")
    p.add_argument("--append", action="store_true", help="add to an existing output file")


def to_job(args: argparse.Namespace) -> Any:
    """``hpcq bench kernels`` as a one-table job (``[kernels]``) for the runner."""
    import numba

    from hpcq.config import job_from_tables

    most = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    if args.threads is not None and not 1 <= args.threads <= most:
        raise ValueError(f"--threads {args.threads}: must be 1..{most} (NUMBA_NUM_THREADS)")
    if args.threads is not None:  # the whole process, so provenance records it too
        numba.set_num_threads(args.threads)
    return job_from_tables("hpcq bench kernels", {
        "job": {"name": "bench-kernels", "seed": args.seed,
                "skip_unavailable": args.compressors is None},
        "kernels": {"compressors": list(args.compressors or DEFAULT_SPECS),
                    "sizes": args.sizes, "repeats": args.repeats, "warmup": args.warmup,
                    "threads": args.threads or 0}})


BENCHES.register("kernels")(Bench("encode/decode throughput of every codec", add_arguments,
                                  to_job))
