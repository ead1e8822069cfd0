"""--precision int8: the quantized VGG-19 against fp32, the calibration cache (reused, rebuilt when corrupt
or made for other weights), and one line + exit 2 where the quantized engine is unavailable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from avel.cli import main
from avel.errors import AvelError
from avel.features import quantize
from avel.features.extractor import ExtractorConfig, FeatureExtractor
from avel.features.render import ClipSpec, render_clip
from avel.features.vgg19 import PREPROCESSING, VisualEncoder
from avel.features.weights import empty_net, he_init_, random_weight_files

SIZE = 64  # pixels: 2x2 pool5 maps, small enough for a 2-core test run
SHA = "a" * 64  # stands for a weights file's sha256

pytestmark = pytest.mark.skipif(quantize.unavailable_reason("cpu") is not None,
                                reason=f"int8 unavailable here: {quantize.unavailable_reason('cpu')}")


@pytest.fixture(autouse=True)
def small_calibration(monkeypatch, tmp_path):
    """Small calibration clips and a private cache folder ($AVEL_CACHE) per test."""
    monkeypatch.setattr(quantize, "CALIBRATION_CLIP_SIZE", (96, 64))
    monkeypatch.setenv("AVEL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trunk():
    return he_init_(empty_net("vgg19"), 0).eval()


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> torch.Tensor:
    """Decoded frames of a clip unlike the calibration clips (other colours, seed)."""
    from avel.features.decode import ClipReader

    clip = render_clip(tmp_path_factory.mktemp("q") / "clip.mp4",
                       ClipSpec(seconds=2, fps=25, width=96, height=64, shape_seconds={0}, seed=7,
                                colour=(40, 200, 90), background=(120, 60, 160)))
    return torch.from_numpy(np.concatenate([s.frames for s in ClipReader(clip, 4, SIZE).segments()]))


def encoders(trunk, **kw) -> tuple[VisualEncoder, VisualEncoder]:
    pre = PREPROCESSING["keras"]
    q = quantize.quantized_trunk(trunk, pre, kw.pop("sha", SHA), SIZE, **kw)
    return VisualEncoder(trunk, pre).eval(), VisualEncoder(q, pre).eval()


def test_int8_trunk_is_close_to_fp32_on_a_random_backbone(trunk, frames):
    fp32, int8 = encoders(trunk)
    with torch.inference_mode():
        exact, approx = fp32(frames), int8(frames)
    assert approx.shape == exact.shape == (len(frames), 2, 2, 512) and approx.dtype == torch.float32
    err = quantize.relative_error(approx, exact)
    assert 0 < err < 0.1  # quantized (not the fp32 net), and close to it
    # the int8 model really holds quantized convolutions (the first one stays fp32 by design)
    kinds = {type(m).__name__ for m in int8.trunk.modules()}
    assert "ConvReLU2d" in kinds and any("Quantized" in str(type(m)) or "quantized" in type(m).__module__
                                         for m in int8.trunk.modules())


def count_calibrations(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = quantize.calibrate
    monkeypatch.setattr(quantize, "calibrate", lambda net, fr: (calls.append(len(fr)), real(net, fr)))
    return calls


def test_calibration_is_cached_and_reused(trunk, frames, monkeypatch, capsys):
    calls = count_calibrations(monkeypatch)
    _, first = encoders(trunk)
    key = quantize.calibration_key(SHA, "keras", SIZE)
    path = quantize.calibration_path(key)
    assert path.is_file() and path.parent.parent.name == "weights" and SHA[:16] in path.name
    _, again = encoders(trunk)
    assert len(calls) == 1  # the second build read the cache
    with torch.inference_mode():
        assert torch.equal(first(frames), again(frames))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("damage", ["garbage", "truncated", "nan"])
def test_corrupt_cache_is_rebuilt_not_trusted(trunk, frames, monkeypatch, capsys, damage):
    _, fresh = encoders(trunk)
    path = quantize.calibration_path(quantize.calibration_key(SHA, "keras", SIZE))
    good = path.read_bytes()
    good_state = {k: v.clone() for k, v in load_file(str(path)).items()}  # a copy: the file is overwritten
    if damage == "garbage":
        path.write_bytes(b"not a calibration")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        state = {k: v.clone() for k, v in load_file(str(path)).items()}
        name = next(k for k in state if k.endswith("max_val"))
        state[name] = torch.full_like(state[name], float("nan"))
        save_file(state, str(path), metadata=meta)
    calls = count_calibrations(monkeypatch)
    _, rebuilt = encoders(trunk)
    assert len(calls) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "calibrating again" in err
    rebuilt_state = load_file(str(path))  # the calibration input is fixed: rebuilding gives the same ranges
    assert rebuilt_state.keys() == good_state.keys() and all(torch.equal(rebuilt_state[k], good_state[k])
                                                             for k in good_state)
    with torch.inference_mode():
        assert torch.equal(fresh(frames), rebuilt(frames))


def test_cache_made_for_other_weights_is_rebuilt(trunk, monkeypatch, capsys):
    encoders(trunk, sha="b" * 64)
    other = quantize.calibration_path(quantize.calibration_key("b" * 64, "keras", SIZE))
    mine = quantize.calibration_path(quantize.calibration_key(SHA, "keras", SIZE))
    mine.write_bytes(other.read_bytes())  # another weights file's calibration under this one's name
    calls = count_calibrations(monkeypatch)
    encoders(trunk)
    assert len(calls) == 1
    err = capsys.readouterr().err
    assert "made for other settings (weights_sha256)" in err and err.count("\n") == 1


def test_calibration_key_covers_what_changes_the_ranges():
    base = quantize.calibration_key(SHA, "keras", SIZE)
    for other in (quantize.calibration_key("b" * 64, "keras", SIZE),
                  quantize.calibration_key(SHA, "torchvision", SIZE), quantize.calibration_key(SHA, "keras", 224)):
        assert quantize.calibration_path(other) != quantize.calibration_path(base)


def test_extractor_int8_features_close_to_fp32_and_recorded(tmp_path):
    weights = random_weight_files(tmp_path / "w")
    clip = render_clip(tmp_path / "c.mp4", ClipSpec(seconds=2, fps=25, width=96, height=64,
                                                    shape_seconds={1}, tone_seconds={1}, seed=3))
    cfg = dict(vgg19_weights=str(weights["vgg19"]), vggish_weights=str(weights["vggish"]), frames_per_second=4,
               image_size=SIZE, device="cpu")
    fp32 = FeatureExtractor(ExtractorConfig(**cfg, precision="fp32")).extract(clip)
    ex = FeatureExtractor(ExtractorConfig(**cfg, precision="int8"))
    int8 = ex.extract(clip)
    assert quantize.relative_error(int8.visual, fp32.visual) < 0.1
    np.testing.assert_array_equal(int8.audio, fp32.audio)  # VGGish stays fp32
    rec = ex.info["precision"]
    assert rec["compute"] == "int8" and rec["int8"]["engine"] == quantize.engine()
    assert rec["int8"]["calibration"].endswith(quantize.CALIBRATION_SUFFIX)


@pytest.mark.parametrize("how", ["no engine", "no torch.ao"])
def test_int8_unavailable_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, how):
    if how == "no engine":
        monkeypatch.setattr(quantize, "engine", lambda: None)
    else:
        import sys

        monkeypatch.setitem(sys.modules, "torch.ao.quantization.quantize_fx", None)  # import raises ImportError
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(b"never decoded")
    rc = main(["extract", "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "o"), "--precision", "int8",
               "--device", "cpu", "--quiet"])  # refused before the weights are even looked for
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "int8" in err and "use --precision auto, bf16 or fp32" in err
    with pytest.raises(AvelError, match="int8"):
        quantize.require_int8("cpu")


def test_int8_refused_on_cuda_with_what_to_use():
    assert "use --precision auto or bf16" in quantize.unavailable_reason("cuda")


def test_speedup_signal_for_auto(monkeypatch):
    monkeypatch.setattr(quantize, "_speedup", {})
    monkeypatch.setattr(quantize, "_probe", lambda: 3.0)
    assert quantize.int8_speedup() == 3.0
    monkeypatch.setattr(quantize, "_speedup", {})
    monkeypatch.setattr(quantize, "engine", lambda: None)
    assert quantize.int8_speedup() is None
