"""Import the authors' trained PyTorch networks (AV_att.pt, AV_att_weak.pt, DMRN.pt) as avel run directories.

`read_authors_checkpoint(path)` unpickles a whole-module file with the restricted unpickler of
avel.authors.unpickle (nothing in the file is executed), recognises the network from its pickled
class, and returns its weights; `import_authors(path, out_dir)` writes an ordinary run directory
(model.safetensors + model.json + config.json) that `avel evaluate` and `avel localize` read. The
weights run in avel.models.authors, which computes the authors' exact forward passes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import avel
from avel.authors.unpickle import Loaded, Ref, StandIn, load_checkpoint
from avel.errors import AvelError


@dataclass(frozen=True)
class Kind:
    """One of the authors' released networks."""

    name: str  # the paper's name, the --kind value
    model: str  # avel registry name of the network that computes its forward pass
    pickled_class: str  # module.class its checkpoints are pickled with
    repo_file: str | None  # path in YapengTian/AVE-ECCV18, when the file is in the repository
    blob_sha1: str | None  # git blob SHA-1 of that file (see git_blob_sha1)
    epochs: int  # the epoch budget of the authors' training script (recorded in config.json)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("A+V-att", "authors-A+V-att", "models.att_Net", "model/AV_att.pt",
         "8e7224d07cfb27edb6aed3307d0211dad324a5e3", 300),
    Kind("W-A+V-att", "authors-W-A+V-att", "models_weakly.att_Net", "model/AV_att_weak.pt",
         "b1ba4dd0fdf4b5537f26cccf1ccbf82ee8f97860", 250),
    Kind("DMRN", "authors-DMRN", "models_fusion.TBMRF_Net", None, None, 300),
)}
KIND_OF_CLASS = {k.pickled_class: k.name for k in KINDS.values()}


def git_blob_sha1(path: str | Path) -> str:
    """The SHA-1 git gives a file's content (`git hash-object FILE`): sha1(b"blob <size>\\0" + bytes)."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _state(obj: StandIn) -> dict[str, Any]:
    """A pickled module's attribute dict, with Python 2 byte-string keys decoded."""
    state = obj.state if isinstance(obj.state, dict) else {}
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in state.items()}


def module_tensors(root: StandIn, path: Path) -> dict[str, torch.Tensor]:
    """state_dict() of a pickled module tree: dotted parameter and buffer names -> float32 tensors."""
    out: dict[str, torch.Tensor] = {}

    def walk(module: Any, prefix: str, depth: int) -> None:
        if not isinstance(module, StandIn) or depth > 20:
            raise AvelError(f"'{prefix.rstrip('.') or 'the root'}' is not a module", path)
        state = _state(module)
        for group in ("_parameters", "_buffers", "_modules"):
            if not isinstance(state.get(group) or {}, dict):
                raise AvelError(f"'{prefix}{group}' of a module is not a dict", path)
        for group in ("_parameters", "_buffers"):
            for name, value in (state.get(group) or {}).items():
                name = name.decode("latin-1") if isinstance(name, bytes) else str(name)
                if value is None:
                    continue  # a missing bias
                if not isinstance(value, Ref) or value.kind == "storage":
                    raise AvelError(f"'{prefix}{name}' is not a tensor", path)
                out[prefix + name] = value.data.to(torch.float32).contiguous().clone()
        for name, child in (state.get("_modules") or {}).items():
            name = name.decode("latin-1") if isinstance(name, bytes) else str(name)
            if child is not None:
                walk(child, f"{prefix}{name}.", depth + 1)

    walk(root, "", 0)
    return out


def _lstm_flags(root: StandIn) -> dict[str, Any]:
    """batch_first / bidirectional / num_layers of the pickled LSTMs (what shapes alone do not show)."""
    flags = {}
    for name in ("lstm_audio", "lstm_video"):
        child = (_state(root).get("_modules") or {}).get(name)
        if isinstance(child, StandIn):
            state = _state(child)
            flags[name] = {k: state[k] for k in ("batch_first", "bidirectional", "num_layers") if k in state}
    return flags


