"""``hpcq report``: the report directory, its tables against the files, and its failure modes."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpcq.analysis import figures
from hpcq.analysis.report import TRAIN_COLUMNS, build_report, collective_rows, combine
from hpcq.cli import main
from hpcq.store import CaseRecord, ResultFile, read_attrs, read_cases

FIXTURES = Path(__file__).resolve().parent / "fixtures"

PROV = {"software": "hpcq", "softwareVersion": "0.0.test",
        "start_time": "2025-01-01T00:00:00+00:00", "nprocs": 4,
        "mpi_library": "Open MPI v5.0.3\nsecond line",
        "hostnames": ["n1", "n1", "n2", "n2"], "slurm_job_id": "4242",
        "cpu_binding": "already bound", "git_commit": "abc123", "git_dirty": True,
        # the fixtures' machine: runs of one machine are combined, of two never
        "cpu_model": read_attrs(FIXTURES / "results-1.1.0.h5")["cpu_model"]}


def _extra(path: Path, prov: dict[str, Any] | None = None, nprocs: int = 4,
           int8: bool = False) -> None:
    """A result file with kernels and collectives at d = 2^12 and 2^14 on ``nprocs`` ranks
    (``int8``: and the parameterised scheme ``allreduce-int:bits=8``)."""
    rng = np.random.default_rng(0)
    cases = []
    for log2 in (12, 14):
        d = 1 << log2
        cases.append(CaseRecord("kernels.memcpy", f"memcpy d=2^{log2}",
                                {"d": d, "repeats": 3, "gbs_median": 10.0 + log2},
                                {"copy_s": (rng.uniform(1e-6, 2e-6, 3), "s")}, None))
        cases.append(CaseRecord("kernels", f"sign d=2^{log2}",
                                {"spec": "sign:scale=l1", "spec_given": "sign", "d": d,
                                 "log2_d": log2, "repeats": 3, "threads": 1, "seed": 0,
                                 "wire_bytes": d // 8 + 64, "bits_per_coordinate": 1.06,
                                 "nmse": 0.6},
                                {"encode_s": (rng.uniform(1e-5, 2e-5, 3), "s"),
                                 "decode_s": (rng.uniform(1e-5, 2e-5, 3), "s")}, None))
        for scheme, spec, wire in (("allreduce-fp32", "fp32", 4 * d),
                                   ("allgather", "sign:scale=l1", d // 8 + 64),
                                   *([("allreduce-int:bits=8", "fp32", d + 4)] if int8 else [])):
            split = rng.uniform(1e-5, 1e-4, (3, nprocs, 5)) * nprocs
            split[0] *= spec == "sign:scale=l1"
            params = {"scheme": scheme, "spec": spec, "spec_given": spec.split(":")[0], "d": d,
                      "log2_d": log2, "nprocs": nprocs, "iterations": 5, "seed": 0,
                      "wire_bytes_per_rank": float(wire), "bits_per_coordinate": 8 * wire / d,
                      "latency_p50_s": float(np.median(split.sum(0).max(0))),
                      "encode_median_s": float(np.median(split[0].max(0))),
                      "comm_median_s": float(np.median(split[1].max(0))),
                      "decode_median_s": float(np.median(split[2].max(0))),
                      "nmse": 0.5 if scheme == "allgather" else 1e-15}
            cases.append(CaseRecord("collectives", f"{scheme} d=2^{log2}", params,
                                    {"encode_s": (split[0], "s"), "comm_s": (split[1], "s"),
                                     "decode_s": (split[2], "s"),
                                     "total_s": (split.sum(0), "s")}, None))
    ResultFile(path, prov or PROV).write_cases(cases)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A directory with both fixtures and a file with more sizes and ranks."""
    d = tmp_path / "results"
    d.mkdir()
    shutil.copyfile(FIXTURES / "results-1.0.0.h5", d / "a-old.h5")
    shutil.copyfile(FIXTURES / "results-1.1.0.h5", d / "b-new.h5")
    _extra(d / "c-extra.h5")
    return d


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_report_writes_every_file(results: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="figures need the plot extra")
    info = build_report(results, tmp_path / "out")
    out = tmp_path / "out"
    for name in ("report.md", "report.html", "kernels.csv", "collectives.csv", "train.csv",
                 "alphabeta.csv", "alphabeta.json", "projection.csv"):
        assert (out / name).is_file(), name
    names = {n for n, _ in info["figures"]}
    verdict = {n for n in names if n.startswith("verdict_")}  # the verdict section's figures
    names -= verdict
    assert names == {"kernels_encode", "kernels_decode", "collectives_nmse", "model_projection",
                     *(f"collectives_{w}_p{p}" for w in ("latency", "split", "breakeven")
                       for p in (2, 4))}
    assert info["skipped"] == [] and info["problems"] == []
    for n in names:
        assert (out / f"{n}.png").stat().st_size > 1000 and (out / f"{n}.pdf").is_file()
    page = (out / "report.html").read_text()
    refs = [r for r in re.findall(r'(?:src|href)="([^"]+)"', page) if not r.startswith("#")]
    assert len(refs) == 2 * len(names | verdict)  # each figure: its PNG shown, its PDF linked
    assert all((out / r).is_file() for r in refs)
    md = (out / "report.md").read_text()
    assert all((out / r).is_file() for r in re.findall(r"\]\(([^)]+)\)", md))
    # provenance of every file, the model of the break-even bandwidth
    assert "git abc123 (dirty)" in md and "SLURM job 4242" in md and "Open MPI v5.0.3" in md
    assert "second line" not in md and "2 host(s), 4 rank(s)" in md
    assert "cpu_binding: already bound" in md and "B* = (fp32_bytes - wire_bytes)" in md


