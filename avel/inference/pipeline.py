"""The whole of `avel localize` for one video: extract features, predict, write every output.

`load_localizer` loads a run's model and the feature extractor it was trained with, once;
`localize_with` runs it on one video into one folder (skipped when that folder already holds
complete outputs made with the same video, model and settings). `localize_video` does both for a
single video; avel/inference/batch.py runs many videos with one Localizer.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avel.errors import AvelError
from avel.features.decode import DISPLAY_MODE, ClipReader, count_segments, probe_duration
from avel.features.extractor import ExtractorConfig, FeatureExtractor, incompatibilities
from avel.features.vgg19 import POOL5_STRIDE
from avel.io import read_json_if_exists, write_h5, write_json
from avel.inference.events import DEFAULT_MIN_DURATION, DEFAULT_THRESHOLD, events_document
from avel.inference.exports import EXPORTS, write_exports
from avel.inference.infer import window_starts, windowed_predict
from avel.inference.pictures import (GIF_MAX_SECONDS, attention_flatness, captioned, gif_bytes, overlay, png_bytes, probability_chart,
                                    write_html)
from avel.inference.progress import Stages
from avel.inference.runinfo import class_names, extractor_record, synthetic_warning, training_length

DISPLAY_SIZE = 320  # pixels: long side of the frames shown in the pictures
OUTPUTS = {"events": "events.json", "html": "index.html", "gif": "attention.gif", "pictures": "attention",
           "features": "features.h5"}
LOCALIZE_INPUTS = {"audio", "visual"}  # model inputs avel localize can extract from a video
OUTPUTS_FORMAT = 2  # bump when the outputs change: older folders are then redone, not skipped


@dataclass(frozen=True)
class LocalizeOptions:
    """How model output becomes events and files (CLI: avel localize; Python: localize_video)."""

    window: int | None = None  # s per inference window (None: the training clips' length)
    hop: int | None = None  # s between windows (None: half a window)
    threshold: float = DEFAULT_THRESHOLD  # minimum probability of the event class for a second to count, 0..1
    min_duration: float = DEFAULT_MIN_DURATION  # s: events shorter than this are dropped, >= 0
    pictures: bool = True  # heatmaps, GIF and index.html (False: events, exports and features only)
    redo: bool = False  # recompute even when the output folder is complete

    def validate(self) -> None:
        """Refuse out-of-range values before any work."""
        for name, value in (("window", self.window), ("hop", self.hop)):
            if value is not None and value < 1:
                raise AvelError(f"{name} must be >= 1 second, got {value}")
        if not 0.0 <= self.threshold <= 1.0:
            raise AvelError(f"threshold must be a probability in 0..1, got {self.threshold}")
        if not (self.min_duration >= 0.0 and np.isfinite(self.min_duration)):
            raise AvelError(f"min duration must be >= 0 seconds, got {self.min_duration}")


@dataclass
class Localizer:
    """A run's model, loaded once, with the feature extractor its features came from."""

    run_dir: Path
    doc: dict  # the run's config.json
    model: object  # nn.Module in eval mode, on the extractor's device
    model_name: str
    extractor: FeatureExtractor
    cfg: ExtractorConfig
    window: int  # s per inference window
    hop: int  # s between windows
    warnings: list[str] = field(default_factory=list)  # about the model: said once, recorded per video

    @property
    def synthetic(self) -> bool:
        """True when the run was trained on AVE-Synth (the generated stand-in, not real video)."""
        return bool((self.doc.get("data") or {}).get("synthetic"))


def check_extractor(expected: dict | None, actual: dict, where: str) -> list[str]:
    """Refuse features from another extractor than the model's; returns warnings (settings that only blur)."""
    if expected is None:
        return [f"{where}: assuming the authors' extractor (Keras VGG-19 + VGGish) matches"]
    diffs = [re.sub(r"'([0-9a-f]{12})[0-9a-f]{52}'", r"'\1...'", d)  # sha256: 12 hex digits tell them apart
             for d in incompatibilities(expected, actual)]
    if diffs:
        raise AvelError(f"the model was trained on features from another extractor ({where}): {'; '.join(diffs)}. "
                        "Pass the --vgg19-weights / --vggish-weights / --image-size / --resize used by avel extract")
    if expected.get("frames_per_second") != actual.get("frames_per_second"):
        return [f"frames per second {actual.get('frames_per_second')} differs from the training features' "
                f"{expected.get('frames_per_second')} (averages over fewer or more frames)"]
    return []


