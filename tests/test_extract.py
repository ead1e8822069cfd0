"""`avel extract`: released layout, row order, decode-once, failures, resume, settings guard, sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from avel.cli import main
from avel.errors import AvelError
from avel.features.extract import PartStore, extract_shard, make_plan, merge, settings_id
from avel.features.extractor import ExtractorConfig, FeatureExtractor
from avel.features.render import ClipSpec, render_clip
from avel.data.splits import read_order, write_order

FAST = ["--frames-per-second", "1", "--image-size", "32", "--quiet"]
SHORT = [*FAST, "--seconds", "4"]  # the 10-s clips cut to 4 s: less compute where the length does not matter


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Small 10-s clips: two good ones with different content, a video-only one, a corrupt and an empty file."""
    d = tmp_path_factory.mktemp("clips")
    out = {
        "vidA": render_clip(d / "vidA.mp4", ClipSpec(fps=10, width=48, height=32, shape_seconds={2, 3},
                                                     tone_seconds={2, 3}, seed=1)),
        "vidB": render_clip(d / "vidB.mp4", ClipSpec(fps=10, width=48, height=32, shape_seconds={6},
                                                     tone_seconds={5, 6}, seed=2, colour=(30, 30, 230))),
        "silent": render_clip(d / "silent.mp4", ClipSpec(fps=10, width=48, height=32, audio=False)),
    }
    (d / "broken.mp4").write_bytes(out["vidA"].read_bytes()[:3000])
    (d / "empty.mp4").write_bytes(b"")
    out["broken"], out["empty"] = d / "broken.mp4", d / "empty.mp4"
    return out


def folder(tmp_path: Path, clips: dict[str, Path], names: list[str]) -> Path:
    d = tmp_path / "videos"
    d.mkdir()
    for n in names:
        (d / clips[n].name).symlink_to(clips[n])
    return d


def weight_args(weights) -> list[str]:
    return ["--vgg19-weights", str(weights["vgg19_keras"]), "--vggish-weights", str(weights["vggish"])]


def test_released_layout_row_order_and_failures(tmp_path, clips, weights, monkeypatch, capsys):
    videos = folder(tmp_path, clips, ["vidA", "vidB", "broken"])
    ann = tmp_path / "Annotations.txt"
    ann.write_text("Category&VideoID&Quality&StartTime&EndTime\n"
                   "Bark&vidB&good&5&7\nBark&vidA&good&2&4\nCat&gone&good&0&10\nCat&vidA&good&0&1\nBark&broken&good&1&2\n")
    write_order(tmp_path / "train_order.h5", np.array([3, 2, 0]))  # a release split file beside the annotations
    decoded = []
    from avel.features import decode

    original = decode.ClipReader.segments
    monkeypatch.setattr(decode.ClipReader, "segments", lambda self: (decoded.append(self.path.stem), original(self))[1])
    out = tmp_path / "ds"
    assert main(["extract", "--videos", str(videos), "--annotations", str(ann), "--out", str(out),
                 *weight_args(weights), *FAST]) == 0
    assert sorted(decoded) == ["broken", "vidA", "vidB"]  # vidA serves two rows, decoded once
    with h5py.File(out / "audio_feature.h5") as fa, h5py.File(out / "visual_feature.h5") as fv:
        audio, visual = fa["avadataset"][()], fv["avadataset"][()]
    assert audio.shape == (3, 10, 128) and visual.shape == (3, 10, 1, 1, 512)
    assert audio.dtype == visual.dtype == np.float64
    assert (out / "Annotations.txt").read_text().splitlines() == [
        "Bark&vidB&good&5&7", "Bark&vidA&good&2&4", "Cat&vidA&good&0&1"]
    assert read_order(out / "train_order.h5").tolist() == [2, 0]  # source rows 3, 0 renumbered; row 2 failed
    with h5py.File(out / "labels.h5") as f:
        labels = f["avadataset"][()]
    assert labels.shape == (3, 10, 29) and labels[0, 5:7, 0].all() and labels[0, 4, 28] == 1  # Bark = class 0
    assert labels[2, 0, 1] == 1 and labels[2, 1:, 28].all()  # Cat = class 1 (from the full file's order)
    assert np.array_equal(audio[1], audio[2]) and np.array_equal(visual[1], visual[2])
    assert not np.allclose(audio[0], audio[1])
    # the tone seconds of vidA (2, 3) stand out from its silent seconds in the audio features
    quiet = [t for t in range(10) if t not in (2, 3)]
    assert np.abs(audio[1, 2] - audio[1, 3]).max() < np.abs(audio[1, 2] - audio[1, quiet].mean(0)).max()
    with h5py.File(out / "timestamps.h5") as ft:
        spans, times = ft["avadataset"][()], ft["frame_times"][()]
    assert np.array_equal(spans[0], np.stack([np.arange(10), np.arange(1, 11)], 1))
    assert times.shape == (3, 10, 1) and np.all((times[..., 0] >= np.arange(10)) & (times[..., 0] < np.arange(1, 11)))
    meta = json.loads((out / "extractor.json").read_text())
    assert [r["source_row"] for r in meta["rows"]] == [0, 1, 3]
    assert meta["vgg19_preprocessing"] == "keras" and meta["image_size"] == 32 and meta["frames_per_second"] == 1
    failures = dict(line.split("\t")[::2] for line in (out / "failures.txt").read_text().splitlines())
    assert set(failures) == {"gone", "broken"}
    assert "no video file named gone" in failures["gone"]
    assert (out / "parts").is_dir()  # kept while failures remain, so a rerun retries only those
    assert "1 videos failed" not in capsys.readouterr().out


