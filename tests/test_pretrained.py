"""Built-in models by name, the download cache, and the Python API (no network: downloads are served
by a stand-in for avel.cache.open_url, or aimed at a closed local port)."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import avel
from avel import cache, pretrained
from avel.cache import CachedFile, MissingFiles, cache_root, fetch, file_digest, is_cached
from avel.cli import main
from avel.errors import AvelError

AVEL_DIR = Path(avel.__file__).parent
REAL_OPEN_URL = cache.open_url


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """An empty cache folder, no other tool's cache, and no network (any URL opened fails the test)."""
    monkeypatch.setenv("AVEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home" / "torch"))
    monkeypatch.delenv("AVEL_OFFLINE", raising=False)

    def no_network(url):
        raise AssertionError(f"unexpected network access: {url}")

    monkeypatch.setattr(cache, "open_url", no_network)
    return tmp_path / "cache"


class Response(io.BytesIO):
    """A stand-in HTTP response; `fail_at`: bytes sent before the connection drops."""

    def __init__(self, data: bytes, fail_at: int | None = None) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}
        self.fail_at = fail_at

    def read(self, n: int = -1) -> bytes:
        if self.fail_at is not None:
            if self.tell() >= self.fail_at:
                raise ConnectionResetError("connection reset by peer")
            n = min(n, self.fail_at - self.tell())
        return super().read(n)


def serve(monkeypatch, files: dict[str, bytes], fail_at: int | None = None) -> list[str]:
    """Answer open_url from `files` (url -> content); returns the list of URLs requested."""
    requested: list[str] = []

    def open_url(url):
        requested.append(url)
        return Response(files[url], fail_at)

    monkeypatch.setattr(cache, "open_url", open_url)
    return requested


def item(data: bytes, algorithm: str = "sha256", name: str = "x.bin") -> CachedFile:
    digest = hashlib.sha256(data).hexdigest() if algorithm == "sha256" else None
    return CachedFile("a test file", f"https://example.org/{name}", f"files/{name}", algorithm, digest, 0.1)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and p.name != ".avel.lock")


# ---------------------------------------------------------------- the cache folder

def test_cache_root_default_xdg_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("AVEL_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "avel"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "avel"
    monkeypatch.setenv("AVEL_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    from avel.features.weights import cache_dir

    assert cache_dir() == tmp_path / "mine" / "weights"  # backbone weights share the one cache
    from avel.data import store

    monkeypatch.setattr(store.os, "access", lambda path, mode: False)  # a read-only dataset folder
    assert store.default_cache_dir(tmp_path / "AVE").parent == tmp_path / "mine"  # its feature cache too


def test_git_blob_digest_matches_git(tmp_path):
    """avel.cache's git blob SHA-1 equals what git itself computes (and the importer's own function)."""
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 40 + b"end")
    git = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True)
    if git.returncode == 0:
        assert file_digest(path, cache.GIT_BLOB) == git.stdout.strip()
    expected = hashlib.sha1(b"blob %d\0" % path.stat().st_size + path.read_bytes()).hexdigest()
    assert file_digest(path, cache.GIT_BLOB) == expected
    from avel import foreign as authors
    assert authors.git_blob_sha1(path) == expected


# ---------------------------------------------------------------- downloads: verify, rename, refuse

def test_download_verifies_then_renames(monkeypatch, empty_cache, capsys):
    data = b"published bytes" * 1000
    f = item(data)
    requested = serve(monkeypatch, {f.url: data})
    assert fetch([f]) == {f: empty_cache / "files" / "x.bin"}
    assert f.path.read_bytes() == data and is_cached(f)
    assert leftovers(empty_cache) == ["x.bin"]
    err = capsys.readouterr().err.splitlines()  # not a terminal: plain lines, the last one saying where it went
    assert re.fullmatch(rf"downloading a test file: {len(data)}/{len(data)} \(100%\), elapsed \d+:\d\d:\d\d, done", err[0])
    assert err[1:] == [f"avel: downloaded a test file to {f.path}"]
    fetch([f])  # present: no second request
    assert requested == [f.url]


