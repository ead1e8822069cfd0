"""Numbers a researcher can trust: run identity by data content, one writer per run directory,
baselines and degenerate models in every output, the price of selecting on the test split.

Runs are tiny (model A, 1-2 epochs) on AVE-Synth directories, so the feature checksums come from the
feature store's cache metadata as in real use.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from avel.data.catalog import AVE_CATEGORIES
from avel.data.dataset import AVEDataset, SplitView
from avel.errors import AvelError
from avel.io import output_lock
from avel.models.registry import ModelConfig
from avel.train import checkpoint as ckpt
from avel.train import trainer as trainer_mod
from avel.train.config import TrainConfig
from avel.train.evaluate import baselines, evaluate_model, evaluate_run, prediction_spread, segment_metrics
from avel.train.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = [*AVE_CATEGORIES, "background"]


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "patience": 5, "batch_size": 16, "lr": 3e-3, "num_threads": 1, **kw})


@pytest.fixture(scope="module")
def other_synth(tmp_path_factory, tiny_synth) -> Path:
    """Another AVE-Synth of exactly tiny_synth's size and layout (another generator seed)."""
    from avel.data.synth import generate

    from conftest import TINY_SYNTH

    return generate(tmp_path_factory.mktemp("other") / "ave-synth", progress=False, **{**TINY_SYNTH, "seed": 1})


@pytest.fixture(scope="module")
def ds(tiny_synth):
    return AVEDataset.open(tiny_synth, progress=False)


@pytest.fixture(scope="module")
def other(other_synth):
    return AVEDataset.open(other_synth, progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory, ds) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "a"
    return out, train(ds, ModelConfig(name="A"), cfg(), out, progress=False)


# ---------------------------------------------------------------- run identity by content

def test_run_records_a_content_fingerprint_from_the_store_checksums(run, ds) -> None:
    from avel.data.store import served_checksum

    out, results = run
    fp = json.loads((out / ckpt.CONFIG_FILE).read_text())["data"]["fingerprint"]
    # the audio checksum is the one the feature store computed over the source values while caching
    assert fp["audio"] == served_checksum(ds.audio) and len(fp["audio"]) == 32
    assert "visual" not in fp  # model A reads audio only
    assert set(fp["splits"]) == {"train", "val", "test"} and fp["annotations"] and fp["labels"]
    assert results["dataset"]["name"] == "AVE-Synth" and results["dataset"]["synthetic"]


def test_finished_run_on_other_data_of_the_same_size_is_refused(run, ds, other, tmp_path) -> None:
    out, _ = run
    assert len(other) == len(ds) and all(len(other.split(s)) == len(ds.split(s)) for s in ("train", "val", "test"))
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)  # cp -a RUN RUN2; avel train --data OTHER --out RUN2
    with pytest.raises(AvelError, match=r"trained on different data \(audio features differ: [0-9a-f]{4}\.\. -> "
                                        r"[0-9a-f]{4}\.\.;.*annotations differ.*\); choose a new --out"):
        train(other, ModelConfig(name="A"), cfg(), copy, progress=False)
    with pytest.raises(AvelError, match="trained on different data"):  # the finished run itself
        train(other, ModelConfig(name="A"), cfg(), out, progress=False)
    # other split rows over the same features: named too
    rows = {s: ds.split(s) for s in ("train", "val", "test")}
    swapped = SplitView(ds, {**rows, "test": rows["val"], "val": rows["test"]})
    with pytest.raises(AvelError, match=r"val split rows differ.*test split rows differ"):
        train(swapped, ModelConfig(name="A"), cfg(), copy, progress=False)