def load_localizer(run_dir: str | Path, cfg: ExtractorConfig, window: int | None = None, hop: int | None = None,
                   log: Callable[[str], None] | None = None) -> Localizer:
    """Load the model of `run_dir` and the extractor `cfg`, check they fit; warnings go to `log` once."""
    from avel.inference.runinfo import run_document
    from avel.models.registry import model_spec
    from avel.train.checkpoint import load_run

    log = log or stderr_log
    run_dir = Path(run_dir)
    doc = run_document(run_dir)
    model, model_cfg, _ = load_run(run_dir, device="cpu")
    missing = set(model_spec(model_cfg.name).inputs) - LOCALIZE_INPUTS
    if missing:
        raise AvelError(f"model {model_cfg.name} reads {', '.join(sorted(missing))}, which avel localize cannot "
                        "extract from a video (it extracts audio and visual features)", run_dir)
    expected, where = extractor_record(run_dir, doc)
    window = window or training_length(doc, expected)
    hop = hop or max(1, window // 2)
    LocalizeOptions(window=window, hop=hop).validate()
    extractor = FeatureExtractor(cfg)
    warnings = check_extractor(expected, extractor.info, where)
    synthetic = synthetic_warning(doc, run_dir)
    if synthetic:
        warnings.append(synthetic)
    for w in warnings:
        log(f"warning: {w}")
    grid = cfg.image_size // POOL5_STRIDE
    if grid != model_cfg.visual_grid:
        raise AvelError(f"the model expects {model_cfg.visual_grid}x{model_cfg.visual_grid} visual maps; "
                        f"--image-size {cfg.image_size} gives {grid}x{grid}", run_dir)
    return Localizer(run_dir=run_dir, doc=doc, model=model.to(extractor.device), model_name=model_cfg.name,
                     extractor=extractor, cfg=cfg, window=window, hop=hop, warnings=warnings)


def stderr_log(msg: str) -> None:
    print(f"avel: {msg}", file=sys.stderr)


def display_frames(video: Path, cfg: ExtractorConfig, num_segments: int,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(T, h, w, 3) the frame at the middle of each second, as the network saw its area."""
    mode = DISPLAY_MODE if cfg.resize == "stretch" else "crop"  # stretch: the map covers the whole frame
    reader = ClipReader(video, frames_per_second=1, image_size=DISPLAY_SIZE, resize=mode, num_segments=num_segments)
    frames = []
    for s in reader.segments():
        frames.append(s.frames[0])
        if progress is not None:
            progress(len(frames))
    return np.stack(frames)


def outputs_id(loc: Localizer, video: Path, options: LocalizeOptions) -> str:
    """Identity of a folder's outputs: the video file (size, mtime), the model, the extractor and the settings.
    A rerun with the same identity skips the video."""
    st = video.stat()
    weights = loc.run_dir / "model.safetensors"
    ident = {"format": OUTPUTS_FORMAT, "video": [str(video.resolve()), st.st_size, st.st_mtime_ns],
             "run": [str(loc.run_dir.resolve()), weights.stat().st_mtime_ns if weights.is_file() else None],
             "extractor": {k: v for k, v in loc.extractor.info.items() if k != "precision"},
             "window": loc.window, "hop": loc.hop, "threshold": options.threshold,
             "min_duration": options.min_duration, "pictures": options.pictures}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def expected_outputs(options: LocalizeOptions) -> list[str]:
    files = [OUTPUTS["events"], OUTPUTS["features"], *EXPORTS.values()]
    return files + ([OUTPUTS["html"]] if options.pictures else [])


def complete_outputs(out_dir: Path, ident: str, options: LocalizeOptions) -> dict | None:
    """The events document of a folder whose outputs are complete and made with identity `ident`, else None."""
    try:
        doc = read_json_if_exists(Path(out_dir) / OUTPUTS["events"])
    except AvelError:
        return None  # damaged: redo
    if not isinstance(doc, dict) or doc.get("outputs_id") != ident:
        return None
    return doc if all((Path(out_dir) / f).is_file() for f in expected_outputs(options)) else None


def localize_with(loc: Localizer, video: str | Path, out_dir: str | Path,
                  options: LocalizeOptions = LocalizeOptions(), stages: Stages | None = None,
                  log: Callable[[str], None] | None = None) -> dict:
    """Run a loaded model on one video; returns the events document (also out_dir/events.json).

    events.json is written last, so its presence (with this `outputs_id`) marks a complete folder;
    such a folder is returned as it is unless `options.redo`. The document's `status` is "done" or
    "skipped" (not stored).
    """
    options.validate()
    log = log or stderr_log
    stages = stages or Stages(None, "")
    video, out_dir = Path(video), Path(out_dir)
    if not video.is_file():
        raise AvelError("file not found", video)
    ident = outputs_id(loc, video, options)
    done = None if options.redo else complete_outputs(out_dir, ident, options)
    if done is not None:
        return {**done, "status": "skipped"}
    stated = probe_duration(video)
    expected_seconds = count_segments(stated) if stated else None
    stages.start("decode", expected_seconds)
    stages.start("features", expected_seconds)
    feats = loc.extractor.extract(video, progress=lambda stage, key, seconds: stages.set(stage, seconds))
    stages.finish("decode", feats.num_segments)
    stages.finish("features", feats.num_segments)
    warnings = [*loc.warnings, *feats.warnings]
    for w in feats.warnings:
        log(f"warning: {video}: {w}")
    stages.start("model windows", len(window_starts(feats.num_segments, loc.window, loc.hop)))
    probs, attention = windowed_predict(loc.model, feats.audio, feats.visual, loc.window, loc.hop,
                                        device=loc.extractor.device, precision=loc.extractor.precision,
                                        progress=lambda done, total: stages.set("model windows", done))
    stages.finish("model windows")
    names, background = class_names(loc.doc, probs.shape[1])
    data = loc.doc.get("data") or {}
    result = events_document(
        probs, names, background, threshold=options.threshold, min_duration=options.min_duration,
        video={"path": str(video), "name": video.name, "duration": round(feats.duration, 3),
               "stated_duration": None if stated is None else round(stated, 3),
               "num_segments": feats.num_segments, "has_audio": feats.has_audio},
        model={"run": str(loc.run_dir), "name": loc.model_name, "has_attention": attention is not None,
               "trained_on": "AVE-Synth (synthetic stand-in)" if loc.synthetic else (data.get("root") or "not recorded"),
               "trained_on_synthetic": loc.synthetic},
        extractor={k: v for k, v in loc.extractor.info.items() if k != "rows"},
        windows={"length": loc.window, "hop": loc.hop},
        attention=None if attention is None else attention_flatness(attention),
        warnings=warnings, outputs_id=ident)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_h5(out_dir / OUTPUTS["features"], {"audio": feats.audio, "visual": feats.visual,
                                              "frame_times": feats.frame_times,
                                              "probabilities": probs.astype(np.float32),
                                              **({"attention": attention.astype(np.float32)}
                                                 if attention is not None else {})})
    write_exports(out_dir, result)
    if options.pictures:
        stages.start("frames", feats.num_segments)
        frames = display_frames(video, loc.cfg, feats.num_segments, progress=lambda n: stages.set("frames", n))
        stages.finish("frames")
        stages.start("pictures", feats.num_segments)
        write_pictures(out_dir, result, probs, attention, frames, video, progress=lambda n: stages.set("pictures", n))
        stages.finish("pictures")
    write_json(out_dir / OUTPUTS["events"], result)
    stages.close()
    return {**result, "status": "done"}


def localize_video(video: str | Path, run_dir: str | Path, out_dir: str | Path, cfg: ExtractorConfig,
                   window: int | None = None, hop: int | None = None, pictures: bool = True, log=None,
                   threshold: float = DEFAULT_THRESHOLD, min_duration: float = DEFAULT_MIN_DURATION,
                   redo: bool = False, progress: bool = False) -> dict:
    """Load the model of `run_dir` and localize one video into `out_dir` (holding its lock); returns the
    events document (also written to out_dir/events.json)."""
    from avel.io import output_lock
    from avel.inference.progress import progress_bar

    options = LocalizeOptions(window=window, hop=hop, threshold=threshold, min_duration=min_duration,
                              pictures=pictures, redo=redo)
    options.validate()
    loc = load_localizer(run_dir, cfg, window, hop, log=log)
    video = Path(video)
    if not video.is_file():
        raise AvelError("file not found", video)
    with output_lock(out_dir), progress_bar(progress) as bar:
        return localize_with(loc, video, out_dir, options, stages=Stages(bar, video.name), log=log)


def write_pictures(out_dir: Path, result: dict, probs: np.ndarray, attention: np.ndarray | None,
                   frames: np.ndarray, video: Path | None = None, progress: Callable[[int], None] | None = None) -> None:
    """attention/second_NNN.png, attention.gif and index.html (with the video beside or linked);
    `progress(seconds done)` after each second's picture."""
    from avel.io import atomic_path
    from avel.inference.pictures import place_video

    (out_dir / OUTPUTS["pictures"]).mkdir(parents=True, exist_ok=True)
    images, pics, names = [], [], []
    for s, frame in zip(result["seconds"], frames):
        images.append(captioned(overlay(frame, None if attention is None else attention[s["second"]]),
                                f"{s['second']} s: {s['label'][:24]} {s['probability']:.2f}", s["is_event"]))
        pics.append(png_bytes(images[-1]))
        names.append(f"{OUTPUTS['pictures']}/second_{s['second']:03d}.png")
        with atomic_path(out_dir / names[-1]) as tmp:
            tmp.write_bytes(pics[-1])
        if progress is not None:
            progress(len(pics))
    gif = None
    if attention is not None and len(images) <= GIF_MAX_SECONDS:  # longer: the page plays the video itself
        gif = gif_bytes(images)
        with atomic_path(out_dir / OUTPUTS["gif"]) as tmp:
            tmp.write_bytes(gif)
    chart = probability_chart(probs, result["classes"], result["background"], result["events"])
    video_src = place_video(video, out_dir) if video is not None else None
    write_html(out_dir / OUTPUTS["html"], result, pics, gif, chart, picture_files=names,
               gif_file=OUTPUTS["gif"] if gif is not None else None, video_src=video_src)