def _hyperparameters(kind: Kind, root: StandIn, tensors: dict[str, torch.Tensor], path: Path) -> dict[str, int]:
    """The constructor arguments of the authors' class, read from the weights' shapes."""
    needed = ("lstm_audio.weight_ih_l0", "lstm_audio.weight_hh_l0", "lstm_video.weight_ih_l0",
              "affine_audio.weight", "affine_v.weight", "L2.weight")
    missing = [k for k in needed if k not in tensors or tensors[k].dim() != 2]
    if missing:
        raise AvelError(f"not the authors' {kind.name} network: no {', '.join(missing)} (another architecture?)", path)
    for lstm, flags in _lstm_flags(root).items():
        expected = {"batch_first": True, "bidirectional": True, "num_layers": 1}
        wrong = {k: v for k, v in flags.items() if v != expected[k]}
        if wrong:
            raise AvelError(f"not the authors' {kind.name} network: {lstm} has {wrong}", path)
    regions = tensors["affine_v.weight"].shape[0]
    if math.isqrt(regions) ** 2 != regions:
        raise AvelError(f"attention over {regions} regions: not a square grid", path)
    hp = {"hidden_dim": tensors["lstm_audio.weight_hh_l0"].shape[1],
          "hidden_size": tensors["affine_audio.weight"].shape[0],
          "tagset_size": tensors["L2.weight"].shape[0],
          "audio_dim": tensors["lstm_audio.weight_ih_l0"].shape[1],
          "visual_dim": tensors["lstm_video.weight_ih_l0"].shape[1],
          "regions": regions}
    if kind.name == "DMRN":
        blocks = _state(root).get("nb_block", 1)
        if not isinstance(blocks, int) or blocks < 1:
            raise AvelError(f"nb_block {blocks!r} is not a positive integer", path)
        hp["nb_block"] = blocks
    return {k: int(v) for k, v in hp.items()}


def model_config(kind: str, hp: dict[str, int]):
    """The avel ModelConfig that rebuilds network `kind` with hyperparameters `hp`."""
    from avel.models.registry import ModelConfig

    return ModelConfig(name=KINDS[kind].model, num_classes=hp["tagset_size"], audio_dim=hp["audio_dim"],
                       visual_dim=hp["visual_dim"], visual_grid=math.isqrt(hp["regions"]), hidden=hp["hidden_dim"],
                       attention_dim=hp["hidden_size"], fusion_blocks=hp.get("nb_block", 1))


def _class_name(loaded: Loaded) -> str:
    root = loaded.root
    return root.qualname if isinstance(root, StandIn) else type(root).__name__


def read_authors_checkpoint(path: str | Path) -> tuple[str, dict[str, torch.Tensor], dict[str, int]]:
    """(kind, state dict in the authors' parameter names, hyperparameters) of one of their whole-module files.

    Never executes anything in the file (see avel.authors.unpickle); AvelError when it is not one of
    the three networks, or its weights do not fit it.
    """
    kind, tensors, hp, _ = _read(Path(path))
    return kind, tensors, hp


def _read(path: Path) -> tuple[str, dict[str, torch.Tensor], dict[str, int], Loaded]:
    from avel.models.registry import create_model

    loaded = load_checkpoint(path)
    cls = _class_name(loaded)
    if cls not in KIND_OF_CLASS:
        what = "a state dict or other object" if not isinstance(loaded.root, StandIn) else f"a {cls}"
        raise AvelError(f"holds {what}, not one of the authors' networks "
                        f"({', '.join(f'{k.pickled_class} ({k.name})' for k in KINDS.values())})", path)
    kind = KINDS[KIND_OF_CLASS[cls]]
    tensors = module_tensors(loaded.root, path)
    hp = _hyperparameters(kind, loaded.root, tensors, path)
    try:
        expected = {k: v.shape for k, v in create_model(model_config(kind.name, hp)).state_dict().items()}
    except (AvelError, RuntimeError, ValueError) as exc:
        raise AvelError(f"hyperparameters {hp} do not build the {kind.name} network: {exc}", path) from None
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k} {tuple(tensors[k].shape)} (expected {tuple(expected[k])})"
              for k in sorted(set(expected) & set(tensors)) if tensors[k].shape != expected[k]]
    if missing or unexpected or shapes:
        parts = [f"missing {', '.join(missing[:5])}" if missing else "",
                 f"unexpected {', '.join(unexpected[:5])}" if unexpected else "", "; ".join(shapes[:3])]
        raise AvelError(f"weights do not fit the authors' {kind.name} network: "
                        f"{'; '.join(p for p in parts if p)}", path)
    bad = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if bad:
        raise AvelError(f"non-finite weights (NaN/Inf) in {', '.join(bad[:5])}", path)
    return kind.name, tensors, hp, loaded


