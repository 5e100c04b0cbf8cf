"""Where compressing a small tensor stops paying: the measurement behind ``Policy.min_size``.

::

    NUMBA_NUM_THREADS=1 python analysis/scripts/min_size.py [--specs qsgd:bits=4 sign]
                                                            [--repeat 200]

For every length ``n = 2^4 .. 2^16`` and codec it measures, on this machine and one
thread, the median time of one ``encode`` plus one ``decode(out=, add=True)`` (what a rank
spends per tensor of a bucket), and takes the exact wire bytes from ``wire_bytes(n)``
(the 60-byte header included).  Sending the tensor as fp32 instead costs ``4 n`` bytes
and no codec time, so compressing pays only on links slower than the **break-even
rate** ``8 (4 n - wire) / t_codec`` bits/s: below it the bytes saved take longer to
send than the codec takes to run.  (One rank's view, alpha ignored: the uncompressed
tensors travel together in one allreduce, so they add no message of their own.)
It also prints the share of tensors and of parameters below each length for the model
workloads, i.e. what a threshold leaves uncompressed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import numpy as np

from hpcq.compressors import compressor
from hpcq.workloads import workload

LENGTHS = tuple(1 << k for k in range(4, 17))


def codec_seconds(spec: str, n: int, repeat: int) -> float:
    """Median seconds of one encode plus one accumulating decode of a length-``n`` vector."""
    c = compressor(spec)
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    acc = np.zeros(n, dtype=np.float32)
    c.decode(c.encode(x), out=acc, add=True)  # compile outside the timing
    samples = []
    for step in range(repeat):
        t0 = time.perf_counter()
        c.decode(c.encode(x, step=step), out=acc, add=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (one row per length and codec) and the workloads' small-tensor shares."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="+", default=["qsgd:bits=4", "sign"])
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args(argv)
    print(f"{'codec':<14}{'n':>7}{'wire B':>9}{'fp32 B':>9}{'ratio':>7}{'codec us':>10}"
          f"{'us/elem':>9}{'break-even Gbit/s':>19}")
    for spec in args.specs:
        for n in LENGTHS:
            wire = compressor(spec).wire_bytes(n)
            assert wire is not None  # both default codecs have a fixed length
            t = codec_seconds(spec, n, args.repeat)
            saved = 4 * n - wire
            rate = 8 * saved / t / 1e9 if saved > 0 else 0.0
            print(f"{spec:<14}{n:>7}{wire:>9}{4 * n:>9}{4 * n / wire:>7.2f}{t * 1e6:>10.1f}"
                  f"{t * 1e6 / n:>9.4f}{rate:>19.2f}")
    print("\nshare of tensors / parameters below n (left uncompressed by min_size = n)")
    names = ("resnet50", "bert-base", "gpt2", "llama-7b")
    print(f"{'n':>7}" + "".join(f"{name:>22}" for name in names))
    for n in (256, 1024, 4096, 16384, 65536):
        row = []
        for name in names:
            lay = workload(name).layout
            small = [t for t in lay if t.size < n]
            share = sum(t.size for t in small) / lay.size
            row.append(f"{len(small) / len(lay):>10.0%} / {share:>8.3%}")
        print(f"{n:>7}" + "".join(f"{r:>22}" for r in row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
