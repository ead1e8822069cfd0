"""`avel reproduce --tables sota`: the paper's models beside CMRAN, PSP and CMBS in one table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from avel.cli import build_parser, main
from avel.data.catalog import AVE_CATEGORIES
from avel.report import cells as C
from avel.report import paper
from avel.report.markdown import render_report
from avel.report.markdown import _settings_section
from avel.report.pipeline import QUICK_LATER_EPOCHS, Options, cell_overrides, cell_seeds, parse_sections, reproduce
from avel.report.results import build_results

from test_reproduce import SYNTH_NOTE, FakeBackend, _opts

LABELS = ["A+V-att", "DMRN", "CMRAN", "PSP", "CMBS", "W-A+V-att", "W-CMRAN", "W-PSP", "W-CMBS"]


def _runs(accs: list[float], best: list[float], train_s: list[float], degenerate: list[bool] | None = None) -> list:
    return [{"seed": k, "accuracy": a, "best_test_accuracy": b, "train_seconds": t, "seconds": t + 1.0,
             "degenerate": bool(degenerate and degenerate[k])} for k, (a, b, t) in enumerate(zip(accs, best, train_s))]


SPEED = {"machine": "Test CPU (2 threads, avx2)", "threads": 2, "precision": "fp32", "videos": 16, "batch": 16,
         "reps": 2, "seconds_per_video": 10,
         "models": {"A+V-att": {"parameters": 1335246, "seconds": 0.1, "segments_per_second": 1600.0},
                    "CMRAN": {"parameters": 9509150, "seconds": 0.4, "segments_per_second": 400.4}}}


def _build(cell_runs: dict, synthetic: bool = True, speed: dict | None = SPEED) -> dict:
    return build_results(
        dataset={"name": "AVE-Synth" if synthetic else "AVE", "root": "/d", "synthetic": synthetic, "videos": 280,
                 "splits": {"train": 224, "val": 28, "test": 28}, "audio_maps": True,
                 "categories": list(AVE_CATEGORIES),
                 "baselines": {"majority_class": "background", "majority_rate": 30.0, "chance_rate": 100 / 29,
                               "num_classes": 29}},
        settings={"seeds": [0, 1, 2], "quick": False}, sections=("sota",),
        cells=C.cells_for(["sota"], audio_maps=True), cell_runs=cell_runs, speed=speed)


def _line(md: str, label: str) -> str:
    return next(ln for ln in md.splitlines() if ln.startswith(f"| {label} |"))


def test_sota_rows_and_cells():
    rows = C.sota_rows()
    assert [label for label, _ in rows] == LABELS
    keys = {label: cell.key for label, cell in rows}
    # DMRN is Table 2's late DMRN cell: a full reproduction trains it once
    assert keys["DMRN"] == C.table2_cell("DMRN", "late").key == "A+V-att dmrn late"
    assert rows[6][1].model_kwargs() == {"name": "CMRAN", "weak": True}
    every = {c.key for c in C.cells_for(C.SECTIONS, audio_maps=True)}
    assert len(every) == 42 + 6  # the six later-method cells are new; A+V-att, DMRN, W-A+V-att shared
    assert "W-DMRN" not in keys.values() and "W-DMRN" not in paper.SOTA_PUBLISHED


def test_published_numbers_and_their_sources():
    assert {k: v for k, (v, _) in paper.SOTA_PUBLISHED.items()} == {
        "A+V-att": 72.7, "DMRN": 73.1, "CMRAN": 77.4, "PSP": 77.8, "CMBS": 79.3,
        "W-A+V-att": 66.7, "W-CMRAN": 72.9, "W-PSP": 73.5, "W-CMBS": 74.2}
    assert paper.SOTA_PUBLISHED["DMRN"][0] == paper.TABLE2["late"]["DMRN"]
    for label, (_, source) in paper.SOTA_PUBLISHED.items():
        work = source.split(", Table")[0]
        assert work in paper.SOTA_REFERENCES, label  # every source is cited in full
    assert "77.8% and 73.5%" in paper.SOTA_REFERENCES["Zhou et al., CVPR 2021"]  # what PSP's README states


def test_sota_table_numbers_by_hand():
    runs = {"A+V-att": _runs([70.0, 72.0, 74.0], [71.0, 75.0, 74.0], [10.0, 12.0, 14.0]),
            "CMRAN": _runs([60.0, 64.0], [62.0, 64.0], [30.0, 32.0], degenerate=[False, True]),
            "W-PSP": [{"seed": 0, "accuracy": 50.0, "train_seconds": 5.0}]}  # no test-at-validation record
    res = json.loads(json.dumps(_build(runs)))  # exactly what results.json holds
    table = res["tables"]["sota"]
    assert table["header"] == ["Model", "avel (val-selected)", "paper", "price of test selection", "parameters",
                               "train s/run", "segments/s", "published in"]
    row = {r["label"]: r for r in table["rows"]}
    assert [r["label"] for r in table["rows"]][:9] == LABELS
    # A+V-att: accuracies 70/72/74 -> 72 ± 2; best - selected = 1, 3, 0 -> mean 4/3, std sqrt(((1-4/3)^2 +
    # (3-4/3)^2 + (0-4/3)^2) / 2) = sqrt(7/3); train seconds 10/12/14 -> 12 ± 2
    acc, price, params, train, speed = (row["A+V-att"]["entries"][k] for k in (0, 2, 3, 4, 5))
    assert (acc["mean"], acc["std"], acc["n"]) == (72.0, 2.0, 3)
    assert price["mean"] == pytest.approx(4 / 3) and price["std"] == pytest.approx(math.sqrt(7 / 3))
    assert (train["mean"], train["std"]) == (12.0, 2.0)
    assert params == {"number": 1335246, "digits": 0} and speed["number"] == 1600.0
    assert row["DMRN"]["cell"] == "A+V-att dmrn late" and row["DMRN"]["entries"][0] == {"missing": "not run"}

    md = render_report(res)
    assert _line(md, "A+V-att") == ("| A+V-att | 72.0 ± 2.0 | 72.7 | 1.3 ± 1.5 | 1,335,246 | 12.0 ± 2.0 | 1,600 | "
                                    "Tian et al., ECCV 2018, Table 1 |")
    # CMRAN: 62 ± 2.8, one of two seeds degenerate; price 2, 0 -> 1 ± 1.4; 400.4 segments/s -> 400
    assert _line(md, "CMRAN") == ("| CMRAN | 62.0 ± 2.8 (degenerate in 1 of 2 seeds) | 77.4 | 1.0 ± 1.4 | 9,509,150 | "
                                  "31.0 ± 1.4 | 400 | Xu et al., ACM MM 2020, Table 1 |")
    assert _line(md, "W-PSP") == ("| W-PSP | 50.0 | 73.5 | not recorded | not run | 5.0 | not run | "
                                  "Zhou et al., CVPR 2021, Table 1 |")
    assert _line(md, "W-CMBS").startswith("| W-CMBS | not run | 74.2 | not run |")
    assert "| majority class (background everywhere) | 30.0 |" in md
    # the full citations, the selection caveat, the machine and the synthetic caveat beside the numbers
    for ref in paper.SOTA_REFERENCES.values():
        assert f"- {next(k for k, v in paper.SOTA_REFERENCES.items() if v == ref)}: {ref}" in md
    caption = table["caption"]
    assert "real AVE features" in caption and "**test** accuracy" in caption and "Test CPU (2 threads, avx2)" in caption
    assert "**AVE-Synth is synthetic**" in caption and SYNTH_NOTE in md
    real = _build(runs, synthetic=False, speed=None)["tables"]["sota"]
    assert "synthetic" not in real["caption"] and "segments/s*:" not in real["caption"]
    # the price of selection is the one the report's test-selection section shows for the same cell
    sel = next(r for r in res["test_selection"] if r["label"] == "A+V-att")
    assert sel["difference"] == price


def test_table_option_selects_sota(tmp_path):
    for flag in ("--table", "--tables", "--only"):
        args = build_parser().parse_args(["reproduce", "--out", str(tmp_path), flag, "sota"])
        assert parse_sections(args.only) == ("sota",)
    assert parse_sections("table1,sota") == ("table1", "sota")
    fake = FakeBackend()
    measured = []
    backend = fake.backend()
    backend.measure_speed = lambda configs, settings: measured.append((configs, settings)) or {
        **SPEED, "models": {k: {"parameters": 1, "seconds": 1.0, "segments_per_second": 1.0} for k in configs}}
    res = reproduce(_opts(tmp_path, sections=("sota",), seeds=2), backend)
    assert sorted(fake.trained) == sorted((c.slug, s) for _, c in C.sota_rows() for s in (0, 1))
    assert list(res["tables"]) == ["sota"] and res["speed"]["models"].keys() == set(LABELS)
    (configs, settings), = measured
    assert configs["DMRN"] == {"name": "A+V-att", "weak": False, "fusion": "dmrn", "fusion_stage": "late"}
    assert settings == {"videos": 64, "batch": 16, "reps": 5}
    line = _line((tmp_path / "report" / "report.md").read_text(), "W-CMBS")
    assert "not run" not in line and line.startswith(f"| W-CMBS | {res['cells']['W-CMBS']['summary']['mean']:.1f} ± ")
    assert "| not recorded | 1 |" in line  # the fake trainer records no training time


def test_quick_trains_the_later_methods_once(tmp_path):
    cells = C.cells_for(["table1", "sota"], audio_maps=True)
    per = cell_seeds(cells, [0, 1], Options(out=tmp_path, quick=True, sections=("table1", "sota")))
    assert per["A+V-att"] == per["W-A+V-att"] == [0, 1]  # Table 1's two seeds, shared
    assert all(per[k] == [0] for k in ("CMRAN", "W-CMRAN", "PSP", "W-PSP", "CMBS", "W-CMBS", "A+V-att dmrn late"))
    only = cell_seeds(C.cells_for(["sota"], True), [0, 1], Options(out=tmp_path, quick=True, sections=("sota",)))
    assert all(v == [0] for v in only.values())
    quick = Options(out=tmp_path, quick=True)
    assert cell_overrides(C.table1_cell("CMRAN", weak=True), quick)["epochs"] == QUICK_LATER_EPOCHS == 2
    assert cell_overrides(C.table1_cell("A+V-att"), quick)["epochs"] == 3  # shared cells keep Table 1's runs
    assert cell_overrides(C.table1_cell("CMBS"), Options(out=tmp_path, quick=True, epochs=5))["epochs"] == 5
    assert "epochs" not in cell_overrides(C.table1_cell("PSP"), Options(out=tmp_path))
    text = _settings_section({"settings": {"seeds": [0], "quick": True, "later_methods_epochs": 2}})
    assert "W- networks) train epochs=2 under `--quick`" in text


class _Counting(nn.Module):
    """A model of 128 * 3 + 3 parameters that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(128, 3)
        self.calls = 0

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        assert visual.shape[1:] == (10, 7, 7, 512) and not torch.is_grad_enabled()
        return self.fc(audio)


