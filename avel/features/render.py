"""Render synthetic audio-visual clips with PyAV: a coloured shape on screen and a tone on the soundtrack.

Used by the tests (frame sampling, A/V alignment, end-to-end localization), by the benchmark and
by the docs' demo. Which seconds show the shape and which carry the tone is up to the caller, so
clips can hold real audio-visual events (both at once) and distractors (only one of them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from avel.io import atomic_path

RENDER_AUDIO_RATE = 44100  # Hz: typical source rate, so decoding must really resample to 16 kHz
RENDER_AUDIO_CHANNELS = 2  # stereo, so decoding must really down-mix
TONE_AMPLITUDE = 0.5  # peak amplitude of the tone (full scale = 1)
NOISE_AMPLITUDE = 0.02  # standard deviation of the background noise on the soundtrack
VIDEO_TIME_BASE = Fraction(1, 90000)  # s per pts tick (MPEG's 90 kHz clock: exact for 29.97 fps)
AUDIO_FRAME_SAMPLES = 1024  # samples per encoded audio frame (AAC frame size)


@dataclass
class ClipSpec:
    """What to draw and play, second by second."""

    seconds: float = 10.0  # clip length (s); the last frame ends here
    fps: float | Fraction = 25  # constant frame rate; ignored when frame_times is given
    frame_times: list[float] | None = None  # explicit presentation times (s) for variable frame rate
    width: int = 96  # pixels
    height: int = 64  # pixels
    shape_seconds: set[int] = field(default_factory=set)  # seconds in which the shape is visible
    tone_seconds: set[int] = field(default_factory=set)  # seconds in which the tone sounds
    colour: tuple[int, int, int] = (230, 40, 40)  # RGB of the shape
    shape: str = "square"  # "square" or "disc"
    tone_hz: float = 440.0  # fundamental of the tone (Hz); two harmonics are added
    background: tuple[int, int, int] = (90, 110, 90)  # RGB of the backdrop
    audio: bool = True  # write an audio track
    audio_codec: str = "aac"  # "aac" (lossy, as on YouTube) or "pcm_s16le" (lossless; needs .mkv)
    audio_rate: int = RENDER_AUDIO_RATE  # Hz
    audio_delay: float = 0.0  # s: the audio track starts this late on the clip clock
    video: bool = True  # write a video track
    seed: int = 0  # noise and shape position
    codec: str = "libx264"  # video encoder
    second_marker: bool = False  # draw the second's index as a grey level in the top-left corner
    shape_duty: float = 1.0  # share of each shape second during which the shape shows (random phase)

    def times(self) -> np.ndarray:
        """(n,) presentation time (s) of every frame."""
        if self.frame_times is not None:
            return np.asarray(self.frame_times, dtype=np.float64)
        n = int(np.floor(self.seconds * float(self.fps) + 1e-6))
        return np.arange(n, dtype=np.float64) / float(self.fps)


def draw_frame(spec: ClipSpec, t: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame shown at time t (s)."""
    img = np.empty((spec.height, spec.width, 3), np.uint8)
    img[:] = spec.background
    noise = rng.integers(-8, 9, size=img.shape)
    img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    second = int(np.floor(t + 1e-9))
    pos = np.random.default_rng(spec.seed + 1000 * second)
    phase = pos.random()
    if second in spec.shape_seconds and (t - second - phase) % 1.0 < spec.shape_duty:
        side = max(4, min(spec.width, spec.height) // 2)
        y0 = int(pos.integers(0, spec.height - side + 1))
        x0 = int(pos.integers(0, spec.width - side + 1))
        yy, xx = np.mgrid[:side, :side]
        mask = np.ones((side, side), bool)
        if spec.shape == "disc":
            r = (side - 1) / 2
            mask = (yy - r) ** 2 + (xx - r) ** 2 <= r * r
        img[y0:y0 + side, x0:x0 + side][mask] = spec.colour
    if spec.second_marker:
        img[:8, :8] = min(255, 20 * second)
    return img


def tone_track(spec: ClipSpec, rate: int = RENDER_AUDIO_RATE) -> np.ndarray:
    """(channels, n) float32 soundtrack: noise everywhere, the tone in spec.tone_seconds.

    Sample n plays at n / rate + spec.audio_delay on the clip clock; the track ends with the clip."""
    n = int(round((spec.seconds - spec.audio_delay) * rate))
    t = np.arange(n) / rate + spec.audio_delay
    rng = np.random.default_rng(spec.seed + 7)
    mono = NOISE_AMPLITUDE * rng.standard_normal(n)
    on = np.isin(np.floor(t).astype(int), sorted(spec.tone_seconds))
    tone = sum(np.sin(2 * np.pi * k * spec.tone_hz * t) / k for k in (1, 2, 3)) / 1.84
    mono = mono + on * TONE_AMPLITUDE * tone
    return np.repeat(mono[None, :].astype(np.float32), RENDER_AUDIO_CHANNELS, axis=0)


def render_clip(path: str | Path, spec: ClipSpec) -> Path:
    """Encode `spec` into a media file (container from the suffix: .mp4, .mkv, .m4a...), atomically."""
    import av

    path = Path(path)
    rng = np.random.default_rng(spec.seed)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format=_container_format(path)) as out:
            vstream = astream = None
            if spec.video:
                rate = Fraction(spec.fps).limit_denominator(1001) if spec.frame_times is None else 25
                vstream = out.add_stream(spec.codec, rate=rate)
                vstream.width, vstream.height = spec.width, spec.height
                vstream.pix_fmt = "yuv420p"
                if spec.codec == "libx264":
                    vstream.options = {"preset": "ultrafast"}  # test clips: encoding speed over size
                vstream.time_base = VIDEO_TIME_BASE
                vstream.codec_context.time_base = VIDEO_TIME_BASE
            if spec.audio:
                astream = out.add_stream(spec.audio_codec, rate=spec.audio_rate, layout="stereo")
            if vstream is not None:
                for t in spec.times():
                    frame = av.VideoFrame.from_ndarray(draw_frame(spec, float(t), rng), format="rgb24")
                    frame.pts = int(round(t / VIDEO_TIME_BASE))
                    frame.time_base = VIDEO_TIME_BASE
                    out.mux(vstream.encode(frame))
                out.mux(vstream.encode(None))
            if astream is not None:
                samples = tone_track(spec, spec.audio_rate)
                delay = int(round(spec.audio_delay * spec.audio_rate))
                fmt = "fltp" if spec.audio_codec == "aac" else "s16p"
                if fmt == "s16p":
                    samples = np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16)
                for start in range(0, samples.shape[1], AUDIO_FRAME_SAMPLES):
                    chunk = np.ascontiguousarray(samples[:, start:start + AUDIO_FRAME_SAMPLES])
                    frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="stereo")
                    frame.sample_rate = spec.audio_rate
                    frame.pts = start + delay
                    frame.time_base = Fraction(1, spec.audio_rate)
                    out.mux(astream.encode(frame))
                out.mux(astream.encode(None))
    return path


