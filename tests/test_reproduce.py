"""`avel reproduce`: resumable cell runner (with a fake trainer), CLI errors, and a tiny real run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from avel.cli import main
from avel.report import cells as C
from avel.report.pipeline import Backend, Options, reproduce
from avel.report.runner import Job, _Eta, run_jobs


class FakeCatalog(list):
    categories = tuple(f"cat{k}" for k in range(28))

    def __init__(self, n: int) -> None:
        super().__init__([None] * n)


class FakeDataset:
    """The attributes of AVEDataset that the pipeline reads."""

    is_synthetic = True

    def __init__(self, n: int = 56, audio_maps: bool = True) -> None:
        self.catalog = FakeCatalog(n)
        self.mil_labels = np.eye(29, dtype=np.float32)[np.arange(n) % 28]
        self.audio_map = np.zeros((n, 10, 6, 4, 8), np.float32) if audio_maps else None
        self._splits = {"train": np.arange(0, 40), "val": np.arange(40, 48), "test": np.arange(48, n)}

    def split(self, name: str) -> np.ndarray:
        return self._splits[name]


def fake_accuracy(model_kwargs: dict, seed: int) -> float:
    """A deterministic 'test accuracy' per configuration and seed."""
    return 50.0 + (sum(map(ord, json.dumps(model_kwargs, sort_keys=True))) % 30) + seed


class FakeBackend:
    """Counts calls; `fail_at` raises KeyboardInterrupt at that training call (an interrupted run)."""

    def __init__(self, fail_at: int | None = None, audio_maps: bool = True) -> None:
        self.trained: list[tuple[str, int]] = []  # (cell slug, seed) per finished training
        self.fail_at = fail_at
        self.audio_maps = audio_maps
        self.table3_calls = 0

    def backend(self) -> Backend:
        return Backend(open_dataset=lambda root, progress: FakeDataset(audio_maps=self.audio_maps),
                       generate_synth=None, make_train_config=self.make_train_config, train=self.train,
                       run_table3=self.run_table3, figures=lambda **kw: [])

    @staticmethod
    def make_train_config(seed: int, device: str, overrides: dict) -> dict:
        return {"seed": seed, "epochs": 30, **overrides}

    def train(self, ds, model_kwargs, train_cfg, run_dir: Path) -> dict:
        """Like avel.train.trainer.train: resumes a run directory it started (epochs.txt counts epochs)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "epochs.txt", "a") as f:
            f.write("epoch\n")
        if self.fail_at is not None and len(self.trained) == self.fail_at:
            raise KeyboardInterrupt
        self.trained.append((run_dir.parent.name, train_cfg["seed"]))  # (cell slug, seed)
        acc = fake_accuracy(model_kwargs, train_cfg["seed"])
        test = {"accuracy": acc, "per_class": {c: acc for c in ds.catalog.categories[1:]}}  # no test video of class 0
        if "att" in model_kwargs["name"]:
            test.update(attention_hit_rate=90.0 + train_cfg["seed"], attention_chance_rate=100 / 49)
        return {"best_epoch": 2, "epochs_run": 3, "val": {"accuracy": 40.0}, "test": test}

    def run_table3(self, ds, out_dir: Path, seed: int, quick: bool, device: str) -> dict:
        self.table3_calls += 1
        return {"AVDLN": {"A2V": 40.0 + seed, "V2A": 30.0}, "DCCA": {"A2V": 20.0, "V2A": 20.0 + 2 * seed},
                "chance": {"A2V": 12.5, "V2A": 12.5}, "evaluated": 8, "skipped": 0}


def _opts(tmp_path, **kw) -> Options:
    base = dict(out=tmp_path / "report", data=tmp_path / "data", seeds=2, sections=("table1", "table3"),
                progress=False)
    base.update(kw)
    return Options(**base)


