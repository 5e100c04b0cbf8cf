"""Training runs (``train`` cases) for the paper figures: loading, curves, names and styles.

::

    from hpcq.analysis.training import load_runs, curve, group_by, display_name

    runs = load_runs(["runs/*.h5"])
    for (problem,), cases in group_by(runs, ["problem"]).items():
        for case in cases:
            bits, dist = curve(case, x="bits", y="dist")   # cumulative bits of one rank

The datasets and attributes of a case are documented in :mod:`hpcq.bench.train`.
x axes of :func:`curve`: ``iteration`` (``log_iter``), ``bits`` (the cumulative
payload + side bits of rank 0, the sender of the DQ methods' link, after each
logged iteration) and ``seconds`` (the cumulative median over ranks of
``t_iter``).  y: ``dist``, ``loss``, ``gap`` (loss - f*) and ``grad_norm``.
Importing this module does not import matplotlib; :func:`pyplot` does.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpcq.analysis.figures import MARKERS, PALETTE

#: Okabe-Ito (figures.PALETTE) then four more colour-blind-safe colours (Tol's muted).
COLORS = PALETTE[:7] + ("#882255", "#44AA99", "#999933", "#888888", PALETTE[7])
#: Fixed colours of the reference methods, the same in every figure.
FIXED = {"GD (32-bit)": "#000000", "32-bit SGD": "#000000", "DQ-GD": "#0072B2",
         "DQ-GD (range sent)": "#E69F00", "naive QGD": "#D55E00", "fp32": "#000000"}
#: Line styles by staleness tau (0 solid, 1 dashed, 2 dash-dot, 4 dotted).
TAU_STYLES = {0: "-", 1: "--", 2: "-.", 4: ":"}
_MORE_STYLES = ((0, (5, 1, 1, 1)), (0, (1, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (8, 2)))
X_LABELS = {"iteration": "iteration", "bits": "cumulative bits sent per rank",
            "seconds": "wall time (s, median over ranks)"}
Y_LABELS = {"dist": "distance to optimum ||x - x*||", "loss": "loss f(x)",
            "gap": "suboptimality f(x) - f*", "grad_norm": "gradient norm ||grad f(x)||"}


def load_runs(paths: str | Path | Iterable[str | Path], *, kind: str = "train",
              problems: list[str] | None = None) -> list[dict[str, Any]]:
    """The cases of ``kind`` in every file of ``paths`` (files, globs, directories), in order.

    Each case dict (:func:`hpcq.store.read_cases`) gains ``file``.  A file that cannot be
    read is one line in ``problems`` when given, else on stderr; the others still load.
    """
    from hpcq.analysis.load import expand_paths
    from hpcq.store import read_cases

    out: list[dict[str, Any]] = []
    for path in expand_paths(paths):
        try:
            if not path.is_file():
                raise OSError("no such file")
            cases = read_cases(path, kind=kind)
        except (OSError, ValueError, KeyError) as e:
            line = f"{path}: {' '.join(str(e).split())}"
            if problems is None:
                print(f"skipped: {line}", file=sys.stderr)
            else:
                problems.append(line)
            continue
        out += [dict(c, file=str(path)) for c in cases]
    return out


def no_cases(prog: str, files: Sequence[str], needed: str, problems: Sequence[str]) -> int:
    """Print the one-line error of a script that found nothing to draw; the exit code 2."""
    why = f" ({'; '.join(problems)})" if problems else ""
    print(f"{prog}: no {needed} in {', '.join(map(str, files))}{why}", file=sys.stderr)
    return 2


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"name:k=v,k=v"`` -> (name, {k: v}); values stay strings ("data=sklearn:x" kept)."""
    name, _, body = str(spec).partition(":")
    params: dict[str, str] = {}
    for item in filter(None, body.split(",")):
        k, _, v = item.partition("=")
        params[k.strip()] = v.strip()
    return name.strip(), params