def test_resume_after_crash_loses_only_the_video_in_flight(tmp_path, clips, weights):
    videos = folder(tmp_path, clips, ["vidA", "vidB", "silent"])
    plan = make_plan(videos)
    ex = FeatureExtractor(ExtractorConfig(vgg19_weights=str(weights["vgg19"]), vggish_weights=str(weights["vggish"]),
                                          frames_per_second=1, image_size=32))
    real = ex.extract_many
    requested: list[list[str]] = []

    def crash_after_first(jobs, num_segments=None):
        jobs = list(jobs)
        requested.append([k for k, _ in jobs])
        for i, item in enumerate(real(jobs, num_segments)):
            if i == 1:
                raise KeyboardInterrupt  # killed while the second video was in flight
            yield item

    ex.extract_many = crash_after_first
    with pytest.raises(KeyboardInterrupt):
        extract_shard(plan, ex, tmp_path / "ds", 4, show_progress=False)
    parts = sorted(p.name for p in (tmp_path / "ds" / "parts").iterdir())
    assert parts == ["extractor.json", "silent.npz"]  # sorted names: silent, vidA, vidB; no temp files left
    ex.extract_many = lambda jobs, n=None: (requested.append([k for k, _ in jobs]), real(jobs, n))[1]
    assert extract_shard(plan, ex, tmp_path / "ds", 4, show_progress=False) == (2, 0)
    assert requested[-1] == ["vidA", "vidB"]
    result = merge(plan, tmp_path / "ds", ex.info)
    assert result.rows == 3 and not result.failures and not (tmp_path / "ds" / "parts").exists()
    # a later run (e.g. with one more video) restores the finished videos' parts from the final files
    requested.clear()
    assert extract_shard(plan, ex, tmp_path / "ds", 4, show_progress=False) == (0, 0) and requested == [[]]
    restored = PartStore(tmp_path / "ds").load("vidB", settings_id(ex.info))
    with h5py.File(tmp_path / "ds" / "visual_feature.h5") as f:
        assert np.array_equal(restored["visual"], f["avadataset"][2].astype(np.float32))
    assert merge(plan, tmp_path / "ds", ex.info).rows == 3
    meta = json.loads((tmp_path / "ds" / "extractor.json").read_text())
    silent = next(r for r in meta["rows"] if r["video"] == "silent")
    assert not silent["has_audio"] and "no audio track" in silent["warnings"][0]
    with h5py.File(tmp_path / "ds" / "audio_feature.h5") as f:
        audio = f["avadataset"][()]
    assert not audio[0].any() and audio[1:].any(axis=2).all()  # video-only clip: zero audio features
    with pytest.raises(AvelError, match=r"other settings \(frames_per_second, image_size, vgg19_sha256"):
        PartStore(tmp_path / "ds2").check_settings(ex.info)
        PartStore(tmp_path / "ds2").check_settings({**ex.info, "image_size": 64, "frames_per_second": 2,
                                                    "vgg19_sha256": "0"})