def test_second_run_reuses_every_cell(tmp_path):
    fake = FakeBackend()
    res1 = reproduce(_opts(tmp_path), fake.backend())
    assert len(fake.trained) == 10 * 2 and fake.table3_calls == 2
    assert res1["timing"]["runs_trained"] == 22 and res1["timing"]["runs_reused"] == 0
    # mean/std over the two seeds, by hand: fake accuracies differ by exactly 1 between seeds.
    a = fake_accuracy({"name": "A", "weak": False}, 0)
    assert res1["cells"]["A"]["summary"] == {"mean": a + 0.5, "std": pytest.approx(np.sqrt(0.5)), "n": 2}
    assert res1["tables"]["table3"]["rows"][0]["entries"][0]["mean"] == 40.5
    assert res1["cells"]["A+V-att"]["attention_hit_rate"]["mean"] == 90.5
    assert res1["cells"]["A"]["per_class"][0] is None and res1["cells"]["A"]["per_class"][1]["mean"] == a + 0.5

    fake2 = FakeBackend()
    res2 = reproduce(_opts(tmp_path), fake2.backend())
    assert fake2.trained == [] and fake2.table3_calls == 0
    assert res2["timing"]["runs_reused"] == 22
    assert res2["cells"] == res1["cells"] and res2["tables"] == res1["tables"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.count("not run") == 0  # every Table 1 / Table 3 entry filled
    assert json.loads((tmp_path / "report" / "results.json").read_text())["cells"] == res1["cells"]


def test_parallel_workers_give_the_same_results(tmp_path):
    seq = reproduce(_opts(tmp_path / "seq", sections=("table1", "table3")), FakeBackend().backend())
    par = reproduce(_opts(tmp_path / "par", sections=("table1", "table3"), workers=2), FakeBackend().backend())
    assert par["cells"].keys() == seq["cells"].keys()
    for key, cell in par["cells"].items():
        assert cell["summary"] == seq["cells"][key]["summary"] and cell["seeds"] == [0, 1]
    assert par["tables"] == seq["tables"] and par["timing"]["runs_trained"] == 22
    again = FakeBackend()
    res = reproduce(_opts(tmp_path / "par", sections=("table1", "table3"), workers=2), again.backend())
    assert res["timing"]["runs_reused"] == 22 and again.trained == []


def test_interrupted_run_continues_where_it_stopped(tmp_path):
    fake = FakeBackend(fail_at=5)
    with pytest.raises(KeyboardInterrupt):
        reproduce(_opts(tmp_path, sections=("table1",)), fake.backend())
    done = list(fake.trained)
    assert len(done) == 5
    assert not (tmp_path / "report" / "results.json").exists()  # nothing half-written
    interrupted = tmp_path / "report" / "runs" / "V-att" / "seed1"  # the 6th job
    assert (interrupted / "epochs.txt").read_text() == "epoch\n"
    fake2 = FakeBackend()
    reproduce(_opts(tmp_path, sections=("table1",)), fake2.backend())
    assert len(fake2.trained) == 20 - 5 and not set(fake2.trained) & set(done)
    assert (interrupted / "epochs.txt").read_text() == "epoch\n" * 2  # resumed in place, not restarted


def test_changed_settings_retrain_only_what_they_affect(tmp_path):
    reproduce(_opts(tmp_path, sections=("table1",)), FakeBackend().backend())
    more_seeds = FakeBackend()
    reproduce(_opts(tmp_path, sections=("table1",), seeds=3), more_seeds.backend())
    assert sorted(more_seeds.trained) == sorted((c.slug, 2) for c in C.cells_for(["table1"], True))
    fewer_epochs = FakeBackend()
    reproduce(_opts(tmp_path, sections=("table1",), epochs=1), fewer_epochs.backend())
    assert len(fewer_epochs.trained) == 10 * 2  # a different training config is a different run
    unscaled = FakeBackend()
    reproduce(_opts(tmp_path, sections=("table1",), epochs=1, standardize=False), unscaled.backend())
    assert len(unscaled.trained) == 10 * 2  # --no-standardize: other runs too


def test_only_and_cells_and_missing_audio_maps(tmp_path):
    fake = FakeBackend(audio_maps=False)
    res = reproduce(_opts(tmp_path, sections=("supp_table3", "edtcn"), seeds=1), fake.backend())
    # cell slugs: no A' models without audio maps
    assert sorted(m for m, _ in fake.trained) == ["ED-TCN", "V", "V-att"]
    rows = {r["label"]: r["entries"][0] for r in res["tables"]["supp_table3"]["rows"]}
    assert rows["A'"] == {"missing": "not available: the dataset has no audio maps"}
    fake = FakeBackend()
    res = reproduce(_opts(tmp_path / "b", sections=("table2",), seeds=1, cells=("DMRFE", "A+V-att gmu early")),
                    fake.backend())
    assert sorted(fake.trained) == [("A+V-att_gmu_early", 0), ("DMRFE", 0)]
    assert set(res["cells"]) == {"DMRFE", "A+V-att gmu early"}


def test_cli_bad_section_and_cell_are_one_line_errors(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path), "--only", "table9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "table9" in err[0] and "table1" in err[0]


def test_eta_uses_same_cell_time_then_the_mean(tmp_path):
    eta = _Eta()
    jobs = [Job(g, 0, g, tmp_path / g, {}, lambda d: {}) for g in ("a", "b", "c")]
    eta.pending = jobs
    assert eta.remaining() is None  # nothing measured yet
    eta.add("a", 10.0)
    eta.add("x", 20.0)
    assert eta.remaining() == pytest.approx(10.0 + 15.0 + 15.0)  # a: own time; b, c: mean of all
    eta.started[id(jobs[0])] = time.monotonic() - 4.0
    assert eta.remaining() == pytest.approx(36.0, abs=0.5)  # 4 s into job a
    eta.workers = 2
    assert eta.remaining() == pytest.approx(18.0, abs=0.5)  # two workers share the rest
    eta.started[id(jobs[0])] = time.monotonic() - 60.0
    assert eta.remaining() == pytest.approx(15.0, abs=0.5)  # a job past its estimate counts as done


def test_run_jobs_rejects_stale_and_corrupt_records(tmp_path):
    calls = []

    def job(fp):
        return Job("g", 0, "g", tmp_path / "g" / "seed0", fp, lambda d: calls.append(d) or {"accuracy": 1.0})

    run_jobs([job({"v": 1})], progress=False)
    run_jobs([job({"v": 1})], progress=False)
    assert len(calls) == 1
    (tmp_path / "g" / "seed0.json").write_text("{truncated")
    stats = run_jobs([job({"v": 1})], progress=False)
    assert len(calls) == 2 and stats.trained == 1
    run_jobs([job({"v": 2})], progress=False)
    assert len(calls) == 3


# ------------------------------------------------------------------ real runs


def _tiny_reproduce(out: Path, *extra: str) -> int:
    return main(["reproduce", "--out", str(out), "--videos", "40", "--categories", "4", "--seeds", "1", "--epochs", "1",
                 "--workers", "2", "--quiet", "--only", "table1,supp_table1", "--cells", "A,V-att", *extra])


def test_tiny_real_reproduction_end_to_end(tmp_path, capsys):
    """AVE-Synth generated into OUT/data, two real cells trained one epoch, report written; rerun reuses."""
    out = tmp_path / "rep"
    assert _tiny_reproduce(out) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"]["synthetic"] and res["dataset"]["videos"] == 40 and res["dataset"]["audio_maps"]
    assert len(res["tables"]["supp_table1"]["rows"]) == 4
    assert set(res["cells"]) == {"A", "V-att"}
    for key, cell in res["cells"].items():
        run = json.loads((out / cell["run_dirs"][0] / "results.json").read_text())  # the trainer's own file
        assert cell["accuracy"] == [run["test"]["accuracy"]] and 0.0 <= run["test"]["accuracy"] <= 100.0
        assert cell["summary"] == {"mean": run["test"]["accuracy"], "std": 0.0, "n": 1}
    att = res["cells"]["V-att"]["attention_hit_rate"]
    assert 0.0 <= att["mean"] <= 100.0 and att["chance"] == pytest.approx(100 / 49, abs=1e-3)
    report = (out / "report.md").read_text()
    from avel.report.markdown import render_report

    assert report == render_report(res)  # the markdown is a function of results.json
    assert "| A | " in report and SYNTH_NOTE in report
    for fig in res["figures"]:
        assert (out / fig["path"]).read_bytes()[:4] == b"\x89PNG"
    assert {Path(f["path"]).name for f in res["figures"]} == {"per_category.png", "curves.png", "attention.png"}
    capsys.readouterr()
    assert _tiny_reproduce(out) == 0
    assert "0 runs trained, 2 reused" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["cells"] == res["cells"]


SYNTH_NOTE = "These numbers test the implementation, not the paper's claims about real video."


@pytest.mark.slow
def test_quick_reproduction_fills_every_table(tmp_path):
    """The README's main job: `avel reproduce --quick` (minutes on 2 CPU cores)."""
    out = tmp_path / "quick"
    assert main(["reproduce", "--quick", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    one_seed = set(res["settings"]["one_seed_cells"])
    assert len(res["cells"]) == 48 and all(c["summary"]["n"] == (1 if k in one_seed else 2) for k, c in res["cells"].items())
    assert "A+V-att" not in one_seed and "A+V-att gmu early" in one_seed and len(one_seed) == 27 + 4 + 6  # Table 2 but late Concat (= A+V-att), with DMRFE; the four A' cells; the later methods
    assert "not run" not in (out / "report.md").read_text()
    # It shows something: every Table 1 model above the test split's majority (background) rate, and
    # the paper's central orderings hold on the mean by more than the larger of the two stds.
    import h5py

    with h5py.File(out / "data" / "labels.h5", "r") as f, h5py.File(out / "data" / "test_order.h5", "r") as o:
        labels = f["avadataset"][np.sort(o["order"][()])].argmax(-1)
    majority = 100.0 * np.bincount(labels.ravel()).max() / labels.size
    acc = {k: np.array(c["accuracy"]) for k, c in res["cells"].items()}
    for name in ("A", "V", "V-att", "A+V", "A+V-att"):
        for key in (name, f"W-{name}"):
            assert acc[key].mean() > majority, (key, acc[key], majority)
    for better, worse in (("A+V-att", "A"), ("A+V-att", "V"), ("V-att", "V"), ("A+V", "V")):
        gap = acc[better].mean() - acc[worse].mean()
        assert gap > max(acc[better].std(ddof=1), acc[worse].std(ddof=1)), (better, worse, acc[better], acc[worse])


def test_training_status_reads_the_trainers_resume_state(tmp_path):
    from avel.report.pipeline import training_status

    assert training_status(tmp_path) == ""  # before the first epoch
    (tmp_path / "last.json").write_text(json.dumps({"history": [{"epoch": 1, "val_accuracy": 40.2},
                                                                {"epoch": 2, "val_accuracy": 61.26}]}))
    assert training_status(tmp_path) == "epoch 2 val 61%"


def test_quick_trains_one_seed_outside_the_spread_sections(tmp_path):
    """--quick: Table 1 (and ED-TCN, supplement Table 1) keep two seeds for their orderings; Table 2's grid
    and the A' variants train seed 0 alone; an explicit --seeds trains every cell that often."""
    from avel.report import cells as C
    from avel.report.markdown import _settings_section
    from avel.report.pipeline import Options, cell_seeds

    cells = C.cells_for(C.SECTIONS, audio_maps=True)
    quick = cell_seeds(cells, [0, 1], Options(out=tmp_path, quick=True))
    assert quick["A+V-att"] == quick["V"] == quick["ED-TCN"] == quick["W-A+V-att"] == [0, 1]
    assert quick["A+V-att dmrn late"] == quick["DMRFE"] == quick["A'-att"] == [0]
    assert sum(len(v) == 1 for v in quick.values()) == 31 + 6  # with the later methods
    assert all(v == [0, 1, 2] for v in cell_seeds(cells, [0, 1, 2], Options(out=tmp_path, quick=True, seeds=3)).values())
    assert all(v == [0, 1, 2] for v in cell_seeds(cells, [0, 1, 2], Options(out=tmp_path)).values())
    text = _settings_section({"settings": {"seeds": [0, 1], "one_seed_cells": ["DMRFE"], "quick": True}})
    assert "1 cells ran seed 0 alone" in text and "DMRFE." in text
