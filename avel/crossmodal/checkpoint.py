"""Cross-modal run directories: safetensors weights + a JSON config that rebuilds the model.

RUN_DIR/
  config.json        {"kind": "avel-crossmodal", "format": 1, "model": CrossModalConfig, "train": ...}
  model.safetensors  weights (and DCCA's CCA buffers) of the epoch chosen on the validation split
  metrics.json       per-epoch history, chosen epoch, "finished": true once training completed
  state.safetensors  last epoch's model + optimizer + best weights, for resuming (metadata: progress)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from avel.crossmodal.models import CrossModalConfig, CrossModalNet, build_model
from avel.errors import AvelError, require_field, require_finite_weights
from avel.io import atomic_path, write_json

KIND = "avel-crossmodal"
FORMAT = 1
CONFIG, WEIGHTS, METRICS, STATE = "config.json", "model.safetensors", "metrics.json", "state.safetensors"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: (tensors, metadata)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise AvelError(f"not a readable safetensors file: {exc}", path) from exc
    require_finite_weights(tensors, path)
    return tensors, meta


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise AvelError("file not found", path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AvelError(f"not valid JSON: {exc}", path) from exc


def write_config(run_dir: Path, model_cfg: CrossModalConfig, train_cfg: dict[str, Any]) -> None:
    write_json(run_dir / CONFIG, {"kind": KIND, "format": FORMAT, "model": model_cfg.to_dict(), "train": train_cfg})


def read_config(run_dir: Path) -> dict[str, Any]:
    """config.json of a run directory, checked."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AvelError("run directory not found", run_dir)
    cfg = read_json(run_dir / CONFIG)
    if not isinstance(cfg, dict):
        raise AvelError(f"must be a JSON object, got {type(cfg).__name__}", run_dir / CONFIG)
    if cfg.get("kind") != KIND:
        raise AvelError(f"not a cross-modal run (kind {cfg.get('kind')!r}, expected {KIND!r})", run_dir / CONFIG)
    if cfg.get("format") != FORMAT:
        raise AvelError(f"unsupported run format {cfg.get('format')!r} (this avel reads {FORMAT})", run_dir / CONFIG)
    return cfg


def save_model(run_dir: Path, model: CrossModalNet) -> None:
    save_tensors(Path(run_dir) / WEIGHTS, model.state_dict())


def load_model(run_dir: str | Path, device: str = "cpu") -> tuple[CrossModalNet, dict[str, Any]]:
    """Rebuild a trained network from its run directory: (model in eval mode, config.json)."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    model_cfg = CrossModalConfig.from_dict(require_field(cfg, "model", run_dir / CONFIG), run_dir / CONFIG)
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise AvelError(f"no {WEIGHTS} (training not finished? rerun `avel crossmodal train` to resume)", run_dir)
    model = build_model(model_cfg)
    tensors, _ = load_tensors(weights)
    missing, unexpected = set(model.state_dict()) - set(tensors), set(tensors) - set(model.state_dict())
    if missing or unexpected:
        raise AvelError(f"weights do not match the config: missing {sorted(missing)}, unexpected {sorted(unexpected)}",
                        weights)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise AvelError(f"weights do not match the config: {str(exc).splitlines()[-1].strip()}", weights) from exc
    return model.to(device).eval(), cfg
