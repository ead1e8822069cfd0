"""Run directories and checkpoints: safetensors weights + JSON that rebuilds the model. No pickles.

A run directory holds:
  config.json        run format, avel version, model config, train config, dataset description
  model.safetensors  weights of the selected (best validation) checkpoint, with the input standardization
                     statistics (input_std.*) when the run standardized its inputs
  model.json         the model config that rebuilds it, avel version, epoch and validation score
  last.safetensors   resume state: weights, Adam moments, RNG state after the last finished epoch
  last.json          resume state: epoch, best score, epochs without improvement, history so far
  curves.csv/.png    training curves
  results.json       final validation and test evaluation (present = the run is finished)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

import avel
from avel.errors import AvelError, require_field, require_finite_weights
from avel.io import atomic_path, write_json
from avel.models.registry import ModelConfig, create_model
from avel.train import standardize
from avel.train.config import TrainConfig

RUN_FORMAT = 1  # bump when the run directory layout changes incompatibly
CONFIG_FILE = "config.json"
MODEL_WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"
LAST_WEIGHTS = "last.safetensors"
LAST_JSON = "last.json"
RESULTS_FILE = "results.json"
CURVES_CSV = "curves.csv"
CURVES_PNG = "curves.png"


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise AvelError("file not found", path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AvelError(f"not valid JSON: {exc}", path) from exc


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={"format": f"avel-run-{RUN_FORMAT}", "avel_version": avel.__version__})


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise AvelError("file not found", path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AvelError(f"not a readable safetensors file (truncated?): {exc}", path) from exc
    require_finite_weights(tensors, path)
    return tensors


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper."""
    return getattr(model, "module", model)


def save_model(run_dir: Path, model: nn.Module, cfg: ModelConfig, info: dict[str, Any]) -> None:
    """Write model.safetensors then model.json (the JSON last: it names a complete weights file)."""
    save_tensors(run_dir / MODEL_WEIGHTS, unwrap(model).state_dict())
    write_json(run_dir / MODEL_JSON, {"format": RUN_FORMAT, "avel_version": avel.__version__,
                                      "model": cfg.to_dict(), **info})


def _check_format(doc: dict[str, Any], path: Path) -> None:
    if not isinstance(doc, dict):
        raise AvelError(f"must be a JSON object, got {type(doc).__name__}", path)
    fmt = doc.get("format")
    if fmt != RUN_FORMAT:
        raise AvelError(f"run format {fmt!r} (avel {doc.get('avel_version', '?')}); this avel "
                        f"{avel.__version__} reads format {RUN_FORMAT}: retrain with this version", path)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load a state dict strictly; a mismatch is a user-facing incompatibility error."""
    try:
        unwrap(model).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise AvelError(f"weights do not match the model config ({' '.join(first[:2])})", path) from exc


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """config.json of a run directory, checked for format."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AvelError("run directory not found", run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise AvelError(f"not an avel run directory (no {CONFIG_FILE})", run_dir)
    doc = read_json(path)
    _check_format(doc, path)
    return doc


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig, TrainConfig]:
    """Rebuild the selected model of a run: (model in eval mode, its ModelConfig, the TrainConfig)."""
    run_dir = Path(run_dir)
    doc = read_run_config(run_dir)
    train_cfg = TrainConfig.from_dict(require_field(doc, "train", run_dir / CONFIG_FILE), run_dir / CONFIG_FILE)
    mpath = run_dir / MODEL_JSON
    if not mpath.is_file():
        raise AvelError(f"no checkpoint yet ({MODEL_JSON} missing: no epoch has finished)", run_dir)
    mdoc = read_json(mpath)
    _check_format(mdoc, mpath)
    model_cfg = ModelConfig.from_dict(require_field(mdoc, "model", mpath), mpath)
    model = create_model(model_cfg)
    state = load_tensors(run_dir / MODEL_WEIGHTS)
    standardize.ensure_for_state(model, state)  # a run trained with standardized inputs applies them too
    load_weights(model, state, run_dir / MODEL_WEIGHTS)
    return model.to(device).eval(), model_cfg, train_cfg


def save_resume_state(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                      state: dict[str, Any]) -> None:
    """Weights, Adam moments and the torch RNG state (safetensors) + counters and history (JSON)."""
    tensors = {f"model.{k}": v for k, v in unwrap(model).state_dict().items()}
    opt = optimizer.state_dict()
    for pid, pstate in opt["state"].items():
        for name, value in pstate.items():
            tensors[f"optim.{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    save_tensors(run_dir / LAST_WEIGHTS, tensors)
    write_json(run_dir / LAST_JSON, {"format": RUN_FORMAT, "param_groups": opt["param_groups"], **state})


def load_resume_state(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Restore what save_resume_state wrote; None when the run has no finished epoch."""
    jpath = run_dir / LAST_JSON
    if not jpath.is_file() or not (run_dir / LAST_WEIGHTS).is_file():
        return None
    doc = read_json(jpath)
    _check_format(doc, jpath)
    tensors = load_tensors(run_dir / LAST_WEIGHTS)
    load_weights(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, run_dir / LAST_WEIGHTS)
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": doc["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return doc
