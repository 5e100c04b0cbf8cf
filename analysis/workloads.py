"""The report's model-workload section: a model's gradient moved bucket by bucket.

Rows come from kind ``workload`` cases (:mod:`hpcq.bench.workload`); repeated runs of one
(machine, ranks, workload, bucket rule, scheme, codec) are combined as median [min, max].
Per workload the section gives a table (time per iteration, its split, bits per
parameter, uncompressed share, NMSE of the whole gradient and of its worst tensor, peak
memory) and a figure of the time per iteration split into encode / communicate / decode
next to the NMSE, so a reader sees at once what each codec costs and what it buys.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLUMNS = ("file", "group", "machine", "workload", "buckets", "min_size", "scheme", "spec",
           "spec_given", "nprocs", "parameters", "tensors", "n_buckets", "iterations",
           "bits_per_parameter", "uncompressed_share", "iteration_p50_s", "iteration_p99_s",
           "encode_iteration_s", "comm_iteration_s", "decode_iteration_s", "x_fp32", "nmse",
           "nmse_worst_tensor",
           "worst_tensor", "peak_rss_max_bytes", "hpcq_format")
VALUES = ("iteration_p50_s", "encode_iteration_s", "comm_iteration_s", "decode_iteration_s",
          "nmse", "nmse_worst_tensor", "bits_per_parameter", "peak_rss_max_bytes", "x_fp32")
Block = tuple[Any, ...]


def rows(table: Any) -> list[dict[str, Any]]:
    """One dict per workload case with :data:`COLUMNS` (numbers as read)."""
    out = []
    for r in table.rows():
        row = {k: r.get(k) for k in COLUMNS}
        row["machine"] = str(r.get("cpu_model") or "unknown")
        out.append(row)
    return sorted(out, key=lambda r: (str(r["workload"]), str(r["buckets"]), int(r["nprocs"]),
                                      str(r["scheme"]), str(r["spec"]), str(r["file"])))


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["machine"], int(r["nprocs"]), r["workload"], r["buckets"], r["scheme"], r["spec"])


def combine(rows_: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of one case combined: ``V.median``, ``V.min``, ``V.max`` for each of :data:`VALUES`."""
    import numpy as np

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows_:
        groups.setdefault(_key(r), []).append(r)
    out = []
    for rs in groups.values():
        c = {**rs[0], "runs": len(rs)}
        for v in VALUES:
            xs = [float(r[v]) for r in rs if r.get(v) is not None]
            c[f"{v}.median"] = float(np.median(xs)) if xs else None
            c[f"{v}.min"] = min(xs) if xs else None
            c[f"{v}.max"] = max(xs) if xs else None
        out.append(c)
    return out


def _ms(v: Any) -> str:
    return "-" if v is None else f"{1e3 * v:.3g}"


def _rng(r: dict[str, Any], v: str, scale: float = 1.0, fmt: str = ".3g") -> str:
    m = r.get(f"{v}.median")
    if m is None:
        return "-"
    text = format(scale * m, fmt)
    if r["runs"] > 1:
        text += f" [{format(scale * r[f'{v}.min'], fmt)}, {format(scale * r[f'{v}.max'], fmt)}]"
    return text


