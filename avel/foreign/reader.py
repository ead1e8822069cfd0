"""One reader for foreign trained weights: the AVE authors' networks and the later methods' checkpoints.

`read_checkpoint(path, kind)` unpickles a file with the restricted unpickler of avel.foreign.unpickle
(nothing in it is executed), takes its tensors from a pickled module tree or a state dict (unwrapping
`{"state_dict": ...}`, `nn.DataParallel`'s `module.` prefix), renames them with the family's key map,
reads the config that rebuilds the network from the weights, and checks that every tensor fits it
(missing and unexpected names, shapes, NaN/Inf). `import_run(path, out_dir, kind)` writes an ordinary
run directory (model.safetensors + model.json + config.json) in one step, or nothing.

Each importable network is a `Family` in a small table (avel.foreign.kinds): its name, the avel
model that computes its forward pass, the classes its whole-module pickles name, its key map, how its
config is read, and its training script's settings.
"""

from __future__ import annotations

import hashlib
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
from avel.errors import AvelError
from avel.foreign.kinds import PICKLED_CLASSES, Family, families
from avel.foreign.unpickle import Loaded, Ref, StandIn, load_checkpoint, module_state

STATE_DICT_WRAPPERS = ("state_dict", "model_state_dict", "model", "net")  # keys a saved dict may nest weights in
DATA_PARALLEL_PREFIX = "module."  # what nn.DataParallel / DDP put before every name
NAMES_SHOWN = 5  # names listed in an error about missing or unexpected weights


def git_blob_sha1(path: str | Path) -> str:
    """The SHA-1 git gives a file's content (`git hash-object FILE`): sha1(b"blob <size>\\0" + bytes)."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- tensors out of the file

def _text(name: Any) -> str:
    return name.decode("latin-1") if isinstance(name, bytes) else str(name)


def _tensor(value: Any, name: str, path: Path) -> torch.Tensor:
    if not isinstance(value, Ref) or value.kind == "storage":
        raise AvelError(f"'{name}' is not a tensor", path)
    return value.data.to(torch.float32).contiguous().clone()


def module_tensors(root: StandIn, path: Path) -> dict[str, torch.Tensor]:
    """state_dict() of a pickled module tree: dotted parameter and buffer names -> float32 tensors."""
    out: dict[str, torch.Tensor] = {}

    def walk(module: Any, prefix: str, depth: int) -> None:
        if not isinstance(module, StandIn) or depth > 20:
            raise AvelError(f"'{prefix.rstrip('.') or 'the root'}' is not a module", path)
        state = module_state(module)
        for group in ("_parameters", "_buffers", "_modules"):
            if not isinstance(state.get(group) or {}, dict):
                raise AvelError(f"'{prefix}{group}' of a module is not a dict", path)
        non_persistent = state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for name, value in (state.get(group) or {}).items():
                name = _text(name)
                if value is None or (group == "_buffers" and name in non_persistent):
                    continue  # a missing bias; a buffer state_dict() leaves out
                out[prefix + name] = _tensor(value, prefix + name, path)
        for name, child in (state.get("_modules") or {}).items():
            if child is not None:
                walk(child, f"{prefix}{_text(name)}.", depth + 1)

    walk(root, "", 0)
    return out


def state_dict_tensors(root: dict, path: Path) -> dict[str, torch.Tensor]:
    """A saved state dict's tensors: unwrapped from {"state_dict": ...} and the like, without the
    DataParallel prefix."""
    for key in STATE_DICT_WRAPPERS:
        inner = root.get(key)
        if isinstance(inner, dict) and inner and not all(isinstance(v, Ref) for v in root.values()):
            root = inner
            break
    tensors = {_text(k): _tensor(v, _text(k), path) for k, v in root.items()}
    if tensors and all(k.startswith(DATA_PARALLEL_PREFIX) for k in tensors):
        tensors = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in tensors.items()}
    return tensors


@dataclass
class Checkpoint:
    """What `read_checkpoint` found in a file."""

    family: Family
    tensors: dict[str, torch.Tensor]  # avel's parameter names -> float32 weights that fit `config`
    config: Any  # the ModelConfig that rebuilds the network
    loaded: Loaded
    holds: str  # "a pickled <class>" or "a state dict"


def _names(names: list[str]) -> str:
    more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    return ", ".join(names[:NAMES_SHOWN]) + more


def _listing(table: dict[str, Family]) -> str:
    return ", ".join(table)


def read_checkpoint(path: str | Path, kind: str | None = None,
                    allowed: tuple[str, ...] | None = None) -> Checkpoint:
    """The network in a foreign checkpoint file, checked against its family (see the module docstring).

    `kind` names the family expected (required for a state dict, which does not name its network;
    for a pickled module it must agree with the pickled class); `allowed` limits the families
    considered (e.g. `avel import-authors` reads the authors' three only). Never executes anything in
    the file; AvelError naming the file for anything that is not a network of the table that fits."""
    path = Path(path)
    table = families(allowed)
    if kind is not None and kind not in table:
        raise AvelError(f"unknown kind '{kind}'; valid: {_listing(table)}")
    loaded = load_checkpoint(path)
    root = loaded.root
    if isinstance(root, StandIn):
        found = table.get(PICKLED_CLASSES.get(root.qualname, ""))
        if found is None:
            known = ", ".join(f"{c} ({f.name})" for f in table.values() for c in f.pickled_classes)
            raise AvelError(f"holds a pickled {root.qualname}, not one of the networks avel imports ({known})", path)
        if kind is not None and kind != found.name:
            raise AvelError(f"expected {kind} (--kind), but the file holds {root.qualname} ({found.name})", path)
        raw, holds = module_tensors(root, path), f"a pickled {root.qualname}"
    elif isinstance(root, dict):
        if kind is None:
            raise AvelError(f"holds a state dict, which does not name its network: give --kind "
                            f"({_listing(table)})", path)
        found, raw, holds = table[kind], state_dict_tensors(root, path), "a state dict"
    else:
        raise AvelError(f"holds a {type(root).__name__}, neither a pickled network nor a state dict", path)
    renamed = {found.to_avel(k): v for k, v in raw.items()}
    tensors = {k: v for k, v in renamed.items() if k is not None}
    cfg = found.config(tensors, root, path)
    check_weights(found, cfg, tensors, path)
    return Checkpoint(found, tensors, cfg, loaded, holds)


def check_weights(family: Family, cfg: Any, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Every weight the network needs is there with its shape, nothing else is, and all are finite."""
    from avel.models.registry import create_model

    try:
        expected = {k: v.shape for k, v in create_model(cfg).state_dict().items()}
    except (AvelError, RuntimeError, ValueError) as exc:
        raise AvelError(f"the weights' sizes do not build the {family.name} network: {exc}", path) from None
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k} {tuple(tensors[k].shape)} (expected {tuple(expected[k])})"
              for k in sorted(set(expected) & set(tensors)) if tensors[k].shape != expected[k]]
    if missing or unexpected or shapes:
        parts = [f"missing {_names(missing)}" if missing else "",
                 f"unexpected {_names(unexpected)}" if unexpected else "", "; ".join(shapes[:3])]
        raise AvelError(f"weights do not fit the {family.name} network ({family.origin}): "
                        f"{'; '.join(p for p in parts if p)}", path)
    bad = sorted(k for k, v in tensors.items() if not torch.isfinite(v).all())
    if bad:
        raise AvelError(f"non-finite weights (NaN/Inf) in {_names(bad)}", path)


