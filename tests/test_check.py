"""`avel data check`: a valid directory summarised; each bad input one line naming the file."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from avel.cli import main
from avel.data import synth
from avel.data.check import check_dataset


def _read(path, key="avadataset"):
    with h5py.File(path, "r") as f:
        return f[key][()]


def _rewrite(path, arr, key="avadataset"):
    path.unlink()
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=arr)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return synth.generate(tmp_path_factory.mktemp("chk") / "small", videos=20, categories=2, progress=False)


def test_report_on_generated_data(tiny_synth):
    report = check_dataset(tiny_synth, progress=False)
    assert len(report.catalog) == 120 and report.noisy_videos == synth.default_noisy(120)
    assert {s: len(r) for s, r in report.splits.items()} == {
        "train": 96, "val": 12, "test": 12, "train_match": 96, "val_match": 12, "test_match": 12}
    audio = _read(tiny_synth / "audio_feature.h5")
    stats = {s.name: s for s in report.features}
    a = stats["audio_feature.h5"]
    assert (a.min, a.max) == (audio.min(), audio.max())
    assert a.mean == pytest.approx(audio.mean(), rel=1e-9)
    assert a.zero_fraction == pytest.approx((audio == 0).mean())
    assert set(stats) == {"audio_feature.h5", "visual_feature.h5", "audio_feature_noisy.h5", "visual_feature_noisy.h5"}


def test_cli_prints_summary_tables(small, capsys):
    assert main(["data", "check", str(small), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for text in ("AVE-Synth", "Rows per split and category", "Event length", "Feature statistics", "Church bell",
                 "audio_feature.h5", "OK"):
        assert text in out


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["data", "synth", "--out", str(out), "--videos", "20", "--categories", "2", "--seed", "5",
                 "--no-progress"]) == 0
    assert "20 videos" in capsys.readouterr().out
    assert synth.read_marker(out)["seed"] == 5
    assert main(["data", "synth", "--out", str(tmp_path / "t"), "--videos", "5", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 28 " in err


def _nan_visual(root):
    v = _read(root / "visual_feature.h5")
    v[13, 4, 2, 2, 100] = np.nan
    _rewrite(root / "visual_feature.h5", v)


def _truncate(root):
    p = root / "visual_feature.h5"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])


def _wrong_label_row(root):
    lab = _read(root / "labels_closs.h5")
    lab[7] = 1 - lab[7]
    _rewrite(root / "labels_closs.h5", lab)


def _overlap(root):
    val = _read(root / "val_order.h5", "order")
    train = _read(root / "train_order.h5", "order")
    _rewrite(root / "val_order.h5", np.append(val, train[0]), "order")


def _bad_line(root):
    lines = (root / "Annotations.txt").read_text().splitlines()
    lines[4] = "Bark&synth000004&good&7&3"
    (root / "Annotations.txt").write_text("\n".join(lines) + "\n")


def _bad_cells(root):
    cells = _read(root / synth.OBJECT_CELLS_FILE)
    cells[2, :] = 60
    _rewrite(root / synth.OBJECT_CELLS_FILE, cells)


def _noisy_not_background(root):
    lab = _read(root / "labels_noisy.h5")
    lab[1] = 0
    lab[1, 3] = 1
    _rewrite(root / "labels_noisy.h5", lab)


CASES = {  # name: (mutation, file named in the error, text in the error)
    "missing dir": (None, "absent", "dataset directory not found"),
    "missing file": (lambda r: (r / "audio_feature.h5").unlink(), "audio_feature.h5", "file not found"),
    "wrong key": (lambda r: _rewrite(r / "audio_feature.h5", _read(r / "audio_feature.h5"), "features"),
                  "audio_feature.h5", "no dataset 'avadataset'"),
    "wrong shape": (lambda r: _rewrite(r / "audio_feature.h5", np.zeros((20, 10, 64))), "audio_feature.h5",
                    "expected shape (20,10,128)"),
    "row count": (lambda r: _rewrite(r / "audio_feature.h5", np.zeros((21, 10, 128))), "audio_feature.h5",
                  "21 rows but Annotations.txt has 20"),
    "wrong dtype": (lambda r: _rewrite(r / "visual_feature.h5", np.zeros((20, 10, 7, 7, 512), np.int8)),
                    "visual_feature.h5", "expected floating-point"),
    "NaN": (_nan_visual, "visual_feature.h5", "row 13: NaN"),
    "truncated": (_truncate, "visual_feature.h5", "truncated or corrupt"),
    "label row": (_wrong_label_row, "labels_closs.h5", "row 7: does not match Annotations.txt"),
    "bad annotation": (_bad_line, "Annotations.txt", "line 5"),
    "overlapping splits": (_overlap, "val_order.h5", "also in the train split"),
    "split out of range": (lambda r: _rewrite(r / "test_order.h5", np.array([0, 20]), "order"), "test_order.h5",
                           "out of range"),
    "object cells": (_bad_cells, synth.OBJECT_CELLS_FILE, "row 2"),
    "noisy labels": (_noisy_not_background, "labels_noisy.h5", "row 1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_problem_is_one_line_naming_the_file(small, tmp_path, capsys, case):
    mutate, culprit, text = CASES[case]
    root = tmp_path / "absent"
    if mutate is not None:
        root = shutil.copytree(small, tmp_path / "d")
        mutate(root)
    assert main(["data", "check", str(root), "--no-progress"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("avel: error: ") and culprit in lines[0] and text in lines[0], lines[0]
    assert "OK" not in captured.out
