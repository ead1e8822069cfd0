"""AVE-Synth: determinism, released layout, and the statistics the paper's questions need."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest

from avel.data import synth
from avel.data.catalog import AVE_CATEGORIES, BACKGROUND, read_annotations
from avel.data.labels import event_mask, segment_labels, video_labels
from avel.errors import AvelError

SMALL = {"videos": 20, "categories": 2, "progress": False}  # 40 MB visual file, ~0.3 s


def _read(path, key="avadataset"):
    with h5py.File(path, "r") as f:
        return f[key][()]


def _all_arrays(root):
    return {p.name: _read(p, "order" if "order" in p.name else "avadataset") for p in sorted(root.glob("*.h5"))}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = synth.generate(tmp_path / "a", seed=3, audio_maps=True, **SMALL)
    b = synth.generate(tmp_path / "b", seed=3, audio_maps=True, **SMALL)
    c = synth.generate(tmp_path / "c", seed=4, **SMALL)
    arrs_a, arrs_b = _all_arrays(a), _all_arrays(b)
    assert arrs_a.keys() == arrs_b.keys()
    for name in arrs_a:
        np.testing.assert_array_equal(arrs_a[name], arrs_b[name], err_msg=name)
    assert (a / "Annotations.txt").read_text() == (b / "Annotations.txt").read_text()
    assert not np.array_equal(_read(a / "visual_feature.h5"), _read(c / "visual_feature.h5"))
    assert _read(a / synth.AUDIO_MAP_FILE).shape == (20, 10, *synth.AUDIO_MAP_SHAPE)
    assert not (c / synth.AUDIO_MAP_FILE).exists()


# sha256 of a 20-video generator-v1 dataset (seed 3, 2 categories, audio maps), computed by
# _dataset_checksum before generator v2 existed: v1 must keep producing exactly these bytes.
V1_CHECKSUM = "d0e3d48bf3e6e6531ce8da6a3bcc84b8171ab87722154805d9cc740f2497cd93"


def _dataset_checksum(root):
    h = hashlib.sha256()
    for p in sorted(root.glob("*.h5")):
        with h5py.File(p, "r") as f:
            for k in sorted(f.keys()):
                h.update(p.name.encode())
                h.update(np.ascontiguousarray(f[k][()]).tobytes())
    h.update((root / "Annotations.txt").read_bytes())
    return h.hexdigest()


def test_generator_v1_bytes_are_unchanged(tmp_path):
    out = synth.generate(tmp_path / "v1", seed=3, audio_maps=True, version=1, **SMALL)
    assert synth.read_marker(out)["version"] == 1 and synth.non_default_params(synth.read_marker(out)) == {}
    assert _dataset_checksum(out) == V1_CHECKSUM
    v2 = synth.generate(tmp_path / "v2", seed=3, audio_maps=True, **SMALL)  # the default is v2
    assert synth.read_marker(v2)["version"] == synth.GENERATOR_VERSION == 2
    assert synth.non_default_params(synth.read_marker(v2)) == {}
    assert _dataset_checksum(v2) != V1_CHECKSUM
    with pytest.raises(AvelError, match="unknown AVE-Synth generator version 9"):
        synth.generate(tmp_path / "v9", version=9, **SMALL)


def test_v2_audio_statistics_match_the_released_features(tmp_path, release):
    """Generator v2's audio against the release's VGGish features (audio_feature_noisy.h5, the only
    released audio here): mean, std and 99th percentile within 15%, share of zeros within 0.03;
    generator v1's audio is ~1.5x too large (it fails the same check), and v2's pooled visual
    vectors vary as much as its audio (v1's: ~10x less)."""
    real = _read(release / "audio_feature_noisy.h5")
    assert real.shape == (178, 10, 128)

    def stats(a):
        return np.array([a.mean(), a.std(), np.percentile(a, 99)]), (a == 0).mean()

    want, want_zeros = stats(real)
    kw = {"videos": 84, "categories": 28, "seed": 0, "progress": False}
    v2 = synth.generate(tmp_path / "v2", **kw)
    got, zeros = stats(_read(v2 / "audio_feature.h5"))
    np.testing.assert_allclose(got, want, rtol=0.15)
    assert abs(zeros - want_zeros) < 0.03
    v1 = synth.generate(tmp_path / "v1", version=1, **kw)
    assert (stats(_read(v1 / "audio_feature.h5"))[0] / want > 1.3).all()
    for root, lo, hi in ((v2, 0.6, 1.6), (v1, 0.05, 0.15)):
        pooled_std = _read(root / "visual_feature.h5").mean((2, 3)).std()
        assert lo < pooled_std / _read(root / "audio_feature.h5").std() < hi, root.name


def test_visual_gain_scales_only_the_visual_maps_and_marks_the_data(tmp_path):
    """SynthParams.visual_gain multiplies the visual map and nothing else; v1's default keeps v1's
    bytes; the marker records the non-default parameter, and reproduce's data fingerprint tells the
    two apart while v1 data keeps its earlier fingerprint (finished runs stay reusable)."""
    from avel.data.dataset import AVEDataset
    from avel.report.pipeline import data_fingerprint

    a = synth.generate(tmp_path / "a", seed=3, version=1, **SMALL)
    b = synth.generate(tmp_path / "b", seed=3, params=synth.SynthParams(visual_gain=4.0), version=1, **SMALL)
    arrs_a, arrs_b = _all_arrays(a), _all_arrays(b)
    for name in arrs_a:
        want = arrs_a[name] * 4.0 if name.startswith("visual_feature") else arrs_a[name]  # + the noisy videos
        np.testing.assert_array_equal(arrs_b[name], want, err_msg=name)
    assert synth.non_default_params(synth.read_marker(a)) == {}
    assert synth.non_default_params(synth.read_marker(b)) == {"visual_gain": 4.0}
    da, db = AVEDataset.open(a, progress=False), AVEDataset.open(b, progress=False)
    h = hashlib.sha1()  # the fingerprint as computed before generator parameters were part of it
    h.update(np.ascontiguousarray(np.asarray(da.mil_labels, dtype=np.float32)).tobytes())
    for s in ("train", "val", "test"):
        h.update(np.asarray(da.split(s), dtype=np.int64).tobytes())
    h.update(b"synth")
    assert data_fingerprint(da) == h.hexdigest()[:16] != data_fingerprint(db)
    c = synth.generate(tmp_path / "c", seed=3, **SMALL)  # v2: same labels and splits, other features
    assert data_fingerprint(AVEDataset.open(c, progress=False)) not in (data_fingerprint(da), data_fingerprint(db))


def test_interrupted_generation_resumes_to_identical_output(tmp_path, monkeypatch):
    ref = synth.generate(tmp_path / "ref", seed=1, **SMALL)
    monkeypatch.setattr(synth, "WRITE_CHUNK", 8)
    real_write_json = synth.write_json
    calls = []

    def crash_after_first_chunk(path, obj):
        if path.name == synth.PROGRESS_FILE and len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(obj.get("rows_done"))
        real_write_json(path, obj)

    monkeypatch.setattr(synth, "write_json", crash_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path / "run", seed=1, **SMALL)
    assert calls == [0, 8]
    assert not (tmp_path / "run" / synth.MARKER_FILE).exists()  # incomplete: no marker
    assert not (tmp_path / "run" / "visual_feature.h5").exists()  # big files only under .part names
    monkeypatch.setattr(synth, "write_json", real_write_json)
    resumed_from = []
    real_resume = synth._resume_point
    monkeypatch.setattr(synth, "_resume_point", lambda *a: resumed_from.append(real_resume(*a)) or resumed_from[-1])
    out = synth.generate(tmp_path / "run", seed=1, **SMALL)
    assert resumed_from == [8]
    for name, arr in _all_arrays(ref).items():
        np.testing.assert_array_equal(_read(out / name, "order" if "order" in name else "avadataset"), arr)
    assert not list(out.glob(".*.part"))


def test_crash_before_the_first_chunk_can_be_rerun(tmp_path, monkeypatch):
    real = synth.write_h5
    monkeypatch.setattr(synth, "write_h5", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path / "d", seed=1, **SMALL)
    assert (tmp_path / "d" / "Annotations.txt").exists()  # a partial directory, without the marker
    monkeypatch.setattr(synth, "write_h5", real)
    out = synth.generate(tmp_path / "d", seed=1, **SMALL)
    assert synth.read_marker(out)["seed"] == 1


def test_refuses_to_overwrite_a_real_dataset(tmp_path):
    (tmp_path / "Annotations.txt").write_text("Bark&x&good&0&10\n")
    with pytest.raises(AvelError, match="not AVE-Synth"):
        synth.generate(tmp_path, **SMALL)
    with pytest.raises(AvelError, match="one per category"):
        synth.generate(tmp_path / "new", videos=1, categories=2, progress=False)


def test_released_layout(tiny_synth):
    root = tiny_synth
    n = 120
    want = {"audio_feature.h5": ((n, 10, 128), np.float64), "visual_feature.h5": ((n, 10, 7, 7, 512), np.float64),
            "labels.h5": ((n, 10, 29), np.float32), "mil_labels.h5": ((n, 29), np.float32),
            "labels_closs.h5": ((n, 10), np.float32), synth.OBJECT_CELLS_FILE: ((n, 10), np.int64)}
    m = synth.default_noisy(n)
    want.update({"audio_feature_noisy.h5": ((m, 10, 128), np.float64),
                 "visual_feature_noisy.h5": ((m, 10, 7, 7, 512), np.float64), "labels_noisy.h5": ((m, 29), np.float32)})
    for name, (shape, dtype) in want.items():
        with h5py.File(root / name, "r") as f:
            assert list(f.keys()) == ["avadataset"], name
            assert f["avadataset"].shape == shape and f["avadataset"].dtype == dtype, name
    for s in ("train", "val", "test"):
        for suffix in ("_order.h5", "_order_match.h5"):
            with h5py.File(root / f"{s}{suffix}", "r") as f:
                assert list(f.keys()) == ["order"] and f["order"].dtype == np.int64
    # Annotations.txt read by the release's rule (categories by first appearance) gives AVE's indices,
    # and the label files equal what it defines.
    cat = read_annotations(root / "Annotations.txt")
    assert cat.categories == AVE_CATEGORIES[:6]
    np.testing.assert_array_equal(_read(root / "labels.h5"), segment_labels(cat))
    np.testing.assert_array_equal(_read(root / "mil_labels.h5"), video_labels(cat))
    np.testing.assert_array_equal(_read(root / "labels_closs.h5"), event_mask(cat))
    noisy = _read(root / "labels_noisy.h5")
    assert (noisy[:, BACKGROUND] == 1).all() and noisy.sum() == m
    meta = synth.read_marker(root)
    assert meta["seed"] == 0 and meta["videos"] == n and meta["version"] == synth.GENERATOR_VERSION


def test_event_statistics_like_ave():
    cat = synth.make_catalog(synth.FULL_SIZE, seed=0)
    lengths = np.array([a.length for a in cat.rows])
    assert cat.categories == AVE_CATEGORIES
    assert lengths.min() >= 2 and lengths.max() <= 10
    assert all(0 <= a.start < a.end <= 10 for a in cat.rows)
    real = np.array([synth.AVE_LENGTH_COUNTS[k] for k in range(2, 11)], float)
    ours = np.bincount(lengths, minlength=11)[2:]
    # Same distribution as the release: full-length share about two thirds, every length present.
    assert abs(ours[-1] / len(lengths) - real[-1] / real.sum()) < 0.03
    np.testing.assert_allclose(ours / ours.sum(), real / real.sum(), atol=0.015)
    counts = np.bincount(cat.labels, minlength=28)
    assert counts.max() - counts.min() <= 1  # balanced categories


def test_splits_stratified_80_10_10_and_short_test_match():
    cat = synth.make_catalog(1000, seed=2)
    order, match = synth.make_splits(cat, seed=2)
    labels = np.array(cat.labels)
    assert [len(order[s]) for s in ("train", "val", "test")] == [800, 100, 100]
    assert np.array_equal(np.sort(np.concatenate(list(order.values()))), np.arange(1000))
    for c in range(28):
        frac = (labels[order["train"]] == c).sum() / (labels == c).sum()
        assert abs(frac - 0.8) < 0.1, c
    lengths = np.array([a.length for a in cat.rows])
    assert len(match["test"]) == 100 and (lengths[match["test"]] < 10).all()
    assert np.array_equal(np.sort(np.concatenate(list(match.values()))), np.arange(1000))
    assert len(np.unique(labels[match["test"]])) == 28  # stratified over categories


def test_feature_value_ranges_like_released_features(tiny_synth, release):
    audio, visual = _read(tiny_synth / "audio_feature.h5"), _read(tiny_synth / "visual_feature.h5")
    real = _read(release / "audio_feature_noisy.h5")  # VGGish features of the release: ~65% zeros, max ~4.5
    assert audio.min() == 0 and audio.max() <= synth.AUDIO_MAX
    assert abs((audio == 0).mean() - (real == 0).mean()) < 0.1
    assert 0.5 * real.max() < audio.max() < 1.5 * real.max()
    assert visual.min() == 0 and 0.7 < (visual == 0).mean() < 0.9  # ReLU-sparse maps


def test_object_cells_mark_the_sounding_object(tiny_synth):
    """Ground truth is where the category's visual signature peaks, only in event seconds."""
    cat = read_annotations(tiny_synth / "Annotations.txt")
    cells = _read(tiny_synth / synth.OBJECT_CELLS_FILE)
    mask = event_mask(cat).astype(bool)
    assert ((cells >= 0) == mask).all() and cells.max() < 49
    world = synth.make_world(0, synth.params_for(synth.read_marker(tiny_synth)["version"]))
    visual = _read(tiny_synth / "visual_feature.h5").reshape(len(cat), 10, 49, 512)
    score = np.einsum("ntkc,nc->ntk", visual, world.vis_sig[cat.labels])  # (N, 10, 49)
    assert (score.argmax(-1)[mask] == cells[mask]).mean() > 0.95
    assert len(np.unique(cells[mask])) > 30  # objects appear all over the grid
    moved = (np.diff(cells, axis=1) != 0) & mask[:, 1:] & mask[:, :-1]
    assert 0.1 < moved.sum() / (mask[:, 1:] & mask[:, :-1]).sum() < 0.5  # objects move sometimes


def test_each_modality_alone_is_ambiguous_and_attention_resolves_it(tiny_synth):
    """Nearest-centroid per-second accuracy: audio and pooled visual well below 100%, the visual at
    the sounding object's cell (what ideal audio-guided attention sees) far better, and far above
    chance (1/7 classes) for all."""
    cat = read_annotations(tiny_synth / "Annotations.txt")
    tr, te = _read(tiny_synth / "train_order.h5", "order"), _read(tiny_synth / "test_order.h5", "order")
    y = _read(tiny_synth / "labels.h5").argmax(-1)
    cells = _read(tiny_synth / synth.OBJECT_CELLS_FILE)
    audio = _read(tiny_synth / "audio_feature.h5")
    visual = _read(tiny_synth / "visual_feature.h5").reshape(len(cat), 10, 49, 512)
    pooled = visual.mean(2)
    at_obj = np.take_along_axis(visual, np.maximum(cells, 0)[:, :, None, None], 2)[:, :, 0]
    attended = np.where((cells >= 0)[..., None], at_obj, pooled)

    def centroid_acc(x):
        x = x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-9)
        classes = np.unique(y[tr])
        cent = np.stack([x[tr][y[tr] == c].mean(0) for c in classes])
        return (classes[(x[te] @ cent.T).argmax(-1)] == y[te]).mean()

    acc_a, acc_v, acc_att = centroid_acc(audio), centroid_acc(pooled), centroid_acc(attended)
    assert 0.3 < acc_a < 0.9 and 0.3 < acc_v < 0.9
    assert acc_att > max(acc_a, acc_v) + 0.2


