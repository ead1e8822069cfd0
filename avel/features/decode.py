"""Decode a clip with PyAV: frames sampled per second by timestamp, audio as mono 16 kHz.

Segment t covers [t, t+1) seconds from the clip's start (the video stream's start time). In each
segment, `frames_per_second` target times sit evenly inside the second, at t + (k + 0.5) / F, and
each target takes the frame on screen at that time: the last frame whose presentation time is <=
the target. This uses timestamps, never an assumed frame count, so 29.97 fps, variable frame rate
and clips a few frames short all sample the right frames. Audio samples are placed by their own
timestamps on the same clock, so second t of audio plays with second t of video.

Decoding streams through the file once (video and audio packets together) and yields each
segment as soon as its last target is known, so memory stays bounded for long videos.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avel.errors import AvelError
from avel.features.audio import SAMPLE_RATE, SAMPLES_PER_SEGMENT

DEFAULT_FRAMES_PER_SECOND = 16  # frames sampled per 1-s segment (paper, Sec. 6.1)
DEFAULT_IMAGE_SIZE = 224  # pixels: VGG-19 input side
SHORT_TAIL_TOLERANCE_S = 0.25  # s: a clip this close to the next whole second counts that second
RESIZE_MODES = ("stretch", "crop")  # stretch: resize to size x size (the authors); crop: short side, centre crop
DISPLAY_MODE = "keep"  # for pictures only (avel localize): long side = size, aspect ratio kept
RESIZE_INTERPOLATION = "BILINEAR"  # swscale filter used for resizing
DURATION_MISMATCH_S = 0.5  # s: a container stating this much more than decodes gets a warning (truncated file?)


def segment_targets(num_segments: int, frames_per_second: int) -> np.ndarray:
    """(T, F) target times (s): F times evenly inside each whole second, t + (k + 0.5) / F."""
    t = np.arange(num_segments, dtype=np.float64)[:, None]
    k = np.arange(frames_per_second, dtype=np.float64)[None, :]
    return t + (k + 0.5) / frames_per_second


def sample_indices(frame_times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each target time (same shape as targets).

    The frame on screen at time x is the last one with presentation time <= x; targets before
    the first frame take the first frame, targets after the last frame take the last frame.
    `frame_times` must be increasing.
    """
    idx = np.searchsorted(np.asarray(frame_times, dtype=np.float64), targets, side="right") - 1
    return np.clip(idx, 0, len(frame_times) - 1)


def stated_duration(container) -> float | None:
    """Length (s) an open container states for its video: the video stream's, else the container's; None if unstated."""
    vstream = container.streams.video[0] if container.streams.video else None
    if vstream is not None and vstream.duration and vstream.time_base:
        return float(vstream.duration * vstream.time_base)
    return float(container.duration) / 1_000_000 if container.duration else None  # AV_TIME_BASE units


def probe_duration(path: str | Path) -> float | None:
    """The stated video length of a media file (for progress totals before decoding); None if unknown."""
    try:
        container = _open(Path(path))
    except AvelError:
        return None
    try:
        return stated_duration(container)
    finally:
        container.close()


def duration_mismatch(stated: float | None, decoded: float) -> str | None:
    """The warning for a container that states a longer video than decodes (None when they agree)."""
    if stated is None or stated - decoded <= DURATION_MISMATCH_S:
        return None
    return (f"the container states {stated:.2f} s but only {decoded:.2f} s of video decode "
            "(truncated file?); the decoded length is used")


def count_segments(duration: float, tolerance: float = SHORT_TAIL_TOLERANCE_S) -> int:
    """Whole seconds in a clip of `duration` s; a clip short of a whole second by <= tolerance counts it."""
    return max(0, int(math.floor(duration + tolerance)))


@dataclass
class Segment:
    """One second of sampled video frames."""

    index: int  # t: the segment covers [t, t + 1) s
    frames: np.ndarray  # (F, H, W, 3) uint8 RGB
    times: np.ndarray  # (F,) float64 s: presentation time of each sampled frame