def _container_format(path: Path) -> str | None:
    """FFmpeg muxer for a suffix (None: let FFmpeg guess)."""
    return {".mp4": "mp4", ".m4a": "mp4", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
            ".mov": "mov"}.get(path.suffix.lower())


# An audio-visual event class of the alignment set: its shape and colour on screen, its tone.
ALIGNMENT_CLASSES: dict[str, dict] = {
    "Red square": {"colour": (230, 40, 40), "shape": "square", "tone_hz": 440.0},
    "Blue disc": {"colour": (40, 70, 230), "shape": "disc", "tone_hz": 1320.0},
}
ALIGNMENT_FPS = (25, Fraction(30000, 1001), 30)  # frame rates cycled through the set
ALIGNMENT_SECONDS = 10  # clip length (s), as AVE
ALIGNMENT_TRUTH = "alignment.json"  # per-video ground truth written beside Annotations.txt


@dataclass
class AlignmentVideo:
    """One rendered clip of the alignment set and its ground truth."""

    path: Path
    category: str
    start: int  # first event second (shape and tone together)
    end: int  # one past the last event second
    shape_seconds: set[int]  # event seconds + seconds with the shape but no tone (visible, silent)
    tone_seconds: set[int]  # event seconds + seconds with the tone but no shape (audible, off-screen)


def make_alignment_set(folder: str | Path, num_videos: int, splits: dict[str, int] | None = None, seed: int = 0,
                       width: int = 96, height: int = 64, audio_rate: int = 22050,
                       shape_duty: float = 1.0, shape_only: int = 1, tone_only: int = 1) -> list[AlignmentVideo]:
    """Render clips in which a shape and its tone appear together only during the event, with
    `shape_only` visible-silent and `tone_only` audible-invisible distractor seconds outside it, so
    that a second is an event exactly when *its* audio and *its* frames both show the class. Writes Annotations.txt and,
    when `splits` gives sizes (e.g. {"train": 8, "val": 2, "test": 2}), the split files beside it, and
    the ground truth (which seconds show the shape, which sound the tone) as alignment.json.
    `shape_duty` < 1 flashes the shape for that share of each of its seconds (sparse frame sampling can
    then miss it)."""
    from avel.data.catalog import format_line, Annotation
    from avel.data.splits import ORDER_FILES, write_order
    from avel.io import write_json, write_text

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    names = list(ALIGNMENT_CLASSES)
    videos: list[AlignmentVideo] = []
    for i in range(num_videos):
        category = names[i % len(names)]
        length = int(rng.integers(2, min(6, ALIGNMENT_SECONDS - shape_only - tone_only + 1)))
        start = int(rng.integers(0, ALIGNMENT_SECONDS - length + 1))
        event = set(range(start, start + length))
        outside = [int(s) for s in rng.permutation([s for s in range(ALIGNMENT_SECONDS) if s not in event])]
        silent, unseen = set(outside[:shape_only]), set(outside[shape_only:shape_only + tone_only])
        spec = ClipSpec(seconds=ALIGNMENT_SECONDS, fps=ALIGNMENT_FPS[i % len(ALIGNMENT_FPS)], width=width,
                        height=height, shape_seconds=event | silent, tone_seconds=event | unseen,
                        audio_rate=audio_rate, shape_duty=shape_duty,
                        seed=seed * 1000 + i, **ALIGNMENT_CLASSES[category])
        path = render_clip(folder / f"av{i:03d}.mp4", spec)
        videos.append(AlignmentVideo(path, category, start, start + length, spec.shape_seconds, spec.tone_seconds))
    lines = [format_line(Annotation(i, v.category, v.path.stem, "good", v.start, v.end)) for i, v in enumerate(videos)]
    write_text(folder / "Annotations.txt", "\n".join(lines) + "\n")
    write_json(folder / ALIGNMENT_TRUTH, [{"video": v.path.name, "category": v.category, "start": v.start,
                                          "end": v.end, "shape_seconds": sorted(v.shape_seconds),
                                          "tone_seconds": sorted(v.tone_seconds)} for v in videos])
    first = 0
    for split, size in (splits or {}).items():
        write_order(folder / ORDER_FILES[split], np.arange(first, first + size))
        first += size
    return videos
