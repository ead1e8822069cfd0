"""Importing the authors' trained PyTorch networks: formats, exact forward passes, and the safety rule.

Checkpoint files are written here in PyTorch 0.3's legacy structure (tests/authors_files.py: a
hand-written pickler, Python 3 and Python 2 style) and in current PyTorch's zip format, with random
weights. Imported models are checked against a NumPy re-implementation of the authors' three forward
passes written below from their code's semantics (it calls nothing in avel.models).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from authors_files import AUTHORS_CLASSES, np_bilstm, Global, LegacyPickler, ModuleClass, Reduce, Storage, TreeBuilder, \
    authors_tree, legacy_file, random_weights

from avel.foreign import families, git_blob_sha1, import_authors, read_authors_checkpoint
from avel.cli import main
from avel.errors import AvelError
from avel.train.checkpoint import load_run

pytestmark = pytest.mark.usefixtures("one_thread")
HIDDEN = 8  # small LSTMs keep the files and the NumPy reference fast; the feature sizes are AVE's
ALL_KINDS = ("A+V-att", "W-A+V-att", "DMRN")
KINDS = families(ALL_KINDS)


# ---- NumPy reference: the authors' forward passes -----------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_linear(w: dict, name: str, x: np.ndarray) -> np.ndarray:
    y = x @ w[f"{name}.weight"].T
    return y + w[f"{name}.bias"] if f"{name}.bias" in w else y


def np_authors(kind: str, w: dict, audio: np.ndarray, visual: np.ndarray, blocks: int = 1) -> dict:
    """The authors' forward pass in float64: per-second softmax/scores, attention, weak video output."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    B, T = audio.shape[:2]
    V = visual.reshape(B * T, 49, -1)
    v_t = np.maximum(np_linear(w, "affine_video", V), 0)  # (S, 49, d)
    a_t = np.maximum(np_linear(w, "affine_audio", audio.reshape(B * T, -1)), 0)  # (S, d)
    # content_v = affine_v(v_t) + affine_g(a_t).unsqueeze(2): audio entry i joins region i's 49 hidden units
    content = np_linear(w, "affine_v", v_t) + np_linear(w, "affine_g", a_t)[:, :, None]
    z = np_linear(w, "affine_h", np.tanh(content))[..., 0]  # (S, 49)
    alpha = _softmax(z)
    video_t = np.einsum("sk,skd->sd", alpha, V).reshape(B, T, -1)
    la, lv = np_bilstm(w, "lstm_audio", audio), np_bilstm(w, "lstm_video", video_t)
    if kind == "DMRN":
        a, v = la, lv
        for _ in range(blocks):
            U_v = np_linear(w, "U_v.2", np.tanh(np_linear(w, "U_v.0", v)))
            U_a = np_linear(w, "U_a.2", np.tanh(np_linear(w, "U_a.0", a)))
            merged = (U_v + U_a) * 0.5
            video, audio_ = np.tanh(a + merged), np.tanh(v + merged)  # residuals cross over
            v, a = video, audio_
        score = np_linear(w, "L2", (v + a) * 0.5)
    else:
        hidden = np.maximum(np_linear(w, "L1", np.maximum(np.concatenate([la, lv], -1), 0)), 0)
        score = np_linear(w, "L2", hidden)
    return {"score": score, "softmax": _softmax(score), "attention": alpha.reshape(B, T, 49),
            "video": _softmax(score.max(axis=1))}


def inputs(seed: int, B: int = 2, T: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random((B, T, 128), dtype=np.float32),
            rng.random((B, T, 7, 7, 512), dtype=np.float32) * 0.2)


