"""Pictures for `avel localize`: attention heatmaps over frames, an animated overlay, a probability
chart and a self-contained index.html (every picture embedded as a data URI)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

HEATMAP_ALPHA = 0.55  # opacity of the attention colour over the frame at the attention's peak
HEATMAP_CMAP = "inferno"  # matplotlib colormap of attention heatmaps
FLAT_ATTENTION = 1e-4  # attention whose max - min is below this is drawn as no preference (no heatmap)
MIN_CHART_PROBABILITY = 0.05  # event classes whose probability never reaches this are left out of the chart
GIF_SECONDS_PER_FRAME = 1.0  # playback: one picture per second of video, in real time
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
    spread = att.max() - att.min()
    att = (att - att.min()) / spread if spread > FLAT_ATTENTION else np.zeros_like(att)  # most attended cell = 1
    h, w = frame.shape[:2]
    heat = np.asarray(Image.fromarray((att * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) / 255.0
    colour = colormaps[HEATMAP_CMAP](heat)[..., :3] * 255  # (H, W, 3)
    alpha = HEATMAP_ALPHA * heat[..., None]
    return np.clip(frame * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


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
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
.timeline{display:flex;border:1px solid #aaa;margin:.5em 0}
.sec{flex:1;min-width:14px;height:34px;font-size:10px;text-align:center;line-height:34px;overflow:hidden;
border-right:1px solid #fff;color:#000}
.axis{display:flex;font-size:10px;color:#666}.axis span{flex:1;text-align:left;min-width:14px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0}.grid img{display:block;max-width:220px}
.meta{color:#555;font-size:.9em}
"""


def write_html(path: Path, doc: dict, pictures: list[bytes], gif: bytes | None, chart: bytes) -> None:
    """index.html: timeline, detected events, probability chart, attention overlay and per-second pictures."""
    from avel.io import write_text

    esc = html.escape
    names, background = doc["classes"], doc["background"]
    cells = "".join(
        f'<div class="sec" style="background:{class_colour(s["class"], background)};opacity:{0.35 + 0.65 * s["probability"]:.2f}"'
        f' title="{s["second"]}-{s["second"] + 1} s: {esc(s["label"])} ({s["probability"]:.2f})">'
        f'{esc(s["label"][:10]) if s["is_event"] else ""}</div>' for s in doc["seconds"])
    axis = "".join(f"<span>{s['second'] if s['second'] % 5 == 0 else ''}</span>" for s in doc["seconds"])
    if doc["events"]:
        rows = "".join(f"<tr><td>{esc(e['category'])}</td><td>{e['start']} s</td><td>{e['end']} s</td>"
                       f"<td>{e['end'] - e['start']} s</td><td>{e['confidence']:.3f}</td></tr>" for e in doc["events"])
        events = f"<table><tr><th>event</th><th>start</th><th>end</th><th>length</th><th>confidence</th></tr>{rows}</table>"
    else:
        events = "<p>No audio-visual event detected: every second is background.</p>"
    figures = "".join(
        f'<figure><img alt="second {s["second"]}" src="{data_uri(p, "image/png")}"></figure>'
        for s, p in zip(doc["seconds"], pictures))
    attention_note = ("Audio-guided visual attention over the 7x7 grid of VGG-19 cells (brighter = more attended), "
                      "on the frame at the middle of each second." if doc["model"].get("has_attention")
                      else "This model has no spatial attention: frames are shown without heatmaps.")
    gif_html = f'<p><img alt="attention over time" src="{data_uri(gif, "image/gif")}"></p>' if gif else ""
    m, x, w = doc["model"], doc["extractor"], doc["windows"]
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>avel localize: {esc(doc['video']['name'])}</title>
<style>{STYLE}</style></head><body>
<h1>{esc(doc['video']['name'])}</h1>
<p class="meta">{doc['video']['duration']:.2f} s, {doc['video']['num_segments']} one-second segments
{'' if doc['video']['has_audio'] else '<b>(no audio track: audio features are zeros)</b>'}<br>
model {esc(m['name'])} from {esc(m['run'])}; windows of {w['length']} s, hop {w['hop']} s<br>
features: VGG-19 {esc(str(x.get('vgg19_weights')))} ({esc(str(x.get('vgg19_preprocessing')))} preprocessing),
VGGish {esc(str(x.get('vggish_weights')))}, {x.get('frames_per_second')} frames/s at {x.get('image_size')} px</p>
<h2>Timeline</h2><div class="timeline">{cells}</div><div class="axis">{axis}</div>
<h2>Detected events</h2>{events}
<h2>Class probabilities</h2><img alt="probabilities" src="{data_uri(chart, 'image/png')}">
<h2>Attention</h2><p>{attention_note}</p>{gif_html}<div class="grid">{figures}</div>
</body></html>
"""
    write_text(path, body)
