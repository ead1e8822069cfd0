"""Pictures for `avel localize`: attention heatmaps over frames, an animated overlay, a probability
chart and index.html.

The page plays the video itself above a timeline of per-second labels (a click seeks; the current
second is marked while it plays). A video of at most VIDEO_COPY_MAX_BYTES is copied beside the page
(the folder is then self-contained); a larger one is linked by its path relative to the page, not
copied. Pictures are embedded as data URIs while they total at most PAGE_EMBED_MAX_BYTES, else the
page links the PNG/GIF files written beside it (a 10-minute video makes 600 pictures).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import urllib.parse
from pathlib import Path

import numpy as np

from avel.features.decode import DURATION_MISMATCH_S

HEATMAP_ALPHA = 0.55  # opacity of the attention colour over the frame at the attention's peak
HEATMAP_CMAP = "inferno"  # matplotlib colormap of attention heatmaps
FLAT_ATTENTION_RATIO = 2.0  # attention is "flat" in a second when its max / mean over the grid is below this
# (uniform = 1; everything on one of 49 cells = 49): the map singles out no region, so no heatmap is drawn
VIDEO_COPY_MAX_BYTES = 5 * 1024**2  # a video up to this size is copied beside index.html; larger ones are linked
PAGE_EMBED_MAX_BYTES = 4 * 1024**2  # pictures embedded in index.html up to this total; beyond, linked files
MAX_AXIS_TICKS = 20  # second labels under the timeline, at most
AXIS_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)  # s between timeline ticks
MAX_CELL_LABELS = 60  # seconds: longer timelines show colours only (labels on hover and in the "now" line)
MIN_CHART_PROBABILITY = 0.05  # event classes whose probability never reaches this are left out of the chart
GIF_SECONDS_PER_FRAME = 1.0  # playback: one picture per second of video, in real time
GIF_MAX_SECONDS = 120  # videos longer than this get no animated GIF (600 frames make ~20 MB; the page plays the video)
CAPTION_HEIGHT = 18  # pixels of the caption bar under each picture
TOP_CLASSES = 5  # event classes drawn in the probability chart (highest peak first)
EVENT_COLOUR = (40, 170, 80)  # caption colour of seconds labelled with an event
BACKGROUND_COLOUR = (90, 90, 90)  # caption colour of background seconds


def overlay(frame: np.ndarray, attention: np.ndarray | None) -> np.ndarray:
    """(H, W, 3) uint8 frame with a (g*g,) attention map blended over it (stretched to the frame)."""
    if attention is None:
        return frame
    from matplotlib import colormaps
    from PIL import Image

    g = int(round(len(attention) ** 0.5))
    att = np.asarray(attention, np.float64).reshape(g, g)
    if peak_to_mean(att) < FLAT_ATTENTION_RATIO:
        return frame  # no preference worth drawing
    att = (att - att.min()) / (att.max() - att.min())  # most attended cell = 1
    h, w = frame.shape[:2]
    heat = np.asarray(Image.fromarray((att * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) / 255.0
    colour = colormaps[HEATMAP_CMAP](heat)[..., :3] * 255  # (H, W, 3)
    alpha = HEATMAP_ALPHA * heat[..., None]
    return np.clip(frame * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


def peak_to_mean(att: np.ndarray) -> float:
    """max / mean of one second's attention map (1 = uniform)."""
    att = np.asarray(att, np.float64)
    mean = att.mean()
    return float(att.max() / mean) if mean > 0 else 1.0


def attention_flatness(attention: np.ndarray) -> dict:
    """events.json's `attention`: max/mean per second, the flatness threshold and how many seconds fall below it."""
    ratios = [round(peak_to_mean(a), 3) for a in attention]
    return {"peak_to_mean": ratios, "flat_below": FLAT_ATTENTION_RATIO,
            "flat_seconds": int(sum(r < FLAT_ATTENTION_RATIO for r in ratios))}


