"""`avel localize`: run a trained localizer on any video and explain what it found.

infer.py     windowed inference over videos of any length
events.py    per-second labels, --threshold / --min-duration merging, half-open spans in words (events.json)
exports.py   events.csv, seconds.csv, WebVTT / SRT subtitles, Audacity label track
runinfo.py   what a run directory says about its classes, its training clip length and its extractor
pictures.py  attention heatmaps (PNG per second, animated GIF), probability chart, index.html (video + timeline)
progress.py  per-stage progress of a video (decode, features, model windows, pictures) with ETA
pipeline.py  one video: load the model once (Localizer), extract, predict, write everything, skip complete folders
batch.py     many videos (files, folders, list files): one folder each, summary.json, failures reported

The package is also callable: `avel.localize("clip.mp4")` is `avel.api.localize` (the Python API's
entry point shares this package's name, so whichever `import avel...` ran first, it works).
"""

import sys
import types


class _CallableModule(types.ModuleType):
    """This package, callable as `avel.api.localize`."""

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204 - avel.api.localize's signature
        from avel.api import localize

        return localize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