def import_authors(path: str | Path, out_dir: str | Path, kind: str | None = None) -> Path:
    """Write an avel run directory holding the network of one of the authors' checkpoint files.

    `kind` (A+V-att, W-A+V-att, DMRN), when given, must match the pickled class. The directory appears
    complete or not at all: it is written in a temporary folder beside it and renamed, under
    avel.io.output_lock; `out_dir` must not exist or be empty. Returns `out_dir`.
    """
    from avel.models.registry import create_model
    from avel.train.checkpoint import load_weights

    path, out_dir = Path(path), Path(out_dir)
    if kind is not None and kind not in KINDS:
        raise AvelError(f"unknown kind '{kind}'; valid: {', '.join(KINDS)}")
    found, tensors, hp, loaded = _read(path)
    if kind is not None and kind != found:
        raise AvelError(f"expected {kind} (--kind), but the file holds {KINDS[found].pickled_class} ({found})", path)
    cfg = model_config(found, hp)
    model = create_model(cfg)
    load_weights(model, tensors, path)
    sha = git_blob_sha1(path)
    record = {"file": str(path.resolve()), "git_blob_sha1": sha, "kind": found,
              "pickled_class": KINDS[found].pickled_class, "container": loaded.container,
              "saved_on": sorted(loaded.locations), "hyperparameters": hp,
              "authors_file": next((k.repo_file for k in KINDS.values() if k.blob_sha1 == sha), None)}
    _write_run_dir(out_dir, lambda tmp: _write_run(tmp, model, cfg, found, record))
    return out_dir


def _write_run(run_dir: Path, model: torch.nn.Module, cfg: Any, kind: str, record: dict[str, Any]) -> None:
    from avel.data.catalog import AVE_CATEGORIES, NUM_CLASSES, NUM_SEGMENTS
    from avel.io import write_json
    from avel.train.checkpoint import CONFIG_FILE, RUN_FORMAT, save_model

    data = {"root": None, "synthetic": False, "num_segments": NUM_SEGMENTS,
            "categories": list(AVE_CATEGORIES) if cfg.num_classes == NUM_CLASSES else None}
    save_model(run_dir, model, cfg, {"epoch": None, "imported": record})
    write_json(run_dir / CONFIG_FILE, {"format": RUN_FORMAT, "avel_version": avel.__version__,
                                       "model": cfg.to_dict(), "train": authors_training(kind).to_dict(), "data": data,
                                       "imported": record})


def authors_training(kind: str):
    """The TrainConfig of the authors' training script for `kind`, as far as this avel's fields say it:
    the "authors" recipe (avel.train.recipes) where it exists, else their loss, epochs and unscaled inputs."""
    from avel.train.config import TrainConfig

    try:
        from avel.train.recipes import recipe_fields

        wanted = recipe_fields("authors", kind == "W-A+V-att")
    except ImportError:
        wanted = {"loss": "authors", "epochs": KINDS[kind].epochs, "standardize": False}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in wanted.items() if k in names})


def _write_run_dir(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Run `write(tmp)` on a fresh folder beside `out_dir`, then rename it onto `out_dir`, holding
    out_dir's output lock; on any failure nothing is left (the folders this call created are removed)."""
    from avel.io import LOCK_FILE, output_lock

    if out_dir.exists() and not out_dir.is_dir():
        raise AvelError("exists and is not a directory", out_dir)
    created = [p for p in (out_dir, *out_dir.parents) if not p.exists()]  # deepest first
    lock_existed = (out_dir / LOCK_FILE).exists()
    try:
        with output_lock(out_dir):
            others = sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_FILE)
            if others:
                what = "already holds an avel run" if "config.json" in others else "is not empty"
                raise AvelError(f"{what}: choose a new or empty output directory", out_dir)
            stale = re.compile(rf"\.{re.escape(out_dir.name)}\.[a-z0-9_]{{8}}\.part")  # mkdtemp's names below
            for old in out_dir.parent.iterdir():  # left by a killed import: with the lock held, none is live
                if old.is_dir() and stale.fullmatch(old.name):
                    shutil.rmtree(old, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
            try:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the run directory follows the umask
                write(tmp)
                os.replace(out_dir / LOCK_FILE, tmp / LOCK_FILE)  # the held lock travels with the files...
                os.rename(tmp, out_dir)  # ...and the now empty out_dir is replaced in one step
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except BaseException:
        if out_dir.is_dir():  # undo what this call created: its lock file, the folders
            if not lock_existed and [p.name for p in out_dir.iterdir()] == [LOCK_FILE]:
                (out_dir / LOCK_FILE).unlink(missing_ok=True)
            for folder in created:
                try:
                    folder.rmdir()  # only while empty
                except OSError:
                    break
        raise