def test_background_seconds_hold_offscreen_sounds_and_silent_objects():
    """Planned per second: events need both modalities; background has one modality at most."""
    world, p = synth.make_world(0, synth.SynthParams()), synth.SynthParams()
    cat = synth.make_catalog(600, seed=0)
    kinds = {"offscreen": 0, "silent": 0, "distractor": 0, "early": 0}
    for a in cat.rows:
        plan = synth.plan_video(np.random.default_rng([0, a.row]), world, p, a)
        c = AVE_CATEGORIES.index(a.category)
        for t in range(10):
            heard = any(k == c for k, _ in plan.audible[t])
            seen = any(k == c for k, _, _ in plan.visible[t])
            if a.start <= t < a.end:
                assert heard and seen
            else:
                assert not (heard and seen)
                kinds["offscreen"] += heard
                kinds["silent"] += seen
                kinds["early"] += (t == a.start - 1) and (heard or seen)
        kinds["distractor"] += any(k != c for k, _, _ in plan.visible[0])
    assert kinds["offscreen"] > 50 and kinds["silent"] > 50 and kinds["early"] > 20
    assert 0.35 < kinds["distractor"] / len(cat) < 0.65


def test_modality_reliability_differs_by_category():
    w = synth.make_world(0, synth.params_for(1))  # v1: random thirds
    audio_wins = w.aud_strength > w.vis_strength
    vision_wins = w.vis_strength > w.aud_strength
    assert audio_wins.sum() >= 9 and vision_wins.sum() >= 9
    assert (w.vis_sig >= 0).all() and (w.aud_sig >= 0).all()


def test_v2_reliability_follows_the_paper():
    """v2: vision is the reliable modality for vehicles, audio for speech and animals (the paper's
    per-category discussion: V beats A on car, motorcycle, train, bus; A beats V on dog, man, woman)."""
    w = synth.make_world(0, synth.params_for(2))
    idx = {name: i for i, name in enumerate(AVE_CATEGORIES)}
    for name in ("Race car, auto racing", "Motorcycle", "Train horn", "Bus", "Truck", "Helicopter"):
        assert w.vis_strength[idx[name]] > w.aud_strength[idx[name]], name
    for name in ("Bark", "Male speech, man speaking", "Female speech, woman speaking", "Cat", "Goat"):
        assert w.aud_strength[idx[name]] > w.vis_strength[idx[name]], name
    for name in ("Violin, fiddle", "Clock", "Church bell"):
        assert w.aud_strength[idx[name]] == w.vis_strength[idx[name]], name
    assert set(synth.VISION_STRONG).isdisjoint(synth.AUDIO_STRONG)
    assert set(synth.VISION_STRONG) | set(synth.AUDIO_STRONG) <= set(AVE_CATEGORIES)