def test_interrupted_run_resumed_on_other_data_is_refused(ds, other, tmp_path, monkeypatch) -> None:
    original = trainer_mod._Trainer._end_epoch

    def end_then_crash(self, *args, **kw):
        original(self, *args, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod._Trainer, "_end_epoch", end_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(ds, ModelConfig(name="A"), cfg(), tmp_path / "r", progress=False)
    monkeypatch.setattr(trainer_mod._Trainer, "_end_epoch", original)
    kept = ckpt.load_tensors(tmp_path / "r" / ckpt.LAST_WEIGHTS)
    with pytest.raises(AvelError, match=r"r: trained on different data \(audio features differ"):
        train(other, ModelConfig(name="A"), cfg(), tmp_path / "r", progress=False)
    after = ckpt.load_tensors(tmp_path / "r" / ckpt.LAST_WEIGHTS)
    assert all(torch.equal(kept[k], after[k]) for k in kept)  # nothing touched
    results = train(ds, ModelConfig(name="A"), cfg(), tmp_path / "r", progress=False)  # same data: resumes
    assert results["epochs_run"] == 2


def test_run_without_fingerprint_is_evaluated_but_not_resumed(run, ds, tmp_path) -> None:
    out, results = run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    doc = json.loads((old / ckpt.CONFIG_FILE).read_text())
    del doc["data"]["fingerprint"]
    (old / ckpt.CONFIG_FILE).write_text(json.dumps(doc))
    with pytest.raises(AvelError, match="before avel recorded the content"):
        train(ds, ModelConfig(name="A"), cfg(), old, progress=False)
    r = evaluate_run(old, ds)
    assert r["training_data"] == "unknown" and r["accuracy"] == results["test"]["accuracy"]


def test_second_writer_is_refused_at_once(ds, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(trainer_mod._Trainer, "run", lambda *a, **k: pytest.fail("trained under another's lock"))
    with output_lock(tmp_path / "run"):
        with pytest.raises(AvelError, match="another avel process"):
            train(ds, ModelConfig(name="A"), cfg(), tmp_path / "run", progress=False)


def test_evaluate_on_other_data_says_so_in_text_and_json(run, ds, other, other_synth, capsys) -> None:
    from avel.cli import main

    out, results = run
    same = evaluate_run(out, ds)
    assert same["training_data"] == "same" and same["training_data_differences"] == []
    assert main(["evaluate", str(out), "--data", str(other_synth), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["training_data"] == "different"
    assert any(d.startswith("audio features differ") for d in r["training_data_differences"])
    assert r["dataset"]["name"] == "AVE-Synth" and r["dataset"]["synthetic"]
    assert main(["evaluate", str(out), "--data", str(other_synth)]) == 0
    text = capsys.readouterr().out
    assert "WARNING: this is not the data the run was trained on (audio features differ" in text
    assert text.startswith("data: AVE-Synth at ") and "AVE-Synth is synthetic: its numbers test" in text
    assert main(["evaluate", str(out)]) == 0
    assert "WARNING" not in capsys.readouterr().out


# ---------------------------------------------------------------- baselines, degenerate models, n<3

def test_majority_and_chance_rates_by_hand() -> None:
    # 3 videos x 4 seconds: background (28) on 7 of 12 seconds, class 0 on 3, class 1 on 2
    labels = np.array([[28, 0, 0, 28], [28, 28, 1, 1], [0, 28, 28, 28]])
    video_class = np.array([0, 1, 0])
    b = baselines(labels, video_class, NAMES)
    assert b["majority_class"] == "background" and b["majority_rate"] == pytest.approx(100 * 7 / 12, abs=1e-3)
    assert b["chance_rate"] == pytest.approx(100 / 29, abs=1e-3)
    assert b["per_class_videos"] == {AVE_CATEGORIES[0]: 2, AVE_CATEGORIES[1]: 1}
    # category 0's videos: seconds 28,0,0,28,0,28,28,28 -> background 5 of 8; category 1: 2 of 4 either way
    assert b["per_class_majority_rate"] == {AVE_CATEGORIES[0]: 62.5, AVE_CATEGORIES[1]: 50.0}
    # predicting background everywhere scores exactly the majority rate, and is degenerate
    m = segment_metrics(np.full_like(labels, 28), labels, video_class, NAMES)
    assert m["accuracy"] == b["majority_rate"] and m["degenerate"] and m["most_predicted_share"] == 100.0
    spread = prediction_spread(np.array([[28] * 19 + [0]]), NAMES)  # 95% exactly: not more than 95%
    assert not spread["degenerate"] and spread["most_predicted_class"] == "background"
    assert prediction_spread(np.array([[28] * 39 + [0]]), NAMES)["degenerate"]  # 97.5%


def test_model_forced_to_predict_background_is_marked_degenerate(run, ds) -> None:
    out, results = run
    assert not results["test"]["degenerate"]
    model, mcfg, _ = ckpt.load_run(out)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 29][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-10.0)
        last.bias[28] = 10.0  # background everywhere
    r = evaluate_model(model, mcfg, ds, "test")
    assert r["degenerate"] and r["most_predicted_class"] == "background"
    assert r["accuracy"] == pytest.approx(r["majority_rate"])
    from avel.cli.evaluate import format_report

    text = format_report(r)
    assert "(degenerate: predicts background on 100.0% of seconds)" in text
    assert f"majority class (background everywhere) {r['majority_rate']:.2f}%" in text
    assert "chance (1/29 classes) 3.45%" in text


def test_evaluate_marks_categories_with_fewer_than_three_videos(run, ds) -> None:
    from avel.cli.evaluate import format_report

    out, _ = run
    rows = np.sort(np.concatenate([ds.split("val"), ds.split("test")]))  # 4 videos of each category
    cls = np.asarray(ds.mil_labels[rows]).argmax(-1)
    keep = np.concatenate([rows[cls == 0][:2], rows[cls != 0]])  # only two of category 0
    view = SplitView(ds, {"train": ds.split("train"), "val": ds.split("val"), "test": keep})
    r = evaluate_run(out, view)
    assert r["per_class_videos"][AVE_CATEGORIES[0]] == 2
    lines = {ln.split()[0]: ln for ln in format_report(r).splitlines() if ln.startswith("  ") and "videos)" in ln}
    assert lines[AVE_CATEGORIES[0].split()[0]].endswith("n<3")
    others = [ln for k, ln in lines.items() if k != AVE_CATEGORIES[0].split()[0]]
    assert others and not any("n<3" in ln for ln in others)
    assert r["training_data"] == "different"  # other test rows: said too


# ---------------------------------------------------------------- the price of test-split selection

def test_test_accuracy_recorded_at_each_validation_point(tmp_path, ds) -> None:
    out = tmp_path / "curves"
    results = train(ds, ModelConfig(name="A"), cfg(epochs=3), out, progress=False)
    sel = results["test_at_validation"]
    assert sel["epochs"] == [1, 2, 3] and len(sel["accuracy"]) == 3
    assert sel["best"] == max(sel["accuracy"]) and sel["best"] >= sel["selected"] - 1e-9
    assert sel["selected_epoch"] == results["best_epoch"]
    # the score at the selected epoch is the final test evaluation of that checkpoint
    assert sel["accuracy"][results["best_epoch"] - 1] == pytest.approx(results["test"]["accuracy"], abs=1e-3)
    assert sel["difference"] == pytest.approx(sel["best"] - sel["accuracy"][results["best_epoch"] - 1], abs=1e-3)
    lines = (out / ckpt.CURVES_CSV).read_text().splitlines()
    col = lines[0].split(",").index("test_accuracy")
    assert [round(float(ln.split(",")[col]), 3) for ln in lines[1:]] == sel["accuracy"]


def test_test_scores_never_decide_anything(tmp_path, ds, monkeypatch) -> None:
    """Scripted, wildly varying test scores change no weight, no selected epoch, no stopping point."""
    plain = train(ds, ModelConfig(name="A"), cfg(epochs=3), tmp_path / "plain", progress=False)
    scripted = iter([99.0, 1.0, 50.0])
    monkeypatch.setattr(trainer_mod._Trainer, "_test_point",
                        lambda self, model: {"test_accuracy": next(scripted), "test_seconds": 0.0})
    fake = train(ds, ModelConfig(name="A"), cfg(epochs=3), tmp_path / "fake", progress=False)
    assert (fake["best_epoch"], fake["epochs_run"], fake["stopped"]) == \
        (plain["best_epoch"], plain["epochs_run"], plain["stopped"])
    a, b = ckpt.load_tensors(tmp_path / "plain" / ckpt.MODEL_WEIGHTS), ckpt.load_tensors(tmp_path / "fake" / ckpt.MODEL_WEIGHTS)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert fake["test"]["accuracy"] == plain["test"]["accuracy"]
    assert fake["test_at_validation"]["best"] == 99.0 and fake["test_at_validation"]["best_epoch"] == 1


def test_cli_train_states_dataset_baselines_and_test_selection(tiny_synth, tmp_path, capsys) -> None:
    from avel.cli import main

    assert main(["train", "--data", str(tiny_synth), "--model", "A", "--out", str(tmp_path / "r"),
                 "--epochs", "2", "--batch-size", "16", "--threads", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "majority class " in text and "chance 3.45%" in text
    assert "test accuracy over validation points (never used to select): best " in text
    assert "data: AVE-Synth at " in text and "(AVE-Synth is synthetic: its numbers test" in text


# ---------------------------------------------------------------- reports

def _runs(accs, degenerate=(), best=None, per_class=None):
    return [{"seed": s, "accuracy": a, "per_class": per_class, "degenerate": s in degenerate,
             "best_test_accuracy": None if best is None else best[s], "attention_hit_rate": None}
            for s, a in enumerate(accs)]


def _results(runs, sections=("table1",), categories=None, videos=None):
    from avel.report import cells as C
    from avel.report.results import build_results

    cats = list(categories or AVE_CATEGORIES)
    base = {"majority_class": "background", "majority_rate": 17.1, "chance_rate": 3.448, "num_classes": 29,
            "category_videos": videos or [5] * len(cats), "category_majority_rate": [60.0] * len(cats)}
    return build_results(
        dataset={"name": "AVE-Synth", "root": "/d", "synthetic": True, "videos": 280, "audio_maps": False,
                 "splits": {"train": 224, "val": 28, "test": 28}, "categories": cats, "baselines": base},
        settings={"seeds": [0, 1], "quick": True}, sections=sections,
        cells=C.cells_for(sections, audio_maps=False), cell_runs=runs)


def test_report_baseline_rows_degenerate_marks_and_not_comparable_orderings() -> None:
    from avel.report.markdown import render_report

    res = json.loads(json.dumps(_results({"A": _runs([60.0, 62.0]), "V": _runs([17.1, 17.1], degenerate=(0, 1)),
                                          "A+V": _runs([70.0, 72.0], degenerate=(1,))},
                                         sections=("table1", "edtcn"))))
    md = render_report(res)
    assert "| V | 17.1 ± 0.0 (degenerate) | 55.3 |" in md
    assert "| A+V | 71.0 ± 1.4 (degenerate in 1 of 2 seeds) | 71.4 |" in md
    assert md.count("| majority class (background everywhere) | 17.1 | – |") == 2  # Table 1 and ED-TCN
    assert md.count("| chance (1/29 classes) | 3.4 | – |") == 2
    claims = {(c["left"], c["right"]): c for c in res["claims"]}
    assert claims[("A", "V")]["holds"] is None and claims[("A", "V")]["not_comparable"] == "degenerate: V"
    assert "| A > V | 59.5 > 55.3 | 61.0 ± 1.4 vs 17.1 ± 0.0 (degenerate) | not comparable (degenerate: V) |" in md
    assert "not comparable (degenerate: A+V, V)" in md  # A+V > V: both sides
    assert res["tables"]["table1"]["rows"][1]["entries"][0]["degenerate"] is True


def test_report_per_category_entries_over_few_videos_are_marked() -> None:
    from avel.report.markdown import render_report

    cats = AVE_CATEGORIES[:3]
    md = render_report(_results({"A": _runs([50.0, 60.0], per_class=[50.0, 10.0, 20.0])}, sections=("supp_table1",),
                                categories=cats, videos=[1, 2, 3]))
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "avel" not in ln]
    assert rows[0].startswith("| bell | 50.0 (n<3) |") and rows[0].endswith("| 60.0 | 1 |")
    assert rows[1].startswith("| man | 10.0 (n<3) |") and rows[1].endswith("| 60.0 | 2 |")
    assert rows[2].startswith("| dog | 20.0 ± 0.0 |") and rows[2].endswith("| 60.0 | 3 |")
    assert "±" not in rows[0] and "±" not in rows[1]


def test_report_price_of_test_selection_table() -> None:
    from avel.report.markdown import render_report

    res = _results({"A": _runs([60.0, 62.0], best=[63.0, 66.0]), "V": _runs([40.0, 41.0])})
    rows = {r["label"]: r for r in res["test_selection"]}
    assert set(rows) == {"A"}  # V's runs recorded no test-at-validation curve
    assert rows["A"]["selected"]["mean"] == 61.0 and rows["A"]["best"]["mean"] == 64.5
    assert rows["A"]["difference"]["mean"] == pytest.approx(3.5) and rows["A"]["difference"]["std"] == pytest.approx(
        np.std([3.0, 4.0], ddof=1))
    md = render_report(res)
    assert "## The price of selecting on the test split" in md
    assert "| A | 61.0 ± 1.4 | 64.5 ± 2.1 | 3.5 ± 0.7 |" in md
    # a degenerate seed is marked in this table as in Table 1 (markdown.degenerate_mark)
    md = render_report(_results({"A": _runs([60.0, 62.0], degenerate=(1,), best=[63.0, 66.0])}))
    assert "| A (degenerate in 1 of 2 seeds) | 61.0 ± 1.4 | 64.5 ± 2.1 | 3.5 ± 0.7 |" in md


def test_reproduce_refuses_a_reused_record_whose_run_saw_other_data(run, ds, other, tmp_path) -> None:
    """avel reproduce reuses a run's record by labels and splits; the run's content fingerprint is
    checked too, so features that changed under the same labels are not reused silently."""
    from avel.report.pipeline import complete_record

    out, _ = run
    rec = {"run_dir": out.name, "degenerate": False}
    assert complete_record(rec, out.parent, ds) == rec
    with pytest.raises(AvelError, match=r"a: trained on different data \(audio features differ"):
        complete_record(rec, out.parent, other)
