"""Evaluate a cross-modal network on a split: distances per video, then sliding-window localization."""

from __future__ import annotations

import numpy as np
import torch

from avel.crossmodal.data import CrossModalData, check_dims
from avel.crossmodal.localize import CrossModalResult, evaluate_distances
from avel.crossmodal.models import CrossModalNet

EVAL_BATCH_VIDEOS = 256  # videos per forward pass when computing distance matrices


@torch.no_grad()
def distance_matrices(model: CrossModalNet, data: CrossModalData, device: str | torch.device = "cpu",
                      batch: int = EVAL_BATCH_VIDEOS) -> np.ndarray:
    """(N, T, T) distances, [n, i, j] = D(V_i, A_j) within video n, as float32 (the model's precision)."""
    check_dims(data, model.cfg.audio_dim, model.cfg.visual_dim)
    was_training = model.training
    model.eval()
    out = []
    for lo in range(0, len(data), batch):
        audio = torch.from_numpy(data.audio[lo:lo + batch]).to(device)  # (B, T, 128)
        visual = torch.from_numpy(data.visual[lo:lo + batch]).to(device)  # (B, T, 512)
        out.append(model.distance_matrix(audio, visual).float().cpu().numpy())  # (B, T, T)
    model.train(was_training)
    t = data.event_mask.shape[1]
    return np.concatenate(out) if out else np.zeros((0, t, t), np.float32)


def evaluate_model(model: CrossModalNet, data: CrossModalData, device: str | torch.device = "cpu") -> CrossModalResult:
    """A2V / V2A exact-start accuracy of `model` on the short-event videos of `data`."""
    return evaluate_distances(distance_matrices(model, data, device), data.event_mask, data.rows)