# ---------------------------------------------------------------- the run directory

def import_run(path: str | Path, out_dir: str | Path, kind: str | None = None,
               allowed: tuple[str, ...] | None = None) -> Path:
    """Write an avel run directory holding the network of a foreign checkpoint file (read_checkpoint).

    The directory appears complete or not at all: written in a temporary folder beside it and
    renamed, under avel.io.output_lock; `out_dir` must not exist or be empty. Returns `out_dir`."""
    from avel.models.registry import create_model
    from avel.train.checkpoint import load_weights

    path, out_dir = Path(path), Path(out_dir)
    ck = read_checkpoint(path, kind, allowed)
    model = create_model(ck.config)
    load_weights(model, ck.tensors, path)
    sha = git_blob_sha1(path)
    record = {"file": str(path.resolve()), "git_blob_sha1": sha, "kind": ck.family.name,
              "origin": ck.family.origin, "holds": ck.holds, "container": ck.loaded.container,
              "saved_on": sorted(ck.loaded.locations),
              "published_file": next((p for p, h in ck.family.published if h == sha), None)}
    write_run_dir(out_dir, lambda tmp: _write_run(tmp, model, ck.config, ck.family, record))
    return out_dir


def _write_run(run_dir: Path, model: torch.nn.Module, cfg: Any, family: Family, record: dict[str, Any]) -> None:
    from avel.data.catalog import AVE_CATEGORIES, NUM_CLASSES, NUM_SEGMENTS
    from avel.io import write_json
    from avel.train.checkpoint import CONFIG_FILE, RUN_FORMAT, save_model

    data = {"root": None, "synthetic": False, "num_segments": NUM_SEGMENTS,
            "categories": list(AVE_CATEGORIES) if cfg.num_classes == NUM_CLASSES else None}
    save_model(run_dir, model, cfg, {"epoch": None, "imported": record})
    write_json(run_dir / CONFIG_FILE, {"format": RUN_FORMAT, "avel_version": avel.__version__,
                                       "model": cfg.to_dict(), "train": family.training().to_dict(), "data": data,
                                       "imported": record})


def write_run_dir(out_dir: Path, write: Callable[[Path], None]) -> None:
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
