"""`avel localize`: windows, event spans, and the end-to-end alignment test from raw video to events."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from avel.cli import main
from avel.errors import AvelError
from avel.features.extracted import ExtractedSet
from avel.features.render import ALIGNMENT_CLASSES, ClipSpec, make_alignment_set, render_clip
from avel.inference.events import events_document, merge_spans
from avel.inference.infer import window_starts, windowed_predict
from avel.models.registry import ModelOutput


# ---------------------------------------------------------------- windows and events

def test_window_starts():
    assert window_starts(7, 10, 5) == [0]  # shorter than a window: one pass over 7 s
    assert window_starts(10, 10, 5) == [0]
    assert window_starts(25, 10, 5) == [0, 5, 10, 15]
    assert window_starts(23, 10, 5) == [0, 5, 10, 13]  # the last window ends at the last second
    assert window_starts(11, 10, 4) == [0, 1]


class CumulativeModel(nn.Module):
    """Logits of second t = sum of audio[0..t] inside the window: the result depends on the window."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, audio, visual):
        return ModelOutput(logits=audio[..., :3].cumsum(dim=1), attention=visual.flatten(2, 3)[..., 0].softmax(-1))


def test_windowed_predict_averages_overlaps_by_hand():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((13, 128)).astype(np.float32)
    visual = rng.standard_normal((13, 2, 2, 512)).astype(np.float32)
    probs, att = windowed_predict(CumulativeModel(), audio, visual, window=10, hop=5)
    softmax = lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)  # noqa: E731
    w0 = softmax(np.cumsum(audio[0:10, :3], axis=0))  # windows start at 0 and 3
    w1 = softmax(np.cumsum(audio[3:13, :3], axis=0))
    expected = np.zeros((13, 3))
    expected[:3] = w0[:3]
    expected[3:10] = (w0[3:] + w1[:7]) / 2
    expected[10:] = w1[7:]
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(att, softmax(visual.reshape(13, 4, 512)[..., 0]), atol=1e-5)  # per-second: same
    short, _ = windowed_predict(CumulativeModel(), audio[:6], visual[:6], window=10, hop=5)
    np.testing.assert_allclose(short, softmax(np.cumsum(audio[:6, :3], axis=0)), atol=1e-5)


def test_merge_spans_and_document_by_hand():
    classes = np.array([3, 1, 1, 3, 2, 2, 2, 1])
    probs = np.full((8, 4), 0.1)
    probs[np.arange(8), classes] = [0.7, 0.6, 0.8, 0.9, 0.5, 0.6, 0.7, 0.4]
    names = ["a", "b", "c", "background"]
    spans = [(e.category, e.start, e.end, e.confidence) for e in merge_spans(classes, probs, names, 3)]
    assert spans == [("b", 1, 3, 0.7), ("c", 4, 7, 0.6), ("b", 7, 8, 0.4)]
    doc = events_document(probs, names, 3, video={"name": "x"})
    assert doc["video"] == {"name": "x"} and doc["classes"] == names
    assert [s["label"] for s in doc["seconds"]] == ["background", "b", "b", "background", "c", "c", "c", "b"]
    assert doc["seconds"][4] == {"second": 4, "start": 4.0, "end": 5.0, "label": "c", "class": 2,
                                 "probability": 0.5, "is_event": True, "probabilities": [0.1, 0.1, 0.5, 0.1]}
    assert doc["events"][1] == {"category": "c", "class_index": 2, "start": 4, "end": 7, "confidence": 0.6,
                                "duration": 3, "span": "00:04-00:07 (3 s, seconds 4..6 inclusive)"}


def test_overlay_marks_the_attended_cell():
    from avel.inference.pictures import overlay

    frame = np.full((64, 64, 3), 100, np.uint8)
    out = overlay(frame, np.array([0.7, 0.1, 0.1, 0.1])).astype(int)  # 2x2 map, top-left cell attended
    change = np.abs(out - 100).sum(-1)
    assert change[:16, :16].min() > 50 and change[48:, 48:].max() == 0  # least attended cells: untouched
    assert np.array_equal(overlay(frame, np.full(49, 1 / 49)), frame)  # no preference: no heatmap