def test_speed_measurement_counts_parameters_and_passes():
    from avel.models.speed import measure

    m = _Counting()
    res = measure({"m": m}, videos=5, batch=2, reps=3)["m"]
    assert res["parameters"] == 128 * 3 + 3
    assert m.calls == 3 * (1 + 3)  # ceil(5 / 2) batches per pass: one warm-up pass, then 3 rounds
    assert res["segments_per_second"] == pytest.approx(5 * 10 / res["seconds"])


def test_tiny_sota_reproduction_end_to_end(tmp_path, capsys):
    """AVE-Synth generated, two later-method cells trained one epoch, speed measured, the table written."""
    out = tmp_path / "rep"
    assert main(["reproduce", "--out", str(out), "--videos", "40", "--categories", "4", "--seeds", "1",
                 "--epochs", "1", "--workers", "2", "--quiet", "--precision", "fp32", "--tables", "sota",
                 "--cells", "PSP,W-PSP"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["cells"]) == {"PSP", "W-PSP"} and set(res["speed"]["models"]) == {"PSP", "W-PSP"}
    row = {r["label"]: r["entries"] for r in res["tables"]["sota"]["rows"]}
    for label in ("PSP", "W-PSP"):
        run = json.loads((out / res["cells"][label]["run_dirs"][0] / "results.json").read_text())  # the trainer's
        assert row[label][0]["mean"] == run["test"]["accuracy"]
        assert row[label][2]["mean"] == pytest.approx(run["test_at_validation"]["difference"])
        assert row[label][4]["mean"] == run["train_seconds"] > 0
        assert row[label][5]["number"] > 0
    from avel.models.registry import ModelConfig, create_model
    from avel.models.speed import parameter_count

    assert row["W-PSP"][3]["number"] == parameter_count(create_model(ModelConfig(name="PSP", weak=True)))
    assert row["CMBS"][0] == {"missing": "not run"}
    report = (out / "report.md").read_text()
    assert report == render_report(res) and SYNTH_NOTE in report and "**AVE-Synth is synthetic**" in report
    assert res["speed"]["machine"] in report