def _num(text: str) -> str:
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def compressor_name(spec: str) -> str:
    """A short display name of a canonical compressor spec ("" for none)."""
    if not spec:
        return ""
    name, p = parse_spec(spec)
    if name == "qsgd":
        extra = f" bucket={p['bucket']}" if p.get("bucket", "0") != "0" else ""
        norm = f" {p['norm']}" if p.get("norm", "l2") != "l2" else ""
        return f"QSGD s={p.get('s', '?')}{norm}{extra}"
    if name in ("randk", "topk"):
        ratio = float(p.get("ratio", "0") or 0)
        size = f"{100 * ratio:g}%" if ratio > 0 else f"k={p.get('k', '?')}"
        return f"{'rand' if name == 'randk' else 'top'}-k {size}"
    if name == "vqsgd":
        norm = f" {p['norm']}" if p.get("norm", "l2") != "l2" else ""
        return f"vqSGD {p.get('points', 'cross')} s={p.get('reps', '1')}{norm}"
    if name == "fixedrange":
        return f"cube R={_num(p.get('bits', '?'))}"
    simple = {"fp32": "fp32", "sign": "sign", "terngrad": "TernGrad"}
    return simple.get(name, spec)


def method_name(spec: str, *, bits: bool = True) -> str:
    """A short display name of a canonical method spec; ``bits=False`` leaves out R."""
    name, p = parse_spec(spec)
    base = {"gd": "GD", "dqgd": "DQ-GD", "naive-qgd": "naive QGD", "dq-hb": "DQ-HB",
            "dq-nag": "DQ-NAG", "hb": "HB", "nag": "NAG", "ef-sgd": "EF-SGD",
            "ef-signsgd": "EF-signSGD"}.get(name)
    if name == "ecq-sgd":
        return f"ECQ-SGD α={_num(p.get('alpha', '?'))} β={_num(p.get('beta', '?'))}"
    if name == "vqsgd":
        return compressor_name(spec)
    if base is None:
        return spec
    if p.get("range") == "sent":
        base += " (range sent)"
    if p.get("D") not in (None, "0.0", "0"):
        base += f" D={_num(p['D'])}"
    if p.get("momentum") not in (None, "-1.0", "-1"):
        base += f" β={_num(p['momentum'])}"
    if bits and "bits" in p:
        base += f" R={_num(p['bits'])}"
    return base


def display_name(case: dict[str, Any], *, bits: bool = True, tau: bool = False,
                 with_compressor: bool = True) -> str:
    """How a run is named in legends and tables (GD over a codec is named by the codec)."""
    spec, comp = str(case.get("method", "")), str(case.get("compressor", "") or "")
    name = method_name(spec, bits=bits)
    if parse_spec(spec)[0] == "gd" and comp:
        if comp == "fp32":
            name = "32-bit SGD" if case.get("batch") else "GD (32-bit)"
        else:
            name = compressor_name(comp)
    elif comp and with_compressor:
        name += f" ({compressor_name(comp)})"
    if tau and case.get("staleness"):
        name += f" τ={case['staleness']}"
    return name


def ascii_name(text: str) -> str:
    """``text`` with the Greek letters of the display names spelled out (for text tables)."""
    return text.replace("α", "alpha").replace("β", "beta").replace("τ", "tau").replace(
        "κ", "kappa")


def bits_of(case: dict[str, Any]) -> float | None:
    """R, the bits per coordinate of a method with a ``bits`` parameter (DQ family); else None."""
    value = parse_spec(str(case.get("method", "")))[1].get("bits")
    if value is None:
        return None
    return float(case["info.bits"]) if case.get("info.bits") is not None else float(value)


def family(case: dict[str, Any]) -> str:
    """The method spec without its ``bits`` and the compressor: one curve of a sweep over R."""
    name, p = parse_spec(str(case.get("method", "")))
    rest = ",".join(f"{k}={v}" for k, v in p.items() if k != "bits")
    comp = case.get("compressor") or ""
    return f"{name}:{rest}" + (f" {comp}" if comp else "")


def group_by(cases: Iterable[dict[str, Any]], keys: Sequence[str]
             ) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Cases grouped by the values of ``keys`` (missing: None), groups in first-seen order."""
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for case in cases:
        out.setdefault(tuple(case.get(k) for k in keys), []).append(case)
    return out


def f_star(case: dict[str, Any]) -> float | None:
    """The problem's optimal value f* when the case records it."""
    v = case.get("problem_info.f_star")
    return float(v) if v is not None and math.isfinite(float(v)) else None


