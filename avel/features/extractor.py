"""Per-video features: decoded frames -> VGG-19 pool5 averaged per second; audio -> VGGish per second.

`FeatureExtractor.extract_many` is a three-stage pipeline: a decode thread (PyAV decoding and
swscale resizing release the GIL) streams each video's sampled frames, an audio thread computes a
video's log-mel + VGGish embeddings as soon as its decoding ends, and the calling thread runs VGG-19,
so decoding, resizing, VGGish and VGG-19 overlap. Frames go through VGG-19 in channels-last
batches; a decoded frame sampled for several target times (a source slower than the sampling rate,
or a frame on screen across a second boundary) goes through VGG-19 once; each second's pool5 maps
are averaged over its sampled frames. `--precision int8` swaps in a quantized trunk (avel.features.quantize).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avel import __version__
from avel.errors import AvelError
from avel.features.audio import EMBEDDING_SIZE, SAMPLE_RATE
from avel.features.decode import DEFAULT_FRAMES_PER_SECOND, DEFAULT_IMAGE_SIZE, ClipReader
from avel.features.logmel import segment_examples
from avel.features.vgg19 import POOL5_CHANNELS, POOL5_STRIDE, PREPROCESSING, VisualEncoder
from avel.features.weights import DEFAULT_WEIGHTS, empty_net, load_weights
from avel.precision import INT8, autocast, decide

AUTO_BATCH = {"cuda": 64, "cpu": 16}  # frames per VGG-19 pass when batch_size is 0
VGGISH_BATCH = 64  # log-mel examples per VGGish pass
PREFETCH_SEGMENTS = 24  # decoded seconds the decode thread may run ahead of the networks
FORMAT_PREPROCESSING = {"h5": "keras", "torch": "torchvision", "safetensors": "torchvision"}
# Settings that change the feature space: features made with different values are not comparable.
COMPATIBILITY_KEYS = ("vgg19_sha256", "vgg19_preprocessing", "vggish_sha256", "image_size", "resize")


@dataclass(frozen=True)
class ExtractorConfig:
    """Feature extractor settings (CLI: avel extract / avel localize)."""

    vgg19_weights: str = DEFAULT_WEIGHTS["vgg19"]  # path, or a named source (keras, torchvision)
    vggish_weights: str = DEFAULT_WEIGHTS["vggish"]  # path, or a named source (torchvggish)
    vgg19_preprocessing: str = "auto"  # auto (from the weights file: h5 -> keras, state dict -> torchvision)
    frames_per_second: int = DEFAULT_FRAMES_PER_SECOND  # frames sampled and averaged per 1-s segment
    image_size: int = DEFAULT_IMAGE_SIZE  # VGG-19 input side (pixels); pool5 is image_size / 32 cells a side
    resize: str = "stretch"  # stretch to a square (the authors) or crop (short side + centre crop)
    batch_size: int = 0  # frames per VGG-19 pass (0: 64 on CUDA, 16 on CPU)
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    precision: str = "auto"  # compute precision: auto (avel.precision: the CPU's bf16 unit, measured), fp32, bf16, int8


@dataclass
class VideoFeatures:
    """Features of one clip, T seconds long."""

    audio: np.ndarray  # (T, 128) float32 VGGish embeddings
    visual: np.ndarray  # (T, S/32, S/32, 512) float32 pool5 maps averaged over the second's frames
    frame_times: np.ndarray  # (T, F) float64 s: presentation times of the frames averaged
    duration: float  # s: end of the last video frame
    has_audio: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def num_segments(self) -> int:
        return self.audio.shape[0]


@dataclass
class ExtractStats:
    """Where the time went (benchmarks/bench_extract.py prints these)."""

    decode_s: float = 0.0  # decode thread busy time
    wait_s: float = 0.0  # main thread blocked waiting for decoded frames (decoding not hidden)
    vgg19_s: float = 0.0  # VGG-19 forward time
    vggish_s: float = 0.0  # log-mel + VGGish time
    frames: int = 0  # frames through VGG-19
    reused: int = 0  # sampled frames whose pool5 map was reused (the same decoded frame sampled again)
    videos: int = 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AvelError(f"device '{name}' requested but CUDA is not available")
    return dev


class FeatureExtractor:
    """VGG-19 + VGGish with their weights loaded and checked; turns media files into VideoFeatures."""

    def __init__(self, cfg: ExtractorConfig = ExtractorConfig()) -> None:
        if cfg.image_size < POOL5_STRIDE:
            raise AvelError(f"image size must be >= {POOL5_STRIDE} pixels, got {cfg.image_size}")
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        # bf16/fp16 autocast, int8 or fp32 (avel.precision; auto measures the VGG-19 convolutions)
        self.precision = decide(cfg.precision, self.device, workload="features")
        trunk, vggish = empty_net("vgg19"), empty_net("vggish")
        self.vgg19_weights = load_weights(cfg.vgg19_weights, trunk, "vgg19")
        self.vggish_weights = load_weights(cfg.vggish_weights, vggish, "vggish")
        pre_name = (FORMAT_PREPROCESSING[self.vgg19_weights.file_format] if cfg.vgg19_preprocessing == "auto"
                    else cfg.vgg19_preprocessing)
        if pre_name not in PREPROCESSING:
            raise AvelError(f"unknown VGG-19 preprocessing '{pre_name}' (choose from auto, {', '.join(PREPROCESSING)})")
        # channels-last (NHWC) convolutions: faster with cuDNN and with oneDNN on CPU (benchmarks/bench_extract.py)
        self.visual_net = VisualEncoder(trunk, PREPROCESSING[pre_name]).to(
            self.device, memory_format=torch.channels_last).eval()
        self.audio_net = vggish.to(self.device, memory_format=torch.channels_last).eval()
        self.batch_size = cfg.batch_size or AUTO_BATCH[self.device.type]
        self.int8: dict | None = None  # the quantized trunk's engine and calibration (int8 only)
        if self.precision.compute == INT8:
            self._quantize(trunk)
        self.stats = ExtractStats()

    def _quantize(self, trunk) -> None:
        """Replace the VGG-19 trunk by its int8 copy (calibrated once per weights file, then cached)."""
        from avel.features import quantize

        key = quantize.calibration_key(self.vgg19_weights.sha256, self.visual_net.preprocessing.name,
                                       self.cfg.image_size)
        path = quantize.calibration_path(key)
        if not path.is_file():
            print(f"avel: calibrating int8 VGG-19 (once for these weights; cached in {path.parent})", file=sys.stderr)
        self.visual_net.trunk = quantize.quantized_trunk(trunk, self.visual_net.preprocessing,
                                                         self.vgg19_weights.sha256, self.cfg.image_size,
                                                         self.cfg.resize)
        self.int8 = {"engine": key["engine"], "activation_bits": int(key["activation_bits"]),
                     "fp32_layers": key["fp32_layers"], "calibration": path.name}

    @property
    def info(self) -> dict:
        """Identity of this extractor, recorded beside extracted features (extractor.json)."""
        c = self.cfg
        return {
            "vgg19_weights": str(self.vgg19_weights.path.name), "vgg19_sha256": self.vgg19_weights.sha256,
            "vgg19_format": self.vgg19_weights.file_format, "vgg19_preprocessing": self.visual_net.preprocessing.name,
            "vggish_weights": str(self.vggish_weights.path.name), "vggish_sha256": self.vggish_weights.sha256,
            "frames_per_second": c.frames_per_second, "image_size": c.image_size, "resize": c.resize,
            "sample_rate": SAMPLE_RATE, "audio_embedding": f"vggish raw {EMBEDDING_SIZE}-d (no PCA)",
            "visual_map": f"vgg19 pool5 {c.image_size // POOL5_STRIDE}x{c.image_size // POOL5_STRIDE}x{POOL5_CHANNELS}",
            "avel_version": __version__,
            "precision": {**self.precision.record(), **({"int8": self.int8} if self.int8 is not None else {})},
        }

    def reader(self, path: str | Path, num_segments: int | None = None) -> ClipReader:
        return ClipReader(path, frames_per_second=self.cfg.frames_per_second, image_size=self.cfg.image_size,
                          resize=self.cfg.resize, num_segments=num_segments)

    def extract(self, path: str | Path, num_segments: int | None = None,
                progress: Callable[[str, str, int], None] | None = None) -> VideoFeatures:
        """Features of one file (raises AvelError for unusable input); `progress` as in extract_many."""
        for _, result in self.extract_many([(str(path), Path(path))], num_segments, progress):
            if isinstance(result, AvelError):
                raise result
            return result
        raise AssertionError("unreachable")

    def extract_many(self, jobs: Iterable[tuple[str, Path]], num_segments: int | None = None,
                     progress: Callable[[str, str, int], None] | None = None
                     ) -> Iterator[tuple[str, VideoFeatures | AvelError]]:
        """Yield (key, features or the AvelError that stopped that video) per job, decoding ahead on a thread.

        `progress(stage, key, seconds)` is told how many seconds of the video are done: stage "decode"
        (called from the decode thread) and "features" (VGG-19 done; VGGish runs once at the end).
        """
        items: queue.Queue = queue.Queue(maxsize=PREFETCH_SEGMENTS)
        stop = threading.Event()
        tell = progress or (lambda stage, key, seconds: None)
        audio = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avel-audio")  # VGGish beside VGG-19
        thread = threading.Thread(target=self._decode_jobs,
                                  args=(list(jobs), num_segments, items, stop, tell, audio),
                                  name="avel-decode", daemon=True)
        thread.start()
        try:
            yield from self._consume(items, tell)
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    items.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()
            audio.shutdown(wait=True, cancel_futures=True)

    def _decode_jobs(self, jobs: list[tuple[str, Path]], num_segments: int | None, items: queue.Queue,
                     stop: threading.Event, tell: Callable[[str, str, int], None],
                     audio: ThreadPoolExecutor | None = None) -> None:
        """Producer: ("segment", key, Segment)..., then ("done", key, (reader, future of the (T, 128) audio
        embeddings, computed on the `audio` thread; without one, here)) or ("error", key, AvelError)."""
        for key, path in jobs:
            start = time.perf_counter()
            try:
                reader = self.reader(path, num_segments)  # inside: a bad setting must reach the consumer, not hang it
                for seg in reader.segments():
                    self.stats.decode_s += time.perf_counter() - start
                    items.put(("segment", key, seg))
                    tell("decode", key, seg.index + 1)
                    start = time.perf_counter()
                    if stop.is_set():
                        return
                self.stats.decode_s += time.perf_counter() - start
                items.put(("done", key, (reader, audio.submit(self._audio_of, reader) if audio is not None
                                         else _done(self._audio_of(reader)))))
            except AvelError as exc:
                items.put(("error", key, exc))
            except Exception as exc:  # noqa: BLE001 - a decoder bug must fail one video, not the run
                items.put(("error", key, AvelError(f"decoding failed: {type(exc).__name__}: {exc}", path)))
            if stop.is_set():
                return
        items.put(("end", None, None))

    def _consume(self, items: queue.Queue, tell: Callable[[str, str, int], None]
                 ) -> Iterator[tuple[str, VideoFeatures | AvelError]]:
        pending: list = []  # segments of the current video not yet through VGG-19
        visual: list[np.ndarray] = []  # (h, w, 512) per finished segment
        times: list[np.ndarray] = []
        carry: dict = {}  # the current video's last computed frame: {"time": s, "pool5": (h, w, 512)}
        while True:
            start = time.perf_counter()
            kind, key, payload = items.get()
            self.stats.wait_s += time.perf_counter() - start
            if kind == "end":
                return
            if kind == "segment":
                pending.append(payload)
                if len(pending) * self.cfg.frames_per_second >= self.batch_size:
                    visual += self._visual(pending, carry)
                    times += [s.times for s in pending]
                    pending = []
                    tell("features", key, len(visual))
                continue
            if kind == "error":
                pending, visual, times, carry = [], [], [], {}
                yield key, payload
                continue
            visual += self._visual(pending, carry)
            times += [s.times for s in pending]
            reader, audio = payload
            start = time.perf_counter()
            audio = audio.result()  # (T, 128): usually finished while VGG-19 ran
            self.stats.wait_s += time.perf_counter() - start
            feats = VideoFeatures(audio=audio, visual=np.stack(visual), frame_times=np.stack(times),
                                  duration=float(reader.duration), has_audio=reader.has_audio,
                                  warnings=list(reader.warnings))
            pending, visual, times, carry = [], [], [], {}
            self.stats.videos += 1
            yield key, feats

    @torch.inference_mode()
    def _visual(self, segments: list, carry: dict | None = None) -> list[np.ndarray]:
        """Average pool5 maps per segment: list of (h, w, 512) float32.

        One presentation time is one decoded frame (the sampler hands out the same image for every
        target it covers), so VGG-19 runs once per distinct time; `carry` keeps the video's last
        computed frame for the next call (a frame on screen across a second boundary)."""
        if not segments:
            return []
        carry = {} if carry is None else carry
        start = time.perf_counter()
        fps = self.cfg.frames_per_second
        times = np.concatenate([s.times for s in segments])  # (n*F,) s, non-decreasing
        first = np.flatnonzero(np.r_[True, times[1:] != times[:-1]])  # first slot of each distinct frame
        inverse = np.cumsum(np.r_[False, times[1:] != times[:-1]])  # slot -> distinct frame
        reuse = bool(carry) and carry["time"] == times[0]  # distinct frame 0 was computed by the last call
        todo = first[1:] if reuse else first
        stacked = np.concatenate([s.frames for s in segments])  # (n*F, H, W, 3) uint8
        frames = torch.from_numpy(stacked[todo] if len(todo) < len(stacked) else stacked)
        outs = [carry["pool5"].unsqueeze(0)] if reuse else []
        for i in range(0, len(frames), self.batch_size):
            batch = frames[i:i + self.batch_size].to(self.device, non_blocking=True)
            with autocast(self.precision):
                outs.append(self.visual_net(batch).float())  # (b, h, w, 512)
        distinct = torch.cat(outs)  # (distinct frames, h, w, 512)
        carry.update(time=times[-1], pool5=distinct[-1])
        pool5 = distinct if len(distinct) == len(times) else distinct[torch.from_numpy(inverse)]  # (n*F, h, w, 512)
        means = pool5.view(len(segments), fps, *pool5.shape[1:]).mean(dim=1).cpu().numpy()  # (n, h, w, 512)
        self.stats.vgg19_s += time.perf_counter() - start
        self.stats.frames += len(frames)
        self.stats.reused += len(times) - len(frames)
        return list(means)

    def _audio_of(self, reader: ClipReader) -> np.ndarray:
        """(T, 128) VGGish embeddings of a decoded video (zeros where it has no audio track)."""
        if not reader.has_audio:
            return np.zeros((reader.num_segments, EMBEDDING_SIZE), np.float32)
        return self._audio(reader.audio, reader.num_segments)

    @torch.inference_mode()
    def _audio(self, waveform: np.ndarray, num_segments: int) -> np.ndarray:
        """(T, 128) float32 VGGish embeddings, one per second."""
        start = time.perf_counter()
        examples = torch.from_numpy(segment_examples(waveform, num_segments))  # (T, 96, 64)
        with autocast(self.precision):
            outs = [self.audio_net(examples[i:i + VGGISH_BATCH].to(self.device)).float().cpu()
                    for i in range(0, len(examples), VGGISH_BATCH)]
        self.stats.vggish_s += time.perf_counter() - start
        return torch.cat(outs).numpy() if outs else np.zeros((0, EMBEDDING_SIZE), np.float32)


def _done(value: object) -> Future:
    """A Future already holding `value`."""
    f: Future = Future()
    f.set_result(value)
    return f


def incompatibilities(expected: dict, actual: dict) -> list[str]:
    """Differences in the settings that define the feature space (empty: features are comparable)."""
    return [f"{k}: expected {expected.get(k)!r}, got {actual.get(k)!r}"
            for k in COMPATIBILITY_KEYS if expected.get(k) != actual.get(k)]
