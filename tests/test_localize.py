"""`avel localize`: windows, event spans, and the end-to-end alignment test from raw video to events."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from avel.cli import main
from avel.errors import AvelError
from avel.features.extracted import ExtractedSet
from avel.features.render import ALIGNMENT_CLASSES, ClipSpec, make_alignment_set, render_clip
from avel.features.weights import random_weight_files
from avel.localize.events import events_document, merge_spans
from avel.localize.infer import window_starts, windowed_predict
from avel.models.registry import ModelOutput


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    return random_weight_files(tmp_path_factory.getbasetemp() / "avel-random-weights")


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
    assert doc["events"][1] == {"category": "c", "class_index": 2, "start": 4, "end": 7, "confidence": 0.6}


def test_overlay_marks_the_attended_cell():
    from avel.localize.pictures import overlay

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
    assert re.findall(r'src="(?!data:)', page) == [] and page.count('src="data:image/png;base64,') == 11
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
    from avel.localize.pipeline import localize_video

    warnings: list[str] = []
    with pytest.raises(AvelError, match="the model expects 1x1 visual maps; --image-size 64 gives 2x2"):
        localize_video(held_out.path, run, tmp_path / "y", ExtractorConfig(
            vgg19_weights=str(weights["vgg19_keras"]), vggish_weights=str(weights["vggish"]), image_size=64,
            frames_per_second=1), window=10, hop=5, log=warnings.append)
    assert warnings == ["warning: the run records no feature extractor (trained on features avel did not extract?): "
                        "assuming the authors' extractor (Keras VGG-19 + VGGish) matches"]