def test_csv_numbers_equal_the_files(results: Path, tmp_path: Path) -> None:
    build_report(results, tmp_path / "out", plots=False)  # figures: see the test above
    rows = _csv(tmp_path / "out" / "collectives.csv")
    seen = 0
    for f in sorted(results.glob("*.h5")):
        for case in read_cases(f, kind="collectives"):
            (row,) = [r for r in rows if r["file"] == str(f) and r["group"] == case["group"]]
            slowest = case["total_s"].max(axis=0)
            assert float(row["latency_p50_s"]) == case.get("latency_p50_s", np.median(slowest))
            assert float(row["wire_bytes_per_rank"]) == case["wire_bytes_per_rank"]
            assert float(row["nmse"]) == case["nmse"] and int(row["d"]) == case["d"]
            enc = case.get("encode_median_s", np.median(case["encode_s"].max(axis=0)))
            dec = case.get("decode_median_s", np.median(case["decode_s"].max(axis=0)))
            assert float(row["encode_median_s"]) == enc
            if case["scheme"] != "allreduce-fp32":
                want = (4 * case["d"] - case["wire_bytes_per_rank"]) / (enc + dec) / 1e9
                assert float(row["breakeven_gbs"]) == pytest.approx(want, rel=1e-12)
            else:
                assert row["breakeven_gbs"] == "" and row["spec"] == "fp32"
            seen += 1
    assert seen == len(rows) == 3 + 10 + 4
    krows = _csv(tmp_path / "out" / "kernels.csv")
    for f in sorted(results.glob("*.h5")):
        for case in read_cases(f, kind="kernels"):
            (row,) = [r for r in krows if r["file"] == str(f) and r["group"] == case["group"]]
            enc = np.median(case["encode_s"])
            assert float(row["encode_median_s"]) == enc
            assert float(row["encode_gbs"]) == pytest.approx(4 * case["d"] / enc / 1e9)
            assert float(row["memcpy_gbs"]) > 0


def test_repeated_runs_are_combined_by_median_min_max(results: Path) -> None:
    from hpcq.analysis.load import load

    rows = collective_rows(load(results, kind="collectives")[0])
    comb = combine(rows, list(rows[0]), ["nprocs", "scheme", "spec", "d"], ["latency_p50_s"])
    (ag,) = [r for r in comb if r["scheme"] == "allgather" and r["spec"].startswith("qsgd")]
    vals = [r["latency_p50_s"] for r in rows
            if r["scheme"] == "allgather" and r["spec"].startswith("qsgd")]
    assert ag["runs"] == 3 == len(vals)
    assert ag["latency_p50_s.median"] == np.median(vals)
    assert (ag["latency_p50_s.min"], ag["latency_p50_s.max"]) == (min(vals), max(vals))