def has_dist(case: dict[str, Any]) -> bool:
    """Whether the distance to x* was recorded (x* known)."""
    d = np.asarray(case.get("dist", []), dtype=np.float64)
    return bool(d.size) and bool(np.isfinite(d[0]))


def curve(case: dict[str, Any], x: str = "iteration", y: str = "dist"
          ) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) at the case's logged iterations; see the module docstring for the axes."""
    it = np.asarray(case["log_iter"], dtype=np.int64)
    if x == "iteration":
        xs = it.astype(np.float64)
    elif x in ("bits", "seconds"):
        if x == "bits":
            per = np.asarray(case["payload_bits"], np.float64) + np.asarray(case["side_bits"],
                                                                            np.float64)
            per = per[0] if per.ndim == 2 else per
        else:
            t = np.asarray(case["t_iter"], dtype=np.float64)
            per = np.median(t, axis=0) if t.ndim == 2 else t
        total = np.concatenate(([0.0], np.cumsum(per)))
        if it.size and (it.min() < 0 or it.max() >= total.size):
            raise ValueError(f"log_iter runs to {it.max()} but the case has {per.size} "
                             f"iterations of {x}")
        xs = total[it]
    else:
        raise ValueError(f"x must be iteration, bits or seconds; got {x!r}")
    if y == "gap":
        fs = f_star(case)
        if fs is None:
            raise ValueError(f"no f* recorded for {case.get('problem')!r}: use y='loss'")
        ys = np.asarray(case["loss"], dtype=np.float64) - fs
    elif y in ("dist", "loss", "grad_norm"):
        ys = np.asarray(case[y], dtype=np.float64)
    else:
        raise ValueError(f"y must be dist, loss, gap or grad_norm; got {y!r}")
    return xs, ys


