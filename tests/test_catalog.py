"""Annotations.txt parsing, labels and splits against the authors' released files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from avel.cli import main
from avel.data.catalog import AVE_CATEGORIES, BACKGROUND, HEADER, read_annotations
from avel.data.labels import event_mask, segment_labels, video_labels
from avel.data.splits import read_order, read_split_txt
from avel.errors import AvelError


def released(path, key="avadataset"):
    with h5py.File(path, "r") as f:
        return f[key][()]


def test_real_catalog_counts(release):
    cat = read_annotations(release / "Annotations.txt")
    assert len(cat) == 4143
    assert len(cat.video_ids) == 4097
    assert cat.categories == AVE_CATEGORIES
    assert cat.rows[1].video_id == "MH3m4AwEcRY" and (cat.rows[1].start, cat.rows[1].end) == (6, 8)


def test_labels_equal_release(release, tmp_path):
    assert main(["data", "labels", str(release / "Annotations.txt"), "--out", str(tmp_path)]) == 0
    for name in ("mil_labels.h5", "labels_closs.h5"):
        ours, theirs = released(tmp_path / name), released(release / name)
        assert ours.dtype == theirs.dtype == np.float32
        np.testing.assert_array_equal(ours, theirs)
    seg = released(tmp_path / "labels.h5")
    assert seg.shape == (4143, 10, 29) and seg.dtype == np.float32
    # consistent with the two released files: event seconds carry the video label, the rest background
    mil, closs = released(release / "mil_labels.h5"), released(release / "labels_closs.h5")
    np.testing.assert_array_equal(seg.sum(-1), 1)
    np.testing.assert_array_equal(seg[..., BACKGROUND], 1 - closs)
    has_event = closs.sum(1) > 0  # all rows but the release's one event-less row (line 27)
    assert (~has_event).sum() == 1
    np.testing.assert_array_equal(seg[has_event, :, :BACKGROUND].max(1), mil[has_event, :BACKGROUND])
    assert not list(tmp_path.glob("*.part"))


def test_header_line_accepted(release, tmp_path):
    text = (release / "Annotations.txt").read_text()
    (tmp_path / "a.txt").write_text(HEADER + "\n" + text)
    a, b = read_annotations(tmp_path / "a.txt"), read_annotations(release / "Annotations.txt")
    assert [x.video_id for x in a.rows] == [x.video_id for x in b.rows]
    np.testing.assert_array_equal(segment_labels(a), segment_labels(b))


def test_hand_computed_labels(tmp_path):
    (tmp_path / "a.txt").write_text("Dog&x&good&2&5\nCat&y&good&0&10\nDog&z&good&9&10\n")
    cat = read_annotations(tmp_path / "a.txt")
    assert cat.categories == ("Dog", "Cat")
    np.testing.assert_array_equal(event_mask(cat)[0], [0, 0, 1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(video_labels(cat).argmax(1), [0, 1, 0])
    np.testing.assert_array_equal(segment_labels(cat)[2].argmax(1), [BACKGROUND] * 9 + [0])


@pytest.mark.parametrize("line, message", [
    ("Dog&x&good&2", "expected 5"),
    ("Dog&x&good&5&5", "start < end"),
    ("Dog&x&good&5&3", "start < end"),
    ("Dog&x&good&3&11", "start < end"),
    ("Dog&x&good&-1&4", "start < end"),
    ("Dog&x&good&a&4", "whole seconds"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text("Dog&ok&good&0&10\n" + line + "\n")
    with pytest.raises(AvelError, match=message) as info:
        read_annotations(path)
    assert "bad.txt" in str(info.value) and "line 2" in str(info.value)


def test_cli_error_is_one_line_nonzero(tmp_path, capsys):
    (tmp_path / "bad.txt").write_text("nonsense\n")
    assert main(["data", "labels", str(tmp_path / "bad.txt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.txt" in err and "line 1" in err
    assert not (tmp_path / "o" / "labels.h5").exists()


def test_real_splits(release):
    cat = read_annotations(release / "Annotations.txt")
    orders = {s: read_order(release / f"{s}_order.h5", len(cat)) for s in ("train", "val", "test")}
    assert [len(o) for o in orders.values()] == [3339, 402, 402]
    assert len(np.unique(np.concatenate(list(orders.values())))) == 4143
    test_match = read_order(release / "test_order_match.h5", len(cat))
    lengths = np.array([cat.rows[r].length for r in test_match])
    assert (lengths < 10).all()  # the cross-modality test split holds only short events


def test_split_txt_maps_to_rows(release, tmp_path):
    cat = read_annotations(release / "Annotations.txt")
    test_rows = read_order(release / "test_order.h5")
    lines = [(release / "Annotations.txt").read_text().splitlines()[r] for r in test_rows]
    (tmp_path / "testSet.txt").write_text(HEADER + "\n" + "\n".join(lines) + "\n")
    np.testing.assert_array_equal(np.sort(read_split_txt(tmp_path / "testSet.txt", cat)), np.sort(test_rows))
    (tmp_path / "bad.txt").write_text("Unicorn&abc&good&0&3\n")
    with pytest.raises(AvelError, match="unknown category 'Unicorn'"):
        read_split_txt(tmp_path / "bad.txt", cat)


def test_released_empty_event_row(release):
    """Line 27 of the release (0&0) is kept as an event-less row, as the released labels have it."""
    cat = read_annotations(release / "Annotations.txt")
    assert cat.rows[26].length == 0
    assert segment_labels(cat)[26].argmax(1).tolist() == [BACKGROUND] * 10