def check_against_numpy(run_dir: Path, kind: str, weights: dict, blocks: int = 1) -> None:
    model, cfg, _ = load_run(run_dir)
    assert cfg.name == KINDS[kind].model
    for T in (10, 7):  # the authors' code fixes 10 seconds; the maths allows any length
        audio, visual = inputs(seed=T, T=T)
        ref = np_authors(kind, weights, audio.astype(np.float64), visual.astype(np.float64), blocks)
        with torch.no_grad():
            out = model(torch.from_numpy(audio), torch.from_numpy(visual))
            authors = model.authors_output(torch.from_numpy(audio), torch.from_numpy(visual))
        probs = torch.softmax(out.logits, -1).numpy()
        np.testing.assert_allclose(out.logits.numpy(), ref["score"], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(probs, ref["softmax"], atol=1e-5)
        np.testing.assert_allclose(out.attention.numpy(), ref["attention"], atol=1e-5)
        assert (probs.argmax(-1) == ref["score"].argmax(-1)).all()  # the per-second predictions
        if kind == "W-A+V-att":
            np.testing.assert_allclose(authors[0].numpy(), ref["video"], atol=1e-5)
            np.testing.assert_allclose(authors[1].numpy(), ref["score"], atol=1e-5, rtol=1e-5)
        else:
            np.testing.assert_allclose(authors.numpy(), ref["softmax"], atol=1e-5)


def write_legacy(path: Path, kind: str, *, seed: int = 0, py2: bool = False, blocks: int = 1) -> dict:
    weights = random_weights(kind, np.random.default_rng(seed), hidden=HIDDEN)
    root, storages = authors_tree(kind, weights, hidden=HIDDEN, blocks=blocks)
    path.write_bytes(legacy_file(root, storages, py2=py2))
    return weights


# ---- the 0.3 legacy format -------------------------------------------------------------------------

@pytest.mark.parametrize("py2", [False, True], ids=["py3-pickle", "py2-pickle"])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_legacy_file_imports_with_the_authors_forward_pass(tmp_path: Path, kind: str, py2: bool) -> None:
    blocks = 2 if kind == "DMRN" else 1  # two blocks: the crossed-over residuals show
    weights = write_legacy(tmp_path / "net.pt", kind, seed=ALL_KINDS.index(kind), py2=py2, blocks=blocks)
    ck = read_authors_checkpoint(tmp_path / "net.pt")
    state, cfg = ck.tensors, ck.config
    assert ck.family.name == kind and ck.holds.startswith("a pickled ")
    assert set(state) == set(weights) and all(np.array_equal(state[k].numpy(), weights[k]) for k in weights)
    assert cfg.hidden == HIDDEN and cfg.attention_dim == 16 and cfg.num_classes == 29
    assert cfg.fusion_blocks == blocks
    out = import_authors(tmp_path / "net.pt", tmp_path / "run")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        ["config.json", "model.json", "model.safetensors"]
    record = json.loads((out / "config.json").read_text())["imported"]
    assert record["kind"] == kind and record["saved_on"] == ["cuda:0"] and "0.3" in record["container"]
    assert record["published_file"] is None  # random weights are not the released file
    check_against_numpy(out, kind, weights, blocks)


def test_cli_import_then_evaluate_on_synth(tmp_path: Path, tiny_synth: Path, capsys: pytest.CaptureFixture) -> None:
    """`avel evaluate` on an imported run gives the authors' per-second predictions (AVE-Synth, synthetic)."""
    from avel.data.dataset import AVEDataset

    weights = write_legacy(tmp_path / "AV_att.pt", "A+V-att", seed=5)
    assert main(["import-authors", str(tmp_path / "AV_att.pt"), "--out", str(tmp_path / "run"),
                 "--kind", "A+V-att"]) == 0
    printed = capsys.readouterr().out
    assert "imported A+V-att (a pickled models.att_Net, PyTorch 0.3 legacy format" in printed
    assert git_blob_sha1(tmp_path / "AV_att.pt") in printed
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(tiny_synth), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ds = AVEDataset.open(tiny_synth)
    rows = np.asarray(ds.split("test"))
    audio = np.asarray(ds.audio[rows], dtype=np.float64)
    visual = np.asarray(ds.visual[rows], dtype=np.float64)
    pred = np_authors("A+V-att", weights, audio, visual)["softmax"].argmax(-1)
    labels = np.asarray(ds.labels[rows]).argmax(-1)
    assert result["model"] == "authors-A+V-att"
    assert result["num_seconds"] == pred.size
    assert result["accuracy"] == pytest.approx(100.0 * (pred == labels).mean(), abs=1e-3)
    # what `avel localize` reads from the run: AVE's class names, 10-second windows, no recorded extractor
    from avel.inference.runinfo import class_names, extractor_record, run_document, training_length

    doc = run_document(tmp_path / "run")
    assert doc["train"]["standardize"] is False and doc["train"]["loss"] == "authors"  # their unscaled inputs
    names, background = class_names(doc, 29)
    assert names[0] == "Church bell" and background == 28 and training_length(doc, None) == 10
    assert extractor_record(tmp_path / "run", doc)[0] is None  # -> the authors' extractor is assumed


# ---- the zip format of current PyTorch ---------------------------------------------------------------

STAND_INS = '''import torch.nn as nn


class {cls}(nn.Module):
    """Stand-in with the attribute names of the authors' class (weights only, no forward)."""

    def __init__(self, hidden, d, classes, dmrn):
        super().__init__()
        self.hidden_dim = hidden
        self.lstm_audio = nn.LSTM(128, hidden, 1, batch_first=True, bidirectional=True)
        self.lstm_video = nn.LSTM(512, hidden, 1, batch_first=True, bidirectional=True)
        self.relu = nn.ReLU()
        self.affine_audio = nn.Linear(128, d)
        self.affine_video = nn.Linear(512, d)
        self.affine_v = nn.Linear(d, 49, bias=False)
        self.affine_g = nn.Linear(d, 49, bias=False)
        self.affine_h = nn.Linear(49, 1, bias=False)
        if dmrn:
            self.nb_block = 2
            self.U_v = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.Tanh(), nn.Linear(2 * hidden, 2 * hidden))
            self.U_a = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.Tanh(), nn.Linear(2 * hidden, 2 * hidden))
            self.L2 = nn.Linear(2 * hidden, classes)
        else:
            self.L1 = nn.Linear(4 * hidden, 64)
            self.L2 = nn.Linear(64, classes)
'''


def write_zip(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict, Path]:
    """torch.save(net) by current PyTorch of a class in a module named like the authors'; afterwards the
    module's file is replaced by one that leaves a marker when imported."""
    module, cls = KINDS[kind].pickled_classes[0].split(".")
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / f"{module}.py").write_text(STAND_INS.format(cls=cls))
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.delitem(sys.modules, module, raising=False)
    mod = __import__(module)
    net = getattr(mod, cls)(HIDDEN, 16, 29, kind == "DMRN")
    weights = random_weights(kind, np.random.default_rng(11), hidden=HIDDEN)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    path = tmp_path / f"{kind}.pt"
    torch.save(net, path)
    del sys.modules[module]
    marker = tmp_path / "imported"
    (src / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return path, weights, marker


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_zip_file_of_current_torch_imports_without_importing_its_classes(
        tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path, weights, marker = write_zip(tmp_path, kind, monkeypatch)
    assert zipfile.is_zipfile(path)
    out = import_authors(path, tmp_path / "run", kind=kind)
    assert not marker.exists(), "the loader imported the pickled class's module"
    record = json.loads((out / "config.json").read_text())["imported"]
    assert record["container"] == "PyTorch zip format" and record["saved_on"] == ["cpu"]
    check_against_numpy(out, kind, weights, blocks=2 if kind == "DMRN" else 1)


# ---- refusals: code in the pickle, wrong kind, other files -------------------------------------------

class RunsCode:
    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _evil_files(tmp_path: Path, marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, the global the loader must name)."""
    import builtins
    import os

    cmd = f"touch {marker}"
    evil_system = pickle.dumps(RunsCode(os.system, cmd), protocol=2)
    evil_eval = pickle.dumps(RunsCode(builtins.eval, f"open({str(marker)!r}, 'w')"), protocol=2)
    evil_popen = pickle.dumps(RunsCode(subprocess.Popen, ["touch", str(marker)]), protocol=2)
    # A well-formed 0.3 file whose shared _backend is a call of os.system instead.
    weights = random_weights("A+V-att", np.random.default_rng(0), hidden=HIDDEN)
    root, storages = authors_tree("A+V-att", weights, hidden=HIDDEN)
    root.state["_backend"] = Reduce(Global(os.system.__module__, "system"), (cmd,))
    buf = tmp_path / "zipped.pt"
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("AV_att/data.pkl", evil_eval)
    return {
        "system": (evil_system, f"{os.system.__module__}.system"),
        "eval": (evil_eval, "builtins.eval"),
        "popen": (evil_popen, "subprocess.Popen"),
        "system-inside-a-0.3-file": (legacy_file(root, storages), f"{os.system.__module__}.system"),
        "eval-in-a-zip": (buf.read_bytes(), "builtins.eval"),
    }


@pytest.mark.parametrize("case", ["system", "eval", "popen", "system-inside-a-0.3-file", "eval-in-a-zip"])
def test_code_in_the_pickle_is_refused_without_running(tmp_path: Path, case: str,
                                                       capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    data, qualname = _evil_files(tmp_path, marker)[case]
    path = tmp_path / "evil.pt"
    path.write_bytes(data)
    assert main(["import-authors", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"avel: error: {path}: refuses to load global '{qualname}'") and "\n" not in err
    assert not marker.exists(), "pickled code ran"
    assert not (tmp_path / "run").exists()


def test_class_source_in_a_legacy_file_is_never_run(tmp_path: Path) -> None:
    """A 0.3 file carries each module class's source text; it is ignored, not executed."""
    marker = tmp_path / "source-ran"
    weights = random_weights("A+V-att", np.random.default_rng(3), hidden=HIDDEN)
    root, storages = authors_tree("A+V-att", weights, hidden=HIDDEN)
    root.cls = ModuleClass("models", "att_Net", source=f"open({str(marker)!r}, 'w').close()\n")
    (tmp_path / "net.pt").write_bytes(legacy_file(root, storages))
    check_against_numpy(import_authors(tmp_path / "net.pt", tmp_path / "run"), "A+V-att", weights)
    assert not marker.exists()


def test_kind_mismatch_is_an_error_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_legacy(tmp_path / "weak.pt", "W-A+V-att")
    assert main(["import-authors", str(tmp_path / "weak.pt"), "--out", str(tmp_path / "run"), "--kind", "A+V-att"]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected A+V-att (--kind), but the file holds models_weakly.att_Net (W-A+V-att)" in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def _other_architecture(path: Path) -> None:
    """att_Net's class but no L1 (another head)."""
    weights = random_weights("A+V-att", np.random.default_rng(0), hidden=HIDDEN)
    b = TreeBuilder(weights)
    children = [("lstm_audio", b.lstm("lstm_audio")), ("lstm_video", b.lstm("lstm_video")), *b.attention(),
                ("L2", b.linear("L1"))]
    path.write_bytes(legacy_file(b.module(AUTHORS_CLASSES["A+V-att"], [], children, hidden_dim=HIDDEN), b.storages))


def _bare_lstm(path: Path) -> None:
    weights = random_weights("A+V-att", np.random.default_rng(0), hidden=HIDDEN)
    b = TreeBuilder(weights)
    path.write_bytes(legacy_file(b.lstm("lstm_audio"), b.storages))


def _unknown_class(path: Path) -> None:
    weights = random_weights("A+V-att", np.random.default_rng(0), hidden=HIDDEN)
    b = TreeBuilder(weights)
    path.write_bytes(legacy_file(b.module(ModuleClass("my_models", "Net"), [], []), b.storages))


def _tensor_past_its_storage(path: Path) -> None:
    storage = Storage("1", np.zeros(10, np.float32))
    path.write_bytes(legacy_file(Reduce(Global("torch._utils", "_rebuild_tensor"), (storage, 4, (3, 3), (3, 1))),
                                 [storage]))


def _huge_memo_index(path: Path) -> None:
    """A valid 0.3 header, then a pickle that memoizes into slot 2**31 - 16 (the unpickler would allocate 16 GB)."""
    header = legacy_file(None, [])[: -len(LegacyPickler().dumps([]))]  # magic, protocol, system info
    path.write_bytes(header + b"\x80\x02Nr\xf0\xff\xff\x7f.")


def _truncated(path: Path) -> None:
    write_legacy(path, "A+V-att")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])


BAD_FILES = {
    "other architecture": (_other_architecture, "weights do not fit the A+V-att network (YapengTian/AVE-ECCV18): missing L1.bias"),
    "bare LSTM": (_bare_lstm, "holds a pickled torch.nn.modules.rnn.LSTM, not one of the networks avel imports"),
    "unknown class": (_unknown_class, "refuses to load global 'my_models.Net'"),
    "tensor past its storage": (_tensor_past_its_storage, "tensor of size (3, 3) at offset 4 runs past its storage"),
    "truncated": (_truncated, "truncated: storage"),
    "huge memo index": (_huge_memo_index, "memo index 2147483632 at byte 132 is out of range"),
    "text file": (lambda p: p.write_text("hello\n"), "not a PyTorch checkpoint"),
    "empty": (lambda p: p.write_bytes(b""), "not a PyTorch checkpoint"),
    "other zip": (lambda p: zipfile.ZipFile(p, "w").writestr("a.txt", "x"), "not a PyTorch checkpoint"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_get_one_clear_line(tmp_path: Path, case: str, capsys: pytest.CaptureFixture) -> None:
    make, expected = BAD_FILES[case]
    path = tmp_path / "file.pt"
    make(path)
    assert main(["import-authors", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"avel: error: {path}: ") and expected in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()


def test_damaged_files_always_give_an_avel_error(tmp_path: Path) -> None:
    """Cut anywhere or with a byte changed, a file is refused with AvelError (or, when only weight bytes
    changed, read): never another exception."""
    good = tmp_path / "good.pt"
    write_legacy(good, "DMRN")
    data = good.read_bytes()
    bad = tmp_path / "bad.pt"
    rng = np.random.default_rng(0)
    for cut in np.linspace(1, len(data) - 1, 25).astype(int):
        bad.write_bytes(data[:cut])
        with pytest.raises(AvelError):
            read_authors_checkpoint(bad)
    for pos in rng.integers(0, 12_000, 40):  # the pickles lie in the first ~12 kB
        changed = bytearray(data)
        changed[pos] ^= 0x5A
        bad.write_bytes(bytes(changed))
        try:
            read_authors_checkpoint(bad)
        except AvelError:
            pass


# ---- the run directory: atomic, locked --------------------------------------------------------------

def test_output_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import avel.train.checkpoint as ckpt

    write_legacy(tmp_path / "net.pt", "DMRN")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(AvelError, match="is not empty"):
        import_authors(tmp_path / "net.pt", tmp_path / "busy")
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == [".avel.lock", "notes.txt"]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_tensors", disk_full)
    with pytest.raises(OSError):
        import_authors(tmp_path / "net.pt", tmp_path / "run")
    with pytest.raises(OSError):
        import_authors(tmp_path / "net.pt", tmp_path / "new" / "runs" / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "net.pt"]  # no run, no temporary folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError):
        import_authors(tmp_path / "net.pt", tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []  # an existing empty folder stays as it was
    monkeypatch.undo()
    assert import_authors(tmp_path / "net.pt", tmp_path / "empty") == tmp_path / "empty"
    with pytest.raises(AvelError, match="already holds an avel run"):
        import_authors(tmp_path / "net.pt", tmp_path / "empty")


def test_a_killed_import_leaves_nothing_the_next_one_keeps(tmp_path: Path) -> None:
    """The temporary folder of a killed import of the same RUN_DIR is removed; others' are not."""
    write_legacy(tmp_path / "net.pt", "A+V-att")
    for name in (".run.k1ll3d_0.part", ".run.x.k1ll3d_0.part", ".run.notmine.part"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"half")
    import_authors(tmp_path / "net.pt", tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == \
        [".run.notmine.part", ".run.x.k1ll3d_0.part"]


def test_output_lock_is_respected(tmp_path: Path) -> None:
    from avel.io import output_lock

    write_legacy(tmp_path / "net.pt", "A+V-att")
    with output_lock(tmp_path / "run"):
        with pytest.raises(AvelError, match="another avel process"):
            import_authors(tmp_path / "net.pt", tmp_path / "run")
    assert [p.name for p in (tmp_path / "run").iterdir()] == [".avel.lock"]


# ---- integrity constants -----------------------------------------------------------------------------

def test_git_blob_sha1_matches_git(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 5000 + b"tail")
    expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
    assert git_blob_sha1(path) == expected.stdout.strip()
    assert KINDS["A+V-att"].published == (("model/AV_att.pt", "8e7224d07cfb27edb6aed3307d0211dad324a5e3"),)
    assert KINDS["W-A+V-att"].published == (("model/AV_att_weak.pt", "b1ba4dd0fdf4b5537f26cccf1ccbf82ee8f97860"),)
