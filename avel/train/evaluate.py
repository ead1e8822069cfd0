"""Evaluation: per-second predictions, segment accuracy (the paper's metric), per-category accuracy
(supplement Table 1), confusion matrix, and how often attention peaks on the sounding object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avel.data.catalog import NUM_CLASSES
from avel.data.classes import BACKGROUND_NAME, class_map, output_names, to_model_classes
from avel.errors import AvelError
from avel.models.localizers import paper_name
from avel.models.registry import ModelConfig, model_spec
from avel.precision import Decision, autocast, decide, keep_recurrent_fp32
from avel.train.data import Source, read_rows

PREDICT_BATCH = 64  # videos per forward pass in predict()
DEGENERATE_SHARE = 95.0  # a model predicting one class on more than this % of test seconds is degenerate
MIN_CATEGORY_VIDEOS = 3  # per-category accuracy over fewer test videos is marked "n<3", not given a spread


def _as_tensor(x: Any, device: torch.device) -> torch.Tensor | None:
    if x is None:
        return None
    t = x if torch.is_tensor(x) else torch.from_numpy(np.asarray(x))
    return t.to(device=device, dtype=torch.float32)


@torch.inference_mode()
def predict(model: nn.Module, audio: Any = None, visual: Any = None, *, batch_size: int = PREDICT_BATCH,
            device: str | torch.device | None = None, precision: str | Decision = "auto",
            **inputs: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities per second (N, T, C) and attention (N, T, k) or None, for features of any length T.

    `audio` (N, T, 128), `visual` (N, T, 7, 7, 512) and any further inputs the model reads (e.g.
    `audio_map=`) as numpy arrays or tensors (any float dtype); inputs the model does not read may be None.
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    decision = precision if isinstance(precision, Decision) else decide(precision, device)  # autocast or fp32
    keep_recurrent_fp32(model.eval(), decision)
    arrays = {"audio": audio, "visual": visual, **inputs}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    if not arrays:
        raise ValueError("predict() needs at least one input array")
    n = len(next(iter(arrays.values())))
    probs, attn = [], []
    for i in range(0, n, batch_size):
        batch = {k: _as_tensor(v[i:i + batch_size], device) for k, v in arrays.items()}
        with autocast(decision):
            out = model(**batch)
        p = out.probs if out.probs is not None else torch.softmax(out.logits.float(), dim=-1)  # (b, T, C), fp32 under autocast too
        probs.append(p.float().cpu().numpy())
        if out.attention is not None:
            attn.append(out.attention.float().cpu().numpy())
    return np.concatenate(probs), (np.concatenate(attn) if attn else None)


def category_names(ds: Any, num_classes: int = NUM_CLASSES) -> list[str]:
    """Class index -> name of the dataset's label columns: its categories, `class i` for the columns
    past them (which never occur), background last (avel.data.classes.output_names). The class list
    of a model trained on `ds`."""
    return output_names(ds.catalog.categories, num_classes)


def baselines(labels: np.ndarray, video_class: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The rates any accuracy on these seconds must be read against.

    majority_rate: percent of seconds carrying the most frequent label (background on AVE): the
      accuracy of predicting that label everywhere. chance_rate: 100 / the number of classes the
      model outputs (29 on AVE: 28 events + background), a uniformly random guess.
    per_class_videos / per_class_majority_rate: for each event category, its videos in the split and
      the majority rate over their seconds (the label, event or background, that fills most of them).
    """
    C = len(names)
    counts = np.bincount(labels.ravel(), minlength=C)
    top = int(counts.argmax())
    per_videos, per_major = {}, {}
    for c, name in enumerate(names[:-1]):
        sel = video_class == c
        if sel.any():
            per_videos[name] = int(sel.sum())
            per_major[name] = round(100.0 * float(np.bincount(labels[sel].ravel(), minlength=C).max()
                                                  / labels[sel].size), 3)
    return {"majority_class": names[top], "majority_rate": round(100.0 * float(counts[top] / max(labels.size, 1)), 3),
            "chance_rate": round(100.0 / C, 3), "per_class_videos": per_videos, "per_class_majority_rate": per_major}