def band(cases: Sequence[dict[str, Any]], x: str, y: str
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, median, min, max) over the curves of repeated runs (the first's x; equal lengths)."""
    curves = [curve(c, x, y) for c in cases]
    n = min(len(c[1]) for c in curves)
    ys = np.array([c[1][:n] for c in curves])
    return curves[0][0][:n], np.median(ys, axis=0), ys.min(axis=0), ys.max(axis=0)


def draw(ax: Any, cases: Sequence[dict[str, Any]], x: str, y: str, label: str | None,
         *, log_x: bool = False, log_y: bool = True, **style: Any) -> None:
    """One curve: the median of the runs ``cases`` (seeds) with a min-max band.

    Points a log axis cannot show (values <= 0, such as bits = 0 at the start) are
    left out; about ten markers are drawn along the line.
    """
    xs, mid, lo, hi = band(cases, x, y)
    keep = np.isfinite(mid) & (xs > 0 if log_x else True) & (mid > 0 if log_y else True)
    if not keep.any():
        return
    style.setdefault("markevery", max(1, int(keep.sum()) // 10))
    ax.plot(xs[keep], mid[keep], label=label, ms=4, lw=1.4, **style)
    if len(cases) > 1:
        lo = np.where(lo > 0, lo, mid) if log_y else lo
        ax.fill_between(xs[keep], lo[keep], hi[keep], color=style.get("color"), alpha=0.15,
                        lw=0)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")


def blew_up(case: dict[str, Any], y: str, factor: float = 1e3) -> bool:
    """Whether the run's y ends non-finite or above ``factor`` times its start (diverged)."""
    ys = curve(case, "iteration", y)[1]
    return bool(ys.size) and (not np.isfinite(ys[-1]) or ys[-1] > factor * abs(ys[0]))


def mark_diverged(ax: Any, groups: dict[str, Sequence[dict[str, Any]]], y: str) -> list[str]:
    """Keep diverged runs from squashing the others: cap a log y axis, name them in the panel.

    The top of the axis goes to 10 times the largest starting value when a run of
    ``groups`` (name -> runs) blew up (:func:`blew_up`); returns the names of those.
    """
    bad = [name for name, runs in groups.items() if any(blew_up(c, y) for c in runs)]
    if bad:
        starts = [abs(curve(c, "iteration", y)[1][0]) for runs in groups.values() for c in runs]
        good = [v for name, runs in groups.items() if name not in bad for c in runs
                for v in curve(c, "iteration", y)[1] if np.isfinite(v) and v > 0]
        low = min(good) / 2 if good and ax.get_yscale() == "log" else None
        ax.set_ylim(bottom=low, top=10 * max(starts))
        ax.text(0.98, 0.97, "diverged (off the top):\n" + "\n".join(bad), ha="right",
                va="top", fontsize="x-small", transform=ax.transAxes,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"})
    return bad


def empirical_rate(case: dict[str, Any]) -> float | None:
    """The ``rate`` attribute; from ``dist`` when absent (inf: diverged); None without x*."""
    if case.get("rate") is not None:
        return float(case["rate"])
    if not has_dist(case) or len(case["dist"]) < 2 or not case["dist"][0] > 0:
        return None
    d = np.asarray(case["dist"], dtype=np.float64)
    steps = int(case["log_iter"][-1] - case["log_iter"][0])
    if steps <= 0:
        return None
    return float((d[-1] / d[0]) ** (1.0 / steps)) if np.isfinite(d[-1]) else math.inf


def styles(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """name -> (color, marker): :data:`FIXED` colours, then the others in sorted order."""
    names = sorted(set(names))
    free = [c for c in COLORS if c not in {FIXED[n] for n in names if n in FIXED}]
    out, i = {}, 0
    for j, n in enumerate(names):
        if n in FIXED:
            color = FIXED[n]
        else:
            color, i = free[i % len(free)], i + 1
        out[n] = {"color": color, "marker": MARKERS[j % len(MARKERS)]}
    return out


def tau_style(tau: int, taus: Sequence[int]) -> Any:
    """Line style of staleness ``tau`` (:data:`TAU_STYLES`, then others in order)."""
    if tau in TAU_STYLES:
        return TAU_STYLES[tau]
    others = sorted(t for t in set(taus) if t not in TAU_STYLES)
    return _MORE_STYLES[others.index(tau) % len(_MORE_STYLES)]


def problem_name(spec: str) -> str:
    """The problem spec without the parameters at their defaults (when the registry knows)."""
    name, p = parse_spec(spec)
    defaults: dict[str, str] = {}
    try:
        import hpcq.problems as probs

        reg = getattr(probs, "PROBLEMS", None) or getattr(probs, "REGISTRY", None)
        defaults = {q.name: str(q.default) for q in reg.get(name).params}
    except Exception:  # cosmetic only: without the registry the full spec is shown
        pass
    shown = [f"{k}={v}" for k, v in p.items() if defaults.get(k) != v]
    return f"{name}:{','.join(shown)}" if shown else name


def problem_title(cases: Sequence[dict[str, Any]], sep: str = " ") -> str:
    """"problem (d = .., κ = ..), P ranks[, S seeds]" for the cases of one problem.

    ``sep`` goes between the spec and the facts ("\\n" for two-line panel titles).
    """
    c = cases[0]
    facts = [f"d = {c.get('problem_info.d', '?')}"]
    if c.get("problem_info.kappa") is not None:
        kappas = sorted({float(k.get("problem_info.kappa", math.nan)) for k in cases})
        kap = f"{kappas[0]:.3g}" if len(kappas) == 1 else f"{kappas[0]:.3g}..{kappas[-1]:.3g}"
        facts.append(f"κ = {kap}")
    ranks = sorted({int(k.get("nprocs", 0)) for k in cases})
    seeds = len({k.get("seed") for k in cases})
    tail = f", {'/'.join(map(str, ranks))} ranks" + (f", {seeds} seeds" if seeds > 1 else "")
    return f"{problem_name(str(c.get('problem', '?')))}{sep}({', '.join(facts)}){tail}"


def gap_or_loss(cases: Iterable[dict[str, Any]]) -> str:
    """"gap" when every case records f*, else "loss"."""
    return "gap" if all(f_star(c) is not None for c in cases) else "loss"


def legend_below(fig: Any, axes: Iterable[Any], extra: dict[str, Any] | None = None,
                 ncol: int = 4) -> None:
    """One legend for the figure, below the panels: every label once (then ``extra``)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    handles.update(extra or {})
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper center",
                   bbox_to_anchor=(0.5, 0.0), ncol=min(ncol, len(handles)), fontsize="small",
                   frameon=False)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, out: Path, name: str) -> list[Path]:
    """Write ``out/name.png`` and ``.pdf``, close the figure, print and return the paths."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    for p in paths:
        print(f"wrote {p}")
    return paths
