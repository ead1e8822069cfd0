"""Start a run from another run's weights: DMRN fine-tuned from a trained A+V-att (`--init-from`).

The authors trained their DMRN by fine-tuning their A+V-att network (supervised_main.py: "The
pre-trained DMRN.pt was trained by fine-tuning the AV_att model"). Their two networks share the
audio-guided attention and the two BiLSTMs by name and shape; the DMRN block and its classifier are
new. avel does the same: the parts the two architectures share by definition (`SHARED_PARTS`: the
attention and both LSTMs) are copied from the source run's selected checkpoint, every one of their
tensors must exist in the source with exactly the same shape, and the fusion block and the head
start from their own initialisation. Which models may start from which is the table
`INIT_SOURCES`; any other source is refused. TrainConfig.init_from records the source run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from avel.errors import AvelError
from avel.models.registry import ModelConfig

# target model -> models whose runs it may start from
INIT_SOURCES: dict[str, tuple[str, ...]] = {"DMRN": ("A+V-att",), "DMRFE": ("A+V-att",)}
# state-dict prefixes copied: audio-guided attention, audio BiLSTM, visual BiLSTM
SHARED_PARTS: dict[str, tuple[str, ...]] = {
    "DMRN": ("visual_encoder.", "body.temporal_a.", "body.temporal_v."),
    "DMRFE": ("attention.", "temporal_a.", "temporal_v."),
}
SOURCE_PARTS: dict[str, tuple[str, ...]] = {  # the same parts' names in the source model
    "A+V-att": ("visual_encoder.", "body.temporal_a.", "body.temporal_v."),
}


def _source_model(run_dir: Path) -> tuple[ModelConfig, dict[str, Any], dict[str, torch.Tensor]]:
    from avel.train import checkpoint as ckpt

    doc = ckpt.read_run_config(run_dir)
    mpath = run_dir / ckpt.MODEL_JSON
    if not mpath.is_file():
        raise AvelError(f"--init-from: no selected checkpoint ({ckpt.MODEL_JSON} missing): train that run first",
                        run_dir)
    cfg = ModelConfig.from_dict(ckpt.read_json(mpath)["model"])
    return cfg, doc.get("train", {}), ckpt.load_tensors(run_dir / ckpt.MODEL_WEIGHTS)


def init_from_run(model: nn.Module, model_cfg: ModelConfig, train_cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Copy the shared parts of run `run_dir`'s selected model into `model` (in place); return what was
    copied. Refuses a source of another architecture, a missing tensor or a shape mismatch."""
    run_dir = Path(run_dir)
    target = model_cfg.name
    if target not in INIT_SOURCES:
        raise AvelError(f"--init-from: {target} has no initialisation from another run; "
                        f"supported: {', '.join(f'{t} from {s}' for t, ss in INIT_SOURCES.items() for s in ss)}")
    src_cfg, src_train, state = _source_model(run_dir)
    if src_cfg.name not in INIT_SOURCES[target]:
        raise AvelError(f"--init-from: holds a {src_cfg.name} run; {target} starts only from "
                        f"{' or '.join(INIT_SOURCES[target])}", run_dir)
    if bool(src_train.get("standardize", False)) != bool(getattr(train_cfg, "standardize", False)):
        raise AvelError("--init-from: the source run and this one disagree on input standardization "
                        "(the copied LSTMs would see inputs of another scale)", run_dir)
    own = model.state_dict()
    copied = 0
    with torch.no_grad():
        for prefix, src_prefix in zip(SHARED_PARTS[target], SOURCE_PARTS[src_cfg.name]):
            names = [k for k in own if k.startswith(prefix)]
            if not names:
                raise AvelError(f"--init-from: {target} has no part '{prefix.rstrip('.')}'")
            for name in names:
                src_name = src_prefix + name[len(prefix):]
                if src_name not in state:
                    raise AvelError(f"--init-from: the source checkpoint has no tensor {src_name}", run_dir)
                if tuple(state[src_name].shape) != tuple(own[name].shape):
                    raise AvelError(f"--init-from: {src_name} has shape {tuple(state[src_name].shape)}, this "
                                    f"model's {name} {tuple(own[name].shape)} (another hidden size, attention "
                                    "size or LSTM direction?)", run_dir)
                own[name].copy_(state[src_name].to(own[name].dtype))
                copied += 1
    return {"run": str(run_dir), "model": src_cfg.name, "tensors": copied}
