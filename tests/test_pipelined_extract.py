"""The pipelined extractor (decode thread, audio thread, VGG-19 on the caller, each decoded frame through VGG-19
once) gives exactly what running the steps one after another on every sampled frame gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avel.cli import main
from avel.features.decode import ClipReader
from avel.features.extractor import ExtractorConfig, FeatureExtractor
from avel.features.logmel import segment_examples
from avel.features.render import ClipSpec, render_clip

SIZE = 32  # pixels: 1x1 pool5 maps


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pipelined")
    return {
        # 10 frames/s sampled 16 times a second: 6 of each second's 16 samples repeat a decoded frame
        "slow": render_clip(d / "slow.mp4", ClipSpec(seconds=3, fps=10, width=64, height=48, shape_seconds={1},
                                                     tone_seconds={1, 2}, seed=1)),
        "fast": render_clip(d / "fast.mp4", ClipSpec(seconds=3, fps=25, width=64, height=48, shape_seconds={0, 2},
                                                     tone_seconds={2}, seed=2, colour=(30, 30, 230))),
        "silent": render_clip(d / "silent.mp4", ClipSpec(seconds=2, fps=25, width=64, height=48, audio=False)),
    }


@torch.inference_mode()
def sequential(ex: FeatureExtractor, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The steps one after another: decode all, VGG-19 on every sampled frame of a second, mean, then VGGish."""
    reader = ex.reader(path)
    visual = [ex.visual_net(torch.from_numpy(s.frames)).mean(dim=0).numpy() for s in reader.segments()]
    audio = (ex.audio_net(torch.from_numpy(segment_examples(reader.audio, reader.num_segments))).numpy()
             if reader.has_audio else np.zeros((reader.num_segments, 128), np.float32))
    return np.stack(visual), audio


@pytest.mark.parametrize("batch_size", [16, 7])
def test_pipelined_equals_sequential(weights, clips, batch_size):
    ex = FeatureExtractor(ExtractorConfig(vgg19_weights=str(weights["vgg19"]), vggish_weights=str(weights["vggish"]),
                                          frames_per_second=16, image_size=SIZE, batch_size=batch_size,
                                          device="cpu", precision="fp32"))
    results = dict(ex.extract_many([(k, p) for k, p in clips.items()]))
    for key, path in clips.items():
        visual, audio = sequential(ex, path)
        assert np.array_equal(results[key].visual, visual), key
        assert np.array_equal(results[key].audio, audio), key
    assert ex.stats.reused >= 6 * 3  # the 10-frames/s clip: each repeated sample computed once
    assert ex.stats.frames + ex.stats.reused == 16 * (3 + 3 + 2)


def test_no_frame_computed_twice(weights, clips, monkeypatch):
    ex = FeatureExtractor(ExtractorConfig(vgg19_weights=str(weights["vgg19"]), vggish_weights=str(weights["vggish"]),
                                          frames_per_second=16, image_size=SIZE, device="cpu", precision="fp32"))
    seen: list[bytes] = []
    real = ex.visual_net.forward
    monkeypatch.setattr(ex.visual_net, "forward", lambda x: (seen.extend(f.numpy().tobytes() for f in x), real(x))[1])
    ex.extract(clips["slow"])
    decoded = {s.times.tobytes() for s in ClipReader(clips["slow"], 16, SIZE).segments()}
    assert len(seen) == len(set(seen)) and decoded  # every frame VGG-19 saw was a different image


@pytest.mark.parametrize("command", ["extract", "localize"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_frames_per_second_option_is_validated(tmp_path, capsys, command, value):
    args = (["extract", "--videos", str(tmp_path), "--out", str(tmp_path / "o")] if command == "extract"
            else ["localize", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as info:
        main([*args, "--frames-per-second", value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "argument --frames-per-second" in err
    assert ("must be >= 1" in err) if value != "two" else ("expected an integer" in err)
