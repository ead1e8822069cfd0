"""avel's Python API: `avel.localize`, `avel.load_model`, `Model.predict`.

    import avel
    result = avel.localize("clip.mp4")              # the default model, authors-av-att
    for e in result.events:
        print(e.start, e.end, e.category, e.confidence)
    model = avel.load_model("authors-av-att")        # or a run directory from `avel train`
    probs = model.predict(audio, visual)             # (N, T, 128), (N, T, 7, 7, 512) -> (N, T, 29)

A model is a built-in name (avel.pretrained: the AVE authors' networks, downloaded once into the
cache) or a run directory. The `avel localize` command is a thin layer over `localize`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avel.errors import AvelError
from avel.pretrained import DEFAULT_MODEL, ResolvedModel, resolve_model

EXTRACTOR_OPTIONS = ("vgg19_weights", "vggish_weights", "vgg19_preprocessing", "frames_per_second", "image_size",
                     "resize", "batch_size", "device", "precision")  # ExtractorConfig fields `localize` accepts as keywords


@dataclass
class Event:
    """One detected audio-visual event: a category over whole seconds [start, end)."""

    category: str
    start: int  # s, first second of the event
    end: int  # s, one past the last second
    confidence: float  # mean probability of the category over the event's seconds

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


@dataclass
class LocalizeResult:
    """What `localize` found in one video; `document` is the full events.json content."""

    video: Path
    model: str  # the built-in name or run directory used
    events: list[Event]
    labels: list[str]  # per second: the category or "background"
    probabilities: np.ndarray  # (T, C) per-second class probabilities
    classes: list[str]  # names of the C classes, background last
    document: dict[str, Any]  # events.json (video, model, extractor, windows, seconds, events)
    out_dir: Path | None  # where the files were written (None: not kept)

    def to_json(self) -> str:
        """The events.json document."""
        return json.dumps(self.document, indent=2)


def _extractor_config(defaults: dict, options: dict) -> Any:
    """ExtractorConfig: `options` (explicit) over the model's `defaults` over avel's. The recorded
    preprocessing belongs to the recorded VGG-19 weights, so it is dropped when weights are given."""
    from avel.features.extractor import ExtractorConfig

    unknown = set(options) - set(EXTRACTOR_OPTIONS)
    if unknown:
        raise TypeError(f"unknown extractor option(s) {sorted(unknown)}; valid: {', '.join(EXTRACTOR_OPTIONS)}")
    merged = dict(defaults)
    if options.get("vgg19_weights") is not None:
        merged.pop("vgg19_preprocessing", None)
    merged.update({k: v for k, v in options.items() if v is not None})
    return ExtractorConfig(**merged)


def prepare(model: str | Path | None = None, log: Callable[[str], None] | None = None,
            **extractor_options: Any) -> tuple[ResolvedModel, Any]:
    """(the model's run directory and record, the ExtractorConfig to use) for `model` (None: the default
    model, authors-av-att): fetches a built-in model and
    the backbone weights it needs unless given (`vgg19_weights=` / `vggish_weights=`); options left
    None take the model's recorded extractor settings."""
    explicit = {k: v for k, v in extractor_options.items() if v is not None}
    nets = tuple(n for n in ("vgg19", "vggish") if f"{n}_weights" not in explicit)
    resolved = resolve_model(model or DEFAULT_MODEL, weights=nets, log=log)
    return resolved, _extractor_config(resolved.extractor, explicit)


def localize(video: str | Path, model: str | Path = DEFAULT_MODEL, out: str | Path | None = None, *,
             window: int | None = None, hop: int | None = None, threshold: float | None = None,
             min_duration: float | None = None, pictures: bool = True,
             log: Callable[[str], None] | None = None, **extractor_options: Any) -> LocalizeResult:
    """Find audio-visual events in a video.

    `model`: a built-in name (`avel models`) or a run directory; its extractor settings and backbone
    weights are used unless given here (`vgg19_weights=`, `vggish_weights=`, `image_size=`, ...).
    `out`: folder for events.json, the exports, features.h5 and (with `pictures`) the attention
    pictures and index.html; None keeps nothing on disk. `window` / `hop`: seconds per inference
    window and between windows (default: the training clips' length and half of it); `threshold` /
    `min_duration`: event merging as `avel localize --threshold / --min-duration` (default: theirs).
    """
    import tempfile

    from avel.io import read_h5
    from avel.inference.pipeline import OUTPUTS, localize_video

    resolved, cfg = prepare(model, log=log, **extractor_options)
    merging = {k: v for k, v in (("threshold", threshold), ("min_duration", min_duration)) if v is not None}
    with tempfile.TemporaryDirectory(prefix="avel-localize-") as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        document = localize_video(video, resolved.run_dir, folder, cfg, window, hop,
                                  pictures=pictures and out is not None, log=log, **merging)
        probabilities = read_h5(folder / OUTPUTS["features"], "probabilities")  # unrounded, unlike events.json
    document = {k: v for k, v in document.items() if k != "status"}  # as written to events.json
    events = [Event(e["category"], int(e["start"]), int(e["end"]), float(e["confidence"]))
              for e in document["events"]]
    return LocalizeResult(video=Path(video), model=resolved.name or str(resolved.run_dir), events=events,
                          labels=[s["label"] for s in document["seconds"]], probabilities=probabilities,
                          classes=list(document["classes"]), document=document,
                          out_dir=None if out is None else Path(out))


class Model:
    """A trained localizer, ready to predict from features. Build with `load_model`."""

    def __init__(self, resolved: ResolvedModel, device: str = "cpu") -> None:
        from avel.inference.runinfo import class_names, run_document
        from avel.train.checkpoint import load_run

        self.run_dir = resolved.run_dir
        self.name = resolved.name or str(resolved.run_dir)
        self.extractor = resolved.extractor  # ExtractorConfig defaults of the features it was trained on
        self.network, self.config, _ = load_run(resolved.run_dir, device=device)
        self.classes, self.background = class_names(run_document(resolved.run_dir), self.config.num_classes)

    def predict(self, audio: Any, visual: Any, precision: str = "auto") -> np.ndarray:
        """Per-second class probabilities (N, T, C) from audio (N, T, 128) and visual (N, T, g, g, 512)
        features (numpy arrays or tensors; a single clip (T, ...) is accepted and gives (T, C)).
        `precision`: auto, fp32 or bf16 (avel.precision; fp32 gives the network's exact outputs)."""
        from avel.train.evaluate import predict

        audio, visual = np.asarray(audio, dtype=np.float32), np.asarray(visual, dtype=np.float32)
        single = audio.ndim == 2
        if single:
            audio, visual = audio[None], visual[None]
        g = self.config.visual_grid
        want_v = (g, g, self.config.visual_dim)
        if audio.ndim != 3 or audio.shape[-1] != self.config.audio_dim:
            raise AvelError(f"audio features must have shape (N, T, {self.config.audio_dim}), got {audio.shape}")
        if visual.ndim != 5 or tuple(visual.shape[2:]) != want_v or visual.shape[:2] != audio.shape[:2]:
            raise AvelError(f"visual features must have shape {(*audio.shape[:2], *want_v)} to match the audio, "
                            f"got {visual.shape}")
        probs, _ = predict(self.network, audio, visual, precision=precision)
        return probs[0] if single else probs

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.config.name}, {len(self.classes)} classes)"


def load_model(model: str | Path = DEFAULT_MODEL, device: str = "cpu") -> Model:
    """A built-in model name (downloaded and imported once) or a run directory, loaded for prediction."""
    return Model(resolve_model(model, weights=()), device=device)
