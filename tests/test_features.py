"""Feature extraction building blocks: frame sampling, audio decoding, log-mel, VGG-19, VGGish, weights."""

from __future__ import annotations

import math
from fractions import Fraction

import h5py
import numpy as np
import pytest
import torch

from avel.errors import AvelError
from avel.features.audio import SAMPLE_RATE
from avel.features.decode import count_segments, read_clip, sample_indices, segment_targets
from avel.features.logmel import segment_examples
from avel.features.render import ClipSpec, render_clip, tone_track
from avel.features.vgg19 import PREPROCESSING, VisualEncoder, keras_to_state_dict
from avel.features.weights import check_state_dict, empty_net, he_init_, load_weights


# ---------------------------------------------------------------- frame sampling by timestamp

def test_targets_sit_evenly_inside_each_second():
    t = segment_targets(10, 16)
    assert t.shape == (10, 16)
    assert np.allclose(t[0], [(k + 0.5) / 16 for k in range(16)])
    assert np.all(np.floor(t) == np.arange(10)[:, None])  # every target inside its own second


def test_sampling_25fps_by_hand():
    times = np.arange(250) / 25
    idx = sample_indices(times, segment_targets(10, 16))
    # (k + 0.5) / 16 * 25 = 1.5625 (k + 0.5), floored
    assert idx[0].tolist() == [0, 2, 3, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19, 21, 22, 24]
    assert idx[3].tolist() == [75 + i for i in idx[0]]  # same pattern one second = 25 frames later
    assert idx.max() == 249


@pytest.mark.parametrize("fps", [25, 30, Fraction(30000, 1001)])
def test_sampling_matches_floor_rule(fps):
    n = int(10 * fps)  # 250, 300, 299 frames
    times = np.arange(n) / float(fps)
    targets = segment_targets(10, 16)
    expected = np.minimum(np.floor(targets * float(fps) + 1e-9).astype(int), n - 1)
    assert np.array_equal(sample_indices(times, targets), expected)
    assert np.all(times[sample_indices(times, targets)] <= targets)  # never a frame from the future


def test_sampling_2997_drifts_from_frame_counting():
    """At 29.97 fps, sampling by an assumed 30 frames/second picks the wrong frames late in the clip."""
    times = np.arange(299) / (30000 / 1001)
    idx = sample_indices(times, segment_targets(10, 16))
    naive = np.floor(segment_targets(10, 16) * 30).astype(int)  # assumes 30 fps
    assert idx[9, -1] == 298 and naive[9, -1] == 299  # frame 299 does not even exist
    assert np.all(times[idx] <= segment_targets(10, 16)) and np.all(segment_targets(10, 16) - times[idx] < 1001 / 30000)


def test_sampling_variable_frame_rate_by_hand():
    times = np.array([0.0, 0.1, 0.15, 0.5, 0.52, 0.9, 1.3, 1.31, 1.95])
    idx = sample_indices(times, segment_targets(2, 4))  # targets .125 .375 .625 .875 | 1.125 1.375 1.625 1.875
    assert idx.tolist() == [[1, 2, 4, 4], [5, 7, 7, 7]]


def test_clip_three_frames_short():
    times = np.arange(247) / 25  # 10 s at 25 fps would be 250 frames; the last ends at 9.88 s
    assert count_segments(247 / 25) == 10
    idx = sample_indices(times, segment_targets(10, 16))
    assert idx[9].tolist() == [225, 227, 228, 230, 232, 233, 235, 236, 238, 239, 241, 242, 244, 246, 246, 246]


def test_count_segments():
    assert [count_segments(d) for d in (0.5, 0.8, 1.0, 9.88, 10.0, 12.3, 12.8)] == [0, 1, 1, 10, 10, 12, 13]