def test_hash_mismatch_deletes_and_says_so(monkeypatch, empty_cache):
    f = dataclasses.replace(item(b"the real thing"), digest=hashlib.sha256(b"something else").hexdigest())
    serve(monkeypatch, {f.url: b"the real thing"})
    with pytest.raises(AvelError) as err:
        fetch([f])
    got = hashlib.sha256(b"the real thing").hexdigest()
    assert str(err.value) == (f"{f.path}: the sha256 of {f.url} as downloaded, {got[:16]}..., does not match the "
                              f"published {f.digest}: deleted (the server sent something else; try again later)")
    assert not is_cached(f) and leftovers(empty_cache) == []


def test_partial_download_never_counts(monkeypatch, empty_cache, capsys):
    data = bytes(range(256)) * 100
    f = item(data)
    serve(monkeypatch, {f.url: data}, fail_at=3000)  # the connection drops after 3000 of 25600 bytes
    with pytest.raises(MissingFiles, match="no network .download interrupted: connection reset by peer."):
        fetch([f])
    assert not is_cached(f) and leftovers(empty_cache) == []
    (empty_cache / "files").mkdir(parents=True, exist_ok=True)
    (empty_cache / "files" / ".x.bin.abcd1234.part").write_bytes(data[:3000])  # a killed download's temp file
    assert not is_cached(f)
    serve(monkeypatch, {f.url: data})
    fetch([f])
    assert f.path.read_bytes() == data and leftovers(empty_cache) == ["x.bin"]  # the stale part file is gone