def prediction_spread(pred: np.ndarray, names: list[str]) -> dict[str, Any]:
    """How concentrated the predictions are: the most predicted class, its share of the seconds (%),
    and `degenerate` when that share exceeds DEGENERATE_SHARE (the model says one thing everywhere)."""
    counts = np.bincount(pred.ravel(), minlength=len(names))
    top = int(counts.argmax())
    share = 100.0 * float(counts[top] / max(pred.size, 1))
    return {"most_predicted_class": names[top], "most_predicted_share": round(share, 3),
            "degenerate": bool(share > DEGENERATE_SHARE)}


def degenerate_from_confusion(confusion: dict[str, Any]) -> bool:
    """`degenerate` recomputed from a stored confusion matrix (results written before the flag existed)."""
    m = np.asarray(confusion["matrix"])
    return bool(m.sum() and 100.0 * m.sum(0).max() / m.sum() > DEGENERATE_SHARE)


def segment_metrics(pred: np.ndarray, labels: np.ndarray, video_class: np.ndarray,
                    names: list[str]) -> dict[str, Any]:
    """Scores from per-second predicted classes (N, T) and true classes (N, T).

    accuracy: percent of seconds labelled correctly (the paper's overall accuracy).
    per_class: for each event category, percent of correctly labelled seconds over the test videos
      of that category (their event and background seconds), as in the supplement's Table 1.
    per_label: recall of each label over the seconds that carry it (background included).
    confusion: counts, rows = true label, columns = predicted label.
    Plus the baselines (majority and chance rates, videos per category) and the prediction spread
    (`degenerate`), so that no accuracy is read without them.
    """
    C = len(names)
    correct = pred == labels  # (N, T)
    confusion = np.bincount(labels.ravel() * C + pred.ravel(), minlength=C * C).reshape(C, C)
    per_class = {}
    for c, name in enumerate(names[:-1]):
        sel = video_class == c
        if sel.any():
            per_class[name] = round(100.0 * float(correct[sel].mean()), 3)
    support = confusion.sum(1)
    per_label = {names[c]: round(100.0 * float(confusion[c, c] / support[c]), 3) for c in range(C) if support[c]}
    return {
        "accuracy": round(100.0 * float(correct.mean()), 3),
        "num_videos": int(pred.shape[0]),
        "num_seconds": int(pred.size),
        "per_class": per_class,
        "per_label": per_label,
        "confusion": {"labels": names, "matrix": confusion.tolist()},
        **baselines(labels, video_class, names),
        **prediction_spread(pred, names),
    }


def attention_hits(attention: np.ndarray, object_cells: np.ndarray, event_mask: np.ndarray) -> dict[str, Any]:
    """Share of event seconds whose attention argmax is the sounding object's cell, and its chance rate."""
    sel = (event_mask > 0) & (object_cells >= 0)
    k = attention.shape[-1]
    n = int(sel.sum())
    hits = attention.argmax(-1)[sel] == object_cells[sel]
    return {
        "attention_hit_rate": round(100.0 * float(hits.mean()), 3) if n else None,
        "attention_chance_rate": round(100.0 / k, 3),
        "attention_seconds": n,
    }


