"""Inference on videos (`avel localize`, `avel.localize`): run a trained localizer on any video and
explain what it found.

infer.py     windowed inference over videos of any length
events.py    per-second labels, --threshold / --min-duration merging, half-open spans in words (events.json)
exports.py   events.csv, seconds.csv, WebVTT / SRT subtitles, Audacity label track
runinfo.py   what a run directory says about its classes, its training clip length and its extractor
pictures.py  attention heatmaps (PNG per second, animated GIF), probability chart, index.html (video + timeline)
progress.py  per-stage progress of a video (decode, features, model windows, pictures) with ETA
pipeline.py  one video: load the model once (Localizer), extract, predict, write everything, skip complete folders
batch.py     many videos (files, folders, list files): one folder each, summary.json, failures reported
"""
