"""`avel localize`: run a trained localizer on any video and explain what it found.

infer.py     windowed inference over videos of any length
events.py    per-second labels and merged event spans (events.json)
runinfo.py   what a run directory says about its classes, its training clip length and its extractor
pictures.py  attention heatmaps (PNG per second, animated GIF), probability chart, index.html
pipeline.py  the whole command: extract features, predict, write everything
"""
