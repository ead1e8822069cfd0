"""The report: the paper's numbers as data, results.json aggregation, report.md rendering, figures."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from avel.data.catalog import AVE_CATEGORIES, SHORT_NAMES
from avel.report import cells as C
from avel.report import figures, paper
from avel.report.markdown import SYNTH_WARNING, fmt_entry, render_report, render_table
from avel.report.results import build_results, summarize

PAPER_TXT = "paper/ave_eccv18_paper_with_supplement.txt"


@pytest.fixture(scope="module")
def paper_lines(release):
    text = (release.parent / PAPER_TXT).read_text(encoding="utf-8")
    return [ln.strip().replace("\u2032", "'") for ln in text.splitlines()]


def _row(lines, head, occurrence=0):
    """Numbers of the `occurrence`-th table line `head n n ...` ('-' -> None)."""
    number = re.compile(r"^(-|\d+\.\d)$")
    hits = [ln for ln in lines if ln.startswith(head + " ")
            and all(number.match(t) for t in ln[len(head) + 1:].split())]
    return [None if t == "-" else float(t) for t in hits[occurrence][len(head) + 1:].split()]


# ------------------------------------------------------------------ paper numbers vs the paper's text


def test_table1_matches_paper_text(paper_lines):
    names = paper_lines[paper_lines.index("Models A V V-att A+V A+V-att W-A W-V W-V-att W-A+V W-A+V-att")].split()[1:]
    assert dict(zip(names, _row(paper_lines, "Accuracy", 0))) == paper.TABLE1


def test_table2_matches_paper_text_and_has_28_cells(paper_lines):
    for stage, head in (("early", "Early Fusion"), ("late", "Late Fusion"), ("decision", "Decision Fusion")):
        published = dict(zip(paper.TABLE2_METHODS, _row(paper_lines, head)))
        assert {k: v for k, v in published.items() if v is not None} == paper.TABLE2[stage]
    entries = C.table2_entries()
    assert len(entries) == 28
    assert {s for s, m, _ in entries if m == "DMRFE"} == {"late"}
    assert len({c.key for _, _, c in entries}) == 28  # 28 distinct configurations
    # Table 1's A+V-att (concat after the LSTMs) is Table 2's late Concat: one cell, one number.
    late_concat = next(c for s, m, c in entries if (s, m) == ("late", "Concat"))
    assert late_concat.key == "A+V-att" and paper.TABLE2["late"]["Concat"] == paper.TABLE1["A+V-att"]


def test_table3_edtcn_supplement_match_paper_text(paper_lines):
    assert _row(paper_lines, "A2V") == [paper.TABLE3["AVDLN"]["A2V"], paper.TABLE3["DCCA"]["A2V"]]
    assert _row(paper_lines, "V2A") == [paper.TABLE3["AVDLN"]["V2A"], paper.TABLE3["DCCA"]["V2A"]]
    assert any(f"achieves {paper.EDTCN}% overall" in ln for ln in paper_lines)
    for row in ("A", "Vs", "AVs"):  # the per-category table is printed in two halves of 14
        assert _row(paper_lines, row, 0) + _row(paper_lines, row, 1) == list(paper.SUPP_TABLE1[row])
    assert len(SHORT_NAMES) == 28
    names = paper_lines[paper_lines.index("Models A' A'-att V V-att A'+V A'+V-co-att")].split()[1:]
    assert dict(zip(names, _row(paper_lines, "Accuracy", 2))) == paper.SUPP_TABLE3


# ------------------------------------------------------------------ aggregation


def test_summarize_by_hand():
    s = summarize([70.0, 72.0, 74.0])
    assert s == {"mean": 72.0, "std": 2.0, "n": 3}  # sample std: sqrt((4 + 0 + 4) / 2)
    s = summarize([50.0, 51.0])
    assert s["mean"] == 50.5 and s["std"] == pytest.approx(np.sqrt(0.5))
    assert summarize([61.25]) == {"mean": 61.25, "std": 0.0, "n": 1}
    assert summarize([None, float("nan")]) is None


def _runs(accs, per_class=None, hit=None):
    return [{"seed": s, "accuracy": a, "per_class": per_class, "attention_hit_rate": hit,
             "attention_chance": None if hit is None else 2.0408, "seconds": 1.0} for s, a in enumerate(accs)]


def _build(runs_by_key, sections=("table1",), synthetic=True, audio_maps=True, table3=None, categories=None):
    cells = C.cells_for(sections, audio_maps=audio_maps)
    return build_results(
        dataset={"name": "AVE-Synth" if synthetic else "AVE", "root": "/d", "synthetic": synthetic,
                 "videos": 280, "splits": {"train": 224, "val": 28, "test": 28}, "audio_maps": audio_maps,
                 "categories": list(categories or AVE_CATEGORIES)},
        settings={"seeds": [0, 1, 2], "quick": False}, sections=sections, cells=cells,
        cell_runs=runs_by_key, table3_runs=table3)


def _line(md, label):
    return next(ln for ln in md.splitlines() if ln.startswith(f"| {label} |"))


def test_table1_rendered_mean_std_beside_paper():
    runs = {"A": _runs([70.0, 72.0, 74.0]), "V": _runs([50.0, 51.0, 52.0]), "A+V-att": _runs([80.0])}
    res = _build(runs)
    md = render_report(json.loads(json.dumps(res)))  # exactly what results.json holds
    assert _line(md, "A") == "| A | 72.0 ± 2.0 | 59.5 |"
    assert _line(md, "V") == "| V | 51.0 ± 1.0 | 55.3 |"
    assert _line(md, "A+V-att") == "| A+V-att | 80.0 | 72.7 |"  # one seed: no ±
    assert _line(md, "W-A") == "| W-A | not run | 53.4 |"
    # The orderings table: A > V holds here; both numbers shown.
    assert "| A > V | 59.5 > 55.3 | 72.0 ± 2.0 vs 51.0 ± 1.0 | yes, by +21.0, beyond 1 std (2.0) |" in md
    assert "| A+V-att > A | 72.7 > 59.5 | 80.0 vs 72.0 ± 2.0 | yes, by +8.0 (one seed: no spread) |" in md


def test_ordering_margin_against_the_spread():
    from avel.report.results import margin

    a, b = {"mean": 72.0, "std": 2.0, "n": 3}, {"mean": 70.5, "std": 1.0, "n": 3}
    assert margin(a, b) == {"margin": 1.5, "spread": 2.0, "beyond_spread": False}
    assert margin({**a, "mean": 68.0}, b) == {"margin": -2.5, "spread": 2.0, "beyond_spread": True}
    assert margin(a, {**b, "n": 1})["beyond_spread"] is None


def test_report_states_dataset_and_synthetic_caveat():
    md = render_report(_build({"A": _runs([60.0])}))
    assert "**AVE-Synth**" in md and SYNTH_WARNING in md
    md_real = render_report(_build({"A": _runs([60.0])}, synthetic=False))
    assert "**AVE**" in md_real and SYNTH_WARNING not in md_real


def test_render_from_hand_made_results_json(tmp_path):
    """A results.json written by hand (not by build_results) renders every number it holds, and only those."""
    doc = {
        "format": "avel-reproduce/1", "avel_version": "9.9",
        "dataset": {"name": "AVE", "root": "/x", "synthetic": False, "videos": 4143,
                    "splits": {"train": 3339, "val": 402, "test": 402}, "audio_maps": False},
        "settings": {"seeds": [0, 1], "quick": False, "train": {"epochs": 30}},
        "timing": {"wall_seconds": 12.4, "runs_trained": 3, "runs_reused": 1},
        "sections": ["edtcn"],
        "tables": {"edtcn": {"title": "ED-TCN", "caption": "cap", "header": ["Model", "avel", "paper"],
                             "rows": [{"label": "ED-TCN",
                                       "entries": [{"mean": 40.25, "std": 0.35, "n": 2}, {"paper": 46.9}]},
                                      {"label": "V", "entries": [{"missing": "not run"}, None]}]}},
        "claims": [],
        "attention": [{"label": "V-att", "hit_rate": {"mean": 81.0, "std": 3.0, "n": 2}, "chance": 2.0408}],
        "figures": [{"title": "Curves", "path": "figures/curves.png", "caption": "val acc"}],
    }
    (tmp_path / "results.json").write_text(json.dumps(doc))
    md = render_report(json.loads((tmp_path / "results.json").read_text()))
    assert "| ED-TCN | 40.2 ± 0.3 | 46.9 |" in md or "| ED-TCN | 40.3 ± 0.3 | 46.9 |" in md
    assert "| V | not run | – |" in md
    assert "| V-att | 81.0 ± 3.0 | 2.0 |" in md
    assert "![Curves](figures/curves.png)" in md
    assert "avel 9.9" in md and "4143 videos (3339 train, 402 val, 402 test)" in md
    assert "3 trained now, 1 reused" in md
    # Every decimal number in the tables comes from the document.
    numbers = set(re.findall(r"\d+\.\d", render_table(doc["tables"]["edtcn"])))
    assert numbers <= {"40.2", "40.3", "0.3", "0.4", "46.9"}


def test_fmt_entry():
    assert fmt_entry(None) == "–"
    assert fmt_entry({"paper": 73.25}) == "73.2" or fmt_entry({"paper": 73.25}) == "73.3"
    assert fmt_entry({"mean": 1.0, "std": 0.5, "n": 2}) == "1.0 ± 0.5"
    assert fmt_entry({"missing": "not available"}) == "not available"


def test_table2_and_supplement_tables():
    runs = {"A+V-att": _runs([72.0, 74.0]), "DMRFE": _runs([75.0, 75.0]),
            "A+V-att gmu early": _runs([60.0, 62.0])}
    res = _build(runs, sections=("table2", "supp_table3"), audio_maps=False)
    md = render_report(res)
    assert _line(md, "Concat").startswith("| Concat | not run | 61.0 | 73.0 ± 1.4 | 72.7 |")
    assert _line(md, "DMRFE") == "| DMRFE | – | – | 75.0 ± 0.0 | 73.3 | – | – |"
    assert _line(md, "GMU").startswith("| GMU | 61.0 ± 1.4 | 70.5 |")
    # Without audio maps the A' rows say why they are empty.
    assert "| A' | not available: the dataset has no audio maps | 54.3 |" in md
    assert all(c["label"] not in C.AUDIO_MAP_MODELS for c in res["cells"].values())


def test_per_category_table_and_attention():
    pc = [float(k) for k in range(28)]
    runs = {"A": _runs([60.0, 62.0], per_class=pc), "A+V-att": _runs([70.0, 70.0], per_class=pc, hit=80.0)}
    res = _build(runs, sections=("supp_table1",))
    md = render_report(res)
    assert _line(md, "bell") == "| bell | 0.0 ± 0.0 | 83.9 | not run | 76.7 | not run | 84.4 | 0.0 ± 0.0 |"
    assert _line(md, "mand.").startswith("| mand. | 27.0 ± 0.0 | 64.7 |")
    assert res["attention"] == [{"label": "A+V-att", "hit_rate": {"mean": 80.0, "std": 0.0, "n": 2}, "chance": 2.0408}]
    assert "| A+V-att | 80.0 ± 0.0 | 2.0 |" in md
    # A dataset with a subset of the categories (AVE-Synth --categories 3): one row each, paper values by name.
    sub = [AVE_CATEGORIES[k] for k in (2, 0, 27)]
    md = render_report(_build({"A": _runs([50.0], per_class=[10.0, 20.0, 30.0])}, sections=("supp_table1",),
                              categories=sub))
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "avel" not in ln]
    assert rows == ["| dog | 10.0 | 49.4 | not run | 44.1 | not run | 55.3 | not run |",
                    "| bell | 20.0 | 83.9 | not run | 76.7 | not run | 84.4 | not run |",
                    "| mand. | 30.0 | 64.7 | not run | 41.3 | not run | 63.3 | not run |"]


def test_table3_mean_std_and_chance():
    t3 = [{"seed": s, "AVDLN": {"A2V": a, "V2A": b}, "DCCA": {"A2V": 30.0, "V2A": 31.0},
           "chance": {"A2V": 10.0, "V2A": 10.0}, "evaluated": 28, "skipped": 0}
          for s, (a, b) in enumerate([(40.0, 30.0), (44.0, 34.0)])]
    md = render_report(_build({}, sections=("table3",), table3=t3))
    assert _line(md, "AVDLN") == "| AVDLN | 42.0 ± 2.8 | 44.8 | 32.0 ± 2.8 | 35.6 |"
    assert _line(md, "chance") == "| chance | 10.0 ± 0.0 | – | 10.0 ± 0.0 | – |"


def test_cells_are_shared_and_deduplicated():
    every = C.cells_for(C.SECTIONS, audio_maps=True)
    keys = [c.key for c in every]
    assert len(keys) == len(set(keys)) == 10 + 27 + 4 + 1 + 6  # Table 1, Table 2 minus shared, A' models, ED-TCN, later methods
    assert len(C.cells_for(C.SECTIONS, audio_maps=False)) == len(every) - 4
    assert {c.slug for c in every}.isdisjoint({""}) and all("'" not in c.slug and " " not in c.slug for c in every)


# ------------------------------------------------------------------ figures


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_write_pngs(tmp_path):
    cats = SHORT_NAMES[:5]
    p1 = figures.per_category_bars(tmp_path / "a.png", cats, {"A": ([50, 60, None, 70, 80], [1, 2, 0, 1, 1]),
                                                              "V": ([40, 30, 20, 10, 0], [0] * 5)})
    p2 = figures.curves(tmp_path / "c.png", {"A": ([1, 2, 3], [40, 50, 55])})
    maps = np.random.default_rng(0).dirichlet(np.ones(49), size=(2, 10)).reshape(2, 10, 7, 7)
    gt = np.full((2, 10), -1)
    gt[0, 3:7] = 24
    p3 = figures.attention_grid(tmp_path / "g.png", maps, ["dog", "bus"], gt_cells=gt,
                                seconds_labels=gt >= 0)
    for p in (p1, p2, p3):
        assert _is_png(p) and p.stat().st_size > 1000
    assert not list(tmp_path.glob(".*.part"))  # written atomically
