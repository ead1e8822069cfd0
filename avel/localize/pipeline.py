"""`avel localize VIDEO --model RUN_DIR --out DIR`: features, predictions, events.json, pictures, index.html."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from avel.errors import AvelError
from avel.features.decode import DISPLAY_MODE, ClipReader
from avel.features.extractor import ExtractorConfig, FeatureExtractor, incompatibilities
from avel.features.vgg19 import POOL5_STRIDE
from avel.io import write_h5, write_json
from avel.localize.events import events_document
from avel.localize.infer import windowed_predict
from avel.localize.pictures import captioned, gif_bytes, overlay, png_bytes, probability_chart, write_html
from avel.localize.runinfo import class_names, extractor_record

DISPLAY_SIZE = 320  # pixels: long side of the frames shown in the pictures
OUTPUTS = {"events": "events.json", "html": "index.html", "gif": "attention.gif", "pictures": "attention",
           "features": "features.h5"}
LOCALIZE_INPUTS = {"audio", "visual"}  # model inputs avel localize can extract from a video


def check_extractor(expected: dict | None, actual: dict, where: str) -> list[str]:
    """Refuse features from another extractor than the model's; returns warnings (settings that only blur)."""
    if expected is None:
        return [f"{where}: assuming the authors' extractor (Keras VGG-19 + VGGish) matches"]
    diffs = incompatibilities(expected, actual)
    if diffs:
        raise AvelError(f"the model was trained on features from another extractor ({where}): {'; '.join(diffs)}. "
                        "Pass the --vgg19-weights / --vggish-weights / --image-size / --resize used by avel extract")
    if expected.get("frames_per_second") != actual.get("frames_per_second"):
        return [f"frames per second {actual.get('frames_per_second')} differs from the training features' "
                f"{expected.get('frames_per_second')} (averages over fewer or more frames)"]
    return []


def display_frames(video: Path, cfg: ExtractorConfig, num_segments: int) -> np.ndarray:
    """(T, h, w, 3) the frame at the middle of each second, as the network saw its area."""
    mode = DISPLAY_MODE if cfg.resize == "stretch" else "crop"  # stretch: the map covers the whole frame
    reader = ClipReader(video, frames_per_second=1, image_size=DISPLAY_SIZE, resize=mode, num_segments=num_segments)
    return np.stack([s.frames[0] for s in reader.segments()])


def localize_video(video: str | Path, run_dir: str | Path, out_dir: str | Path, cfg: ExtractorConfig,
                   window: int, hop: int, pictures: bool = True, log=None) -> dict:
    """Run everything; returns the events document (also written to out_dir/events.json)."""
    from avel.models.registry import model_spec
    from avel.train.checkpoint import load_run
    from avel.localize.runinfo import run_document

    log = log or (lambda msg: print(f"avel: {msg}", file=sys.stderr))
    video, run_dir, out_dir = Path(video), Path(run_dir), Path(out_dir)
    doc = run_document(run_dir)
    model, model_cfg, _ = load_run(run_dir, device="cpu")
    missing = set(model_spec(model_cfg.name).inputs) - LOCALIZE_INPUTS
    if missing:
        raise AvelError(f"model {model_cfg.name} reads {', '.join(sorted(missing))}, which avel localize cannot "
                        "extract from a video (it extracts audio and visual features)", run_dir)
    expected, where = extractor_record(run_dir, doc)
    extractor = FeatureExtractor(cfg)
    for w in check_extractor(expected, extractor.info, where):
        log(f"warning: {w}")
    grid = cfg.image_size // POOL5_STRIDE
    if grid != model_cfg.visual_grid:
        raise AvelError(f"the model expects {model_cfg.visual_grid}x{model_cfg.visual_grid} visual maps; "
                        f"--image-size {cfg.image_size} gives {grid}x{grid}", run_dir)
    model = model.to(extractor.device)
    feats = extractor.extract(video)
    for w in feats.warnings:
        log(f"warning: {video}: {w}")
    probs, attention = windowed_predict(model, feats.audio, feats.visual, window, hop, device=extractor.device)
    names, background = class_names(doc, probs.shape[1])
    result = events_document(
        probs, names, background,
        video={"path": str(video), "name": video.name, "duration": round(feats.duration, 3),
               "num_segments": feats.num_segments, "has_audio": feats.has_audio},
        model={"run": str(run_dir), "name": model_cfg.name, "has_attention": attention is not None},
        extractor={k: v for k, v in extractor.info.items() if k != "rows"},
        windows={"length": window, "hop": hop})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_h5(out_dir / OUTPUTS["features"], {"audio": feats.audio, "visual": feats.visual,
                                              "frame_times": feats.frame_times,
                                              "probabilities": probs.astype(np.float32),
                                              **({"attention": attention.astype(np.float32)}
                                                 if attention is not None else {})})
    if pictures:
        write_pictures(out_dir, result, probs, attention, display_frames(video, cfg, feats.num_segments))
    write_json(out_dir / OUTPUTS["events"], result)
    return result


def write_pictures(out_dir: Path, result: dict, probs: np.ndarray, attention: np.ndarray | None,
                   frames: np.ndarray) -> None:
    """attention/second_NNN.png, attention.gif and index.html."""
    from avel.io import atomic_path

    images = [captioned(overlay(frame, None if attention is None else attention[s["second"]]),
                        f"{s['second']} s: {s['label'][:24]} {s['probability']:.2f}", s["is_event"])
              for s, frame in zip(result["seconds"], frames)]
    pics = [png_bytes(img) for img in images]
    folder = out_dir / OUTPUTS["pictures"]
    folder.mkdir(parents=True, exist_ok=True)
    for s, data in zip(result["seconds"], pics):
        with atomic_path(folder / f"second_{s['second']:03d}.png") as tmp:
            tmp.write_bytes(data)
    gif = None
    if attention is not None:
        gif = gif_bytes(images)
        with atomic_path(out_dir / OUTPUTS["gif"]) as tmp:
            tmp.write_bytes(gif)
    chart = probability_chart(probs, result["classes"], result["background"], result["events"])
    write_html(out_dir / OUTPUTS["html"], result, pics, gif, chart)