def section(comb: Sequence[dict[str, Any]], figures: Sequence[tuple[str, str]]) -> list[Block]:
    """The report blocks: a table per (workload, bucket rule, ranks, machine) and its figure."""
    if not comb:
        return []
    blocks: list[Block] = [
        ("h", 2, "Model workloads (a gradient per iteration, bucket by bucket)"),
        ("p", "Each bucket's collectives run one after another (no overlap with compute); an "
              "iteration's time is the sum over buckets of the slowest rank's time. Bits per "
              "parameter count every byte a rank sends (headers, scales, the uncompressed small "
              "tensors). NMSE of the whole mean gradient and of its worst tensor, against the "
              "exact float64 mean. x fp32: time over that of allreduce-fp32 in the same run.")]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in comb:
        groups.setdefault((r["workload"], r["buckets"], int(r["nprocs"]), r["machine"]),
                          []).append(r)
    for (wl, rule, p, machine), rs in sorted(groups.items()):
        r0 = rs[0]
        blocks += [
            ("h", 3, f"{wl} on {p} rank(s), buckets {rule}"),
            ("p", f"{int(r0['parameters']):,} parameters in {int(r0['tensors'])} tensors, "
                  f"{int(r0['n_buckets'])} buckets, tensors under {r0['min_size']} elements "
                  f"uncompressed; machine: {machine}."),
            ("table", ["scheme", "codec", "runs", "bits/param", "ms/iter", "encode ms",
                       "comm ms", "decode ms", "x fp32", "uncompressed %", "NMSE",
                       "worst tensor NMSE", "peak RSS MiB"],
             [[r["scheme"], r.get("spec_given") or r["spec"], r["runs"],
               _rng(r, "bits_per_parameter"), _rng(r, "iteration_p50_s", 1e3),
               _ms(r["encode_iteration_s.median"]), _ms(r["comm_iteration_s.median"]),
               _ms(r["decode_iteration_s.median"]),
               _rng(r, "x_fp32", fmt=".2f"), f"{100 * float(r['uncompressed_share']):.2f}",
               _rng(r, "nmse", fmt=".2e"),
               f"{_rng(r, 'nmse_worst_tensor', fmt='.2e')} ({r.get('worst_tensor') or '-'})",
               _rng(r, "peak_rss_max_bytes", 2.0**-20, ".0f")] for r in rs])]
        tag = _tag(wl, rule, p, machine, comb)
        blocks += [("img", f"{name}.png", caption, f"{name}.pdf") for name, caption in figures
                   if name == f"workload_{tag}"]
    return blocks


def _tag(wl: str, rule: str, p: int, machine: str, comb: Sequence[dict[str, Any]]) -> str:
    machines = sorted({r["machine"] for r in comb})
    m = f"_m{machines.index(machine) + 1}" if len(machines) > 1 else ""
    safe = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in f"{wl}_{rule}")
    return f"{safe}_p{p}{m}"


def draw(out: Path, comb: Sequence[dict[str, Any]], plots: bool = True
         ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """One figure per (workload, rule, ranks, machine): the time split per codec, and NMSE."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in comb:
        groups.setdefault((r["workload"], r["buckets"], int(r["nprocs"]), r["machine"]),
                          []).append(r)
    todo = [(f"workload_{_tag(*k, comb)}", f"{k[0]} on {k[2]} rank(s), buckets {k[1]}: time "
             f"per iteration split into encode, communicate and decode (bars), NMSE of the "
             f"mean (dots, right axis)", rs, f"{k[0]} on {k[2]} rank(s), buckets {k[1]}")
            for k, rs in sorted(groups.items())]
    if not plots:
        return [], [(n, "figures turned off (--no-plots)") for n, _, _, _ in todo]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return [], [(n, f"matplotlib is not available ({e}); pip install 'hpcq[plot]'")
                    for n, _, _, _ in todo]
    done = []
    for name, caption, rs, title in todo:
        rs = sorted(rs, key=lambda r: -(r["iteration_p50_s.median"] or 0))
        labels = [f"{r['scheme']}\n{r.get('spec_given') or r['spec']}"
                  if r["spec"] not in ("fp32", "fp16", "bf16") or not str(
                      r["scheme"]).startswith(("allreduce", "mpi")) else r["scheme"] for r in rs]
        fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rs) + 2), 4.5))
        left = [0.0] * len(rs)
        for part, colour in (("encode", "#E69F00"), ("comm", "#0072B2"),
                             ("decode", "#009E73")):
            vals = [1e3 * (r[f"{part}_iteration_s.median"] or 0) for r in rs]
            ax.bar(range(len(rs)), vals, bottom=left, color=colour, label=part)
            left = [a + b for a, b in zip(left, vals, strict=True)]
        ax.set_xticks(range(len(rs)), labels, fontsize=8)
        ax.set_ylabel("ms per iteration (slowest rank, summed over buckets)")
        ax2 = ax.twinx()
        nm = [(i, r["nmse.median"]) for i, r in enumerate(rs) if (r["nmse.median"] or 0) > 0]
        if nm:
            ax2.scatter([i for i, _ in nm], [v for _, v in nm], color="k", zorder=3,
                        label="NMSE")
            ax2.set_yscale("log")
            ax2.set_ylabel("NMSE of the mean gradient")
        ax.legend(loc="upper center", fontsize=8, ncol=3)
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=120)
        fig.savefig(out / f"{name}.pdf")
        plt.close(fig)
        done.append((name, caption))
    return done, []