def place_video(video: Path, out_dir: Path) -> dict:
    """Make the video playable from out_dir/index.html: copy it beside the page when small, else link it.

    Returns {"src": URL relative to the page, "how": "copied" | "linked", "bytes": size}.
    """
    from avel.io import atomic_path

    size = video.stat().st_size
    if size <= VIDEO_COPY_MAX_BYTES:
        name = f"video{video.suffix.lower()}"
        target = out_dir / name
        if not (target.is_file() and target.stat().st_size == size and target.stat().st_mtime >= video.stat().st_mtime):
            with atomic_path(target) as tmp:
                shutil.copyfile(video, tmp)
        return {"src": urllib.parse.quote(name), "how": "copied", "bytes": size}
    try:
        rel = os.path.relpath(video.resolve(), out_dir.resolve())
        src = urllib.parse.quote(Path(rel).as_posix())
    except ValueError:  # another drive (Windows): an absolute file URL
        src = video.resolve().as_uri()
    return {"src": src, "how": "linked", "bytes": size}


def axis_step(seconds: int) -> int:
    """Seconds between timeline ticks: the smallest step giving at most MAX_AXIS_TICKS ticks."""
    return next((s for s in AXIS_STEPS if seconds / s <= MAX_AXIS_TICKS), AXIS_STEPS[-1])


def captioned(img: np.ndarray, text: str, is_event: bool) -> np.ndarray:
    """Picture with a caption bar underneath (green for event seconds, grey for background)."""
    from PIL import Image, ImageDraw

    h, w = img.shape[:2]
    canvas = Image.new("RGB", (w, h + CAPTION_HEIGHT), EVENT_COLOUR if is_event else BACKGROUND_COLOUR)
    canvas.paste(Image.fromarray(img), (0, 0))
    ImageDraw.Draw(canvas).text((4, h + 3), text, fill=(255, 255, 255))
    return np.asarray(canvas)


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def gif_bytes(images: list[np.ndarray]) -> bytes:
    """Animated GIF, one image per second of video, looping."""
    from PIL import Image

    frames = [Image.fromarray(i).convert("P", palette=Image.ADAPTIVE) for i in images]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                   duration=int(GIF_SECONDS_PER_FRAME * 1000), loop=0)
    return buf.getvalue()


def probability_chart(probs: np.ndarray, names: list[str], background: int, events: list[dict]) -> bytes:
    """PNG: probability over time of the background and the top event classes, events shaded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.arange(len(probs)) + 0.5
    fig = Figure(figsize=(max(6.0, min(16.0, len(probs) * 0.4)), 2.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for e in events:
        ax.axvspan(e["start"], e["end"], color="tab:green", alpha=0.12)
    peaks = probs.max(axis=0)
    peaks[background] = -1
    for c in [int(c) for c in np.argsort(-peaks)[:TOP_CLASSES] if peaks[c] >= MIN_CHART_PROBABILITY]:
        ax.plot(t, probs[:, c], marker="o", ms=3, label=names[c])
    ax.plot(t, probs[:, background], color="grey", ls="--", label=names[background])
    ax.set(xlim=(0, len(probs)), ylim=(0, 1), xlabel="second", ylabel="probability")
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def class_colour(index: int, background: int) -> str:
    if index == background:
        return "#d9d9d9"
    from matplotlib import colormaps

    r, g, b, _ = colormaps["tab20"](index % 20)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;padding:0 1.5em;color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
video{display:block;width:100%;max-width:720px;max-height:60vh;background:#000}
.timeline{position:relative;display:flex;border:1px solid #aaa;margin:.3em 0;cursor:pointer;user-select:none}
.sec{flex:1 1 0;min-width:0;height:34px;font-size:10px;text-align:center;line-height:34px;overflow:hidden;
white-space:nowrap;color:#000}
.sec.cur{outline:2px solid #000;outline-offset:-2px}
#cursor{position:absolute;top:-4px;bottom:-4px;width:2px;margin-left:-1px;background:#c00;pointer-events:none}
.axis{position:relative;height:1.2em;font-size:10px;color:#666}.axis span{position:absolute;transform:translateX(-50%)}.axis span:first-child{transform:none}
.now{font-size:.95em;margin:.4em 0;font-variant-numeric:tabular-nums}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
tr[data-t]{cursor:pointer}tr[data-t]:hover{background:#eef}
img{max-width:100%;height:auto}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;cursor:pointer}.grid img{display:block;max-width:220px}
.meta{color:#555;font-size:.9em}.note{color:#555;font-size:.85em}
.warn{border:2px solid #c62828;background:#fdecea;padding:.5em .8em;margin:.6em 0}
"""

