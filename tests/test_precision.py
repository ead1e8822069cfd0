"""Compute precision (avel.precision): the auto decision, the probe, the warning, the records, and
bf16 results against fp32 (training, the fused attention, extraction, localize). Nothing here assumes
a CPU with a fast bf16 path: bf16 is forced where its numbers are checked, and it runs (slowly but
correctly) on any CPU."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avel import precision
from avel.cli import main
from avel.data.catalog import AVE_CATEGORIES
from avel.errors import AvelError
from avel.precision import Decision, autocast, decide, warning_text


@pytest.fixture(autouse=True)
def fresh_decisions(monkeypatch, tmp_path):
    """Every test starts without a memo, a cached measurement or an announcement (its own AVEL_CACHE);
    the process's state is restored after (other tests' stderr must not gain the announcement line again)."""
    saved = dict(precision._speedups), set(precision._announced)
    monkeypatch.setenv("AVEL_CACHE", str(tmp_path / "avel-cache"))
    precision.reset()
    yield
    precision.reset()
    precision._speedups.update(saved[0])
    precision._announced.update(saved[1])


def mock_probe(monkeypatch, factor: float | list[float]) -> list[str]:
    """Replace the probe: a fixed factor, or one factor per call; returns the workloads it was called for."""
    calls: list[str] = []
    factors = list(factor) if isinstance(factor, list) else None

    def probe(workload: str) -> float:
        calls.append(workload)
        return factors[len(calls) - 1] if factors is not None else factor

    monkeypatch.setattr(precision, "_probe", probe)
    return calls


# What /proc/cpuinfo says on the three kinds of CPU avel meets (and on a system without it).
CPU_KINDS = {
    "avx2": {"model": "AMD EPYC 7B12", "flags": ["avx2"], "capability": "AVX2"},
    "avx512_bf16": {"model": "AMD EPYC 9B14", "flags": ["avx512_bf16", "avx512_vnni", "avx512f", "avx2"],
                    "capability": "AVX512"},
    "amx": {"model": "Intel(R) Xeon(R) Platinum 8481C",
            "flags": ["amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2"],
            "capability": "AVX512"},
    "undeclared": {"model": None, "flags": [], "capability": "DEFAULT"},
}


def fake_cpu(monkeypatch, kind: str) -> None:
    monkeypatch.setattr(precision, "cpu_info", lambda *a, **k: dict(CPU_KINDS[kind]))


# ---------------------------------------------------------------- the decision

@pytest.mark.parametrize("kind, factor, expected, probed", [
    ("avx2", 0.03, "fp32", False),  # no bf16 unit: fp32, nothing measured
    ("avx512_bf16", 1.9, "bf16", True), ("avx512_bf16", 2.25, "bf16", True),  # both ends of its measured range
    ("amx", 5.6, "bf16", True),
    ("avx512_bf16", 1.2, "fp32", True),  # a unit declared but slow here (a throttled VM): the measurement rules
    ("undeclared", 3.0, "bf16", True), ("undeclared", 0.02, "fp32", True),  # no /proc/cpuinfo: the probe alone
])
def test_auto_on_each_kind_of_cpu(monkeypatch, kind, factor, expected, probed):
    fake_cpu(monkeypatch, kind)
    calls = mock_probe(monkeypatch, factor)
    for workload in ("model", "features"):
        d = decide("auto", "cpu", workload=workload, announce=False)
        assert d.compute == expected and d.requested == "auto" and not d.needs_scaler
        assert d.bf16_speedup == (factor if probed else None)
        assert d.lower == (expected == "bf16")
    decide("auto", "cpu", announce=False)
    assert calls == (["model", "features"] if probed else [])  # each workload measured once


def test_the_threshold_is_one_and_a_half(monkeypatch):
    fake_cpu(monkeypatch, "avx512_bf16")
    for factor, expected in ((1.5, "bf16"), (1.49, "fp32")):
        precision.reset()
        precision._cache_dir().joinpath(precision.PRECISION_CACHE_FILE).unlink(missing_ok=True)
        mock_probe(monkeypatch, factor)
        assert decide("auto", "cpu", announce=False).compute == expected


def test_ten_fresh_processes_decide_the_same_way(monkeypatch, tmp_path):
    """A probe whose readings straddle the threshold (as a noisy machine's would) is read once per
    machine: the next processes (a fresh memo each) take the cached measurement."""
    fake_cpu(monkeypatch, "avx512_bf16")
    calls = mock_probe(monkeypatch, [1.45, 1.9, 1.2, 2.3, 1.6, 1.1, 2.0, 1.4, 1.8, 1.3])
    picks = []
    for _ in range(10):
        precision.reset()  # what a new process starts with
        picks.append(decide("auto", "cpu", announce=False).compute)
    assert picks == ["fp32"] * 10 and calls == ["model"]
    doc = json.loads((tmp_path / "avel-cache" / "precision" / "speedups.json").read_text())
    assert doc == {precision.machine_key(): {"model": 1.45}}
    monkeypatch.setattr(precision, "machine_key", lambda: "another CPU | 2 cores | torch x")
    precision.reset()
    assert decide("auto", "cpu", announce=False).compute == "bf16"  # another machine measures for itself
    assert calls == ["model", "model"]


def test_a_corrupt_or_unwritable_cache_is_measured_again(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, "amx")
    calls = mock_probe(monkeypatch, 4.0)
    path = tmp_path / "avel-cache" / "precision" / "speedups.json"
    path.parent.mkdir(parents=True)
    for text in ("{not json", '["a list"]', json.dumps({precision.machine_key(): {"model": "fast"}}),
                 json.dumps({precision.machine_key(): {"model": -1.0}})):
        path.write_text(text)
        precision.reset()
        assert decide("auto", "cpu", announce=False).bf16_speedup == 4.0
        assert json.loads(path.read_text()) == {precision.machine_key(): {"model": 4.0}}  # repaired
    assert len(calls) == 4
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("AVEL_CACHE", str(tmp_path / "file" / "cache"))  # cannot be created, even by root
    precision.reset()
    assert decide("auto", "cpu", announce=False).compute == "bf16" and len(calls) == 5  # measured, no error


def test_processes_started_together_pick_one_precision(tmp_path):
    """Real processes with the real probe and a fresh cache, started at once (as torchrun's are): one
    measures under the lock, the others wait and read its result, whatever this CPU is."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "AVEL_CACHE": str(tmp_path / "shared-cache")}
    code = ("from avel.precision import decide\n"
            "print(decide('auto', 'cpu', announce=False).compute, decide('auto', 'cpu', workload='features',"
            " announce=False).compute)")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert len({o[0] for o in outs}) == 1, [o[0] for o in outs]
    cached = tmp_path / "shared-cache" / "precision" / "speedups.json"
    if precision.declared_bf16() is False:
        assert outs[0][0].split() == ["fp32", "fp32"] and not cached.exists()
    else:
        assert list(json.loads(cached.read_text())) == [precision.machine_key()]


def test_fp32_never_probes_and_bf16_is_honoured_with_a_warning(monkeypatch, capsys):
    fake_cpu(monkeypatch, "avx512_bf16")  # a unit declared, yet slow in the probe
    calls = mock_probe(monkeypatch, 0.02)
    assert decide("fp32", "cpu").compute == "fp32" and calls == []
    d = decide("bf16", "cpu")
    assert d.compute == "bf16" and calls == ["model"]  # proceeds as asked
    assert warning_text(d) == "avel: warning: bf16 runs at 0.02x fp32 here"
    err = capsys.readouterr().err.splitlines()
    assert err == ["avel: warning: bf16 runs at 0.02x fp32 here"]  # explicit choices are not echoed
    decide("bf16", "cpu")
    assert capsys.readouterr().err == ""  # said once per process
    precision.reset()
    precision._cache_dir().joinpath(precision.PRECISION_CACHE_FILE).unlink()
    mock_probe(monkeypatch, 3.0)
    assert warning_text(decide("bf16", "cpu", announce=False)) is None  # fast bf16: nothing to warn about


def test_bf16_on_a_cpu_without_a_unit_warns_without_measuring(monkeypatch, capsys):
    fake_cpu(monkeypatch, "avx2")
    calls = mock_probe(monkeypatch, 0.02)
    d = decide("bf16", "cpu", workload="features")
    assert d.compute == "bf16" and d.bf16_speedup is None and calls == []
    assert capsys.readouterr().err.splitlines() == [
        "avel: warning: this CPU declares no bf16 unit (amx_bf16, avx512_bf16): bf16 runs emulated here, "
        "far slower than fp32"]


def test_auto_announces_once_per_workload_with_the_measured_ratio(monkeypatch, capsys):
    fake_cpu(monkeypatch, "avx512_bf16")
    mock_probe(monkeypatch, [2.61, 1.87])
    decide("auto", "cpu")
    decide("auto", "cpu", workload="features")
    decide("auto", "cpu", workload="features")
    assert capsys.readouterr().err.splitlines() == [
        "avel: precision bf16 on cpu (auto: bf16 localizer matrix products run at 2.6x fp32 here)",
        "avel: precision bf16 on cpu (auto: bf16 VGG-19 convolutions run at 1.9x fp32 here)"]
    with pytest.raises(ValueError, match="unknown precision workload 'gpu'"):
        decide("auto", "cpu", workload="gpu")


def test_unknown_precision_is_refused():
    with pytest.raises(AvelError, match="unknown precision 'fp8' \\(choose from auto, fp32, bf16\\)"):
        decide("fp8", "cpu")


def test_cuda_decision_without_a_probe(monkeypatch):
    monkeypatch.setattr(precision, "_probe", lambda workload: pytest.fail("no CPU probe for CUDA"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert decide("auto", "cuda", announce=False).compute == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    d = decide("auto", "cuda:1", announce=False)
    assert (d.compute, d.device, d.needs_scaler) == ("fp16", "cuda", True)
    assert decide("bf16", "cuda", announce=False).compute == "bf16"
    assert warning_text(decide("bf16", "cuda", announce=False)).startswith("avel: warning: this GPU does not")


@pytest.mark.parametrize("workload", precision.WORKLOADS)
def test_real_probe_returns_a_decision(workload):
    d = decide("auto", "cpu", workload=workload, announce=False)
    if precision.declared_bf16() is False:  # this CPU has no bf16 unit: nothing is measured
        assert d.compute == "fp32" and d.bf16_speedup is None
    else:
        assert d.bf16_speedup is not None and d.bf16_speedup > 0
        assert d.compute == ("bf16" if d.bf16_speedup >= precision.AUTO_MIN_SPEEDUP else "fp32")
    rec = d.record()
    assert rec["requested"] == "auto" and rec["device"] == "cpu" and rec["machine"]
    assert json.loads(json.dumps(rec)) == rec


def test_cpu_info_reads_the_bf16_flags(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
                 "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\nprocessor\t: 1\n")
    info = precision.cpu_info(f)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8481C"
    assert info["flags"] == ["amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2"]
    assert precision.declared_bf16(info) is True
    f.write_text("model name\t: AMD EPYC 7B12\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert precision.declared_bf16(precision.cpu_info(f)) is False
    assert precision.declared_bf16(precision.cpu_info(tmp_path / "none")) is None


@pytest.mark.parametrize("command", [["train", "--data", "d", "--model", "A", "--out", "o"], ["evaluate", "r"],
                                     ["reproduce", "--out", "o"], ["extract", "--videos", "v", "--out", "o"],
                                     ["localize", "v.mp4", "--model", "r", "--out", "o"]])
def test_cli_lists_the_valid_precisions(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--precision", "fp8"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    choices = "'auto', 'fp32', 'bf16', 'int8'" if command[0] in ("extract", "localize") else "'auto', 'fp32', 'bf16'"
    assert err.endswith(f"argument --precision: invalid choice: 'fp8' (choose from {choices})")


# ---------------------------------------------------------------- the fused attention under bf16

def test_fused_attention_in_bf16_is_close_to_fp32():
    """Under bf16 autocast the fused CPU path (bf16 products; tanh, softmax and gradient accumulators
    in fp32) stays close to fp32 in values and gradients, and is at least as close as the plain
    formulation under autocast (which runs tanh and softmax in bf16 too). Measured: values within
    0.2%, gradients within 1-4.4% (plain: 4-10%)."""
    from avel.models.attention import AudioGuidedAttention

    torch.manual_seed(0)
    att = AudioGuidedAttention(audio_dim=16, visual_dim=64, d=32, k=9)
    audio = torch.randn(3, 4, 16)
    visual = torch.rand(3, 4, 3, 3, 64)
    bf16 = Decision("bf16", "bf16", "cpu", "test")

    def run(fused: bool, dec: Decision) -> dict[str, torch.Tensor]:
        att.fused = fused
        att.zero_grad()
        with autocast(dec):
            ctx, w = att(audio, visual)
        assert ctx.dtype == w.dtype == (torch.float32 if fused or not dec.lower else torch.bfloat16)
        (ctx.float().square().sum() + w.float().square().sum()).backward()
        return {"context": ctx.float().detach(), "weights": w.float().detach(),
                **{n: p.grad.clone() for n, p in att.named_parameters()}}

    ref = run(False, Decision("fp32", "fp32", "cpu", "test"))
    fused, plain = run(True, bf16), run(False, bf16)
    err = lambda got, k: float((got[k] - ref[k]).norm() / ref[k].norm())  # noqa: E731
    assert err(fused, "context") < 0.01 and err(fused, "weights") < 0.01
    for k in ref:
        assert 0 < err(fused, k) < 0.06, k
        assert err(fused, k) <= err(plain, k) + 0.005, k
    assert all(p.dtype == torch.float32 for p in att.parameters())  # master weights stay fp32


# ---------------------------------------------------------------- training

class TinySet:
    """In-memory dataset with AVEDataset's interface, small enough for bf16 emulated on any CPU:
    2x2 visual maps, 24 videos of 10 s; the audio and the visual object carry the class."""

    def __init__(self, n: int = 24, seed: int = 0) -> None:
        T, C = 10, 29
        rng = np.random.default_rng(seed)
        cls = rng.integers(0, 3, n)
        start = rng.integers(0, 4, n)
        mask = (np.arange(T) >= start[:, None]) & (np.arange(T) < start[:, None] + 5)
        lab = np.where(mask, cls[:, None], C - 1)
        self.labels = np.eye(C, dtype=np.float32)[lab]
        self.mil_labels = np.eye(C, dtype=np.float32)[cls]
        self.event_mask = mask.astype(np.float32)
        proto_a, proto_v = rng.normal(size=(C, 128)), np.abs(rng.normal(size=(C, 512)))
        self.audio = (proto_a[lab] + 0.5 * rng.normal(size=(n, T, 128))).astype(np.float32)
        vis = 0.3 * np.abs(rng.normal(size=(n, T, 4, 512)))
        cells = rng.integers(0, 4, (n, T))
        vis[np.arange(n)[:, None], np.arange(T)[None], cells] += proto_v[lab]
        self.visual = vis.reshape(n, T, 2, 2, 512).astype(np.float32)
        self.object_cells = np.where(mask, cells, -1)
        self.catalog = SimpleNamespace(categories=AVE_CATEGORIES)
        self._splits = {"train": np.arange(16), "val": np.arange(16, 20), "test": np.arange(20, 24)}
        self.root, self.is_synthetic, self.noisy = None, True, None

    def split(self, name: str) -> np.ndarray:
        return self._splits[name]


def tiny_train(ds, out: Path, prec: str) -> dict:
    from avel.models.registry import ModelConfig
    from avel.train.config import TrainConfig
    from avel.train.trainer import train

    model = ModelConfig(name="A+V-att", visual_grid=2, hidden=16, attention_dim=32)
    cfg = TrainConfig(epochs=2, patience=2, batch_size=8, lr=3e-3, num_threads=1, precision=prec)
    return train(ds, model, cfg, out, progress=False)


def test_bf16_training_is_repeatable_recorded_and_close_to_fp32(tmp_path, one_thread):
    from avel.train import checkpoint as ckpt

    ds = TinySet()
    r1, r2 = tiny_train(ds, tmp_path / "a", "bf16"), tiny_train(ds, tmp_path / "b", "bf16")
    w1, w2 = ckpt.load_tensors(tmp_path / "a" / ckpt.MODEL_WEIGHTS), ckpt.load_tensors(tmp_path / "b" / ckpt.MODEL_WEIGHTS)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # seeded bf16 runs are bit-for-bit repeatable
    assert all(v.dtype == torch.float32 for v in w1.values())  # fp32 master weights
    assert r1["test"]["accuracy"] == r2["test"]["accuracy"]
    assert r1["precision"]["compute"] == "bf16" and r1["test"]["precision"]["compute"] == "bf16"
    doc = json.loads((tmp_path / "a" / ckpt.CONFIG_FILE).read_text())
    assert doc["train"]["precision"] == "bf16" and [p["compute"] for p in doc["precision"]] == ["bf16"]
    r32 = tiny_train(ds, tmp_path / "c", "fp32")
    loss = lambda run: float((tmp_path / run / ckpt.CURVES_CSV).read_text().splitlines()[1].split(",")[1])  # noqa: E731
    assert abs(loss("a") - loss("c")) < 0.02 * loss("c")  # first epoch's training loss
    assert abs(r1["test"]["accuracy"] - r32["test"]["accuracy"]) <= 10.0
    w32 = ckpt.load_tensors(tmp_path / "c" / ckpt.MODEL_WEIGHTS)
    assert any(not torch.equal(w1[k], w32[k]) for k in w1)  # bf16 really ran


def test_precision_history_records_a_resume_in_another_precision(tmp_path):
    from avel.train import checkpoint as ckpt
    from avel.train.trainer import precision_history

    out = tmp_path / "run"
    out.mkdir()
    bf16 = Decision("bf16", "bf16", "cpu", "requested", 4.0)
    assert precision_history(out, bf16) == [bf16.record()]
    (out / ckpt.CONFIG_FILE).write_text(json.dumps({"precision": [bf16.record()]}))
    assert precision_history(out, bf16) == [bf16.record()]  # same precision and machine: one record
    fp32 = Decision("auto", "fp32", "cpu", "auto: slow bf16", 0.02)
    assert precision_history(out, fp32) == [bf16.record(), fp32.record()]


# ---------------------------------------------------------------- extraction

def test_bf16_extraction_is_close_to_fp32_and_recorded(tmp_path, weights, monkeypatch):
    """Real decoded frames and audio of a rendered 1-s clip through random He-initialised VGG-19 and
    VGGish: bf16 features within 3% (relative L2) of fp32 (measured: ~0.7% at 32 px); extractor.json
    records the precision, and it is not part of the settings identity (parts may be mixed)."""
    from avel.features.extract import settings_id
    from avel.features.extractor import ExtractorConfig, FeatureExtractor
    from avel.features.render import ClipSpec, render_clip

    clip = render_clip(tmp_path / "clip.mp4", ClipSpec(seconds=1, fps=10, width=48, height=32, shape_seconds={0},
                                                       tone_seconds={0}, seed=4))
    feats, infos = {}, {}
    for p in ("fp32", "bf16"):
        ex = FeatureExtractor(ExtractorConfig(vgg19_weights=str(weights["vgg19_keras"]),
                                              vggish_weights=str(weights["vggish"]), image_size=32,
                                              frames_per_second=1, device="cpu", precision=p))
        feats[p], infos[p] = ex.extract(clip), ex.info
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))  # noqa: E731
    assert feats["bf16"].visual.dtype == feats["bf16"].audio.dtype == np.float32  # stored as before
    assert 0 < rel(feats["bf16"].visual, feats["fp32"].visual) < 0.03
    assert 0 < rel(feats["bf16"].audio, feats["fp32"].audio) < 0.03
    assert infos["bf16"]["precision"]["compute"] == "bf16" and infos["fp32"]["precision"]["compute"] == "fp32"
    assert settings_id(infos["bf16"]) == settings_id(infos["fp32"])


def test_extract_cli_records_the_precision(tmp_path, weights):
    from avel.features.render import ClipSpec, render_clip

    videos = tmp_path / "videos"
    videos.mkdir()
    render_clip(videos / "a.mp4", ClipSpec(seconds=2, fps=10, width=48, height=32, seed=1))
    out = tmp_path / "ds"
    assert main(["extract", "--videos", str(videos), "--out", str(out), "--seconds", "2", "--frames-per-second", "1",
                 "--image-size", "32", "--quiet", "--precision", "fp32", "--vgg19-weights",
                 str(weights["vgg19_keras"]), "--vggish-weights", str(weights["vggish"])]) == 0
    info = json.loads((out / "extractor.json").read_text())
    assert info["precision"]["requested"] == "fp32" and info["precision"]["compute"] == "fp32"


# ---------------------------------------------------------------- localize

@pytest.mark.slow  # renders, extracts and trains first: ~40-100 s on 2 shared cores
def test_localize_finds_the_same_events_in_bf16_and_fp32(tmp_path, weights, capsys, one_thread):
    """Rendered clips -> features -> a small A+V-att model; then `avel localize` on a held-out 5-s clip
    with --precision fp32 and bf16: the same events and per-second labels, probabilities within 0.05."""
    from avel.features.extracted import ExtractedSet
    from avel.features.render import ALIGNMENT_CLASSES, ClipSpec, make_alignment_set, render_clip
    from avel.models.registry import ModelConfig
    from avel.train.config import TrainConfig
    from avel.train.trainer import train

    wargs = ["--vgg19-weights", str(weights["vgg19_keras"]), "--vggish-weights", str(weights["vggish"]),
             "--frames-per-second", "1", "--image-size", "32"]
    make_alignment_set(tmp_path / "src", 12, {"train": 8, "val": 2, "test": 2}, seed=0)
    assert main(["extract", "--videos", str(tmp_path / "src"), "--annotations", str(tmp_path / "src" / "Annotations.txt"),
                 "--out", str(tmp_path / "ds"), "--quiet", "--precision", "fp32", *wargs]) == 0
    torch.manual_seed(0)
    train(ExtractedSet(tmp_path / "ds"), ModelConfig(name="A+V-att", visual_grid=1),
          TrainConfig(epochs=15, patience=15, batch_size=4, lr=1e-2, seed=0, num_threads=1, precision="fp32"),
          tmp_path / "run", progress=False)
    category = next(iter(ALIGNMENT_CLASSES))
    clip = render_clip(tmp_path / "held_out.mp4", ClipSpec(seconds=5, fps=10, width=96, height=64, seed=77,
                                                           shape_seconds={1, 2, 3}, tone_seconds={1, 2, 3},
                                                           **ALIGNMENT_CLASSES[category]))
    docs = {}
    for p in ("fp32", "bf16"):
        capsys.readouterr()
        assert main(["localize", str(clip), "--model", str(tmp_path / "run"), "--out", str(tmp_path / p),
                     "--json", "--no-pictures", "--precision", p, *wargs]) == 0
        docs[p] = json.loads(capsys.readouterr().out)
        assert docs[p]["extractor"]["precision"]["compute"] == p
    assert [e["category"] for e in docs["fp32"]["events"]] == [category]  # the model finds the event
    strip = lambda events: [{k: v for k, v in e.items() if k != "confidence"} for e in events]  # noqa: E731
    assert strip(docs["bf16"]["events"]) == strip(docs["fp32"]["events"])
    assert [s["label"] for s in docs["bf16"]["seconds"]] == [s["label"] for s in docs["fp32"]["seconds"]]
    p32 = np.array([s["probabilities"] for s in docs["fp32"]["seconds"]])
    p16 = np.array([s["probabilities"] for s in docs["bf16"]["seconds"]])
    assert np.abs(p16 - p32).max() < 0.05


def test_reproduce_passes_and_reports_the_precision(tmp_path, monkeypatch):
    from avel.report.markdown import _settings_section
    from avel.report.pipeline import Options, precision_record, train_overrides

    assert "precision" not in train_overrides(Options(out=tmp_path))  # auto: the TrainConfig default
    assert train_overrides(Options(out=tmp_path, precision="bf16"))["precision"] == "bf16"
    fake_cpu(monkeypatch, "avx512_bf16")
    mock_probe(monkeypatch, 0.02)
    rec = precision_record(Options(out=tmp_path))
    assert rec["compute"] == "fp32" and rec["requested"] == "auto" and rec["bf16_speedup"] == 0.02
    text = _settings_section({"settings": {"seeds": [0], "precision": rec}})
    assert f"Compute precision: fp32 on cpu ({rec['reason']}; {rec['machine']})." in text


def test_quiet_commands_still_warn_about_slow_bf16(monkeypatch, capsys):
    fake_cpu(monkeypatch, "avx512_bf16")
    mock_probe(monkeypatch, 0.02)
    decide("bf16", "cpu", announce=False, warn=True)  # what a --quiet avel train does
    assert capsys.readouterr().err.splitlines() == ["avel: warning: bf16 runs at 0.02x fp32 here"]
    decide("auto", "cpu", announce=False)
    assert capsys.readouterr().err == ""
