"""int8 VGG-19: PyTorch's post-training static quantization for x86 (torch.ao FX, fbgemm / oneDNN kernels).

`--precision int8` runs the VGG-19 trunk with int8 weights (per output channel) and int8 activations
(per tensor, over the range observed in calibration; 8 bits where the CPU has VNNI) on PyTorch's quantized CPU engine: fbgemm's VNNI
kernels where present (measured ~2x the oneDNN engine's speed on an AMD EPYC with AVX-512 VNNI),
else the x86 / oneDNN engine. VGGish and the localizer stay fp32 (VGGish is < 1% of a clip's
multiply-adds: quantizing it does not pay).

Calibration (the activation ranges) runs once per weights file: CALIBRATION_CLIPS clips rendered by
avel.features.render, decoded by the extractor's own ClipReader, go through the observed fp32
network; the observers' state is cached in `$AVEL_CACHE/weights/int8/` under a name keyed by the
weights' sha256, the preprocessing, the image size, the engine and the torch version. The cache
file records that key in full; a file that is unreadable, incomplete, non-finite or made for another
key is rebuilt (with one line on stderr), never used. The calibration input is fixed, so a rebuilt
cache gives the same int8 network.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from avel.errors import AvelError

if TYPE_CHECKING:
    from avel.features.vgg19 import Preprocessing

INT8 = "int8"  # the --precision value
ENGINES = ("fbgemm", "x86", "onednn")  # quantized engines in order of preference (fbgemm: VNNI kernels)
CALIBRATION_FORMAT = 1  # bump when what is cached or how it is computed changes
CALIBRATION_SUBDIR = "int8"  # folder of avel's weights cache holding calibration files
CALIBRATION_SUFFIX = ".calibration.safetensors"
CALIBRATION_CLIPS = 4  # rendered clips the activation ranges are measured on
CALIBRATION_SECONDS = 2  # s per calibration clip
CALIBRATION_FRAMES_PER_SECOND = 4  # frames sampled per second of a calibration clip (32 frames in all)
CALIBRATION_BATCH = 8  # frames per observed forward pass
CALIBRATION_CLIP_SIZE = (640, 360)  # pixels (width, height) of a calibration clip, like a YouTube clip
ACTIVATION_BITS = 8  # bits of an int8 activation where the CPU has VNNI (7 without: see activation_bits)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo flags of 32-bit-accumulating int8 dot products
FP32_LAYERS = ("features.0",)  # the first conv (3 input channels, 0.4% of the multiply-adds) keeps the pixels exact
OBSERVER_PREFIX = "activation_post_process_"  # FX names the activation observers so
PROBE_SHAPE = (1, 128, 56, 56)  # (B, C, H, W): the probe times one VGG-19-sized 3x3 conv of this input
PROBE_REPS = 3  # timed passes per precision (the best is kept)


# ---------------------------------------------------------------- availability

def engine() -> str | None:
    """The quantized engine int8 runs on (first of ENGINES this torch build has), None if none."""
    supported = set(torch.backends.quantized.supported_engines)
    return next((e for e in ENGINES if e in supported), None)


def unavailable_reason(device_type: str = "cpu") -> str | None:
    """Why int8 cannot run on `device_type` here (one line, with what to use instead), None when it can."""
    if device_type != "cpu":
        return (f"--precision int8 runs on the CPU only (PyTorch's quantized kernels), not on {device_type}: "
                "use --precision auto or bf16 there, or --device cpu")
    try:
        importlib.import_module("torch.ao.quantization.quantize_fx")
    except ImportError:
        return (f"--precision int8 is unavailable: this PyTorch ({torch.__version__}) has no torch.ao quantization; "
                "use --precision auto, bf16 or fp32")
    if engine() is None:
        return (f"--precision int8 is unavailable: this PyTorch ({torch.__version__}) has no x86 quantized engine "
                f"({', '.join(ENGINES)}); use --precision auto, bf16 or fp32")
    return None


def require_int8(device_type: str = "cpu") -> None:
    """AvelError (one line, CLI exit 2) when int8 is unavailable on `device_type`."""
    reason = unavailable_reason(device_type)
    if reason is not None:
        raise AvelError(reason)


def _use_engine() -> str:
    name = engine()
    if name is None:
        require_int8()
    torch.backends.quantized.engine = name
    return name


def has_vnni(path: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU has VNNI (int8 dot products accumulate in 32 bits: no 16-bit saturation)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(f in flags for f in VNNI_FLAGS)


def activation_bits() -> int:
    """8 where VNNI accumulates int8 products exactly; else 7 (fbgemm's reduced range avoids the saturation
    of AVX2's 16-bit intermediate sums)."""
    return ACTIVATION_BITS if has_vnni() else ACTIVATION_BITS - 1


def _qconfig_mapping(name: str):
    """Per-output-channel symmetric int8 weights; per-tensor uint8 activations over their observed min..max
    (no clipping inside the calibrated range); FP32_LAYERS left in fp32."""
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver, QConfig, QConfigMapping

    qconfig = QConfig(activation=MinMaxObserver.with_args(reduce_range=activation_bits() < ACTIVATION_BITS),
                      weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                                qscheme=torch.per_channel_symmetric))
    mapping = QConfigMapping().set_global(qconfig)
    for layer in FP32_LAYERS:
        mapping.set_module_name(layer, None)
    return mapping