@pytest.mark.parametrize("spec", [
    ClipSpec(seconds=10, fps=Fraction(30000, 1001)),
    ClipSpec(seconds=10 - 3 / 25, fps=25),
    ClipSpec(seconds=3, frame_times=[0.0, 0.07, 0.3, 0.31, 0.62, 1.1, 1.15, 1.9, 2.2, 2.4, 2.45, 2.9, 2.95]),
], ids=["29.97fps", "3-frames-short", "vfr"])
def test_decoder_samples_by_timestamp(tmp_path, spec):
    path = render_clip(tmp_path / "clip.mp4", spec)
    clip = read_clip(path, frames_per_second=16, image_size=32)
    times = spec.times()
    assert clip.num_segments == round(spec.seconds)
    expected = times[sample_indices(times, segment_targets(clip.num_segments, 16))]
    assert np.allclose(clip.frame_times, expected, atol=1e-4)
    assert clip.frames.shape == (clip.num_segments, 16, 32, 32, 3)


def test_decoded_frame_shows_its_second(tmp_path):
    """Pixels, not just timestamps: the shape is on screen exactly in the frames of its seconds."""
    spec = ClipSpec(seconds=6, fps=Fraction(30000, 1001), shape_seconds={2, 5}, colour=(240, 20, 20),
                    width=64, height=64)
    clip = read_clip(render_clip(tmp_path / "c.mp4", spec), frames_per_second=8, image_size=64)
    red = (clip.frames[..., 0].astype(int) - clip.frames[..., 1]).max(axis=(2, 3)) > 100  # (T, F)
    assert red.tolist() == [[t in spec.shape_seconds] * 8 for t in range(6)]


def test_resize_modes(tmp_path):
    """stretch (the authors): whole frame squeezed to a square; crop: short side, centre square."""
    spec = ClipSpec(seconds=1, fps=10, width=96, height=64, shape_seconds={0}, colour=(240, 20, 20))
    path = render_clip(tmp_path / "r.mp4", spec)
    stretch = read_clip(path, frames_per_second=1, image_size=32, resize="stretch").frames[0, 0]
    crop = read_clip(path, frames_per_second=1, image_size=32, resize="crop").frames[0, 0]
    keep = read_clip(path, frames_per_second=1, image_size=48, resize="keep").frames[0, 0]  # display only
    assert stretch.shape == crop.shape == (32, 32, 3) and keep.shape == (32, 48, 3)
    red = lambda img: (img[..., 0].astype(int) - img[..., 1] > 100).mean()  # noqa: E731
    assert red(stretch) == pytest.approx(32 * 32 / (96 * 64), abs=0.03)  # the 32-px square: 1/6 of the frame
    assert np.array_equal(crop, keep[:, 8:40])  # crop = the centre of the frame scaled to a 32-px short side
    with pytest.raises(AvelError, match="unknown resize mode 'squash'"):
        read_clip(path, resize="squash")


# ---------------------------------------------------------------- audio decoding

def test_audio_is_mono_16k_and_aligned(tmp_path):
    """AAC, 44.1 kHz stereo in, 16 kHz mono out; the tone occupies exactly its seconds."""
    spec = ClipSpec(seconds=6, tone_seconds={3, 4}, tone_hz=440)
    clip = read_clip(render_clip(tmp_path / "a.mp4", spec), frames_per_second=1, image_size=32)
    wave = clip.audio
    assert clip.has_audio and wave.dtype == np.float32 and wave.shape == (6 * SAMPLE_RATE,)
    rms = np.sqrt((wave.reshape(6, SAMPLE_RATE) ** 2).mean(axis=1))
    assert np.all(rms[[3, 4]] > 0.15) and np.all(rms[[0, 1, 2, 5]] < 0.05)
    onset = np.argmax(np.abs(wave) > 0.2) / SAMPLE_RATE
    assert abs(onset - 3.0) < 0.005
    spectrum = np.abs(np.fft.rfft(wave[3 * SAMPLE_RATE:4 * SAMPLE_RATE]))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1-s window: bin k is k Hz