SCRIPT = """
const secs = JSON.parse(document.getElementById('seconds').textContent);
const T = secs.length, v = document.getElementById('video'), line = document.getElementById('timeline');
const cells = line.querySelectorAll('.sec'), cursor = document.getElementById('cursor');
const now = document.getElementById('now');
const mmss = t => String(Math.floor(t / 60)).padStart(2, '0') + ':' + String(Math.floor(t % 60)).padStart(2, '0');
let cur = -1;
function show(t) {
  t = Math.max(0, Math.min(T - 1, Math.floor(t)));
  if (t === cur) return;
  if (cur >= 0) cells[cur].classList.remove('cur');
  cells[t].classList.add('cur'); cur = t;
  cursor.style.left = (100 * (t + 0.5) / T) + '%';
  const s = secs[t];
  now.textContent = 'second ' + t + ' (' + mmss(t) + '-' + mmss(t + 1) + '): ' + s[0] + ' ' + s[1].toFixed(2)
    + (s[2] ? ' \\u2014 in an event' : '');
}
function seek(t) { if (v) { v.currentTime = t + 0.05; } show(t); }
line.addEventListener('click', e => { const r = line.getBoundingClientRect(); seek(Math.floor((e.clientX - r.left) / r.width * T)); });
if (v) v.addEventListener('timeupdate', () => show(v.currentTime));
document.querySelectorAll('[data-t]').forEach(el => el.addEventListener('click', () => seek(+el.dataset.t)));
show(0);
"""