def evaluate_model(model: nn.Module, model_cfg: ModelConfig, ds: Any, split: str, *,
                   device: str | torch.device = "cpu", batch_size: int = PREDICT_BATCH,
                   precision: str | Decision = "auto", classes: list[str] | None = None,
                   model_label: str = "the model") -> dict[str, Any]:
    """Evaluate `model` on a dataset split: accuracy, per_class, per_label, confusion, attention hits.

    `classes`: the name of each model output, background last (default: the dataset's own class
    list, for a model trained on `ds`). The dataset's labels are mapped onto them by name
    (avel.data.classes.class_map), so every number is in the model's classes: a dataset category
    the model does not know is an AvelError naming it (and `model_label`); a model class absent
    from the split is absent from per_class."""
    rows = np.asarray(ds.split(split), dtype=np.int64)
    decision = precision if isinstance(precision, Decision) else decide(precision, device)
    if len(rows) == 0:
        raise AvelError(f"split '{split}' is empty", getattr(ds, "root", None))
    names = list(classes) if classes is not None else category_names(ds, model_cfg.num_classes)
    where = getattr(ds.catalog, "path", None)
    to_model = class_map(ds.catalog.categories, names, model=model_label, path=where)  # refused before any work
    inputs = model_spec(model_cfg.name).inputs
    source = Source({k: getattr(ds, k) for k in inputs}, rows)
    probs, attn = [], []
    for i in range(0, len(rows), batch_size):
        batch = source.take(np.arange(i, min(i + batch_size, len(rows))))
        p, a = predict(model, batch_size=batch_size, device=device, precision=decision, **batch)
        probs.append(p)
        if a is not None:
            attn.append(a)
    probs_all = np.concatenate(probs)  # (N, T, C)
    if len(names) != probs_all.shape[-1]:
        raise ValueError(f"{len(names)} class names for {probs_all.shape[-1]} model outputs")
    labels = to_model_classes(read_rows(ds.labels, rows).argmax(-1), to_model, where)  # (N, T) model classes
    video_class = to_model_classes(read_rows(ds.mil_labels, rows).argmax(-1), to_model, where)  # (N,)
    result = {"split": split, "model": paper_name(model_cfg),
              **segment_metrics(probs_all.argmax(-1), labels, video_class, names)}
    # eq. 7's MIL pooling, as the trainer selects W- checkpoints: the mean of per-second log-probabilities
    # has the argmax of the mean of the logits (log-softmax shifts every class of a second equally)
    pooled = np.log(np.maximum(probs_all, np.finfo(np.float32).tiny)).mean(1)  # (N, C)
    result["video_accuracy"] = round(100.0 * float((pooled.argmax(-1) == video_class).mean()), 3)
    cells = getattr(ds, "object_cells", None)
    if attn and cells is not None:
        result.update(attention_hits(np.concatenate(attn), read_rows(cells, rows, None),
                                     read_rows(ds.event_mask, rows, None)))
    result["precision"] = decision.record()
    return result


def evaluate_run(run_dir: str | Path, dataset: Any = None, split: str = "test", *,
                 device: str = "cpu", precision: str = "auto") -> dict[str, Any]:
    """Evaluate a run's selected checkpoint on `split` of `dataset` (default: the data it was trained on).
    Its outputs mean the classes the run records (avel.inference.runinfo.class_names), matched to the
    dataset's categories by name.

    Other data is allowed; the result then says so: `training_data` is "same", "different" (with
    `training_data_differences` naming what differs) or "unknown" (a run written before avel recorded
    its training data's content fingerprint)."""
    from avel.inference.runinfo import class_names
    from avel.train.checkpoint import load_run, read_run_config
    from avel.train.distributed import resolve_device
    from avel.train.fingerprint import dataset_summary, fingerprint_differences, run_fingerprint

    run_dir = Path(run_dir)
    doc = read_run_config(run_dir)
    dev = resolve_device(device)
    model, model_cfg, train_cfg = load_run(run_dir, device=dev)
    if dataset is None:
        root = doc.get("data", {}).get("root")
        if not root:
            raise AvelError("the run does not record its dataset directory: pass --data", run_dir)
        from avel.data.dataset import AVEDataset

        dataset = AVEDataset.open(root)
    classes, _ = class_names(doc, model_cfg.num_classes)  # what each output means: the run's own class list
    result = {"run_dir": str(run_dir),
              **evaluate_model(model, model_cfg, dataset, split, device=dev, precision=precision, classes=classes,
                               model_label=f"the run {run_dir}"),
              "dataset": dataset_summary(dataset)}
    trained_on = doc.get("data", {}).get("fingerprint")
    if trained_on is None:
        result["training_data"], result["training_data_differences"] = "unknown", []
    else:
        try:
            diffs = fingerprint_differences(trained_on, run_fingerprint(dataset, model_cfg, train_cfg))
        except AvelError as exc:  # e.g. a dataset without the run's train or validation split
            result["training_data"], result["training_data_differences"] = "unknown", [str(exc)]
        else:
            result["training_data"] = "different" if diffs else "same"
            result["training_data_differences"] = diffs
    return result