@dataclass
class DecodedClip:
    """A whole clip in memory (tests, localize); extraction streams Segments instead."""

    frames: np.ndarray  # (T, F, H, W, 3) uint8 RGB
    frame_times: np.ndarray  # (T, F) float64 s
    audio: np.ndarray  # (T * SAMPLE_RATE,) float32 mono in [-1, 1]; zeros where there is no audio
    has_audio: bool  # False: the file has no (decodable) audio track
    duration: float  # s: end of the last video frame
    warnings: list[str] = field(default_factory=list)

    @property
    def num_segments(self) -> int:
        return self.frames.shape[0]


class _Resizer:
    """Converts a decoded frame to uint8 RGB: (size, size, 3) stretched or short-side + centre crop,
    or (display only) long side = size with the aspect ratio kept."""

    def __init__(self, size: int, mode: str) -> None:
        if mode not in (*RESIZE_MODES, DISPLAY_MODE):
            raise AvelError(f"unknown resize mode '{mode}' (choose from {', '.join(RESIZE_MODES)})")
        self.size, self.mode = size, mode

    def __call__(self, frame) -> np.ndarray:
        w, h, crop = self.size, self.size, False
        if self.mode != "stretch":
            pick = min if self.mode == "crop" else max  # the side that becomes `size`
            scale = self.size / pick(frame.width, frame.height)
            w, h = max(1, round(frame.width * scale)), max(1, round(frame.height * scale))
            crop = self.mode == "crop"
        img = frame.reformat(width=w, height=h, format="rgb24", interpolation=RESIZE_INTERPOLATION).to_ndarray()
        if not crop:
            return img
        y0, x0 = (h - self.size) // 2, (w - self.size) // 2
        return img[y0:y0 + self.size, x0:x0 + self.size]


class _FrameSampler:
    """Streaming version of `sample_indices`: assigns target slots as frames arrive in time order."""

    def __init__(self, frames_per_second: int, resize: _Resizer) -> None:
        self.fps = frames_per_second
        self.resize = resize
        self.next_slot = 0  # global target index k: second k // F, position k % F
        self.prev = None  # (time, av frame) of the frame on screen now
        self.prev_image: np.ndarray | None = None  # its converted image (converted on first use)
        self.filled: list[tuple[np.ndarray, float]] = []  # the current second's (image, time) so far

    def target(self, slot: int) -> float:
        return slot // self.fps + (slot % self.fps + 0.5) / self.fps

    def push(self, time: float, frame) -> Iterator[Segment]:
        """Feed the next frame (increasing time); yields every segment completed by it."""
        if self.prev is None:  # targets before the first frame take the first frame
            self.prev, self.prev_image = (time, frame), None
        while self.target(self.next_slot) < time:
            yield from self._assign_prev()
        self.prev, self.prev_image = (time, frame), None

    def finish(self, num_segments: int) -> Iterator[Segment]:
        """End of stream: targets up to `num_segments` seconds take the last frame."""
        while self.prev is not None and self.next_slot < num_segments * self.fps:
            yield from self._assign_prev()

    def _assign_prev(self) -> Iterator[Segment]:
        if self.prev_image is None:
            self.prev_image = self.resize(self.prev[1])
        self.filled.append((self.prev_image, self.prev[0]))
        self.next_slot += 1
        if len(self.filled) == self.fps:
            images, times = zip(*self.filled)
            self.filled = []
            yield Segment(self.next_slot // self.fps - 1, np.stack(images), np.array(times))


class _AudioCollector:
    """Decoded audio frames -> one mono 16 kHz float32 waveform on the clip's clock."""

    def __init__(self, origin: float) -> None:
        import av

        self.origin = origin
        self.resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)  # keeps the layout; mean below
        self.chunks: list[np.ndarray] = []
        self.samples = 0  # collected so far
        self.start: float | None = None  # s on the clip clock of the first resampled sample

    def push(self, frame) -> None:
        self._collect(self.resampler.resample(frame))

    def end(self) -> float:
        """s on the clip clock up to which audio has been collected (resampler delay aside)."""
        return float("-inf") if self.start is None else self.start + self.samples / SAMPLE_RATE

    def finish(self, num_segments: int) -> np.ndarray:
        """(num_segments * SAMPLE_RATE,) float32, zero-padded / cut to whole segments."""
        self._collect(self.resampler.resample(None))
        out = np.zeros(num_segments * SAMPLES_PER_SEGMENT, np.float32)
        if not self.chunks:
            return out
        wave = np.concatenate(self.chunks)
        offset = int(round(self.start * SAMPLE_RATE))  # where the track starts on the clip clock
        src = wave[max(0, -offset):]
        dst = max(0, offset)
        n = max(0, min(len(src), len(out) - dst))
        out[dst:dst + n] = src[:n]
        return out

    def _collect(self, frames) -> None:
        for f in frames:
            if self.start is None:
                self.start = (f.time if f.time is not None else self.origin) - self.origin
            self.chunks.append(f.to_ndarray().astype(np.float32).mean(axis=0))  # (channels, n) -> (n,)
            self.samples += len(self.chunks[-1])