def test_corrupt_file_is_listed_and_skipped(results: Path, tmp_path: Path) -> None:
    data = (results / "b-new.h5").read_bytes()
    (results / "d-broken.h5").write_bytes(data[: len(data) // 3])
    info = build_report(results, tmp_path / "out", plots=False)
    assert len(info["problems"]) == 1 and "d-broken.h5" in info["problems"][0]
    md = (tmp_path / "out" / "report.md").read_text()
    unread = md.split("## Files that could not be read")[1]
    assert [line for line in unread.splitlines() if "d-broken.h5" in line] == [
        f"* {info['problems'][0]}"]
    assert "### " + str(results / "d-broken.h5") not in md
    assert all("d-broken" not in r["file"] for r in _csv(tmp_path / "out" / "collectives.csv"))


def test_without_matplotlib_tables_and_text_are_still_written(
        results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    info = build_report(results, tmp_path / "out")
    out = tmp_path / "out"
    assert info["figures"] == [] and len(info["skipped"]) == 10
    assert not list(out.glob("*.png")) and not list(out.glob("*.pdf"))
    assert len(_csv(out / "collectives.csv")) == 17
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for name, why in info["skipped"]:
        assert "matplotlib" in why and f"{name}: " in md and name in page
    assert "<img" not in page


def test_directory_equals_files_listed(results: Path, tmp_path: Path) -> None:
    build_report(results, tmp_path / "dir", plots=False)
    files = [str(results / n) for n in ("c-extra.h5", "a-old.h5", "b-new.h5")]
    build_report(files, tmp_path / "list", kind="collectives", plots=False)
    a, b = tmp_path / "dir" / "collectives.csv", tmp_path / "list" / "collectives.csv"
    assert a.read_text() == b.read_text()
    assert not (tmp_path / "list" / "kernels.csv").exists()


def test_one_colour_per_spec_whatever_the_order() -> None:
    a = figures.styles(["topk", "fp32", "qsgd"])
    b = figures.styles(["qsgd", "topk", "fp32"])
    assert a == b and a["fp32"]["color"] == figures.PALETTE[0]
    assert len({(s["color"], s["marker"]) for s in a.values()}) == 3


def test_cli(results: Path, tmp_path: Path, capsys: Any) -> None:
    assert main(["report", str(results), "-o", str(tmp_path / "out"), "--no-plots"]) == 0
    assert str(tmp_path / "out" / "report.md") in capsys.readouterr().out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.h5").write_bytes(b"not hdf5")
    assert main(["report", str(bad), "-o", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpcq: error: no readable result files") and err.count("\n") == 1
    assert not (tmp_path / "o2").exists()
    (tmp_path / "afile").write_text("")
    assert main(["report", str(results), "-o", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err and err.count("\n") == 1


def test_runs_of_two_machines_are_never_combined(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="figures need the plot extra")
    d = tmp_path / "two"
    d.mkdir()
    shutil.copyfile(FIXTURES / "results-1.1.0.h5", d / "here.h5")
    _extra(d / "there.h5", dict(PROV, cpu_model="Another CPU"))
    info = build_report(d, tmp_path / "out")
    names = {name for name, _ in info["figures"]}
    machines = sorted([read_attrs(d / "here.h5")["cpu_model"], "Another CPU"])
    there = f"m{machines.index('Another CPU') + 1}"
    here = "m2" if there == "m1" else "m1"
    assert {f"kernels_encode_{here}", f"kernels_encode_{there}",
            f"collectives_latency_p2_{here}", f"collectives_latency_p4_{there}"} <= names, names
    assert f"{there} = Another CPU" in Path(info["markdown"]).read_text()


def test_scaling_figure_when_several_rank_counts_share_a_size(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="figures need the plot extra")
    d = tmp_path / "scale"
    d.mkdir()
    for p in (2, 4, 8):
        _extra(d / f"p{p}.h5", nprocs=p)
    info = build_report(d, tmp_path / "out")
    assert "collectives_scaling" in {name for name, _ in info["figures"]}
    assert (tmp_path / "out" / "collectives_scaling.pdf").exists()


def _chromium() -> str | None:
    import shutil as sh

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if sh.which(name):
            return sh.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium here (Debian: apt install chromium)")
def test_html_report_renders_every_figure_in_headless_chromium(results: Path,
                                                               tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="figures need the plot extra")
    import subprocess

    info = build_report(results, tmp_path / "out")
    html = Path(info["html"])
    # a page beside the report that loads it in a frame and lists images that did not load
    probe = html.parent / "probe.html"
    probe.write_text(
        '<html><body><iframe id="r" src="report.html" width="1200" height="800"></iframe>'
        '<pre id="out">waiting</pre><script>'
        'document.getElementById("r").onload = () => { const d = '
        'document.getElementById("r").contentDocument; const imgs = [...d.images];'
        'const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);'
        'document.getElementById("out").textContent = "images=" + imgs.length + " bad=" + '
        'JSON.stringify(bad); };</script></body></html>')
    done = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--allow-file-access-from-files", "--virtual-time-budget=5000",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                          timeout=120)
    figures = [name for name, _ in info["figures"]]
    assert figures
    assert f"images={len(figures)} bad=[]" in done.stdout, done.stdout[-2000:] + done.stderr


def test_tradeoff_script_draws_from_result_files(results: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="figures need the plot extra")
    import runpy

    script = Path(__file__).resolve().parent.parent / "analysis" / "scripts" / "tradeoff.py"
    main = runpy.run_path(str(script))["main"]
    out = tmp_path / "tradeoff.png"
    assert main([str(results), "-o", str(out), "--nprocs", "4"]) == 0
    assert out.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="no case with d=3"):
        main([str(results), "-o", str(out), "--d", "3"])


def test_report_on_array_task_files_equals_report_on_their_merge(tmp_path: Path) -> None:
    from hpcq.store import merge

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copyfile(FIXTURES / "results-1.1.0.h5", tasks / "task0.h5")
    for p in (2, 4):
        _extra(tasks / f"task{p}.h5", nprocs=p)
    merged = tmp_path / "all.h5"
    merge(sorted(tasks.glob("*.h5")), merged, PROV)
    build_report(tasks, tmp_path / "from-tasks", plots=False)
    build_report(merged, tmp_path / "from-merge", plots=False)
    for name in ("kernels.csv", "collectives.csv"):
        rows = [_csv(tmp_path / d / name) for d in ("from-tasks", "from-merge")]
        # the merged file is written in this hpcq's schema, the task file in 1.1.0
        strip = [[{k: v for k, v in r.items() if k not in ("file", "group", "hpcq_format")}
                  for r in rs] for rs in rows]
        assert strip[0] and sorted(map(str, strip[0])) == sorted(map(str, strip[1])), name


def test_provenance_shows_an_emulated_link(tmp_path: Path) -> None:
    d = tmp_path / "net"
    d.mkdir()
    _extra(d / "a.h5", dict(PROV, emulated_link="rate=1gbit,burst=500000,latency=100ms",
                            emulated_link_measured_gbit=0.9996))
    info = build_report(d, tmp_path / "out", plots=False)
    text = Path(info["markdown"]).read_text()
    assert "emulated link rate=1gbit,burst=500000,latency=100ms (measured 1 Gbit/s)" in text


# ------------------------------------------------------------------ training runs


def test_train_csv_rows_equal_the_files_attributes(tmp_path: Path) -> None:
    f = FIXTURES / "results-1.2.0.h5"
    info = build_report(f, tmp_path / "out", plots=False)
    rows = _csv(tmp_path / "out" / "train.csv")
    cases = read_cases(f, kind="train")
    assert len(rows) == len(cases) == 3
    machine = read_attrs(f)["cpu_model"]
    for case in cases:
        (row,) = [r for r in rows if r["group"] == case["group"]]
        assert row["file"] == str(f) and row["machine"] == machine
        for k in TRAIN_COLUMNS[3:]:
            want = case.get(k)
            if isinstance(want, bool):
                assert row[k] == str(want), k
            elif isinstance(want, float):
                assert float(row[k]) == want or (np.isnan(want) and row[k] == "nan"), k
            else:
                assert row[k] == ("" if want is None else str(want)), k
    # plots=False: the tables and text are still written, the figures listed as skipped
    assert {n for n, _ in info["skipped"]} >= {"train_curves_1"}
    md = Path(info["markdown"]).read_text()
    assert "## Training runs" in md and "| GD (32-bit) |" in md and "DQ-GD R=4" in md


def test_training_figures_are_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="figures need the plot extra")
    info = build_report(FIXTURES / "results-1.2.0.h5", tmp_path / "out", kind="train")
    out = tmp_path / "out"
    assert [n for n, _ in info["figures"]] == ["train_curves_1"] and info["skipped"] == []
    assert (out / "train_curves_1.png").stat().st_size > 20_000
    assert (out / "train_curves_1.pdf").stat().st_size > 5_000
    assert not (out / "collectives.csv").exists() and (out / "train.csv").is_file()
    md = Path(info["markdown"]).read_text()
    assert "## Training runs" in md and "Alpha-beta" not in md


def test_dq_sweeps_get_the_rate_figure_and_seeds_are_combined(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="figures need the plot extra")
    from test_analysis_papers import dq_file

    f = dq_file(tmp_path / "dq.h5")
    info = build_report(f, tmp_path / "out", kind="train")
    names = [n for n, _ in info["figures"]]
    assert names == ["train_curves_1", "train_curves_2", "train_rate"]
    for n in names:
        assert (tmp_path / "out" / f"{n}.png").stat().st_size > 20_000
    md = Path(info["markdown"]).read_text()
    # the heavy problem's 3 seeds: one row, median [min, max]
    (row,) = [ln for ln in md.splitlines() if "heavy" in ln and "| DQ-GD R=1 |" in ln]
    cells = [c.strip() for c in row.split("|")]
    assert cells[7] == "3" and cells[-2] == "0/3" and "[" in cells[8]  # no "diverged" attr


# ------------------------------------------------------------------ alpha-beta model


def test_model_files_and_text(results: Path, tmp_path: Path) -> None:
    info = build_report(results, tmp_path / "out", plots=False)
    out = tmp_path / "out"
    fits = _csv(out / "alphabeta.csv")
    assert fits and set(fits[0]) >= {"machine", "scheme", "compressor", "alpha_s",
                                     "beta_s_per_byte", "n_points", "max_rel_residual",
                                     "p_values", "status"}
    doc = json.loads((out / "alphabeta.json").read_text())
    assert len(doc["fits"]) == len(fits) and "allgather" in doc["algorithms"]
    for j, c in zip(doc["fits"], fits):  # the same numbers in both, missing as null
        for k, v in c.items():
            if v == "":
                assert j[k] in (None, ""), k
            elif isinstance(j[k], (int, float)):
                assert float(v) == j[k], k
            else:
                assert v == j[k], k
    assert {f["status"] for f in fits} <= {"ok", "single p", "under-determined"}
    (ag,) = [f for f in fits if f["scheme"] == "allgather" and f["compressor"] == "sign:scale=l1"]
    assert ag["p_values"] == "4" and ag["status"] == "single p"  # c-extra.h5 only
    (fp,) = [f for f in fits if f["scheme"] == "allreduce-fp32"]
    assert fp["p_values"] == "2 4" and fp["status"] == "ok" and int(fp["n_points"]) == 3
    proj = _csv(out / "projection.csv")
    assert {int(r["p"]) for r in proj} == {2 ** k for k in range(1, 11)}
    md = Path(info["markdown"]).read_text()
    assert "## Alpha-beta model" in md and "extrapolations" in md and "no contention" in md
    assert "Crossovers (model):" in md and "### Projection at d = 2^14" in md


def test_model_of_a_parameterised_scheme(tmp_path: Path) -> None:
    """A scheme spec with parameters (``allreduce-int:bits=8``) gets its cost terms from
    the scheme itself, in the report's table and in alphabeta.json."""
    d = tmp_path / "int8"
    d.mkdir()
    for p in (2, 4):
        _extra(d / f"p{p}.h5", nprocs=p, int8=True)
    info = build_report(d, tmp_path / "out", plots=False)
    doc = json.loads((tmp_path / "out" / "alphabeta.json").read_text())
    assert "allreduce-int:bits=8" in doc["algorithms"]
    assert "| allreduce-int:bits=8 | recursive-doubling Allreduce(MAX)" in Path(
        info["markdown"]).read_text()


def test_projection_d_must_be_measured(results: Path, tmp_path: Path, capsys: Any) -> None:
    info = build_report(results, tmp_path / "out", plots=False, projection_d=1 << 12)
    assert "### Projection at d = 2^12" in Path(info["markdown"]).read_text()
    assert main(["report", str(results), "-o", str(tmp_path / "o2"), "--no-plots",
                 "--projection-d", "3"]) == 2
    err = capsys.readouterr().err
    assert "--projection-d 3 was not measured" in err and not (tmp_path / "o2").exists()