def _prepare(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """`module` (copied) traced, conv+ReLU fused and observers inserted (fp32 maths, ranges recorded)."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices: the API is what this torch ships
        return prepare_fx(copy.deepcopy(module).eval(), _qconfig_mapping(_use_engine()), example_inputs=(example,))


def _convert(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared).eval()


# ---------------------------------------------------------------- the speed probe

def probe_int8_speedup() -> float:
    """Measured int8 / fp32 rate of one VGG-19-sized 3x3 convolution on one core (>1: int8 is faster)."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(PROBE_SHAPE[1], PROBE_SHAPE[1], 3, padding=1), nn.ReLU()).eval()
    x = torch.randn(PROBE_SHAPE).contiguous(memory_format=torch.channels_last)
    conv = conv.to(memory_format=torch.channels_last)
    prepared = _prepare(conv, x)
    with torch.inference_mode():
        prepared(x)
        quantized = _convert(prepared)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core: a thread pool shared with other work times its waits, not the units
    try:
        with torch.inference_mode():
            return _best(conv, x) / _best(quantized, x)
    finally:
        torch.set_num_threads(threads)


def _best(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    fn(x)
    best = float("inf")
    for _ in range(PROBE_REPS):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return best


_probe: Callable[[], float] = probe_int8_speedup  # replaced by tests
_speedup: dict[str, float] = {}


def int8_speedup() -> float | None:
    """The probe's int8 / fp32 convolution rate on this CPU (measured once per process), None where int8 is
    unavailable. What `--precision auto` may weigh against bf16 (docs/extraction.md)."""
    if unavailable_reason("cpu") is not None:
        return None
    if "cpu" not in _speedup:
        _speedup["cpu"] = float(_probe())
    return _speedup["cpu"]


# ---------------------------------------------------------------- calibration

def calibration_key(weights_sha256: str, preprocessing: str, image_size: int) -> dict[str, str]:
    """What a calibration depends on: the cache file records it and is used only when it matches."""
    return {"format": str(CALIBRATION_FORMAT), "weights_sha256": weights_sha256, "preprocessing": preprocessing,
            "image_size": str(image_size), "engine": engine() or "none",
            "activation_bits": str(activation_bits()), "fp32_layers": ",".join(FP32_LAYERS), "torch": torch.__version__.split("+")[0],
            "calibration": f"{CALIBRATION_CLIPS} rendered clips x {CALIBRATION_SECONDS} s x "
                           f"{CALIBRATION_FRAMES_PER_SECOND} frames/s"}


def calibration_path(key: dict[str, str], folder: Path | None = None) -> Path:
    """The cache file for `key`: named by the weights' hash and a digest of the rest of the key."""
    if folder is None:
        from avel.features.weights import cache_dir

        folder = cache_dir() / CALIBRATION_SUBDIR
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(folder) / f"vgg19-{key['weights_sha256'][:16]}-{digest}{CALIBRATION_SUFFIX}"


def calibration_frames(image_size: int, resize: str = "stretch") -> np.ndarray:
    """(N, S, S, 3) uint8 frames: rendered clips (shapes, tones, backdrops of several colours) decoded by
    ClipReader as extraction decodes a video. Deterministic: the same frames on every machine."""
    import tempfile

    from avel.features.decode import ClipReader
    from avel.features.render import ClipSpec, render_clip

    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(CALIBRATION_CLIPS):
            rng = np.random.default_rng(i)
            spec = ClipSpec(seconds=CALIBRATION_SECONDS, fps=25, width=CALIBRATION_CLIP_SIZE[0],
                            height=CALIBRATION_CLIP_SIZE[1], shape_seconds=set(range(i % 2, CALIBRATION_SECONDS)),
                            tone_seconds={0}, colour=tuple(int(c) for c in rng.integers(0, 256, 3)),
                            background=tuple(int(c) for c in rng.integers(0, 256, 3)),
                            shape=("square", "disc")[i % 2], seed=i)
            path = render_clip(Path(tmp) / f"calibration{i}.mp4", spec)
            reader = ClipReader(path, frames_per_second=CALIBRATION_FRAMES_PER_SECOND, image_size=image_size,
                                resize=resize, num_segments=CALIBRATION_SECONDS)
            frames += [s.frames for s in reader.segments()]
    return np.concatenate(frames)


def _observer_state(prepared: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in prepared.state_dict().items()
            if k.startswith(OBSERVER_PREFIX)}


def _load_observers(prepared: nn.Module, path: Path, key: dict[str, str]) -> str | None:
    """Load cached observer state into `prepared`; returns why the file is unusable (None: loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k).clone() for k in f.keys()}  # a copy: the file may be replaced
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        return f"unreadable ({type(exc).__name__})"
    stored = {k: meta.get(k) for k in key}
    if stored != key:
        diff = [k for k in key if stored[k] != key[k]]
        return f"made for other settings ({', '.join(diff)})"
    expected = _observer_state(prepared)
    if set(state) != set(expected):
        return f"holds {len(state)} observer tensors, expected {len(expected)}"
    for k, v in expected.items():
        if state[k].shape != v.shape or state[k].dtype != v.dtype:
            return f"{k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
        if v.is_floating_point() and not bool(torch.isfinite(state[k]).all()):
            return f"{k} is not finite"
    prepared.load_state_dict(state, strict=False)
    return None


def _save_observers(prepared: nn.Module, path: Path, key: dict[str, str]) -> None:
    from safetensors.torch import save_file

    from avel.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(_observer_state(prepared), str(tmp), metadata=key)


def quantized_trunk(trunk: nn.Module, preprocessing: Preprocessing, weights_sha256: str, image_size: int,
                    resize: str = "stretch", cache_folder: Path | None = None,
                    log: Callable[[str], None] | None = None) -> nn.Module:
    """An int8 copy of the VGG-19 trunk (B, 3, S, S) fp32 -> (B, 512, S/32, S/32) fp32, calibrated from the
    cache when it holds a usable calibration for these weights, else calibrated now and cached."""
    from avel.features.vgg19 import VisualEncoder

    log = log or (lambda msg: print(f"avel: {msg}", file=sys.stderr))
    key = calibration_key(weights_sha256, preprocessing.name, image_size)
    path = calibration_path(key, cache_folder)
    example = torch.zeros(1, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)
    prepared = _prepare(trunk, example)
    problem = _load_observers(prepared, path, key) if path.is_file() else "absent"
    if problem is not None:
        if problem != "absent":
            log(f"int8 calibration {path}: {problem}: calibrating again")
        prepared = _prepare(trunk, example)  # fresh observers (a failed load may have left some state)
        calibrate(VisualEncoder(prepared, preprocessing), calibration_frames(image_size, resize))
        try:
            _save_observers(prepared, path, key)
        except AvelError as exc:  # a read-only cache costs a calibration per process, not the run
            log(f"warning: int8 calibration not cached: {exc}")
    with torch.inference_mode():
        return _convert(prepared)


@torch.inference_mode()
def calibrate(observed: nn.Module, frames: np.ndarray) -> None:
    """Run uint8 frames (N, S, S, 3) through an observed VisualEncoder (records the activation ranges)."""
    for i in range(0, len(frames), CALIBRATION_BATCH):
        observed(torch.from_numpy(frames[i:i + CALIBRATION_BATCH]))


def relative_error(approx: np.ndarray | torch.Tensor, exact: np.ndarray | torch.Tensor) -> float:
    """||approx - exact|| / ||exact|| (Frobenius norms)."""
    a, e = np.asarray(approx, np.float64), np.asarray(exact, np.float64)
    return float(np.linalg.norm(a - e) / max(np.linalg.norm(e), np.finfo(np.float64).tiny))