def test_nothing_extracted_exits_nonzero_with_one_line(tmp_path, clips, weights, capsys):
    videos = folder(tmp_path, clips, ["broken", "empty"])
    code = main(["extract", "--videos", str(videos), "--out", str(tmp_path / "ds"), *weight_args(weights), *SHORT])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("avel: error: ") and "no video could be extracted (2 failed" in err[-1]
    assert any("empty.mp4: empty file (0 bytes)" in line for line in err)
    assert not (tmp_path / "ds" / "audio_feature.h5").exists()
    assert len((tmp_path / "ds" / "failures.txt").read_text().splitlines()) == 2


def test_wrong_weights_one_line(tmp_path, clips, weights, capsys):
    videos = folder(tmp_path, clips, ["vidA"])
    code = main(["extract", "--videos", str(videos), "--out", str(tmp_path / "ds"), "--vgg19-weights",
                 str(weights["vggish"]), "--vggish-weights", str(weights["vggish"]), *SHORT])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"avel: error: {weights['vggish']}: VGG-19 weights lack")


def read_all(ds: Path) -> dict[str, np.ndarray]:
    out = {}
    for name in ("audio_feature", "visual_feature", "timestamps"):
        with h5py.File(ds / f"{name}.h5") as f:
            out[name] = f["avadataset"][()]
    return out


def test_sharding_torchrun_matches_single_process(tmp_path, clips, weights, capsys):
    videos = folder(tmp_path, clips, ["vidA", "vidB", "silent"])
    # one precision pinned for both: the shards and the single process must compute the same way
    base = ["extract", "--videos", str(videos), *weight_args(weights), *SHORT, "--precision", "fp32"]
    assert main([*base, "--out", str(tmp_path / "single")]) == 0
    single = read_all(tmp_path / "single")
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "single")]) == 0  # complete: nothing to do
    assert "already holds all 3 rows with these settings: nothing to do" in capsys.readouterr().out
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "avel", *base,
                           "--out", str(tmp_path / "ddp"), "--keep-parts"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 3 rows (3 videos)" in proc.stdout
    ddp = read_all(tmp_path / "ddp")
    for k in single:
        np.testing.assert_allclose(ddp[k], single[k], rtol=1e-5, atol=1e-5)
    # each rank wrote its own videos' parts (rank r: videos r, r+2, ...); a separate merge reproduces the files
    assert sorted(p.stem for p in (tmp_path / "ddp" / "parts").glob("*.npz")) == ["silent", "vidA", "vidB"]
    (tmp_path / "ddp" / "audio_feature.h5").unlink()
    assert main([*base, "--out", str(tmp_path / "ddp"), "--merge-only"]) == 0
    assert np.array_equal(read_all(tmp_path / "ddp")["audio_feature"], ddp["audio_feature"])
    assert main([*base, "--out", str(tmp_path / "x"), "--shard", "2/2"]) == 2
    assert "--shard 2/2: need 0 <= RANK < N" in capsys.readouterr().err


def test_videos_may_be_a_single_video_file(tmp_path, clips, weights, capsys):
    out = tmp_path / "ds"
    assert main(["extract", "--videos", str(clips["vidB"]), "--out", str(out), *weight_args(weights), *SHORT]) == 0
    assert (out / "videos.txt").read_text().splitlines() == ["vidB"]
    with h5py.File(out / "audio_feature.h5") as fa:
        assert fa["avadataset"].shape == (1, 4, 128)
    assert f"wrote 1 rows (1 videos) to {out}" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"\xff\xd8\xff\xe0 not text \x89", b"clip.mp4\x00\x00\x00"], ids=["binary", "nul"])
def test_a_video_list_that_is_not_text_is_one_line(tmp_path, content, capsys):
    listing = tmp_path / "videos.dat"
    listing.write_bytes(content)
    code = main(["extract", "--videos", str(listing), "--out", str(tmp_path / "ds"), *SHORT])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"avel: error: {listing}: neither a video file") and "UTF-8 text list" in err[0]
