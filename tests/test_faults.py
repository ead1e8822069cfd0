"""Bad input, faults and interruptions, driven through the CLI (`python -m avel ...` or `avel.cli.main`).

The promise under test (README "Failure behaviour"): one line `avel: error: PATH: problem`, a
non-zero exit, no traceback, nothing half-written under a final name, no temporaries left behind,
and a rerun that completes once the cause is gone. Checks walk every subcommand where they can, so
a new command inherits them.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avel.cli import build_parser, main
from avel.cli.options import Number, all_options, out_dir
from avel.errors import AvelError, bounded
from avel.io import output_lock

AVEL = [sys.executable, "-m", "avel"]


def avel(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(AVEL + [str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)


def error_line(stderr: str, *needles: str) -> str:
    """The one `avel: error:` line of a failed command (no traceback), holding every needle."""
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("avel: error:")]
    assert len(errors) == 1, stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".part")]


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory) -> Path:
    """AVE-Synth, 10 videos of 2 categories (8/1/1 split rows): enough for every check here."""
    from avel.data.synth import generate

    return generate(tmp_path_factory.mktemp("faults") / "ds", videos=10, categories=2, seed=0, progress=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_ds, one_thread) -> Path:
    """A V-att run trained for one epoch (its visual maps make a multi-MB float16 cache)."""
    from avel.data.dataset import AVEDataset
    from avel.models.registry import ModelConfig
    from avel.train.config import TrainConfig
    from avel.train.trainer import train

    out = tmp_path_factory.mktemp("faults_run") / "run"
    train(AVEDataset.open(small_ds, progress=False), ModelConfig(name="V-att", hidden=8, attention_dim=8),
          TrainConfig(epochs=1, batch_size=8, num_threads=1), out, progress=False)
    return out


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs (a real full disk); skipped unless running as root with mount permitted."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (ENOSPC is injected by the other tests)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"mount not permitted here: {r.stderr.decode().strip()}")

    def grow(size: str) -> None:  # "free space": remount larger
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)

    yield mnt, grow
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ------------------------------------------------------------------ 1. disk full


def test_disk_full_synth_names_the_file_removes_temporaries_and_a_rerun_completes(tmpfs):
    mnt, grow = tmpfs
    args = ("data", "synth", "--out", mnt / "ds", "--videos", 10, "--categories", 2, "--no-progress")
    r = avel(*args)
    assert r.returncode != 0
    line = error_line(r.stderr, str(mnt / "ds"), "no space left")
    assert "truncated" not in line
    assert temporaries(mnt) == []
    grow("64m")
    r = avel(*args)
    assert r.returncode == 0, r.stderr
    assert (mnt / "ds" / "avel_synth.json").is_file() and temporaries(mnt) == []


def test_disk_full_labels(tmpfs, release):
    mnt, grow = tmpfs
    r = avel("data", "labels", release / "Annotations.txt", "--out", mnt / "lab")  # labels.h5 alone is 4.8 MB
    error_line(r.stderr, str(mnt / "lab" / "labels.h5"), "no space left")
    assert r.returncode != 0 and temporaries(mnt) == [] and not (mnt / "lab" / "labels.h5").exists()
    grow("32m")
    r = avel("data", "labels", release / "Annotations.txt", "--out", mnt / "lab")
    assert r.returncode == 0, r.stderr
    assert len(list((mnt / "lab").glob("*.h5"))) == 3 and temporaries(mnt) == []


def test_disk_full_feature_cache_blames_the_cache_not_the_source(tmpfs, run_dir, small_ds):
    mnt, grow = tmpfs
    env = {**os.environ, "AVEL_CACHE_DIR": str(mnt)}
    r = avel("evaluate", run_dir, "--data", small_ds, "--precision", "fp32", env=env)
    line = error_line(r.stderr, str(mnt), "no space left", "feature cache")
    assert r.returncode != 0 and "truncated or corrupt" not in line and str(small_ds / "visual") not in line
    assert temporaries(mnt) == []  # the full-size .npy.part is gone: the space is free again
    grow("64m")
    r = avel("evaluate", run_dir, "--data", small_ds, "--precision", "fp32", env=env)
    assert r.returncode == 0, r.stderr


def test_disk_full_train_checkpoint(tmpfs, small_ds):
    mnt, _ = tmpfs  # the V model's weights (2.6 MB of LSTM) do not fit
    r = avel("train", "--data", small_ds, "--model", "V", "--out", mnt / "run", "--epochs", 1, "--quiet",
             "--threads", 1, "--precision", "fp32")
    error_line(r.stderr, str(mnt / "run"), "no space left")
    assert r.returncode != 0 and temporaries(mnt) == [] and not (mnt / "run" / "model.safetensors").exists()


def test_stdout_on_a_full_disk_is_one_line_naming_it(run_dir):
    with open("/dev/full", "w") as full:
        r = subprocess.run(AVEL + ["evaluate", str(run_dir), "--json", "--precision", "fp32"], stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=600)
    assert r.returncode != 0
    error_line(r.stderr, "/dev/full", "no space left")


def test_injected_enospc_in_a_library_writer_is_one_error_naming_the_output(tmp_path, monkeypatch):
    """Without root: safetensors / h5py report ENOSPC in their own exception types."""
    import safetensors.torch
    import torch

    from avel.train.checkpoint import save_tensors

    def full(*args, **kwargs):
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                           "message: \"No space left on device\" })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(AvelError, match="no space left") as info:
        save_tensors(tmp_path / "model.safetensors", {"w": torch.zeros(3)})
    assert info.value.path == tmp_path / "model.safetensors" and list(tmp_path.iterdir()) == []


def test_injected_enospc_in_the_cache_builder(tmp_path, small_ds, monkeypatch):
    import avel.data.store as store

    def full(path, obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store, "write_json", full)
    with pytest.raises(AvelError, match="no space left") as info:
        store.FeatureStore(tmp_path / "cache", progress=False).array(small_ds / "visual_feature.h5", np.float16)
    assert info.value.path == tmp_path / "cache" / "visual_feature.npy"
    assert "truncated" not in str(info.value) and temporaries(tmp_path) == []


# ------------------------------------------------------------------ 2. options checked before any work


def _validated_options():
    """(command words, option, a value outside its stated range) for every bounded option."""
    for words, action in all_options(build_parser()):
        t = action.type
        if isinstance(t, Number) and t.low is not None and action.option_strings:
            bad = (t.low - 1) if not t.open_low else t.low
            yield pytest.param(words, action.option_strings[-1], str(t.kind(bad)),
                               id=f"{' '.join(words)} {action.option_strings[-1]}")
        if isinstance(t, Number) and t.high is not None and action.option_strings:
            yield pytest.param(words, action.option_strings[-1], str(t.kind(t.high + 1)),
                               id=f"{' '.join(words)} {action.option_strings[-1]} high")


def test_every_numeric_option_is_validated():
    """No bare type=int/float anywhere (unless `choices` lists the valid values): a new option must
    state its range (avel/cli/options.py)."""
    bare = [f"{' '.join(w)} {a.option_strings or a.dest}" for w, a in all_options(build_parser())
            if a.type in (int, float) and a.choices is None]
    assert bare == []


@pytest.mark.parametrize("words, option, value", list(_validated_options()))
def test_out_of_range_values_stop_argparse_before_any_work(words, option, value, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*words, f"{option}={value}"])
    assert info.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


def test_device_and_out_options_are_validated_everywhere(tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("")
    checked = 0
    for words, action in all_options(build_parser()):
        if not action.option_strings:
            continue
        bad = {"--device": "gpu", "--out": str(afile)}.get(action.option_strings[-1])
        if bad is None:
            continue
        with pytest.raises(SystemExit):
            build_parser().parse_args([*words, f"{action.option_strings[-1]}={bad}"])
        assert f"argument {action.option_strings[-1]}" in capsys.readouterr().err
        checked += 1
    assert checked >= 10  # train, evaluate, crossmodal x3, extract, localize, reproduce, data x2 ...


def test_help_states_the_range(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "[range: >= 1]" in capsys.readouterr().out


def test_reproduce_rejects_bad_workers_and_device_before_generating_data(tmp_path):
    for bad in (["--workers", "0"], ["--device", "gpu"], ["--threads", "-2"]):
        r = avel("reproduce", "--out", tmp_path / "rep", "--quick", *bad)
        assert r.returncode == 2 and f"argument {bad[0]}" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "rep").exists()


def test_zero_frames_per_second_fails_at_once_instead_of_hanging(tmp_path):
    r = avel("extract", "--videos", tmp_path, "--out", tmp_path / "o", "--frames-per-second", "0")
    assert r.returncode == 2 and "argument --frames-per-second" in r.stderr


def test_a_failing_reader_reaches_the_consumer_instead_of_hanging(tmp_path):
    """A setting the decoder refuses (here fps 0 through the Python API) is that video's error."""
    from avel.features.extractor import ExtractorConfig, FeatureExtractor

    ex = FeatureExtractor.__new__(FeatureExtractor)
    ex.cfg = ExtractorConfig(frames_per_second=0)

    def reader(path, num_segments):
        raise AvelError("frames per second must be >= 1, got 0")

    ex.reader = reader
    import queue
    import threading

    items: queue.Queue = queue.Queue()
    ex.stats = type("S", (), {"decode_s": 0.0})()
    ex._decode_jobs([("v", tmp_path / "v.mp4")], None, items, threading.Event(), lambda *a: None)
    kind, key, payload = items.get_nowait()
    assert kind == "error" and isinstance(payload, AvelError) and items.get_nowait()[0] == "end"