def test_unwritable_cache_is_one_line(monkeypatch, tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    monkeypatch.setenv("AVEL_CACHE", str(tmp_path / "file" / "cache"))  # unwritable even for root
    f = item(b"abc")
    serve(monkeypatch, {f.url: b"abc"})
    with pytest.raises(AvelError) as err:
        fetch([f])
    assert str(err.value).startswith(f"{tmp_path / 'file' / 'cache'}: cannot lock for writing: ")
    assert "\n" not in str(err.value)


def test_full_disk_is_one_line(monkeypatch, empty_cache):
    import errno

    class FullDisk(io.BytesIO):
        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    f = item(b"x" * 5000)
    serve(monkeypatch, {f.url: b"x" * 5000})
    monkeypatch.setattr(cache, "open", lambda *a, **k: FullDisk(), raising=False)  # the download's file
    with pytest.raises(AvelError) as err:
        fetch([f])
    message = str(err.value)
    assert message.startswith(str(empty_cache / "files")) and "no space left on device" in message.lower()
    assert "\n" not in message and leftovers(empty_cache) == [] and not is_cached(f)


def test_closed_port_is_no_network(monkeypatch, empty_cache, capsys):
    """A URL nobody answers (a closed local port) gives the offline message, through the real urlopen."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: connections are refused
    monkeypatch.setattr(cache, "open_url", REAL_OPEN_URL)
    f = dataclasses.replace(item(b"abc"), url=f"http://127.0.0.1:{port}/x.bin")
    with pytest.raises(MissingFiles) as err:
        fetch([f])
    assert str(err.value).startswith(f"{empty_cache}: no network (")
    assert capsys.readouterr().err == (f"avel: missing a test file (~0.1 MB): download http://127.0.0.1:{port}/x.bin "
                                       f"and put it at {empty_cache / 'files' / 'x.bin'}\n")


# ---------------------------------------------------------------- built-in names

AUTHORS_LINES = [
    "the AVE authors' trained A+V-att network (~5.4 MB): download "
    "https://raw.githubusercontent.com/YapengTian/AVE-ECCV18/master/model/AV_att.pt and put it at {c}/models/AV_att.pt",
    "VGG-19 weights: Keras ImageNet VGG-19, no top (the AVE authors' extractor) (~80 MB): download "
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_"
    "notop.h5 and put it at {c}/weights/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "VGGish weights: AudioSet VGGish, PyTorch port (harritaylor/torchvggish) (~275 MB): download "
    "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth and put it at "
    "{c}/weights/vggish-10086976.pth",
]


def test_table_matches_the_authors_repository():
    """Names, kinds and hashes as published (the importer's table of the same files agrees)."""
    t = pretrained.PRETRAINED
    assert list(t) == ["authors-av-att", "authors-w-av-att", "authors-dmrn", "psp", "w-psp", "cmbs", "w-cmbs"]
    assert [m.kind for m in t.values()] == ["A+V-att", "W-A+V-att", "DMRN", "PSP", "W-PSP", "CMBS", "W-CMBS"]
    assert [m.name for m in t.values() if m.checkpoint.downloadable] == ["authors-av-att", "authors-w-av-att"]
    assert t["authors-av-att"].checkpoint.digest == "8e7224d07cfb27edb6aed3307d0211dad324a5e3"
    assert t["authors-w-av-att"].checkpoint.url.endswith("/YapengTian/AVE-ECCV18/master/model/AV_att_weak.pt")
    assert not t["authors-dmrn"].checkpoint.downloadable
    assert all(m.extractor["vgg19_weights"] == "keras" and m.extractor["vggish_weights"] == "torchvggish"
               for m in t.values())
    from avel.foreign import families

    for m in t.values():
        published = families()[m.kind].published
        if m.checkpoint.downloadable:
            assert published == ((m.checkpoint.url.split("/master/")[1], m.checkpoint.digest),)


def test_offline_lists_every_missing_file_exactly(monkeypatch, empty_cache, tmp_path, capsys):
    """`avel localize VIDEO` without --model: the default model and both backbone weights are missing;
    with no network, one line each (what, URL, where), then one error line."""
    def refused(url):
        import urllib.error

        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(cache, "open_url", refused)
    assert main(["localize", str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:3] == [f"avel: missing {line.format(c=empty_cache)}" for line in AUTHORS_LINES]
    assert err[3:] == [f"avel: error: {empty_cache}: no network ([Errno 111] Connection refused): 3 file(s) missing, "
                       "each listed above with its URL and where to put it; for the backbone weights, "
                       "--vgg19-weights / --vggish-weights PATH also work"]
    assert leftovers(empty_cache) == []


def test_offline_env_and_dmrn_local_only(monkeypatch, empty_cache, capsys):
    monkeypatch.setenv("AVEL_OFFLINE", "1")
    with pytest.raises(MissingFiles, match=r"offline \(AVEL_OFFLINE is set\): 1 file\(s\) missing"):
        pretrained.resolve_model("authors-w-av-att", weights=())
    with pytest.raises(MissingFiles, match="published without a hash avel can verify, so never downloaded"):
        pretrained.resolve_model("authors-dmrn", weights=())
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == ("avel: missing the AVE authors' trained DMRN network (linked from their README) (~6.4 MB): "
                       "download https://drive.google.com/file/d/1D6M6lnUkS4yby0Y4LODIYAQUR6N_GtaR/view and put it "
                       f"at {empty_cache / 'models' / 'DMRN.pt'}")


def test_unknown_name_lists_the_names(empty_cache, tmp_path, capsys):
    assert main(["localize", str(tmp_path / "clip.mp4"), "--model", "authors-av", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == ("avel: error: unknown model 'authors-av': give a run directory or one of "
                                       "authors-av-att, authors-w-av-att, authors-dmrn, psp, w-psp, cmbs, w-cmbs\n")
    with pytest.raises(AvelError, match="unknown model 'nope'"):
        avel.load_model("nope")
    with pytest.raises(AvelError, match="run directory not found"):  # a path, not a name
        avel.load_model(str(tmp_path / "no" / "run"))


def test_models_lists_names_sources_sizes_and_state(empty_cache, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "KIND", "SIZE", "STATE", "SOURCE"]
    assert out[1].split() == ["authors-av-att", "A+V-att", "~5.4", "MB", "not", "cached",
                              "https://raw.githubusercontent.com/YapengTian/AVE-ECCV18/master/model/AV_att.pt",
                              "(default)"]
    assert out[3].split()[:6] == ["authors-dmrn", "DMRN", "~6.4", "MB", "local", "file"]
    assert out[8] == ("authors-dmrn: published without a verifiable hash; download it yourself and put it at "
                      f"{empty_cache / 'models' / 'DMRN.pt'}")
    assert out[9] == ("psp: published without a verifiable hash; download it yourself and put it at "
                      f"{empty_cache / 'models' / 'PSP_fully.pt'}")
    assert out[-1].startswith(f"cache: {empty_cache} (set AVEL_CACHE to move it)")
    assert main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [m["state"] for m in doc["models"]] == ["not cached", "not cached"] + ["local file only"] * 5


# ---------------------------------------------------------------- a model served, imported once, then instant

def write_run(run_dir: Path, visual_grid: int = 7, seed: int = 0) -> Path:
    """A small untrained A+V-att run directory, written the way avel writes runs (the importer's stand-in)."""
    import torch

    from avel.io import write_json
    from avel.models.registry import ModelConfig, create_model
    from avel.train.checkpoint import CONFIG_FILE, RUN_FORMAT, save_model
    from avel.train.config import TrainConfig

    torch.manual_seed(seed)
    cfg = ModelConfig(name="A+V-att", visual_grid=visual_grid)
    run_dir.mkdir(parents=True)
    save_model(run_dir, create_model(cfg), cfg, {"epoch": None})
    write_json(run_dir / CONFIG_FILE, {"format": RUN_FORMAT, "avel_version": avel.__version__,
                                       "model": cfg.to_dict(), "train": TrainConfig().to_dict(),
                                       "data": {"root": None, "num_segments": 10}})
    return run_dir


def authors_file(kind: str, seed: int = 0) -> bytes:
    """A checkpoint in the authors' PyTorch 0.3 format with random weights (small LSTMs), as tests/authors_files.py
    writes them."""
    from authors_files import authors_tree, legacy_file, random_weights

    root, storages = authors_tree(kind, random_weights(kind, np.random.default_rng(seed), hidden=8), hidden=8)
    return legacy_file(root, storages)


@pytest.fixture
def served_model(monkeypatch, empty_cache):
    """authors-av-att pointed at a small file in the authors' format, served by the fake network; the real
    importer runs (its calls recorded)."""
    data = authors_file("A+V-att")
    entry = pretrained.PRETRAINED["authors-av-att"]
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    monkeypatch.setitem(pretrained.PRETRAINED, "authors-av-att",
                        dataclasses.replace(entry, checkpoint=dataclasses.replace(entry.checkpoint, digest=blob)))
    requested = serve(monkeypatch, {entry.checkpoint.url: data})
    imports: list[tuple[Path, Path, str]] = []
    real_import = pretrained.import_checkpoint

    def import_checkpoint(path, out_dir, kind):
        imports.append((Path(path), Path(out_dir), kind))
        return real_import(path, out_dir, kind)

    monkeypatch.setattr(pretrained, "import_checkpoint", import_checkpoint)
    return requested, imports, blob


def test_name_downloads_imports_once(served_model, empty_cache, capsys):
    requested, imports, blob = served_model
    resolved = pretrained.resolve_model("authors-av-att", weights=())
    assert resolved.run_dir == empty_cache / "runs" / f"authors-av-att-{blob[:12]}"
    assert resolved.extractor == pretrained.AUTHORS_EXTRACTOR
    assert imports == [(empty_cache / "models" / "AV_att.pt", resolved.run_dir, "A+V-att")]
    again = pretrained.resolve_model("authors-av-att", weights=())  # cached: no download, no import
    assert again.run_dir == resolved.run_dir and len(requested) == 1 and len(imports) == 1
    assert main(["models"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[4] == "ready"
    model = avel.load_model("authors-av-att")
    assert model.name == "authors-av-att" and model.classes[-1] == "background" and len(model.classes) == 29
    rng = np.random.default_rng(1)
    probs = model.predict(rng.standard_normal((2, 10, 128)), rng.random((2, 10, 7, 7, 512)))
    assert probs.shape == (2, 10, 29)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_dmrn_from_a_local_file(empty_cache, capsys):
    """authors-dmrn has no verifiable hash: a file put where the message says is imported as it is."""
    placed = empty_cache / "models" / "DMRN.pt"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(authors_file("DMRN"))
    resolved = pretrained.resolve_model("authors-dmrn", weights=())
    assert resolved.run_dir == empty_cache / "runs" / "authors-dmrn-local"
    assert avel.load_model("authors-dmrn").predict(np.zeros((10, 128)), np.zeros((10, 7, 7, 512))).shape == (10, 29)


def place_default_weights(monkeypatch, cache_dir: Path, weights: dict[str, Path]) -> None:
    """Small random backbone files in the cache under the default sources' names, their published hashes
    replaced by these files' hashes."""
    from avel.features import weights as weight_module

    for name, key in (("keras", "vgg19_keras"), ("torchvggish", "vggish")):
        source = weight_module.WEIGHT_SOURCES[name]
        (cache_dir / "weights").mkdir(parents=True, exist_ok=True)
        (cache_dir / "weights" / source.filename).symlink_to(weights[key])
        digest = file_digest(weights[key], source.hash_algorithm)
        monkeypatch.setitem(weight_module.WEIGHT_SOURCES, name, dataclasses.replace(source, digest=digest))


def test_readme_python_example_runs(served_model, empty_cache, weights, monkeypatch, tmp_path, capsys):
    """The README's Python example, as written, with the default model served and the feature extraction
    of "my_video.mp4" replaced by a stand-in (the real one is tested above)."""
    from avel.io import write_h5
    from avel.inference import pipeline

    place_default_weights(monkeypatch, empty_cache, weights)
    calls = []

    def localize_video(video, run_dir, out_dir, cfg, window, hop, pictures=True, log=None, **merging):
        calls.append((Path(video), Path(run_dir), cfg))
        probs = np.eye(29, dtype=np.float32)[[28, 0, 0, 28]]
        write_h5(Path(out_dir) / "features.h5", {"probabilities": probs})
        return {"events": [{"category": "Church bell", "start": 1, "end": 3, "confidence": 1.0}],
                "classes": avel.load_model("authors-av-att").classes,
                "seconds": [{"label": "background"}, {"label": "Church bell"}, {"label": "Church bell"},
                            {"label": "background"}]}

    monkeypatch.setattr(pipeline, "localize_video", localize_video)
    readme = (AVEL_DIR.parent / "README.md").read_text()
    section = readme[readme.index("## Localize your own video"):readme.index("## Reproduce the paper")]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1-3 s  Church bell  (1.00)" and out[-1] in avel.load_model("authors-av-att").classes
    (video, run_dir, cfg), = calls
    assert video == Path("my_video.mp4") and run_dir.name == f"authors-av-att-{served_model[2][:12]}"
    assert (cfg.vgg19_weights, cfg.vggish_weights, cfg.image_size, cfg.frames_per_second) == (
        "keras", "torchvggish", 224, 16)  # the authors' extractor, remembered by the model name


def test_localize_without_model_uses_the_default(served_model, empty_cache, weights, monkeypatch, tmp_path, capsys):
    """`avel localize VIDEO` with no --model: the default name's checkpoint and backbone weights come from
    the cache (the weights' published hashes replaced by those of small random files placed there)."""
    from avel.features.render import ALIGNMENT_CLASSES, ClipSpec, render_clip

    requested, imports, blob = served_model
    place_default_weights(monkeypatch, empty_cache, weights)
    category = next(iter(ALIGNMENT_CLASSES))
    render_clip(tmp_path / "clip.mp4", ClipSpec(seconds=2, fps=25, shape_seconds={1}, tone_seconds={1}, seed=5,
                                                **ALIGNMENT_CLASSES[category]))
    args = ["localize", str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "out"), "--no-pictures", "--json",
            "--frames-per-second", "1", "--device", "cpu"]  # VGG-19 at 224 px: 2 frames keep it quick
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    run_dir = empty_cache / "runs" / f"authors-av-att-{blob[:12]}"
    assert doc["model"]["run"] == str(run_dir) and len(doc["seconds"]) == 2 and len(doc["classes"]) == 29
    assert doc["extractor"]["image_size"] == 224 and doc["extractor"]["vgg19_preprocessing"] == "keras"
    assert not any("records no feature extractor" in w for w in doc.get("warnings", []))  # extractor.json written
    assert json.loads((run_dir / "extractor.json").read_text())["vgg19_sha256"] == file_digest(weights["vgg19_keras"])
    assert len(requested) == 1 and len(imports) == 1


def test_read_only_filled_cache_still_works(served_model, empty_cache, weights, monkeypatch):
    """A cache filled elsewhere and read-only here: nothing to download, so nothing is locked or written
    (extractor.json, when missing, is skipped rather than failing)."""
    place_default_weights(monkeypatch, empty_cache, weights)
    run_dir = pretrained.resolve_model("authors-av-att", weights=()).run_dir  # filled

    def read_only(folder):
        raise AvelError("cannot lock for writing: Read-only file system", folder)

    monkeypatch.setattr(pretrained, "output_lock", read_only)
    monkeypatch.setattr(cache, "output_lock", read_only)
    assert pretrained.resolve_model("authors-av-att").run_dir == run_dir
    assert not (run_dir / "extractor.json").exists()


def test_placed_file_with_wrong_hash_is_refused(served_model, empty_cache):
    _, imports, blob = served_model
    placed = empty_cache / "models" / "AV_att.pt"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"some other file")
    with pytest.raises(AvelError, match=f"does not match the published {blob} of https://raw.githubusercontent.com"):
        pretrained.resolve_model("authors-av-att", weights=())
    assert imports == [] and placed.is_file()  # the user's file is left alone


def test_evaluate_accepts_a_name(served_model, tiny_synth, capsys):
    assert main(["evaluate", "authors-av-att", "--data", str(tiny_synth), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_videos"] > 0 and 0.0 <= result["accuracy"] <= 100.0
    assert result["run_dir"].endswith(f"authors-av-att-{served_model[2][:12]}")


# ---------------------------------------------------------------- the Python API

def test_import_avel_is_light():
    code = ("import sys, avel; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert callable(avel.localize) and 'torch' not in sys.modules; print(avel.load_model.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "avel.api"
    code = ("import avel.inference.pipeline, avel, avel.api; "  # the inference package loaded first changes nothing
            "assert avel.localize is avel.api.localize")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_predict_shapes_and_probabilities(tmp_path):
    import torch

    run = write_run(tmp_path / "run")
    model = avel.load_model(run)
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((3, 10, 128)).astype(np.float32)
    visual = rng.random((3, 10, 7, 7, 512)).astype(np.float32)
    probs = model.predict(audio, visual, precision="fp32")  # the network's exact outputs, on any CPU
    assert probs.shape == (3, 10, 29) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    with torch.no_grad():  # the same as the network's own softmax, one clip at a time
        logits = model.network(torch.from_numpy(audio[1:2]), torch.from_numpy(visual[1:2])).logits
    np.testing.assert_allclose(model.predict(audio[1], visual[1], precision="fp32"),
                               torch.softmax(logits, -1)[0].numpy(), atol=1e-5)
    with pytest.raises(AvelError, match=r"visual features must have shape \(3, 10, 7, 7, 512\)"):
        model.predict(audio, visual[..., :256])


def test_localize_api_on_a_rendered_video(tmp_path, weights):
    """avel.localize on a real (rendered) video with a run directory and tiny random backbones; its
    probabilities equal load_model().predict on the features it wrote."""
    import h5py

    from avel.features.render import ALIGNMENT_CLASSES, ClipSpec, render_clip
    run = write_run(tmp_path / "run", visual_grid=1)
    category = next(iter(ALIGNMENT_CLASSES))
    render_clip(tmp_path / "clip.mp4", ClipSpec(seconds=3, fps=25, shape_seconds={1, 2}, tone_seconds={1, 2}, seed=3,
                                                **ALIGNMENT_CLASSES[category]))
    result = avel.localize(tmp_path / "clip.mp4", model=run, out=tmp_path / "out", pictures=False,
                           vgg19_weights=str(weights["vgg19_keras"]), vggish_weights=str(weights["vggish"]),
                           image_size=32, frames_per_second=1, device="cpu", precision="fp32", log=lambda msg: None)
    assert result.probabilities.shape == (3, 29) and len(result.labels) == 3
    np.testing.assert_allclose(result.probabilities.sum(-1), 1.0, atol=1e-5)
    assert json.loads(result.to_json()) == json.loads((tmp_path / "out" / "events.json").read_text())
    assert [e.category for e in result.events] == [e["category"] for e in result.document["events"]]
    with h5py.File(tmp_path / "out" / "features.h5") as f:
        audio, visual = f["audio"][()], f["visual"][()]
    expected = avel.load_model(run).predict(audio[None], visual[None], precision="fp32")[0]
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)


def test_localize_api_without_out_keeps_nothing(monkeypatch, tmp_path):
    """out=None: the pipeline writes into a temporary folder that is gone afterwards; no pictures."""
    from avel.io import write_h5
    from avel.inference import pipeline

    run = write_run(tmp_path / "run")
    probs = np.full((2, 29), 1 / 29, np.float32)
    calls = []

    def localize_video(video, run_dir, out_dir, cfg, window, hop, pictures=True, log=None, **merging):
        calls.append((Path(out_dir), cfg.image_size, window, hop, pictures, merging))
        write_h5(Path(out_dir) / "features.h5", {"probabilities": probs})
        return {"events": [{"category": "Dog", "start": 0, "end": 2, "confidence": 0.5}], "classes": ["Dog"],
                "seconds": [{"label": "Dog"}, {"label": "Dog"}], "status": "done"}

    monkeypatch.setattr(pipeline, "localize_video", localize_video)
    result = avel.localize(tmp_path / "clip.mp4", model=run, vgg19_weights="a.h5", vggish_weights="b.pth",
                           image_size=64, window=8, threshold=0.5)
    (folder, image_size, window, hop, pictures, merging), = calls
    assert not folder.exists() and result.out_dir is None
    assert (image_size, window, hop, pictures, merging) == (64, 8, None, False, {"threshold": 0.5})
    assert result.events == [avel.Event("Dog", 0, 2, 0.5)] and json.loads(result.events[0].to_json())["end"] == 2
    assert "status" not in json.loads(result.to_json()) and np.array_equal(result.probabilities, probs)


# ---------------------------------------------------------------- the package's imports

def package_import_cycles() -> list[list[str]]:
    """Strongly connected groups of avel modules in the graph of their imports (any level, from ast)."""
    modules = {}
    for path in AVEL_DIR.rglob("*.py"):
        parts = list(path.relative_to(AVEL_DIR.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        graph[name] = {d for d in deps if d in modules and d != name}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_in_the_package():
    assert package_import_cycles() == []


def test_train_config_names_the_recipes_and_selections_it_validates():
    """TrainConfig validates against its own name lists (so it need not import avel.train.recipes)."""
    from avel.train import config, recipes

    assert config.RECIPE_NAMES == tuple(recipes.RECIPES) and recipes.SELECTIONS is config.SELECTIONS