# ---------------------------------------------------------------- end to end: render, extract, train, localize

SPLITS = {"train": 8, "val": 2, "test": 2}
EXTRACT = ["--frames-per-second", "1", "--image-size", "32", "--quiet"]  # 1x1 pool5 grid: VGG-19 stays cheap


def nearest_centroid_accuracy(x: np.ndarray, truth: np.ndarray, fit: np.ndarray) -> float:
    """Fit class centroids of per-second features on rows `fit`, score on all other rows."""
    x = x.reshape(*x.shape[:2], -1)
    centroids = np.stack([x[fit][truth[fit] == k].mean(0) for k in range(truth.max() + 1)])
    rest = np.setdiff1d(np.arange(len(x)), fit)
    dist = ((x[rest][:, :, None] - centroids[None, None]) ** 2).sum(-1)  # (n, T, classes)
    return float((dist.argmin(-1) == truth[rest]).mean())


def test_alignment_end_to_end(tmp_path, weights, capsys):
    from avel.models.registry import ModelConfig
    from avel.train.config import TrainConfig
    from avel.train.trainer import train

    videos = make_alignment_set(tmp_path / "src", sum(SPLITS.values()), SPLITS, seed=0)
    wargs = ["--vgg19-weights", str(weights["vgg19_keras"]), "--vggish-weights", str(weights["vggish"])]
    ds_dir = tmp_path / "ds"
    assert main(["extract", "--videos", str(tmp_path / "src"), "--annotations", str(tmp_path / "src" / "Annotations.txt"),
                 "--out", str(ds_dir), *wargs, *EXTRACT]) == 0

    # 1. second t of audio and second t of video carry what second t of the clip showed: the features
    # of every second sit by the centroid of its content (nothing / class 1's / class 2's tone or shape;
    # centroids from the training videos only).
    with h5py.File(ds_dir / "audio_feature.h5") as fa, h5py.File(ds_dir / "visual_feature.h5") as fv:
        audio, visual = fa["avadataset"][()], fv["avadataset"][()]
    cls = np.array([1 + list(ALIGNMENT_CLASSES).index(v.category) for v in videos])[:, None]
    tone = np.array([[t in v.tone_seconds for t in range(10)] for v in videos], int) * cls
    shape = np.array([[t in v.shape_seconds for t in range(10)] for v in videos], int) * cls
    train_rows = np.arange(SPLITS["train"])
    assert nearest_centroid_accuracy(audio, tone, train_rows) == 1.0
    assert nearest_centroid_accuracy(visual, shape, train_rows) == 1.0

    # 2. label t: a model trained on these features localizes held-out videos above chance.
    ds = ExtractedSet(ds_dir)  # AVEDataset reads 7x7 maps only
    labels = ds.labels.argmax(-1)
    event = np.array([[v.start <= t < v.end for t in range(10)] for v in videos])
    assert np.array_equal(labels != 28, event) and np.array_equal(event, (tone > 0) & (shape > 0))
    torch.manual_seed(0)
    run = tmp_path / "run"
    train(ds, ModelConfig(name="A+V-att", visual_grid=1),
          TrainConfig(epochs=15, patience=15, batch_size=4, lr=1e-2, seed=0, num_threads=1), run, progress=False)

    held_out = videos[-1]
    out = tmp_path / "loc"
    capsys.readouterr()
    assert main(["localize", str(held_out.path), "--model", str(run), "--out", str(out), "--json", *wargs]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == json.loads((out / "events.json").read_text())
    predicted = np.array([s["label"] for s in doc["seconds"]])
    truth = np.where(event[-1], held_out.category, "background")
    majority = max(np.mean(truth == "background"), np.mean(truth != "background"))
    accuracy = float(np.mean(predicted == truth))
    assert accuracy > majority and accuracy >= 0.8, (predicted, truth)
    assert doc["extractor"]["image_size"] == 32 and doc["model"]["name"] == "A+V-att"
    assert set(doc["classes"][:2]) == set(ALIGNMENT_CLASSES) and doc["classes"][doc["background"]] == "background"
    assert all(len(s["probabilities"]) == 29 and abs(sum(s["probabilities"]) - 1) < 1e-3 for s in doc["seconds"])

    # 3. pictures: one PNG per second, an animated GIF with one frame per second, a self-contained page
    from PIL import Image

    assert sorted(p.name for p in (out / "attention").iterdir()) == [f"second_{t:03d}.png" for t in range(10)]
    assert Image.open(out / "attention.gif").n_frames == 10
    page = (out / "index.html").read_text()
    assert re.findall(r'src="(?!data:)[^"]*"', page) == ['src="video.mp4"']  # the small video is copied beside
    assert page.count('src="data:image/png;base64,') == 11 and (out / "video.mp4").read_bytes() == \
        held_out.path.read_bytes()
    assert all(e["category"] in page for e in doc["events"])

    # 4. a 14-s video runs as two 10-s windows (0-10 s, 4-14 s); every second gets a label
    long_spec = ClipSpec(seconds=14, fps=25, shape_seconds={10, 11, 12, 2}, tone_seconds={10, 11, 12, 6},
                         seed=77, **ALIGNMENT_CLASSES[held_out.category])
    render_clip(tmp_path / "long.mp4", long_spec)
    assert main(["localize", str(tmp_path / "long.mp4"), "--model", str(run), "--out", str(tmp_path / "long"),
                 "--no-pictures", *wargs]) == 0
    long_doc = json.loads((tmp_path / "long" / "events.json").read_text())
    assert long_doc["windows"] == {"length": 10, "hop": 5} and len(long_doc["seconds"]) == 14
    long_truth = np.where(np.isin(np.arange(14), [10, 11, 12]), held_out.category, "background")
    assert np.mean([s["label"] for s in long_doc["seconds"]] == long_truth) >= 0.8

    # 5. features from another extractor are refused with one line
    capsys.readouterr()
    assert main(["localize", str(held_out.path), "--model", str(run), "--out", str(tmp_path / "x"),
                 "--vgg19-weights", str(weights["vgg19"]), "--vggish-weights", str(weights["vggish"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on features from another extractor" in err[0]
    assert "vgg19_sha256" in err[0] and "vgg19_preprocessing: expected 'keras', got 'torchvision'" in err[0]
    assert main(["localize", str(tmp_path / "nothing.mp4"), "--model", str(run), "--out", str(tmp_path / "z"),
                 *wargs]) == 2
    assert capsys.readouterr().err.strip() == f"avel: error: {tmp_path / 'nothing.mp4'}: file not found"

    # 6. a run without an extractor record: assumed to match (warning), but the map size must fit the model
    (ds_dir / "extractor.json").rename(ds_dir / "elsewhere.json")
    from avel.features.extractor import ExtractorConfig
    from avel.inference.pipeline import localize_video

    warnings: list[str] = []
    with pytest.raises(AvelError, match="the model expects 1x1 visual maps; --image-size 64 gives 2x2"):
        localize_video(held_out.path, run, tmp_path / "y", ExtractorConfig(
            vgg19_weights=str(weights["vgg19_keras"]), vggish_weights=str(weights["vggish"]), image_size=64,
            frames_per_second=1), window=10, hop=5, log=warnings.append)
    assert warnings == ["warning: the run records no feature extractor (trained on features avel did not extract?): "
                        "assuming the authors' extractor (Keras VGG-19 + VGGish) matches"]


# ---------------------------------------------------------------- spans, merging, exports

def test_span_text_is_half_open_by_hand():
    from avel.inference.events import span_text

    assert span_text(3, 7) == "00:03-00:07 (4 s, seconds 3..6 inclusive)"
    assert span_text(59, 60) == "00:59-01:00 (1 s, second 59)"
    assert span_text(3599, 3725) == "59:59-1:02:05 (126 s, seconds 3599..3724 inclusive)"


def hand_doc(threshold: float = 0.0, min_duration: float = 0.0) -> dict:
    """Seconds 0..9: dog 0.9 at 1-2, car 0.5/0.7/0.8 at 4-6 ('car' below 0.6 at 4), dog 0.95 at 8; rest background."""
    names = ["dog", "car", "background"]
    probs = np.tile([0.05, 0.05, 0.9], (10, 1))
    for t, (c, p) in {1: (0, 0.9), 2: (0, 0.9), 4: (1, 0.5), 5: (1, 0.7), 6: (1, 0.8), 8: (0, 0.95)}.items():
        probs[t] = (1 - p) / 2
        probs[t, c] = p
    return events_document(probs, names, 2, threshold=threshold, min_duration=min_duration)


def test_threshold_and_min_duration_merge_by_hand():
    spans = lambda doc: [(e["category"], e["start"], e["end"]) for e in doc["events"]]  # noqa: E731
    assert spans(hand_doc()) == [("dog", 1, 3), ("car", 4, 7), ("dog", 8, 9)]
    assert spans(hand_doc(threshold=0.6)) == [("dog", 1, 3), ("car", 5, 7), ("dog", 8, 9)]  # second 4 is 0.5
    assert spans(hand_doc(threshold=0.85)) == [("dog", 1, 3), ("dog", 8, 9)]
    assert spans(hand_doc(min_duration=2)) == [("dog", 1, 3), ("car", 4, 7)]  # the 1-s dog is dropped
    assert spans(hand_doc(threshold=0.6, min_duration=2.5)) == []
    doc = hand_doc(threshold=0.6, min_duration=2)
    assert [s["is_event"] for s in doc["seconds"]] == [False, True, True, False, False, True, True, False, False, False]
    assert [s["label"] for s in doc["seconds"]][4] == "car"  # the label stays the most probable class
    assert doc["merging"] == {"threshold": 0.6, "min_duration": 2} and "half-open" in doc["span_convention"]
    assert doc["events"][1]["confidence"] == 0.75 and doc["events"][1]["span"].startswith("00:05-00:07 (2 s")


def test_threshold_and_min_duration_are_validated(tmp_path, capsys):
    from avel.inference.pipeline import LocalizeOptions

    for bad in (["--threshold", "1.5"], ["--threshold", "-0.1"], ["--threshold", "nan"], ["--min-duration", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["localize", "v.mp4", "--model", str(tmp_path), "--out", str(tmp_path / "o"), *bad])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert bad[0] in err and "must be" in err, err
    with pytest.raises(AvelError, match="threshold must be a probability in 0..1"):
        LocalizeOptions(threshold=1.01).validate()
    with pytest.raises(AvelError, match="min duration must be >= 0"):
        LocalizeOptions(min_duration=-0.5).validate()
    assert "[range: 0..1]" in _help("--threshold") and "[range: >= 0]" in _help("--min-duration")


def _help(option: str) -> str:
    from avel.cli import build_parser
    from avel.cli.options import all_options

    return next(a.help for words, a in all_options(build_parser()) if words == ("localize",)
                and option in a.option_strings)


def test_exports_parse_back_by_hand(tmp_path):
    import csv

    from avel.inference.exports import EXPORTS, write_exports

    doc = hand_doc()
    doc["events"].append({**doc["events"][0], "start": 3725, "end": 3727})  # past an hour: 01:02:05
    write_exports(tmp_path, doc)
    srt = (tmp_path / EXPORTS["srt"]).read_text()
    assert srt == ("1\n00:00:01,000 --> 00:00:03,000\ndog (0.90)\n\n"
                   "2\n00:00:04,000 --> 00:00:07,000\ncar (0.67)\n\n"
                   "3\n00:00:08,000 --> 00:00:09,000\ndog (0.95)\n\n"
                   "4\n01:02:05,000 --> 01:02:07,000\ndog (0.90)\n")
    vtt = (tmp_path / EXPORTS["vtt"]).read_text()
    assert vtt.startswith("WEBVTT\n\n") and "00:00:04.000 --> 00:00:07.000\ncar (0.67)\n" in vtt
    cues = re.findall(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$", vtt, re.M)
    to_s = lambda h, m, s, ms: int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000  # noqa: E731
    assert [(to_s(*c[:4]), to_s(*c[4:])) for c in cues] == [(1, 3), (4, 7), (8, 9), (3725, 3727)]
    labels = (tmp_path / EXPORTS["audacity"]).read_text().splitlines()
    assert labels[1] == "4.000000\t7.000000\tcar"
    assert all(re.fullmatch(r"\d+\.\d{6}\t\d+\.\d{6}\t[^\t]+", ln) for ln in labels) and len(labels) == 4
    rows = list(csv.DictReader((tmp_path / EXPORTS["csv"]).open()))
    assert [(r["category"], int(r["start"]), int(r["end"]), int(r["duration"])) for r in rows][:3] == \
        [("dog", 1, 3, 2), ("car", 4, 7, 3), ("dog", 8, 9, 1)]
    seconds = list(csv.DictReader((tmp_path / EXPORTS["seconds_csv"]).open()))
    assert len(seconds) == 10 and seconds[5]["label"] == "car" and float(seconds[5]["car"]) == 0.7
    assert [int(r["is_event"]) for r in seconds] == [s["is_event"] for s in doc["seconds"]]


# ---------------------------------------------------------------- many videos, resume, page, warnings

FAST = ["--frames-per-second", "1", "--image-size", "32", "--precision", "fp32", "--quiet"]


@pytest.fixture(scope="module")
def random_run(tmp_path_factory, weights):
    """A run directory holding an untrained A+V-att (1x1 maps) recorded with the tests' extractor."""
    import avel
    from avel.data.catalog import AVE_CATEGORIES
    from avel.features.extractor import ExtractorConfig, FeatureExtractor
    from avel.io import write_json
    from avel.models.registry import ModelConfig, create_model
    from avel.train.checkpoint import CONFIG_FILE, RUN_FORMAT, save_model
    from avel.train.config import TrainConfig

    run = tmp_path_factory.mktemp("random-run")
    torch.manual_seed(0)
    cfg = ModelConfig(name="A+V-att", visual_grid=1)
    info = FeatureExtractor(ExtractorConfig(vgg19_weights=str(weights["vgg19_keras"]), vggish_weights=str(weights["vggish"]),
                                            frames_per_second=1, image_size=32)).info
    write_json(run / CONFIG_FILE, {"format": RUN_FORMAT, "avel_version": avel.__version__, "model": cfg.to_dict(),
                                   "train": TrainConfig().to_dict(),
                                   "data": {"root": None, "synthetic": False, "extractor": info,
                                            "categories": list(AVE_CATEGORIES)}})
    save_model(run, create_model(cfg), cfg, {})
    return run


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three 3-s clips (two share the stem 'a') and a corrupt file."""
    root = tmp_path_factory.mktemp("clips")
    spec = dict(seconds=3, fps=10, width=64, height=48, shape_seconds={1}, tone_seconds={1}, colour=(230, 40, 40),
                shape="square", tone_hz=440.0)
    paths = {"a": render_clip(root / "set" / "a.mp4", ClipSpec(seed=1, **spec)),
             "b": render_clip(root / "set" / "b.mp4", ClipSpec(seed=2, **spec)),
             "a2": render_clip(root / "other" / "a.mp4", ClipSpec(seed=3, **spec))}
    (root / "set" / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return paths


def wargs(weights) -> list[str]:
    return ["--vgg19-weights", str(weights["vgg19_keras"]), "--vggish-weights", str(weights["vggish"])]


def test_many_videos_one_corrupt_then_resume(tmp_path, weights, random_run, clips, capsys, monkeypatch):
    import os

    from avel.inference import pipeline
    from avel.inference.exports import EXPORTS
    from avel.train import checkpoint

    loads = []  # the model and the backbones are loaded once per call, not once per video
    real_load_run, real_extractor = checkpoint.load_run, pipeline.FeatureExtractor
    monkeypatch.setattr(checkpoint, "load_run", lambda *a, **k: loads.append("model") or real_load_run(*a, **k))
    monkeypatch.setattr(pipeline, "FeatureExtractor", lambda *a, **k: loads.append("backbones") or real_extractor(*a, **k))

    out = tmp_path / "out"
    listing = tmp_path / "more.txt"
    listing.write_text(f"# the second a.mp4\n{clips['a2']}\n")
    argv = ["localize", str(clips["a"].parent), str(listing), "--model", str(random_run), "--out", str(out),
            *wargs(weights), *FAST]
    capsys.readouterr()
    assert main(argv) == 1  # one video failed
    stdout, err = capsys.readouterr()
    assert err.count("\n") == 1 and "bad.mp4" in err and err.startswith("avel: error: ")
    assert loads == ["model", "backbones"]
    summary = json.loads((out / "summary.json").read_text())
    status = {Path(r["output"]).name: r["status"] for r in summary["videos"]}
    assert status == {"a": "done", "b": "done", "bad": "failed", "a-2": "done"}
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 1}
    lines = stdout.splitlines()
    assert lines[0].split() == ["video", "status", "length", "events"] and "3 done, 0 skipped" in lines[-1]
    assert any(ln.startswith("bad.mp4") and "failed" in ln for ln in lines)
    for name, src in (("a", clips["a"]), ("a-2", clips["a2"]), ("b", clips["b"])):
        doc = json.loads((out / name / "events.json").read_text())
        assert doc["video"]["path"] == str(src) and len(doc["seconds"]) == 3
        assert all((out / name / f).is_file() for f in [*EXPORTS.values(), "index.html", "features.h5"])
    stamp = (out / "a" / "events.json").stat().st_mtime_ns

    # rerun: complete folders are skipped (events.json untouched), an incomplete one (an export deleted)
    # is redone, the corrupt file is tried again
    (out / "b" / "events.srt").unlink()
    assert main(argv) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert {Path(r["output"]).name: r["status"] for r in summary["videos"]} == \
        {"a": "skipped", "b": "done", "bad": "failed", "a-2": "skipped"}
    assert (out / "a" / "events.json").stat().st_mtime_ns == stamp and (out / "b" / "events.srt").is_file()
    # other settings (--threshold) redo every video
    os.remove(clips["a"].parent / "bad.mp4")
    capsys.readouterr()
    assert main([*argv, "--threshold", "0.5", "--json"]) == 0  # nothing failed: exit 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 0}
    assert json.loads((out / "a" / "events.json").read_text())["merging"]["threshold"] == 0.5


def test_page_plays_the_video_and_flags_synthetic_models(tmp_path, weights, random_run, clips, capsys, monkeypatch):
    import shutil

    synth_run = tmp_path / "synth-run"
    shutil.copytree(random_run, synth_run)
    doc = json.loads((synth_run / "config.json").read_text())
    doc["data"]["synthetic"] = True
    (synth_run / "config.json").write_text(json.dumps(doc))
    out = tmp_path / "page"
    capsys.readouterr()
    assert main(["localize", str(clips["b"]), "--model", str(synth_run), "--out", str(out), *wargs(weights), *FAST]) == 0
    stdout, err = capsys.readouterr()
    assert "trained on AVE-Synth" in err and "not meaningful" in err
    events = json.loads((out / "events.json").read_text())
    assert events["model"]["trained_on_synthetic"] is True and any("AVE-Synth" in w for w in events["warnings"])
    page = (out / "index.html").read_text()
    assert "Synthetic model." in page
    # the video plays in the page (small: copied beside it); the timeline has one cell per second and seeks
    assert re.search(r'<video id="video" controls[^>]*src="video.mp4"', page) and (out / "video.mp4").is_file()
    assert page.count('<div class="sec"') == 3 and 'id="cursor"' in page and "v.currentTime = t" in page
    assert "Attention is flat in every second" in page  # a 1x1 map has nothing to single out
    assert events["attention"] == {"peak_to_mean": [1.0, 1.0, 1.0], "flat_below": 2.0, "flat_seconds": 3}
    # a large video is linked by its path relative to the page, and large picture sets are linked files
    from avel.inference import pictures

    monkeypatch.setattr(pictures, "VIDEO_COPY_MAX_BYTES", 0)
    monkeypatch.setattr(pictures, "PAGE_EMBED_MAX_BYTES", 0)
    linked = tmp_path / "deep" / "linked"
    assert main(["localize", str(clips["b"]), "--model", str(random_run), "--out", str(linked), *wargs(weights),
                 *FAST]) == 0
    page = (linked / "index.html").read_text()
    src = re.search(r'<video id="video"[^>]*src="([^"]+)"', page).group(1)
    assert not src.startswith("/") and (linked / src).resolve() == clips["b"].resolve()
    assert not (linked / "video.mp4").exists() and "data:image/png" in page  # the chart alone stays embedded
    assert 'src="attention/second_000.png"' in page and "Synthetic model." not in page


def test_long_video_page_stays_within_the_page(tmp_path):
    from avel.inference.pictures import MAX_AXIS_TICKS, write_html

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=600)  # a 10-minute video
    doc = events_document(probs, ["dog", "car", "background"], 2, video={
        "name": "long.mp4", "duration": 600.0, "stated_duration": 600.0, "num_segments": 600, "has_audio": True},
        model={"name": "A+V-att", "run": "r", "has_attention": True}, extractor={}, windows={"length": 10, "hop": 5},
        attention={"peak_to_mean": [1.0] * 600, "flat_below": 2.0, "flat_seconds": 600}, warnings=[])
    pictures = [bytes(8000)] * 600  # 4.8 MB of pictures: linked, not embedded
    write_html(tmp_path / "index.html", doc, pictures, None, b"png", picture_files=[f"attention/second_{t:03d}.png"
                                                                                    for t in range(600)])
    page = (tmp_path / "index.html").read_text()
    assert page.count('<div class="sec"') == 600 and "min-width:0" in page  # cells shrink to fit
    assert len(re.findall(r'<div class="axis">(.*?)</div>', page)[0].split("<span")) - 1 <= MAX_AXIS_TICKS
    assert page.count('src="attention/second_') == 600 and "data:image/png;base64,cG5n" in page  # chart embedded
    assert "img{max-width:100%" in page and len(page) < 400_000


def test_truncated_container_warns_with_both_durations(tmp_path, weights, random_run, capsys):
    from avel.features.decode import ClipReader

    full = render_clip(tmp_path / "full.mkv", ClipSpec(seconds=6, fps=10, width=64, height=48))
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])  # Matroska states its length up front: 6 s stated, ~3 decode
    reader = ClipReader(cut, frames_per_second=1, image_size=32)
    list(reader.segments())
    assert reader.stated_duration == pytest.approx(6.0, abs=0.1) and reader.duration < 4.5
    whole = ClipReader(full, frames_per_second=1, image_size=32)
    list(whole.segments())
    assert whole.warnings == []  # stated and decoded agree
    capsys.readouterr()
    out = tmp_path / "loc"
    assert main(["localize", str(cut), "--model", str(random_run), "--out", str(out), "--no-pictures",
                 *wargs(weights), *FAST]) == 0
    err = capsys.readouterr().err
    doc = json.loads((out / "events.json").read_text())
    decoded, stated = doc["video"]["duration"], doc["video"]["stated_duration"]
    assert decoded == pytest.approx(reader.duration, abs=1e-3) and stated == pytest.approx(reader.stated_duration)
    assert len(doc["seconds"]) == reader.num_segments
    message = f"the container states {stated:.2f} s but only {decoded:.2f} s of video decode"
    assert message in err and any(message in w for w in doc["warnings"])


def test_plain_progress_lines_off_a_terminal():
    import io

    from rich.console import Console

    from avel.progress import PlainProgress

    buf = io.StringIO()
    with PlainProgress(console=Console(file=buf, force_terminal=False), interval_s=3600) as bar:
        task = bar.add_task("clip decode", total=4)
        for _ in range(4):
            bar.advance(task)
        bar.update(task, completed=4)  # finished once: one line
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clip decode: 4/4 (100%), elapsed 0:00:0") and lines[0].endswith("done")
    buf = io.StringIO()
    with PlainProgress(console=Console(file=buf, force_terminal=False), interval_s=0) as bar:
        task = bar.add_task("windows", total=10)
        bar.update(task, completed=5)
    assert re.fullmatch(r"windows: 5/10 \(50%\), elapsed 0:00:00, ETA \S+\n", buf.getvalue())