# ------------------------------------------------------------------ 3. run files validated on read


@pytest.mark.parametrize("file, key, value, needle", [
    ("model.json", ("model", "hidden"), "abc", "field 'hidden' must be int"),
    ("model.json", ("model", "hidden"), 12.5, "field 'hidden' must be int"),
    ("model.json", ("model", "hidden"), -1, "hidden=-1"),
    ("model.json", ("model", "hidden"), None, "field 'hidden' must be int"),
    ("model.json", ("model", "bidirectional"), "no", "field 'bidirectional' must be bool"),
    ("model.json", ("model",), [1, 2], "must be a JSON object"),
    ("config.json", ("train", "batch_size"), 0, "batch_size must be >= 1"),
    ("config.json", ("train", "lr"), "fast", "field 'lr' must be float"),
    ("config.json", ("train",), None, "lacks the 'train' entry"),
])
def test_wrong_types_and_values_in_run_files_are_one_line(run_dir, tmp_path, file, key, value, needle, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    doc = json.loads((run / file).read_text())
    parent = doc
    for k in key[:-1]:
        parent = parent[k]
    if value is None and key == ("train",):
        del parent[key[-1]]
    else:
        parent[key[-1]] = value
    (run / file).write_text(json.dumps(doc))
    assert main(["evaluate", str(run)]) == 2
    error_line(capsys.readouterr().err, str(run / file), needle)


def test_every_stored_config_round_trips_through_json():
    """What to_dict writes, from_dict reads back unchanged (a new field's type must be checkable)."""
    from avel.crossmodal.models import CrossModalConfig
    from avel.models.registry import ModelConfig
    from avel.train.config import TrainConfig

    for cfg in (TrainConfig(), ModelConfig(audio_map_shape=(6, 4, 512), extra={"k": 1}),
                CrossModalConfig(method="dcca")):
        assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_a_run_file_that_is_a_list_is_one_line(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "config.json").write_text("[1, 2]")
    assert main(["evaluate", str(run)]) == 2
    error_line(capsys.readouterr().err, str(run / "config.json"), "must be a JSON object")


# ------------------------------------------------------------------ 4. non-finite weights


def test_nan_in_run_weights_is_refused(run_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    state = load_file(str(run / "model.safetensors"))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(run / "model.safetensors"))
    assert main(["evaluate", str(run)]) == 2
    error_line(capsys.readouterr().err, str(run / "model.safetensors"), "NaN", name)


def test_nan_in_extractor_weights_is_refused(tmp_path):
    import torch

    from avel.features.weights import empty_net, he_init_, load_weights

    state = he_init_(empty_net("vggish"), 0).state_dict()
    key = next(iter(state))
    state[key].view(-1)[5] = float("inf")
    torch.save(state, tmp_path / "vggish_bad.pth")
    with pytest.raises(AvelError, match="NaN or infinite") as info:
        load_weights(str(tmp_path / "vggish_bad.pth"), empty_net("vggish"), "vggish")
    assert info.value.path == tmp_path / "vggish_bad.pth"


# ------------------------------------------------------------------ 5. data check catches what train refuses


def test_check_refuses_values_beyond_the_float16_cache(small_ds, tmp_path, capsys):
    import h5py

    ds = tmp_path / "ds"
    shutil.copytree(small_ds, ds, ignore=shutil.ignore_patterns(".avel_cache"))
    with h5py.File(ds / "visual_feature.h5", "r+") as f:
        f["avadataset"][3, 2, 1, 1, 7] = 1e6
    assert main(["data", "check", str(ds), "--no-progress"]) == 2
    error_line(capsys.readouterr().err, str(ds / "visual_feature.h5"), "row 3", "float16")


def test_check_refuses_an_empty_split(tmp_path, capsys):
    from avel.data.synth import generate

    ds = generate(tmp_path / "ds", videos=6, categories=2, progress=False)  # too few rows for a val split
    assert main(["data", "check", str(ds), "--no-progress"]) == 2
    error_line(capsys.readouterr().err, "val_order.h5", "split is empty")


def test_audio_map_models_are_refused_on_data_without_maps(small_ds, tmp_path, capsys):
    assert main(["data", "check", str(small_ds), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "A'" in out and "cannot be trained" in out
    assert main(["train", "--data", str(small_ds), "--model", "A'", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    error_line(capsys.readouterr().err, "audio_feature_map.h5", "A'")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ 6. signals and process trees


@pytest.mark.parametrize("command", [["evaluate", "{run}", "--precision", "fp32"],
                                     ["data", "check", "{ds}", "--no-progress"]],  # print / rich tables
                         ids=lambda c: c[0])
def test_closed_stdout_pipe_ends_quietly_with_the_sigpipe_status(command, run_dir, small_ds):
    p = subprocess.Popen(AVEL + [c.format(run=run_dir, ds=small_ds) for c in command], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # `| head -0`: the reader is gone before anything is written
    _, err = p.communicate(timeout=600)
    assert p.returncode == 141
    assert b"Traceback" not in err and b"Exception ignored" not in err and b"avel: error" not in err


def test_an_interrupt_swallowed_by_a_weakref_callback_still_stops_the_command():
    script = (
        "import sys, weakref, time\n"
        "from avel.cli import _redeliver_interrupt\n"
        "sys.unraisablehook = _redeliver_interrupt(sys.unraisablehook)\n"
        "class T: pass\n"
        "def cb(_):\n"
        "    raise KeyboardInterrupt\n"
        "try:\n"
        "    t = T(); r = weakref.ref(t, cb); del t\n"  # the callback's KeyboardInterrupt is unraisable
        "    deadline = time.monotonic() + 60\n"  # waits for the re-delivered interrupt, not a loop count
        "    while time.monotonic() < deadline:\n"
        "        time.sleep(0.05)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
        "sys.exit(0)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       preexec_fn=ctrl_c_delivered)
    assert r.returncode == 130, r.stderr


def ctrl_c_delivered() -> None:
    """In a child about to start: SIGINT at its default, so that Python turns it into KeyboardInterrupt
    as a terminal's Ctrl-C does (a shell's background job, CI's included, starts children with SIGINT
    ignored, and Python then leaves it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_synth_with_status_130_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "ds"
    args = ["data", "synth", "--out", str(out), "--videos", "40", "--categories", "2", "--no-progress"]
    p = subprocess.Popen(AVEL + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=ctrl_c_delivered)
    deadline = time.monotonic() + 300
    while not (out / ".visual_feature.h5.part").exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    if p.returncode == 0:
        pytest.skip("generation finished before the interrupt arrived")
    assert p.returncode == 130 and "avel: interrupted" in err and "Traceback" not in err
    assert not (out / "avel_synth.json").exists()
    r = avel(*args)
    assert r.returncode == 0, r.stderr
    assert (out / "avel_synth.json").is_file() and temporaries(out) == []


def test_forked_workers_die_with_their_parent(tmp_path):
    """The reproduce pool's worker setup: a worker outlives no parent (PR_SET_PDEATHSIG + ppid check)."""
    script = (
        "import os, sys, time\n"
        "from avel.report.runner import die_with_parent\n"
        "parent = os.getpid()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    die_with_parent(parent)\n"
        "    time.sleep(600)\n"
        "    os._exit(0)\n"
        "print(pid, flush=True)\n"
        "time.sleep(0.5)\n"
        "os._exit(0)\n")  # the parent dies without stopping its child
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    child = int(r.stdout.split()[0])
    deadline = time.monotonic() + 60  # a liveness bound, not a speed claim
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its parent")


# ------------------------------------------------------------------ 7. concurrency: one writer per folder


@pytest.mark.parametrize("command", [
    ["data", "synth", "--out", "{out}", "--videos", "10", "--categories", "2", "--no-progress"],
    ["data", "labels", "{ds}/Annotations.txt", "--out", "{out}"],
    ["extract", "--videos", "{ds}", "--out", "{out}", "--quiet"],
    ["crossmodal", "train", "--data", "{ds}", "--out", "{out}", "--epochs", "1", "--quiet"],
    ["reproduce", "--data", "{ds}", "--out", "{out}", "--quick", "--quiet"],
], ids=lambda c: " ".join(c[:2]))
def test_a_second_writer_to_a_locked_folder_fails_at_once(command, small_ds, tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        r = avel(*[a.format(out=out, ds=small_ds) for a in command])
    assert r.returncode == 2
    error_line(r.stderr, str(out), "another avel process")


# ------------------------------------------------------------------ 8. leftovers of killed runs


def test_a_killed_synth_leaves_nothing_after_the_rerun(tmp_path):
    out = tmp_path / "ds"
    args = ["data", "synth", "--out", str(out), "--videos", "40", "--categories", "2", "--no-progress"]
    p = subprocess.Popen(AVEL + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / ".visual_feature.h5.part").exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    p.kill()
    p.wait()
    (out / ".Annotations.txt.k1ll3d_x.part").write_text("half")  # what a kill inside atomic_path leaves
    r = avel(*args)
    assert r.returncode == 0, r.stderr
    assert temporaries(out) == []


def test_stale_temporaries_are_removed_by_the_next_writer_only(tmp_path, release, small_ds):
    out = tmp_path / "lab"
    out.mkdir()
    stale = out / ".labels.h5.abcd1234.part"
    stale.write_text("half")
    keep = out / "notes.part"  # not an avel temporary name: left alone
    keep.write_text("mine")
    r = avel("data", "labels", release / "Annotations.txt", "--out", out)
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and keep.exists()

    from avel.data.store import FeatureStore

    cache = tmp_path / "cache"
    cache.mkdir()
    orphan = cache / "old_feature.npy.part"  # a failed build's part, no progress record to resume it
    orphan.write_bytes(b"\0" * 1024)
    FeatureStore(cache, progress=False).array(small_ds / "audio_feature.h5")
    assert not orphan.exists()


# ------------------------------------------------------------------ 9. truncated media that still decodes


def test_a_truncated_faststart_mp4_warns_or_fails_with_both_durations(tmp_path):
    """The one check in the decoding layer serves both readers: localize (any length: a warning) and
    extract (fixed 10 s: an error), each naming the stated and the decoded duration."""
    import av

    from avel.features.decode import ClipReader
    from avel.features.render import ClipSpec, render_clip

    src = render_clip(tmp_path / "clip.mp4", ClipSpec(seconds=10))
    fast = tmp_path / "fast.mp4"  # moov atom first, as web videos are: the stated length survives the cut
    with av.open(str(src)) as i, av.open(str(fast), "w", options={"movflags": "faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for packet in i.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                o.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: int(fast.stat().st_size * 0.4)])
    reader = ClipReader(cut, image_size=32, frames_per_second=1)
    list(reader.segments())
    assert reader.duration < 6 and reader.stated_duration == pytest.approx(10.0)
    assert any("states 10.00 s" in w and f"{reader.duration:.2f} s" in w for w in reader.warnings)
    with pytest.raises(AvelError, match=r"covers \d\.\d\d s, need 10 whole seconds .*states 10\.00 s"):
        list(ClipReader(cut, image_size=32, frames_per_second=1, num_segments=10).segments())


# ------------------------------------------------------------------ 10. long messages


def test_an_error_quoting_binary_content_is_short_and_escaped(tmp_path):
    ann = tmp_path / "Annotations.txt"
    ann.write_bytes(b"Category&VideoID&Quality&StartTime&EndTime\n" + b"\0" * 4000 + b"\n")
    r = avel("data", "labels", ann, "--out", tmp_path / "out")
    assert r.returncode == 2
    line = error_line(r.stderr, str(ann))
    assert len(line) < 500 and "\\x00" in line and "\0" not in line


def test_long_messages_are_cut_between_words():
    words = " ".join(f"word{i}" for i in range(200))
    text = bounded(words, 100)
    kept = text.split(" ... [")[0].split()
    assert len(text) < 140 and kept == words.split()[:len(kept)]  # every kept word is whole
    assert text.endswith(f"[{len(words) - len(' '.join(kept))} more characters]")


def test_out_dir_validator_accepts_a_new_or_existing_folder(tmp_path):
    assert out_dir(str(tmp_path)) == tmp_path and out_dir(str(tmp_path / "new")) == tmp_path / "new"
    (tmp_path / "f").write_text("")
    with pytest.raises(argparse.ArgumentTypeError):
        out_dir(str(tmp_path / "f"))
