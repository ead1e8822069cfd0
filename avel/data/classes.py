"""Class identity by name: where a model meets a dataset, categories are matched by their names.

A model's output index c means the category its own class list names (`output_names`: the run's
recorded categories, background last). A dataset's label column c means `catalog.categories[c]`
(AVEDataset aligns stored label files to that order, `align_label_columns`); columns past the
categories are unused and column BACKGROUND (28) is background. `class_map` is the one mapping of a
dataset's class indices onto a model's: evaluation scores predictions against the dataset's labels
only through it, so the same predictions give the same numbers whatever order (or subset) of the
categories the dataset lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from avel.data.catalog import BACKGROUND, NUM_CLASSES, Catalog
from avel.errors import AvelError

BACKGROUND_NAME = "background"
UNUSED = -1  # class_map's entry for a dataset column no category names


def placeholder_name(index: int) -> str:
    """The name of output `index` when no category names it (it was never trained to fire)."""
    return f"class {index}"


def output_names(categories: Sequence[str] | None, num_classes: int) -> list[str]:
    """Names of `num_classes` outputs: `categories` in class order, `class i` for outputs past them,
    background last."""
    cats = list(categories or [])[:num_classes - 1]
    return [*cats, *(placeholder_name(i) for i in range(len(cats), num_classes - 1)), BACKGROUND_NAME]


def class_map(data_categories: Sequence[str], model_classes: Sequence[str], *, model: str = "the model",
              path: str | Path | None = None) -> np.ndarray:
    """(NUM_CLASSES,) int64: dataset class index -> the model's index of the class with the same name.

    `data_categories` name the dataset's columns 0..k-1 (its catalog); columns k..27 map to UNUSED,
    background (28) to the model's background (its last class). A dataset category that is not among
    `model_classes` is an AvelError naming it (and `model`), with `path` (the dataset's annotations)."""
    index = {name: i for i, name in enumerate(model_classes[:-1]) if name != placeholder_name(i)}
    out = np.full(NUM_CLASSES, UNUSED, np.int64)
    unknown = [c for c in data_categories if c not in index]
    if unknown:
        more = f"; {len(unknown) - 1} more categories are unknown to it" if len(unknown) > 1 else ""
        raise AvelError(f"category '{unknown[0]}' is not one of the {len(index)} categories {model} was trained "
                        f"on{more}", path)
    for c, name in enumerate(data_categories):
        out[c] = index[name]
    out[BACKGROUND] = len(model_classes) - 1
    return out


def to_model_classes(classes: np.ndarray, mapping: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Dataset class indices (any shape) as the model's indices through `mapping` (from class_map).
    A label in a column no category names is an AvelError."""
    out = mapping[classes]
    if (out == UNUSED).any():
        col = int(np.asarray(classes)[out == UNUSED].flat[0])
        raise AvelError(f"labels use class column {col}, which no category of the annotations names", path)
    return out


def align_label_columns(arr: np.ndarray, catalog: Catalog, path: str | Path | None = None) -> np.ndarray:
    """A stored label array (N, ..., 29) with its event columns reordered so that column c holds
    `catalog.categories[c]` (background stays last); returned as is when already in that order.

    Each row's column is where its event seconds (or video label) put their weight; rows without
    any (an event-less row) say nothing. One category in two columns, or two categories in one, is
    an AvelError naming the file."""
    n = len(catalog)
    events = np.asarray(arr, np.float32).reshape(n, -1, NUM_CLASSES)[..., :BACKGROUND].sum(1)  # (N, 28)
    has = events.max(1) > 0
    pairs = np.unique(np.stack([np.asarray(catalog.labels)[has], events.argmax(1)[has]], 1), axis=0)  # (k, 2)
    for side, what in ((0, "columns"), (1, "categories")):
        values, counts = np.unique(pairs[:, side], return_counts=True)
        if (counts > 1).any():
            v = int(values[counts > 1][0])
            clash = pairs[pairs[:, side] == v]
            if side == 0:
                msg = f"the rows of '{catalog.categories[v]}' use label {what} {', '.join(map(str, clash[:, 1]))}"
            else:
                names = ", ".join(f"'{catalog.categories[c]}'" for c in clash[:, 0])
                msg = f"label column {v} holds {what} {names}"
            raise AvelError(msg + " (one category, one column)", path)
    src = np.full(BACKGROUND, UNUSED, np.int64)
    src[pairs[:, 0]] = pairs[:, 1]
    if all(s in (UNUSED, c) for c, s in enumerate(src)):
        return arr
    free = iter(sorted(set(range(BACKGROUND)) - set(pairs[:, 1].tolist())))
    order = [int(s) if s != UNUSED else next(free) for s in src] + [BACKGROUND]
    return np.ascontiguousarray(np.asarray(arr)[..., order])