def test_audio_placed_by_timestamp_lossless(tmp_path):
    """PCM audio starting 0.5 s into the clip: zeros first, then the exact samples."""
    spec = ClipSpec(seconds=3, audio_codec="pcm_s16le", audio_rate=SAMPLE_RATE, audio_delay=0.5, tone_seconds={1})
    clip = read_clip(render_clip(tmp_path / "p.mkv", spec), frames_per_second=1, image_size=32)
    ref = np.round(tone_track(spec, SAMPLE_RATE)[0] * 32767) / 32767
    assert np.all(clip.audio[:SAMPLE_RATE // 2] == 0)
    assert np.abs(clip.audio[SAMPLE_RATE // 2:] - ref).max() < 1.5 / 32767


def test_video_without_audio_gives_zeros_and_warning(tmp_path):
    clip = read_clip(render_clip(tmp_path / "v.mp4", ClipSpec(seconds=2, audio=False)), image_size=32)
    assert not clip.has_audio and not clip.audio.any() and clip.audio.shape == (2 * SAMPLE_RATE,)
    assert any("no audio track" in w for w in clip.warnings)


@pytest.mark.parametrize("make,reason", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(b"\x00garbage" * 500), "not a readable media file"),
    (lambda p: render_clip(p, ClipSpec(seconds=2, video=False)), "no video stream (audio-only"),
])
def test_bad_files_one_line_reason(tmp_path, make, reason):
    path = tmp_path / "bad.mp4"
    make(path)
    with pytest.raises(AvelError, match=reason.replace("(", r"\(")) as exc:
        read_clip(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_truncated_file(tmp_path):
    good = render_clip(tmp_path / "good.mkv", ClipSpec(seconds=10, audio_codec="pcm_s16le", audio_rate=SAMPLE_RATE))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(AvelError, match="need 10 whole seconds"):
        read_clip(cut, image_size=32, frames_per_second=1, num_segments=10)


def test_fixed_segment_count_cuts_longer_clip(tmp_path):
    """Reading stops after the wanted seconds, but only once their audio (interleaved later in the file) is in."""
    path = render_clip(tmp_path / "l.mp4", ClipSpec(seconds=5, tone_seconds={2}))
    clip = read_clip(path, image_size=32, frames_per_second=2, num_segments=3)
    full = read_clip(path, image_size=32, frames_per_second=2)
    assert clip.num_segments == 3 and clip.audio.shape == (3 * SAMPLE_RATE,) and clip.frame_times.max() < 3
    assert np.array_equal(clip.audio, full.audio[:3 * SAMPLE_RATE]) and np.abs(clip.audio[-1600:]).max() > 0
    assert np.array_equal(clip.frames, full.frames[:3])


# ---------------------------------------------------------------- log-mel (independent numpy reference)

def reference_log_mel(x: np.ndarray) -> np.ndarray:
    """VGGish's log-mel written out from the published parameters, loop by loop."""
    win, hop, nfft, rate = 400, 160, 512, 16000
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(125.0), mel(7500.0)
    edges = [lo + i * (hi - lo) / 65 for i in range(66)]
    weights = np.zeros((nfft // 2 + 1, 64))
    for b in range(64):
        left, centre, right = edges[b], edges[b + 1], edges[b + 2]
        for i in range(1, nfft // 2 + 1):  # bin 0 (DC) belongs to no band
            m = mel(i * (rate / 2) / (nfft // 2))
            if left < m <= centre:
                weights[i, b] = (m - left) / (centre - left)
            elif centre < m < right:
                weights[i, b] = (right - m) / (right - centre)
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / win) for n in range(win)])
    rows = []
    for j in range(1 + (len(x) - win) // hop):
        spectrum = np.abs(np.fft.fft(x[j * hop:j * hop + win] * window, nfft))[: nfft // 2 + 1]
        rows.append(np.log(spectrum @ weights + 0.01))
    return np.array(rows)


def test_log_mel_matches_numpy_reference(tmp_path):
    """On a real decoded waveform (AAC tone + noise, resampled) plus a chirp: every 1-s example agrees."""
    spec = ClipSpec(seconds=3, tone_seconds={1, 2}, tone_hz=660)
    wave = read_clip(render_clip(tmp_path / "w.mp4", spec), frames_per_second=1, image_size=32).audio.astype(np.float64)
    t = np.arange(len(wave)) / SAMPLE_RATE
    wave += 0.3 * np.sin(2 * np.pi * (200 * t + 900 * t ** 2))  # chirp 200 -> 5600 Hz
    examples = segment_examples(wave, 3)
    assert examples.shape == (3, 96, 64) and examples.dtype == np.float32
    for s in range(3):
        ref = reference_log_mel(wave[s * SAMPLE_RATE:(s + 1) * SAMPLE_RATE])
        assert ref.shape == (98, 64)
        np.testing.assert_allclose(examples[s], ref[:96], rtol=1e-5, atol=1e-5)


def test_log_mel_tone_lands_in_its_band():
    f = 1000.0
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    ex = segment_examples(np.sin(2 * np.pi * f * t), 1)[0]
    mel = lambda x: 1127 * np.log1p(x / 700)  # noqa: E731
    centres = np.linspace(mel(125), mel(7500), 66)[1:-1]
    assert np.argmax(ex.mean(axis=0)) == np.argmin(np.abs(centres - mel(f)))
    assert np.allclose(segment_examples(np.zeros(100), 2), np.log(0.01))  # silence (and zero padding)


# ---------------------------------------------------------------- VGG-19

TORCHVISION_VGG19_CONVS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


def test_vgg19_keys_and_pool5_shape():
    m = he_init_(empty_net("vgg19"), seed=2)
    keys = list(m.state_dict())
    assert keys == [f"features.{i}.{p}" for i in TORCHVISION_VGG19_CONVS for p in ("weight", "bias")]
    enc = VisualEncoder(m, PREPROCESSING["torchvision"]).eval()
    with torch.inference_mode():
        assert enc(torch.zeros(1, 224, 224, 3, dtype=torch.uint8)).shape == (1, 7, 7, 512)
        assert enc(torch.zeros(1, 64, 96, 3, dtype=torch.uint8)).shape == (1, 2, 3, 512)


def _numpy_conv3x3(x: np.ndarray, k: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Channels-last 'same' 3x3 convolution (Keras semantics): x (H, W, C), k (3, 3, C, O)."""
    h, w, _ = x.shape
    pad = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, k.shape[3])) + b
    for dy in range(3):
        for dx in range(3):
            out += pad[dy:dy + h, dx:dx + w] @ k[dy, dx]
    return out


@pytest.mark.parametrize("name", ["keras", "torchvision"])
def test_preprocessing_and_first_layer_against_numpy(weights, name):
    """Keras h5 weights + BGR/mean input, or torchvision weights + RGB mean/std input: block1_conv1 by hand."""
    trunk = empty_net("vgg19")
    loaded = load_weights(str(weights["vgg19_keras" if name == "keras" else "vgg19"]), trunk, "vgg19")
    assert loaded.file_format == ("h5" if name == "keras" else "torch")
    enc = VisualEncoder(trunk, PREPROCESSING[name]).eval()
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    grabbed = {}
    trunk.features[0].register_forward_hook(lambda m, i, o: grabbed.update(out=o.clone()))  # before the in-place ReLU
    with torch.inference_mode():
        enc(torch.from_numpy(img)[None])
    if name == "keras":
        with h5py.File(weights["vgg19_keras"]) as f:
            k, b = f["block1_conv1/block1_conv1/kernel:0"][()], f["block1_conv1/block1_conv1/bias:0"][()]
        x = img[..., ::-1].astype(np.float64) - np.array([103.939, 116.779, 123.68])  # BGR, caffe means
    else:
        sd = torch.load(weights["vgg19"])
        k, b = sd["features.0.weight"].numpy().transpose(2, 3, 1, 0), sd["features.0.bias"].numpy()
        x = (img / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    ref = _numpy_conv3x3(x, k.astype(np.float64), b)
    np.testing.assert_allclose(grabbed["out"][0].permute(1, 2, 0).numpy(), ref, rtol=1e-4, atol=1e-3)


def test_keras3_layout_loads_same_numbers(tmp_path, weights):
    """Keras 3 .weights.h5 stores layers/NAME/vars/{0,1}; the same numbers must come out."""
    ref = keras_to_state_dict(weights["vgg19_keras"])
    with h5py.File(weights["vgg19_keras"]) as src, h5py.File(tmp_path / "k3.weights.h5", "w") as dst:
        for name in src.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else name
            dst[f"layers/{name}/vars/0"] = src[f"{name}/{name}/kernel:0"][()]
            dst[f"layers/{name}/vars/1"] = src[f"{name}/{name}/bias:0"][()]
    got = keras_to_state_dict(tmp_path / "k3.weights.h5")
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


# ---------------------------------------------------------------- VGGish

def test_vggish_keys_flatten_order_and_relu():
    m = empty_net("vggish")
    assert [k for k in m.state_dict() if k.endswith("weight")] == [
        "features.0.weight", "features.3.weight", "features.6.weight", "features.8.weight",
        "features.11.weight", "features.13.weight", "embeddings.0.weight", "embeddings.2.weight",
        "embeddings.4.weight"]
    he_init_(m, seed=1)
    x = torch.randn(3, 96, 64)
    with torch.inference_mode():
        out = m(x)
        # the torchvggish port: transpose(1, 3), transpose(1, 2), flatten (TensorFlow's NHWC order)
        f = m.features(x[:, None]).transpose(1, 3).transpose(1, 2).reshape(3, -1)
        assert torch.allclose(out, m.embeddings(f), atol=1e-5)
        assert not torch.allclose(out, m.embeddings(m.features(x[:, None]).reshape(3, -1)), atol=1e-3)
    assert out.shape == (3, 128) and (out >= 0).all()


# ---------------------------------------------------------------- weights files

def test_wrong_keys_and_shapes_are_one_line_errors(tmp_path, weights):
    sd = torch.load(weights["vgg19"])
    torch.save({k.replace("features", "layers"): v for k, v in list(sd.items())[:4]}, tmp_path / "renamed.pth")
    with pytest.raises(AvelError, match=r"lack 32 of 32 expected keys \(first: features.0.weight; "
                                        r"file has e.g. layers.0.weight\): not a torchvision vgg19 state dict"):
        load_weights(str(tmp_path / "renamed.pth"), empty_net("vgg19"), "vgg19")
    sd["features.34.weight"] = torch.zeros(256, 512, 3, 3)
    with pytest.raises(AvelError, match=r"VGG-19 weights: features.34.weight has shape \(256, 512, 3, 3\), "
                                        r"expected \(512, 512, 3, 3\)"):
        check_state_dict(sd, empty_net("vgg19"), "vgg19", tmp_path / "x.pth")
    (tmp_path / "junk.pth").write_bytes(b"not weights")
    with pytest.raises(AvelError, match="not a PyTorch weights file"):
        load_weights(str(tmp_path / "junk.pth"), empty_net("vgg19"), "vgg19")
    with pytest.raises(AvelError, match=r"VGGish weights lack 16 of 18 .*not a torchvggish state dict"):
        load_weights(str(weights["vgg19"]), empty_net("vggish"), "vggish")  # VGG-19 weights offered as VGGish
    with pytest.raises(AvelError, match="h5 weights are supported for VGG-19 .Keras. only"):
        load_weights(str(weights["vgg19_keras"]), empty_net("vggish"), "vggish")


def test_torchvision_full_state_dict_accepted(tmp_path, weights):
    """A whole torchvision vgg19 state dict (with classifier.*) loads; only features.* are used."""
    sd = torch.load(weights["vgg19"])
    sd["classifier.6.bias"] = torch.zeros(1000)
    sd = {f"module.{k}": v for k, v in sd.items()}  # saved from DataParallel
    torch.save({"state_dict": sd}, tmp_path / "full.pth")
    m = empty_net("vgg19")
    load_weights(str(tmp_path / "full.pth"), m, "vgg19")
    assert torch.equal(m.features[34].bias, sd["module.features.34.bias"])


def test_offline_named_weights_say_where_to_get_them(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AVEL_OFFLINE", "1")
    monkeypatch.setenv("AVEL_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(AvelError) as err:
        load_weights("torchvggish", empty_net("vggish"), "vggish")
    assert str(err.value) == (f"{tmp_path}: offline (AVEL_OFFLINE is set): 1 file(s) missing, each listed above "
                              "with its URL and where to put it; or pass --vggish-weights PATH")
    assert capsys.readouterr().err == (
        "avel: missing VGGish weights: AudioSet VGGish, PyTorch port (harritaylor/torchvggish) (~275 MB): download "
        "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth and put it at "
        f"{tmp_path / 'weights' / 'vggish-10086976.pth'}\n")
