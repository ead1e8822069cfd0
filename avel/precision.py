"""Compute precision: fp32, or bf16 / fp16 matrix products under autocast where the hardware is fast at them.

Many CPUs (Intel AMX, AVX-512-BF16) and most GPUs multiply bf16 matrices several times faster than
fp32; CPUs without such units (e.g. AVX2-only AMD) run bf16 products 30x or more *slower* (0.002-0.03x
fp32 measured on an AMD EPYC: oneDNN emulates them). So `auto` decides in two steps:

1. what the CPU declares: without a bf16 unit (`amx_bf16` or `avx512_bf16` in /proc/cpuinfo) it is fp32,
   with nothing measured;
2. where one is declared, a probe times the work's own operations in fp32 and bf16 on one core
   (`features`: VGG-19's 3x3 convolutions; `model`: the localizers' matrix products), median of
   `PROBE_REPS`, and bf16 is chosen where it is at least `AUTO_MIN_SPEEDUP` times faster.

The measurement is kept in avel's cache per machine (CPU model, core count, torch version), under a
lock, so every process on a machine decides the same way, including processes started together
(torchrun shards); a cache that cannot be written only costs each process its own probe. On CUDA no
probe is needed: bf16 where the GPU supports it, else fp16 (training then scales the loss with a GradScaler).

Precision is a compute setting, never a storage one: weights, optimizer state and stored features
stay fp32 (or the released layout's dtype); autocast runs the convolutions, linear layers and
matrix products in the lower precision with fp32 accumulation; losses, the probabilities avel
returns and the fused attention's softmax stay fp32. What was chosen is printed once per process (stderr)
with the measured ratio, and recorded (`Decision.record()`) in extractor.json, run configs and reports.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads PRECISIONS without loading it
    import torch

PRECISIONS = ("auto", "fp32", "bf16")  # --precision choices (fp16 is chosen by auto on CUDA without bf16)
PRECISION_HELP = ("compute precision: auto (default: bf16 where the CPU declares a bf16 unit and bf16 measures "
                  ">= 1.5x fp32 at the work's shapes, once per machine, or the GPU supports it; else fp32), "
                  "fp32, bf16 (features and weights stay fp32)")
INT8 = "int8"  # extraction only: VGG-19 quantized (avel.features.quantize); everything else computes in fp32
EXTRACT_PRECISIONS = (*PRECISIONS, INT8)  # --precision choices of avel extract / avel localize
EXTRACT_PRECISION_HELP = (PRECISION_HELP[:-1] + "; int8: VGG-19 with int8 weights and activations on the CPU "
                          "(PyTorch's x86 quantized engine, calibrated once per weights file), the rest fp32)")
AUTOCAST_PRECISIONS = ("bf16", "fp16")  # computes that run under torch.autocast (int8 runs quantized modules)
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # compute precision -> torch dtype
# auto picks bf16 only where the probe measures it at least this many times faster than fp32: well below
# the ~2x of AVX-512 BF16 and the ~5x of AMX, well above the <1x of emulation (a margin, so that noise
# in the probe cannot flip the choice between machines of one kind)
AUTO_MIN_SPEEDUP = 1.5
WARN_BELOW_SPEEDUP = 1.0  # an explicit bf16 slower than fp32 by the probe gets a one-line warning
PROBE_REPS = 5  # timed passes over the probe's operations per dtype (the median is kept)
PROBE_BUDGET_S = 1.0  # s: stop timing a dtype once it has used this long (emulated bf16 is ~30x slower)
PRECISION_CACHE_DIR = "precision"  # folder in avel's cache holding the per-machine measurements
PRECISION_CACHE_FILE = "speedups.json"  # {machine key: {workload: measured bf16 speedup}}
CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")  # /proc/cpuinfo flags worth reporting


@dataclass(frozen=True)
class Decision:
    """The precision a command computes in on one device, and why."""

    requested: str  # auto, fp32 or bf16 (what the user asked for)
    compute: str  # fp32, bf16 or fp16 (what runs)
    device: str  # device type: cpu or cuda
    reason: str  # one line: why this precision
    bf16_speedup: float | None = None  # measured bf16 / fp32 matrix-product rate (CPU probe), None if not probed

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, DTYPE_NAMES[self.compute])

    @property
    def lower(self) -> bool:
        """True when autocast runs in a lower precision than fp32."""
        return self.compute in AUTOCAST_PRECISIONS

    @property
    def needs_scaler(self) -> bool:
        """fp16 training needs loss scaling (bf16 has fp32's exponent range)."""
        return self.compute == "fp16"

    def record(self) -> dict[str, Any]:
        """What extractor.json, run configs and reports store."""
        return {"requested": self.requested, "compute": self.compute, "device": self.device,
                "reason": self.reason, "bf16_speedup": self.bf16_speedup, "machine": machine_name(self.device)}


# ---------------------------------------------------------------- what the CPU declares

BF16_UNITS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs that multiply bf16 in hardware
NO_UNIT = f"this CPU declares no bf16 unit ({', '.join(BF16_UNITS)})"


def declared_bf16(info: dict[str, Any] | None = None) -> bool | None:
    """Whether this CPU declares a bf16 unit (AMX or AVX-512 BF16); None where nothing is declared
    (no /proc/cpuinfo: another OS), so that only the probe can tell."""
    info = cpu_info() if info is None else info
    if info["model"] is None and not info["flags"]:
        return None
    return any(f in info["flags"] for f in BF16_UNITS)


# ---------------------------------------------------------------- the probe, at the work's own shapes

# (channels, side) of VGG-19 3x3 convolutions (conv2_x, conv3_x, conv4_x at avel's 224-px input, halved
# sides to keep the probe short): what extraction and `avel localize` spend their time in.
CONV_PROBE_SHAPES = ((128, 56), (256, 28), (512, 14))
# (rows, features) of the localizers' products: the attention's 49-cell projections and the LSTM-sized layers.
MATMUL_PROBE_SHAPES = ((3136, 512), (640, 512), (640, 128))
WORKLOADS = ("features", "model")  # features: the VGG-19 pass; model: training and scoring the localizers


def _probe_ops(workload: str, dtype: torch.dtype) -> list[Callable[[], Any]]:
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    ops: list[Callable[[], Any]] = []
    if workload == "features":
        for c, side in CONV_PROBE_SHAPES:
            x = torch.randn(1, c, side, side, generator=g).to(dtype)
            w = (torch.randn(c, c, 3, 3, generator=g) * 0.05).to(dtype)
            ops.append(lambda x=x, w=w: F.conv2d(x, w, padding=1))
    else:
        for rows, k in MATMUL_PROBE_SHAPES:
            a = torch.randn(rows, k, generator=g).to(dtype)
            b = torch.randn(k, k, generator=g).to(dtype)
            ops.append(lambda a=a, b=b: torch.mm(a, b))
    return ops


def _median_seconds(ops: list[Callable[[], Any]], reps: int = PROBE_REPS) -> float:
    """Median over `reps` of the seconds one pass over `ops` takes, after one untimed pass (one-time
    costs: oneDNN primitive creation); stops early once PROBE_BUDGET_S is used (emulated bf16)."""
    for op in ops:
        op()
    times: list[float] = []
    while len(times) < reps and sum(times) < PROBE_BUDGET_S:
        start = time.perf_counter()
        for op in ops:
            op()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def probe_cpu_bf16_speedup(workload: str = "model") -> float:
    """Measured bf16 / fp32 rate of `workload`'s operations on one core of this CPU (>1: bf16 faster)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core: a thread pool shared with other work times its waits, not the units
    try:
        with torch.inference_mode():
            fp32 = _median_seconds(_probe_ops(workload, torch.float32))
            return fp32 / _median_seconds(_probe_ops(workload, torch.bfloat16))
    finally:
        torch.set_num_threads(threads)


_probe: Callable[[str], float] = probe_cpu_bf16_speedup  # replaced by tests (a mocked probe)
_speedups: dict[str, float] = {}  # workload -> bf16 speedup on this CPU (memo for the process)
_announced: set[tuple[str, ...]] = set()  # (device type, requested, compute[, "warning"]) already printed


def machine_key() -> str:
    """What a cached measurement belongs to: CPU model, core count and torch version."""
    import torch

    return f"{cpu_info()['model'] or 'unknown CPU'} | {os.cpu_count()} cores | torch {torch.__version__}"


def _cache_dir() -> Path:
    from avel.cache import cache_root

    return cache_root() / PRECISION_CACHE_DIR


def _read_cache(path: Path) -> dict[str, Any]:
    """The cached measurements ({machine key: {workload: speedup}}); a missing or corrupt file reads empty."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _cached_speedup(doc: dict[str, Any], key: str, workload: str) -> float | None:
    value = doc.get(key, {}).get(workload) if isinstance(doc.get(key), dict) else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else None


def cpu_bf16_speedup(workload: str = "model") -> float:
    """The bf16 speedup of `workload` on this machine: measured once per machine (CPU model, cores, torch
    version) and kept in avel's cache, so that every process decides the same way; processes that start
    together wait for the first one's measurement. Where the cache cannot be written, measured per process."""
    if workload in _speedups:
        return _speedups[workload]
    from avel.errors import AvelError
    from avel.io import output_lock, write_json

    folder, key = _cache_dir(), machine_key()
    path = folder / PRECISION_CACHE_FILE
    try:
        with output_lock(folder, wait=True):
            doc = _read_cache(path)
            value = _cached_speedup(doc, key, workload)
            if value is None:  # not measured here yet, or a corrupt entry: measure (again) and store
                value = round(float(_probe(workload)), 3)
                entry = doc.get(key) if isinstance(doc.get(key), dict) else {}
                doc[key] = {**entry, workload: value}
                write_json(path, doc)
    except AvelError:  # an unwritable cache: this process measures for itself
        value = round(float(_probe(workload)), 3)
    _speedups[workload] = value
    return value


def reset() -> None:
    """Forget the process's memo and announcements (tests); the on-disk cache is left as it is."""
    _speedups.clear()
    _announced.clear()


# ---------------------------------------------------------------- the decision

def _cuda_decision(requested: str, workload: str) -> Decision:
    import torch

    supported = torch.cuda.is_bf16_supported()
    if requested == "fp32":
        return Decision(requested, "fp32", "cuda", "requested")
    if requested == "bf16":
        return Decision(requested, "bf16", "cuda", "requested" if supported else "requested (this GPU lacks bf16)")
    if supported:
        return Decision(requested, "bf16", "cuda", "auto: the GPU supports bf16")
    return Decision(requested, "fp16", "cuda", "auto: no bf16 on this GPU: fp16 with loss scaling")


WORKLOAD_WORDS = {"features": "VGG-19 convolutions", "model": "localizer matrix products"}


def _cpu_decision(requested: str, workload: str) -> Decision:
    if requested == "fp32":
        return Decision(requested, "fp32", "cpu", "requested")
    declared = declared_bf16()
    if declared is False:  # AVX2-only and older: oneDNN emulates bf16, far slower; nothing to measure
        if requested == "bf16":
            return Decision(requested, "bf16", "cpu", f"requested ({NO_UNIT})")
        return Decision(requested, "fp32", "cpu", f"auto: {NO_UNIT}")
    factor = cpu_bf16_speedup(workload)
    if requested == "bf16":
        return Decision(requested, "bf16", "cpu", "requested", factor)
    measured = f"bf16 {WORKLOAD_WORDS[workload]} run at {factor:.2g}x fp32 here"
    if factor >= AUTO_MIN_SPEEDUP:
        return Decision(requested, "bf16", "cpu", f"auto: {measured}", factor)
    return Decision(requested, "fp32", "cpu", f"auto: {measured} (bf16 needs >= {AUTO_MIN_SPEEDUP:g}x)", factor)


DECIDERS: dict[str, Callable[[str, str], Decision]] = {"cpu": _cpu_decision, "cuda": _cuda_decision}


def _int8_decision(device_type: str) -> Decision:
    """An explicit int8 (extraction): AvelError with one line saying what to use where it cannot run."""
    from avel.features.quantize import require_int8

    require_int8(device_type)
    return Decision(INT8, INT8, device_type, "requested: VGG-19 int8, the rest fp32")


def check_precision(requested: str) -> str:
    """The requested precision, or AvelError listing the valid ones (for the Python API; the CLI uses choices)."""
    if requested not in PRECISIONS:
        from avel.errors import AvelError

        raise AvelError(f"unknown precision '{requested}' (choose from {', '.join(PRECISIONS)})")
    return requested


def warning_text(decision: Decision) -> str | None:
    """The one-line warning for an explicit bf16 on hardware without a usable bf16 path, else None."""
    if decision.requested != "bf16":
        return None
    if decision.device == "cpu" and decision.bf16_speedup is not None and decision.bf16_speedup < WARN_BELOW_SPEEDUP:
        return f"avel: warning: bf16 runs at {decision.bf16_speedup:.2g}x fp32 here"
    if decision.device == "cpu" and NO_UNIT in decision.reason:
        return f"avel: warning: {NO_UNIT}: bf16 runs emulated here, far slower than fp32"
    if decision.device == "cuda" and "lacks bf16" in decision.reason:
        return "avel: warning: this GPU does not support bf16; running bf16 as asked"
    return None


def decide(requested: str, device: torch.device | str, *, workload: str = "model", announce: bool = True,
           warn: bool | None = None) -> Decision:
    """The precision to compute in on `device` for a requested auto / fp32 / bf16.

    `workload` names the operations to measure on a CPU that declares bf16: "features" (the VGG-19
    pass of extraction and localize) or "model" (training and scoring the localizers).

    With `announce`, a choice avel made (auto) is printed once per process on stderr; an explicit
    fp32/bf16 is what the user typed and is not repeated back. With `warn` (default: as `announce`),
    the warning for an explicit bf16 that is slow here (a --quiet command still warns)."""
    import torch

    kind = torch.device(device).type
    if requested == INT8:
        return _int8_decision(kind)
    check_precision(requested)
    decider = DECIDERS.get(kind)
    if workload not in WORKLOADS:
        raise ValueError(f"unknown precision workload {workload!r} (one of {', '.join(WORKLOADS)})")
    decision = decider(requested, workload) if decider is not None else Decision(requested, "fp32", kind,
                                                                     f"no lower-precision path on {kind}")
    key = (kind, workload, requested, decision.compute)
    if announce and requested == "auto" and key not in _announced:
        _announced.add(key)
        print(f"avel: precision {decision.compute} on {kind} ({decision.reason})", file=sys.stderr)
    warning = warning_text(decision)
    if (announce if warn is None else warn) and warning is not None and (*key, "warning") not in _announced:
        _announced.add((*key, "warning"))
        print(warning, file=sys.stderr)
    if kind == "cuda":
        # products of bf16/fp16 inputs keep fp32 accumulators (cuBLAS may otherwise reduce in the lower precision)
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    return decision


def autocast(decision: Decision) -> contextlib.AbstractContextManager:
    """Context that runs the enclosed forward pass in the decision's precision (nothing changes for fp32)."""
    import torch

    if not decision.lower:
        return contextlib.nullcontext()
    return torch.autocast(decision.device, dtype=decision.dtype)


def grad_scaler(decision: Decision):
    """A GradScaler, active only for fp16 on CUDA (a pass-through otherwise)."""
    import torch

    return torch.amp.GradScaler(decision.device if decision.device == "cuda" else "cpu",
                                enabled=decision.needs_scaler)


def lower_dtype(device_type: str = "cpu") -> torch.dtype | None:
    """The autocast dtype active for `device_type` in this thread, or None when autocast is off."""
    import torch

    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


# ---------------------------------------------------------------- recurrent layers

def keep_recurrent_fp32(model: torch.nn.Module, decision: Decision) -> torch.nn.Module:
    """On CPU, run every LSTM/GRU of `model` in fp32 even inside autocast (forward hooks, added once).

    oneDNN has no bf16 LSTM on CPUs without AVX-512-BF16 (autocast's bf16 LSTM fails there), and
    the LSTMs are ~9% of an A+V-att step's FLOPs, so fp32 costs little where bf16 would run; fp32
    recurrences are also the numerically safe choice. On CUDA, autocast's cuDNN LSTMs are used."""
    import torch

    if decision.device != "cpu":
        return model
    for m in model.modules():
        if isinstance(m, torch.nn.RNNBase) and not getattr(m, "_avel_fp32", False):
            m.register_forward_pre_hook(_recurrent_enter)
            m.register_forward_hook(_recurrent_exit, always_call=True)
            m._avel_fp32 = True
    return model


def _to_fp32(x: Any) -> Any:
    import torch

    if isinstance(x, (tuple, list)):
        return type(x)(_to_fp32(v) for v in x)
    return x.float() if torch.is_tensor(x) and x.is_floating_point() else x


def _recurrent_enter(module: torch.nn.Module, args: tuple) -> tuple | None:
    import torch

    stack = module.__dict__.setdefault("_avel_autocast_off", [])
    if not torch.is_autocast_enabled("cpu"):
        stack.append(None)
        return None
    ctx = torch.autocast("cpu", enabled=False)
    ctx.__enter__()
    stack.append(ctx)
    return _to_fp32(args)


def _recurrent_exit(module: torch.nn.Module, args: tuple, output: Any) -> None:
    stack = module.__dict__.get("_avel_autocast_off")
    ctx = stack.pop() if stack else None
    if ctx is not None:
        ctx.__exit__(None, None, None)


# ---------------------------------------------------------------- the machine

def cpu_info(path: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model name and the bf16-relevant flags (AMX, AVX-512-BF16) from /proc/cpuinfo (empty elsewhere)."""
    import torch

    try:
        text = Path(path).read_text()
    except OSError:
        return {"model": None, "flags": [], "capability": torch.backends.cpu.get_cpu_capability()}
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags],
            "capability": torch.backends.cpu.get_cpu_capability()}


def machine_name(device_type: str = "cpu") -> str:
    """Short description of the machine a device type runs on, for records and benchmark output."""
    import torch

    if device_type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    info = cpu_info()
    return f"{info['model'] or 'unknown CPU'} ({torch.get_num_threads()} threads, {info['capability']})"
