"""The report's figures (matplotlib, Agg backend, written atomically as PNG).

Each function takes plain arrays, so it can be drawn from any source and tested without training:
per-category accuracy bars (supplement Table 1), validation curves, a grid of 7x7 attention
maps in the manner of the paper's Figure 5 (feature-only data has no frames, so the map is drawn
alone and, on AVE-Synth, the ground-truth sounding-object cell is outlined on it), and a grid of
visual-guided audio attention maps over the audio map's time x mel cells (the supplement's Figure 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from avel.io import atomic_path

FIG_DPI = 110  # dots per inch of saved figures
BAR_GROUP_WIDTH = 0.8  # fraction of a category slot covered by its group of bars


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=FIG_DPI, bbox_inches="tight")
    _plt().close(fig)


def per_category_bars(path: str | Path, categories: Sequence[str],
                      series: Mapping[str, tuple[Sequence[float | None], Sequence[float | None]]],
                      reference: Mapping[str, Sequence[float]] | None = None) -> Path:
    """Grouped bars: for each category, one bar per series (label -> (means, stds)), std as error bars.

    `reference` (series label -> published values) draws the paper's number as a black tick on that bar.
    """
    plt = _plt()
    path = Path(path)
    n = len(series)
    x = np.arange(len(categories))
    width = BAR_GROUP_WIDTH / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.45 * len(categories) * max(n, 1) / 2), 4.0))
    for i, (label, (means, stds)) in enumerate(series.items()):
        m = np.array([np.nan if v is None else v for v in means], dtype=float)
        s = np.array([0.0 if v is None else v for v in stds], dtype=float)
        xs = x - BAR_GROUP_WIDTH / 2 + (i + 0.5) * width
        ax.bar(xs, np.nan_to_num(m), width, yerr=s, label=label, capsize=1.5)
        if reference and label in reference:
            ax.hlines(reference[label], xs - width / 2, xs + width / 2, colors="black", linewidth=1.2,
                      label="paper" if i == min(j for j, k in enumerate(series) if k in reference) else None)
    ax.set_xticks(x)
    ax.set_xticklabels(categories, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper right", fontsize=8, ncol=n)
    ax.set_title("Per-category accuracy (mean ± std over seeds)")
    _save(fig, path)
    return path


def curves(path: str | Path, series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
           ylabel: str = "validation accuracy (%)") -> Path:
    """One line per model: label -> (epochs, values)."""
    plt = _plt()
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker=".", label=label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("Training curves (first seed)")
    _save(fig, path)
    return path


def audio_attention_grid(path: str | Path, maps: np.ndarray, titles: Sequence[str],
                         seconds_labels: np.ndarray | None = None, model: str = "A'-att") -> Path:
    """Visual-guided audio attention (the supplement's Figure 1): one row per video, one column per
    second, each map the attention over the cells of that second's audio map drawn like a spectrogram
    (time across, mel bands upwards).

    maps: (V, T, H, W) weights over H time x W frequency cells (VGGish pool5: 6 x 4);
    seconds_labels: (V, T) bool, whether the second holds the event (marked on the column title).
    """
    plt = _plt()
    path = Path(path)
    maps = np.asarray(maps, dtype=float)
    v, t = maps.shape[:2]
    fig, axes = plt.subplots(v, t, figsize=(1.0 * t + 1.2, 1.1 * v + 0.4), squeeze=False)
    for i in range(v):
        for j in range(t):
            ax = axes[i, j]
            ax.imshow(maps[i, j].T, cmap="magma", origin="lower", aspect="auto",
                      vmin=0.0, vmax=max(float(maps[i, j].max()), 1e-12))  # (W freq, H time)
            ax.set_xticks([])
            ax.set_yticks([])
            event = seconds_labels is not None and bool(seconds_labels[i, j])
            ax.set_title(f"{j}s" + ("*" if event else ""), fontsize=7)
            if j == 0:
                ax.set_ylabel(titles[i], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"Visual-guided audio attention of {model} (per second: time across, mel bands up); "
                 "* = event second", fontsize=8)
    _save(fig, path)
    return path


def attention_grid(path: str | Path, maps: np.ndarray, titles: Sequence[str],
                   gt_cells: np.ndarray | None = None, seconds_labels: np.ndarray | None = None) -> Path:
    """A grid of attention maps: one row per video, one column per second (paper Figure 5).

    maps: (V, T, G, G) attention weights; titles: one per video (row label);
    gt_cells: (V, T) flat index of the ground-truth object cell, -1 where none (outlined in red);
    seconds_labels: (V, T) bool, whether the second holds the event (marked on the column title).
    """
    plt = _plt()
    from matplotlib.patches import Rectangle

    path = Path(path)
    maps = np.asarray(maps, dtype=float)
    v, t, g, _ = maps.shape  # (V, T, G, G)
    fig, axes = plt.subplots(v, t, figsize=(1.1 * t, 1.25 * v), squeeze=False)
    for i in range(v):
        for j in range(t):
            ax = axes[i, j]
            ax.imshow(maps[i, j], cmap="viridis", vmin=0.0, vmax=max(float(maps[i, j].max()), 1e-12))
            ax.set_xticks([])
            ax.set_yticks([])
            if gt_cells is not None and gt_cells[i, j] >= 0:
                r, c = divmod(int(gt_cells[i, j]), g)
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
            event = seconds_labels is not None and bool(seconds_labels[i, j])
            ax.set_title(f"{j}s" + ("*" if event else ""), fontsize=7)
            if j == 0:
                ax.set_ylabel(titles[i], fontsize=7)
    note = "* = event second"
    if gt_cells is not None:
        note = "red box: ground-truth sounding-object cell; " + note
    fig.suptitle(f"Audio-guided visual attention (7x7), {note}", fontsize=8)
    _save(fig, path)
    return path