class ClipReader:
    """Streams a media file's video as per-second Segments and collects its audio.

    Iterate `segments()`; afterwards `num_segments`, `duration`, `audio`, `has_audio`, `warnings`
    are set. With `num_segments` given, exactly that many seconds are read (the clip must cover
    them; longer clips are cut there).
    """

    def __init__(self, path: str | Path, frames_per_second: int = DEFAULT_FRAMES_PER_SECOND,
                 image_size: int = DEFAULT_IMAGE_SIZE, resize: str = "stretch",
                 num_segments: int | None = None) -> None:
        if frames_per_second < 1:
            raise AvelError(f"frames per second must be >= 1, got {frames_per_second}")
        self.path = Path(path)
        self.frames_per_second = frames_per_second
        self.resizer = _Resizer(image_size, resize)
        self.wanted = num_segments
        self.num_segments: int | None = None
        self.duration: float | None = None
        self.stated_duration: float | None = None  # s: the length the container states (set on opening)
        self.audio: np.ndarray | None = None
        self.has_audio = False
        self.warnings: list[str] = []

    def segments(self) -> Iterator[Segment]:
        import av

        container = _open(self.path)
        self.stated_duration = stated_duration(container)
        try:
            yield from self._read(container, av)
        finally:
            container.close()

    def _read(self, container, av) -> Iterator[Segment]:
        vstream = container.streams.video[0]
        vstream.thread_type = "AUTO"
        astream = container.streams.audio[0] if container.streams.audio else None
        origin = float(vstream.start_time * vstream.time_base) if vstream.start_time is not None else None
        sampler = _FrameSampler(self.frames_per_second, self.resizer)
        audio: _AudioCollector | None = None
        if origin is not None:
            audio = _AudioCollector(origin)
        early_audio: list = []  # audio frames decoded before the first video frame fixed the origin
        last_time, last_duration, intervals, emitted, bad_packets = None, None, [], 0, 0
        video_done = False
        reached_end = False  # the whole file was read (not stopped after the wanted seconds)
        streams = [vstream] + ([astream] if astream is not None else [])
        try:
            for packet in container.demux(*streams):
                is_video = packet.stream.type == "video"
                if video_done and is_video:
                    continue  # enough seconds of video: only the audio that goes with them is still needed
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as exc:
                    if is_video:
                        bad_packets += 1
                        if bad_packets > 1 and last_time is None:
                            raise AvelError(f"corrupt video data: {_reason(exc)}", self.path) from None
                    continue
                for frame in frames:
                    if not is_video:
                        if audio is None:
                            early_audio.append(frame)  # before the clock's origin is known
                        else:
                            audio.push(frame)
                        continue
                    if video_done or frame.time is None:
                        continue  # no timestamp: cannot be placed
                    if origin is None:
                        origin = float(frame.time)
                    if audio is None:
                        audio = _AudioCollector(origin)
                        for early in early_audio:
                            audio.push(early)
                        early_audio = []
                    t = float(frame.time) - origin
                    if last_time is not None and t <= last_time:
                        continue  # out-of-order or duplicate timestamp
                    if last_time is not None:
                        intervals.append(t - last_time)
                    last_time = t
                    last_duration = float(frame.duration * frame.time_base) if frame.duration else None
                    for seg in sampler.push(t, frame):
                        if self.wanted is None or seg.index < self.wanted:
                            emitted += 1
                            yield seg
                    video_done = self.wanted is not None and emitted >= self.wanted
                if video_done and (astream is None or (audio is not None and audio.end() >= self.wanted)):
                    break  # all wanted seconds of video and audio are in
            else:
                reached_end = True
        except av.error.FFmpegError as exc:
            raise AvelError(f"cannot read media data: {_reason(exc)}", self.path) from None
        if last_time is None:
            raise AvelError("no decodable video frames (corrupt or empty video track?)", self.path)
        frame_len = last_duration or (float(np.median(intervals)) if intervals else 1.0 / float(vstream.average_rate or 25))
        self.duration = last_time + frame_len
        mismatch = duration_mismatch(self.stated_duration, self.duration) if reached_end else None
        if mismatch:
            self.warnings.append(mismatch)
        if self.wanted is not None and emitted >= self.wanted:
            total = self.wanted
        else:
            total = count_segments(self.duration)
            if self.wanted is not None and total < self.wanted:
                stated = f"; the container states {self.stated_duration:.2f} s" if mismatch else ""
                raise AvelError(f"video covers {self.duration:.2f} s, need {self.wanted} whole seconds "
                                f"(truncated file?{stated})", self.path)
            if total == 0:
                raise AvelError(f"video covers {self.duration:.2f} s: not even one whole second", self.path)
            for seg in sampler.finish(total):
                if seg.index >= emitted:
                    emitted += 1
                    yield seg
        self.num_segments = total
        if bad_packets:
            self.warnings.append(f"skipped {bad_packets} undecodable video packet(s)")
        self.has_audio = audio is not None and audio.chunks != []
        self.audio = audio.finish(total) if audio is not None else np.zeros(total * SAMPLES_PER_SEGMENT, np.float32)
        if not self.has_audio:
            self.warnings.append("no audio track: audio features are zeros" if astream is None
                                 else "audio track has no decodable samples: audio features are zeros")

    def read(self) -> DecodedClip:
        """Decode everything into memory."""
        segs = list(self.segments())
        return DecodedClip(frames=np.stack([s.frames for s in segs]), frame_times=np.stack([s.times for s in segs]),
                           audio=self.audio, has_audio=self.has_audio, duration=self.duration,
                           warnings=list(self.warnings))