def write_html(path: Path, doc: dict, pictures: list[bytes], gif: bytes | None, chart: bytes,
               picture_files: list[str] | None = None, gif_file: str | None = None,
               video_src: dict | None = None) -> None:
    """index.html: the video, a clickable timeline, detected events, probability chart, attention pictures.

    `picture_files` / `gif_file`: the same pictures as files beside the page, linked instead of
    embedded when the pictures total more than PAGE_EMBED_MAX_BYTES. `video_src`: from `place_video`.
    """
    from avel.io import write_text
    from avel.inference.events import clock, span_text

    esc = html.escape
    names, background = doc["classes"], doc["background"]
    secs = doc["seconds"]
    n = len(secs)
    labelled = n <= MAX_CELL_LABELS
    cells = "".join(
        f'<div class="sec" style="background:{class_colour(s["class"], background)};'
        f'opacity:{0.35 + 0.65 * s["probability"]:.2f}" title="{esc(span_text(s["second"], s["second"] + 1))}: '
        f'{esc(s["label"])} ({s["probability"]:.2f})">'
        f'{esc(s["label"][:10]) if s["is_event"] and labelled else ""}</div>' for s in secs)
    step = axis_step(n)
    axis = "".join(f'<span style="left:{100 * t / n:.3f}%">{clock(t)}</span>' for t in range(0, n, step))
    if doc["events"]:
        rows = "".join(f'<tr data-t="{e["start"]}"><td>{esc(e["category"])}</td><td>{esc(e["span"])}</td>'
                       f'<td>{e["start"]}</td><td>{e["end"]}</td><td>{e["end"] - e["start"]} s</td>'
                       f'<td>{e["confidence"]:.3f}</td></tr>' for e in doc["events"])
        events = ("<table><tr><th>event</th><th>span</th><th>start (s)</th><th>end (s, exclusive)</th>"
                  f"<th>length</th><th>confidence</th></tr>{rows}</table>"
                  '<p class="note">Spans are half-open: [start, end) in seconds from the start of the video. '
                  "Click a row to play from there.</p>")
    else:
        events = "<p>No audio-visual event detected: every second is background"
        merging = doc.get("merging") or {}
        if merging.get("threshold") or merging.get("min_duration"):
            events += f" (or below --threshold {merging['threshold']} / --min-duration {merging['min_duration']})"
        events += ".</p>"
    embed = picture_files is None or sum(map(len, pictures)) + len(gif or b"") <= PAGE_EMBED_MAX_BYTES
    srcs = ([data_uri(p, "image/png") for p in pictures] if embed
            else [urllib.parse.quote(f) for f in picture_files])
    figures = "".join(f'<figure data-t="{s["second"]}"><img loading="lazy" alt="second {s["second"]}" src="{src}"></figure>'
                      for s, src in zip(secs, srcs))
    m, x, w = doc["model"], doc["extractor"], doc["windows"]
    if m.get("has_attention") and doc.get("attention"):
        a = doc["attention"]
        attention_note = ("Audio-guided visual attention over the grid of VGG-19 cells (brighter = more attended), "
                          "on the frame at the middle of each second. ")
        if a["flat_seconds"]:
            every = "every second" if a["flat_seconds"] == n else f"{a['flat_seconds']} of {n} seconds"
            attention_note += (f"<b>Attention is flat in {every}</b> (its most attended cell gets less than "
                               f"{a['flat_below']:g}x the mean weight): there the model singles out no region, "
                               "and no heatmap is drawn.")
    else:
        attention_note = "This model has no spatial attention: frames are shown without heatmaps."
    gif_html = ""
    if gif:
        gif_src = data_uri(gif, "image/gif") if embed or gif_file is None else urllib.parse.quote(gif_file)
        gif_html = f'<p><img alt="attention over time" src="{gif_src}"></p>'
    video_html = ""
    if video_src is not None:
        how = ("copied beside this page" if video_src["how"] == "copied"
               else "linked from its original place, relative to this page (moving the folder breaks the link)")
        video_html = (f'<video id="video" controls preload="metadata" src="{esc(video_src["src"])}"></video>'
                      f'<p class="note">The video ({video_src["bytes"] / 1024**2:.1f} MB) is {how}. '
                      "If it does not play, the browser lacks its codec; the timeline still works.</p>")
    banners = ""
    if m.get("trained_on_synthetic"):
        banners += ('<div class="warn"><b>Synthetic model.</b> This model was trained on AVE-Synth, a generated '
                    "stand-in dataset, not on real video: its events below are not meaningful for this video.</div>")
    other = [wn for wn in doc.get("warnings", []) if "AVE-Synth" not in wn]
    if other:
        banners += '<div class="warn">' + "<br>".join(esc(wn) for wn in other) + "</div>"
    v = doc["video"]
    stated = v.get("stated_duration")
    length = f"{v['duration']:.2f} s"
    if stated is not None and stated - v["duration"] > DURATION_MISMATCH_S:
        length += f" decoded (the file states {stated:.2f} s)"
    seconds_json = json.dumps([[s["label"], s["probability"], s["is_event"]] for s in secs]).replace("</", "<\\/")
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>avel localize: {esc(v['name'])}</title>
<style>{STYLE}</style></head><body>
<h1>{esc(v['name'])}</h1>
{banners}
<p class="meta">{length}, {v['num_segments']} one-second segments
{'' if v['has_audio'] else '<b>(no audio track: audio features are zeros)</b>'}<br>
model {esc(m['name'])} from {esc(m['run'])} (trained on {esc(str(m.get('trained_on', 'unknown')))});
windows of {w['length']} s, hop {w['hop']} s<br>
features: VGG-19 {esc(str(x.get('vgg19_weights')))} ({esc(str(x.get('vgg19_preprocessing')))} preprocessing),
VGGish {esc(str(x.get('vggish_weights')))}, {x.get('frames_per_second')} frames/s at {x.get('image_size')} px</p>
{video_html}
<h2>Timeline</h2><div class="now" id="now"></div>
<div class="timeline" id="timeline">{cells}<div id="cursor"></div></div><div class="axis">{axis}</div>
<p class="note">One cell per second, coloured by the most probable class (grey: background; paler = less sure).
Click to seek.</p>
<h2>Detected events</h2>{events}
<h2>Class probabilities</h2><img class="chart" alt="probabilities" src="{data_uri(chart, 'image/png')}">
<h2>Attention</h2><p>{attention_note}</p>{gif_html}<div class="grid">{figures}</div>
<script type="application/json" id="seconds">{seconds_json}</script>
<script>{SCRIPT}</script>
</body></html>
"""
    write_text(path, body)