def read_clip(path: str | Path, **kwargs) -> DecodedClip:
    """Decode a whole clip: see ClipReader for the arguments."""
    return ClipReader(path, **kwargs).read()


def _open(path: Path):
    """Open a media file, with one-line reasons for the usual ways it can be unusable."""
    import av

    if not path.is_file():
        raise AvelError("file not found", path)
    if path.stat().st_size == 0:
        raise AvelError("empty file (0 bytes)", path)
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise AvelError(f"not a readable media file: {_reason(exc)}", path) from None
    if not container.streams.video:
        what = "audio-only file" if container.streams.audio else "no audio either"
        container.close()
        raise AvelError(f"no video stream ({what})", path)
    vstream = container.streams.video[0]
    try:
        ctx = vstream.codec_context
        ok = ctx is not None and ctx.codec is not None
    except Exception:  # noqa: BLE001 - PyAV raises assorted errors for codecs FFmpeg cannot decode
        ok = False
    if not ok:
        name = getattr(getattr(vstream, "codec_context", None), "name", None) or "unknown"
        container.close()
        raise AvelError(f"unsupported video codec '{name}'", path)
    return container


def _reason(exc: Exception) -> str:
    """FFmpeg's message without PyAV's errno/filename decoration."""
    msg = getattr(exc, "strerror", None) or str(exc)
    return str(msg).strip().rstrip(".")
