"""AVE-Synth: a synthetic dataset directory in exactly the layout of the AVE release.

AVE-Synth is a stand-in for the real AVE features (which cannot be downloaded here). Its numbers
test the implementation, not the paper's claims. It is built so that the paper's questions are
meaningful, for reasons that can be stated:

* a per-video *scene* is spread sparsely over all 49 cells of the 7x7 visual map; the *sounding
  object* adds its category's visual signature to one or two cells and may move each second;
* in many videos a *visible but silent distractor* of another category sits elsewhere in the
  frame, so globally pooled visual features mix two categories while audio-guided attention can
  pick the sounding one;
* background seconds contain *silent visible objects* and *off-screen sounds* (audible, not
  visible), so each modality alone is ambiguous about event boundaries; audio and visual onsets
  are offset by up to one second around the labelled event (= the seconds where both hold);
* each category has its own audio and visual reliability (signature strength), so audio wins on
  some categories and vision on others (generator v2: as in the paper, vision on vehicles, audio on
  speech and animals);
* the audio of category c and the visual of category c are fixed signatures of c, so the
  audio-visual correspondence is learnable (by attention and by cross-modal matching).

See docs/data.md for the generative model in full. Every array is a deterministic function of the
generator version and the seed: the category-level "world" comes from the seed alone and video i
from (seed, i). Version 1 (the first release) stays available byte for byte; version 2, the default,
makes the pooled visual signal as strong as the audio, matches the audio's statistics to the
released VGGish features, and sets each category's modality reliability as the paper reports.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avel.data.catalog import (AVE_CATEGORIES, BACKGROUND, NUM_CLASSES, NUM_EVENT_CLASSES, NUM_SEGMENTS,
                               Annotation, Catalog, format_line)
from avel.data.labels import write_label_files
from avel.data.splits import MATCH_FILES, ORDER_FILES, write_order
from avel.errors import AvelError
from avel.io import (H5_KEY, is_write_failure, output_lock, read_json_if_exists, remove_temporaries, write_h5,
                     write_json, write_problem, write_text)
from avel.progress import stderr_progress

GENERATOR_VERSION = 2  # the default generator version (recorded in the marker file); see VERSIONS
MARKER_FILE = "avel_synth.json"  # marks an AVE-Synth directory: generator version, seed, sizes
OBJECT_CELLS_FILE = "object_cells.h5"  # (N,10) int64 ground-truth cell 0..48 of the sounding object, -1 none
AUDIO_MAP_FILE = "audio_feature_map.h5"  # (N,10,6,4,512) float64 spatial audio maps (only with audio_maps)
PROGRESS_FILE = ".avel_synth_progress.json"  # resume record of an interrupted generation

DEFAULT_VIDEOS = 400  # trains in minutes on 2 CPU cores; the visual file is 2 MB per video
FULL_SIZE = 4143  # rows of the real release

GRID = 7  # visual map side (VGG-19 pool5 on 224x224 input)
CELLS = GRID * GRID  # 49 locations
VISUAL_DIM = 512  # pool5 channels
AUDIO_DIM = 128  # VGGish embedding size
AUDIO_MAP_SHAPE = (6, 4, 512)  # VGGish last pool: 6 time x 4 frequency cells x 512 channels
AUDIO_MAX = 5.0  # released VGGish features lie in [0, ~4.5]; clip here

# Event length histogram of the real Annotations.txt (seconds -> rows), lengths 2..10.
AVE_LENGTH_COUNTS = {2: 214, 3: 220, 4: 217, 5: 196, 6: 200, 7: 139, 8: 111, 9: 95, 10: 2750}
NOISY_FRACTION = 178 / 4143  # background-only videos per annotated row in the release
WRITE_CHUNK = 32  # videos generated and written per step


@dataclass(frozen=True)
class SynthParams:
    """Knobs of the generative model (amplitudes are in feature units before the ReLU)."""

    vis_sig_channels: int = 32  # active channels of a category's visual signature
    aud_sig_dims: int = 10  # active dims of a category's own audio signature
    aud_families: int = 7  # sound families (e.g. string instruments): members share a signature part
    aud_family_weight: float = 0.8  # weight of the shared family part in a category's audio signature
    vis_sig_low: float = 2.5  # visual signature channel values are uniform in [low, high]
    vis_sig_high: float = 4.5
    scene_low: float = 0.1  # scene prototype channel values are uniform in [low, high]
    scene_high: float = 0.4
    scene_prototypes: int = 16  # scene types shared by all categories
    scene_channels: int = 64  # active channels of a scene prototype
    scene_cell_keep: float = 0.4  # fraction of scene channels present in each cell
    preferred_scene_p: float = 0.6  # chance a video shows one of its category's two preferred scenes
    vis_noise: float = 0.35  # std of per-cell Gaussian noise; ReLU at -vis_noise keeps ~16% of noise
    strong: float = 1.0  # signature scale of a reliable modality
    medium: float = 0.65  # ... of a medium one
    weak: float = 0.35  # ... of an unreliable one
    move_p: float = 0.3  # chance per second that the object moves to a neighbouring cell
    second_cell_p: float = 0.5  # chance the object also covers a neighbouring cell (at 0.6x)
    distractor_p: float = 0.5  # chance of a visible silent object of another category
    sound_distractor_p: float = 0.4  # chance of an off-screen sound of another category throughout the video
    onset_offset_p: float = 0.4  # chance per event boundary that one modality extends by 1 s
    offscreen_p: float = 0.25  # chance per remaining background second of an off-screen sound
    silent_visible_p: float = 0.25  # chance per remaining background second of a silent visible object
    offscreen_same_p: float = 0.5  # chance an off-screen sound is of the video's own category
    aud_bias_mean: float = -0.35  # mean per-dim audio bias (keeps ~65% zeros like the release)
    aud_bias_std: float = 0.35  # spread of per-dim audio bias across dims
    aud_video_std: float = 0.12  # per-video ambient variation
    aud_noise: float = 0.45  # per-second audio noise std
    # Multiplies the whole visual map. At 1.0 (generator v1) a globally pooled visual vector is
    # ~15x smaller than an audio feature (std 0.026 vs 0.38, benchmarks/synth_probe.py), which
    # slows the pooled-visual models' training (V, A+V); see docs/data.md and
    # benchmarks/ordering_margins.py --visual-gain.
    visual_gain: float = 1.0
    # Multiplies the audio before the clip to [0, AUDIO_MAX] (zeros stay zeros). v2's 0.69 brings mean,
    # std and 99th percentile to the released VGGish features' (audio_feature_noisy.h5).
    audio_scale: float = 1.0
    # "random": a random third of the categories audio-strong, a third vision-strong (v1); "paper": by
    # the supplement's per-category results (VISION_STRONG, AUDIO_STRONG: vision wins on vehicles,
    # audio on speech and animals).
    reliability: str = "random"


# Generator versions: each version's parameters. Field defaults are v1's, so a v1 marker written
# before a field existed reads as v1. v2: pooled visual vectors as strong as the audio (visual_gain
# 10: pooled std ~0.27 like the audio's ~0.26), audio statistics matched to the release (audio_scale),
# per-category modality reliability as in the paper (reliability "paper").
VERSIONS = {1: SynthParams(), 2: SynthParams(visual_gain=10.0, audio_scale=0.69, reliability="paper")}

# Modality reliability by category (the supplement's Table 1 and the paper's discussion): vehicles
# and the distant horse are recognised better by vision (V > A: plane, car, helicopter, truck,
# motorcycle, train, bus, horse); speech, the baby's cry and most animals by ear (A > V: man, woman,
# baby, dog, goat, cat, rodents); instruments and the rest are medium in both.
VISION_STRONG = ("Fixed-wing aircraft, airplane", "Race car, auto racing", "Helicopter", "Truck", "Motorcycle",
                 "Train horn", "Bus", "Horse")
AUDIO_STRONG = ("Male speech, man speaking", "Female speech, woman speaking", "Baby cry, infant cry", "Bark",
                "Goat", "Cat", "Rodents, rats, mice")


def params_for(version: int) -> SynthParams:
    """The generative parameters of a generator version."""
    if version not in VERSIONS:
        raise AvelError(f"unknown AVE-Synth generator version {version}; known: {', '.join(map(str, VERSIONS))}")
    return VERSIONS[version]


@dataclass(frozen=True)
class World:
    """Category- and scene-level constants: a function of the seed only."""

    vis_sig: np.ndarray  # (28, 512) non-negative visual signature per category
    aud_sig: np.ndarray  # (28, 128) non-negative audio signature per category
    map_sig: np.ndarray  # (28, 512) audio-map channel signature per category
    map_band: np.ndarray  # (28,) frequency column 0..3 of each category in the audio map
    vis_strength: np.ndarray  # (28,) visual reliability scale
    aud_strength: np.ndarray  # (28,) audio reliability scale
    scenes: np.ndarray  # (S, 512) scene prototypes
    preferred_scenes: np.ndarray  # (28, 2) scene indices typical for each category
    aud_bias: np.ndarray  # (128,) per-dim audio bias


def _sparse_signature(rng: np.random.Generator, dim: int, active: int, lo: float, hi: float) -> np.ndarray:
    v = np.zeros(dim, np.float32)
    idx = rng.choice(dim, size=active, replace=False)
    v[idx] = rng.uniform(lo, hi, size=active)
    return v


def make_world(seed: int, p: SynthParams) -> World:
    """Draw the category-level signatures, reliabilities and scenes for `seed`."""
    rng = np.random.default_rng([seed, 0x57A7])
    k = NUM_EVENT_CLASSES
    vis_sig = np.stack([_sparse_signature(rng, VISUAL_DIM, p.vis_sig_channels, p.vis_sig_low, p.vis_sig_high)
                        for _ in range(k)])
    # Audio: categories come in families sharing part of their signature (confusable by ear).
    family = rng.permutation(np.arange(k) % p.aud_families)
    fam_sig = np.stack([_sparse_signature(rng, AUDIO_DIM, p.aud_sig_dims, 0.8, 2.0) for _ in range(p.aud_families)])
    own_sig = np.stack([_sparse_signature(rng, AUDIO_DIM, p.aud_sig_dims, 0.8, 2.0) for _ in range(k)])
    aud_sig = p.aud_family_weight * fam_sig[family] + own_sig
    map_sig = np.stack([_sparse_signature(rng, VISUAL_DIM, p.vis_sig_channels, 1.0, 2.0) for _ in range(k)])
    # Reliability groups: a third audio-strong/visual-weak, a third the reverse, the rest medium.
    group = rng.permutation(np.arange(k) % 3)
    if p.reliability == "paper":  # 0 audio-strong, 1 vision-strong, 2 medium, by category name
        group = np.array([0 if c in AUDIO_STRONG else 1 if c in VISION_STRONG else 2 for c in AVE_CATEGORIES])
    vis_strength = np.choose(group, [p.weak, p.strong, p.medium]).astype(np.float32)
    aud_strength = np.choose(group, [p.strong, p.weak, p.medium]).astype(np.float32)
    scenes = np.stack([_sparse_signature(rng, VISUAL_DIM, p.scene_channels, p.scene_low, p.scene_high)
                       for _ in range(p.scene_prototypes)])
    preferred = np.stack([rng.choice(p.scene_prototypes, 2, replace=False) for _ in range(k)])
    aud_bias = rng.normal(p.aud_bias_mean, p.aud_bias_std, AUDIO_DIM).astype(np.float32)
    return World(vis_sig, aud_sig, map_sig, rng.integers(0, AUDIO_MAP_SHAPE[1], k), vis_strength,
                 aud_strength, scenes, preferred, aud_bias)


# --------------------------------------------------------------------------- catalog and splits


def make_catalog(num_videos: int, seed: int, categories: int = NUM_EVENT_CLASSES) -> Catalog:
    """Rows with balanced categories and AVE's event-length distribution (each event >= 2 s).

    Uses the first `categories` AVE categories. The first rows list them in class order, so that
    indexing categories by first appearance (the rule for Annotations.txt) gives AVE's class indices.
    """
    rng = np.random.default_rng([seed, 0xCA7A])
    head = np.arange(categories)
    cats = np.concatenate([head, rng.permutation(np.arange(num_videos - categories) % categories)])
    lengths_, counts = zip(*AVE_LENGTH_COUNTS.items())
    lengths = rng.choice(lengths_, size=num_videos, p=np.array(counts) / sum(counts))
    starts = rng.integers(0, NUM_SEGMENTS - lengths + 1)
    rows = tuple(Annotation(i, AVE_CATEGORIES[c], f"synth{i:06d}", "good", int(s), int(s + n))
                 for i, (c, n, s) in enumerate(zip(cats, lengths, starts)))
    return Catalog(rows=rows, categories=AVE_CATEGORIES[:categories])


def _systematic(rows_by_cat: list[np.ndarray], period: int, slots: dict[str, range]) -> dict[str, np.ndarray]:
    """Stratified split: concatenate rows grouped by category, deal position p to slot p % period."""
    flat = np.concatenate(rows_by_cat) if rows_by_cat else np.zeros(0, np.int64)
    pos = np.arange(len(flat)) % period
    return {name: np.sort(flat[np.isin(pos, list(r))]) for name, r in slots.items()}


def make_splits(catalog: Catalog, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """80/10/10 splits stratified by category, and the match splits (test_match: short events only)."""
    rng = np.random.default_rng([seed, 0x5B11])
    labels = np.array(catalog.labels)
    lengths = np.array([a.length for a in catalog.rows])
    by_cat = [rng.permutation(np.flatnonzero(labels == c)) for c in range(len(catalog.categories))]
    order = _systematic(by_cat, 10, {"train": range(0, 8), "val": range(8, 9), "test": range(9, 10)})
    # Match splits: a tenth of all rows, taken from the short events (stratified), form the test part.
    n_test = min(round(0.1 * len(catalog)), int((lengths < NUM_SEGMENTS).sum()))
    short_by_cat = [r[lengths[r] < NUM_SEGMENTS] for r in by_cat]
    short = np.concatenate(short_by_cat)  # grouped by category: evenly spaced picks stratify
    test_match = np.sort(short[(np.arange(n_test) * len(short)) // max(n_test, 1)])
    rest = rng.permutation(np.setdiff1d(np.arange(len(catalog)), test_match))
    n_val = min(round(0.1 * len(catalog)), len(rest))
    match = {"train": np.sort(rest[n_val:]), "val": np.sort(rest[:n_val]), "test": test_match}
    return order, match


# --------------------------------------------------------------------------- one video


@dataclass
class VideoPlan:
    """What happens in each second of one video (built first, rendered to features after)."""

    category: int  # event class, or -1 for a background-only (noisy) video
    object_cells: np.ndarray  # (10,) main cell of the sounding object while it sounds and is visible, else -1
    visible: list[list[tuple[int, int, float]]]  # per second: (category, cell, scale) of visible objects
    audible: list[list[tuple[int, float]]]  # per second: (category, scale) of sounds


def _walk(rng: np.random.Generator, p: SynthParams, avoid: np.ndarray | None = None) -> np.ndarray:
    """(10,) cell indices of an object doing a lazy random walk on the 7x7 grid."""
    cells = np.empty(NUM_SEGMENTS, np.int64)
    r, c = rng.integers(0, GRID, 2)
    for t in range(NUM_SEGMENTS):
        if t and rng.random() < p.move_p:
            dr, dc = ((0, 1), (0, -1), (1, 0), (-1, 0))[rng.integers(4)]
            r, c = min(max(r + dr, 0), GRID - 1), min(max(c + dc, 0), GRID - 1)
        cell = r * GRID + c
        if avoid is not None and cell == avoid[t]:  # never on top of the sounding object
            r = (r + 3) % GRID
            cell = r * GRID + c
        cells[t] = cell
    return cells


def plan_video(rng: np.random.Generator, world: World, p: SynthParams, a: Annotation | None,
               categories: tuple[str, ...] = AVE_CATEGORIES) -> VideoPlan:
    """Decide objects, sounds and their timing for one video; `a` None means background-only.

    Distractors and off-screen sounds are drawn from `categories` (the dataset's categories).
    """
    T = NUM_SEGMENTS
    visible: list[list] = [[] for _ in range(T)]
    audible: list[list] = [[] for _ in range(T)]
    obj = np.full(T, -1, np.int64)
    k_used = len(categories)
    other = lambda c: int((c + rng.integers(1, k_used)) % k_used)  # noqa: E731  another used category
    if a is None:
        c = int(rng.integers(k_used))
        cells = _walk(rng, p)
        for t in range(T):  # background-only: silent objects and off-screen sounds, never both of one kind
            u = rng.random()
            if u < p.silent_visible_p:
                visible[t].append((c, int(cells[t]), 1.0))
            elif u < p.silent_visible_p + p.offscreen_p:
                audible[t].append((c if rng.random() < p.offscreen_same_p else other(c), rng.uniform(0.5, 1.0)))
        return VideoPlan(-1, obj, visible, audible)

    c = AVE_CATEGORIES.index(a.category)
    cells = _walk(rng, p)
    v_on, v_off, a_on, a_off = a.start, a.end, a.start, a.end
    # Onset/offset offsets: one modality may start a second early or end a second late.
    if a.start > 0 and rng.random() < p.onset_offset_p:
        if rng.random() < 0.5:
            a_on -= 1
        else:
            v_on -= 1
    if a.end < T and rng.random() < p.onset_offset_p:
        if rng.random() < 0.5:
            a_off += 1
        else:
            v_off += 1
    for t in range(T):
        in_event = a.start <= t < a.end
        edge = t in (a.start, a.end - 1) and a.length < T  # boundary seconds are partial
        scale = rng.uniform(0.6, 1.0) if edge else rng.uniform(0.85, 1.15)
        if v_on <= t < v_off:
            visible[t].append((c, int(cells[t]), scale))
        if a_on <= t < a_off:
            audible[t].append((c, scale))
        if in_event:
            obj[t] = cells[t]
        elif not (v_on <= t < v_off or a_on <= t < a_off):
            u = rng.random()
            if u < p.silent_visible_p:
                visible[t].append((c, int(cells[t]), rng.uniform(0.7, 1.1)))
            elif u < p.silent_visible_p + p.offscreen_p:
                k = c if rng.random() < p.offscreen_same_p else other(c)
                audible[t].append((k, rng.uniform(0.5, 1.0)))
    if rng.random() < p.sound_distractor_p:  # e.g. music or traffic heard but never seen
        d = other(c)
        gain = rng.uniform(0.5, 1.0)
        for t in range(T):
            audible[t].append((d, gain))
    if rng.random() < p.distractor_p:
        d = other(c)
        dcells = _walk(rng, p, avoid=cells)
        gain = rng.uniform(0.8, 1.2)
        for t in range(T):
            visible[t].append((d, int(dcells[t]), gain))
    return VideoPlan(c, obj, visible, audible)


def render_video(rng: np.random.Generator, world: World, p: SynthParams, plan: VideoPlan,
                 audio_maps: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features of one planned video: audio (10,128), visual (10,7,7,512), audio map or None."""
    T = NUM_SEGMENTS
    # Scene: a prototype (often one the category prefers) with per-video jitter, sparse in every cell.
    if plan.category >= 0 and rng.random() < p.preferred_scene_p:
        s = world.preferred_scenes[plan.category, rng.integers(2)]
    else:
        s = rng.integers(p.scene_prototypes)
    scene = world.scenes[s] * rng.uniform(0.6, 1.4, VISUAL_DIM).astype(np.float32)  # (512,)
    cell_gain = rng.gamma(2.0, 0.5, (CELLS, 1)).astype(np.float32)  # (49, 1)
    keep = rng.random((CELLS, VISUAL_DIM), dtype=np.float32) < p.scene_cell_keep  # (49, 512)
    scene_map = scene[None] * cell_gain * keep  # (49, 512)
    pre = rng.standard_normal((T, CELLS, VISUAL_DIM), dtype=np.float32)  # (10, 49, 512)
    pre *= p.vis_noise
    pre += scene_map[None] * rng.uniform(0.9, 1.1, (T, 1, 1)).astype(np.float32) - p.vis_noise
    vgain = rng.uniform(0.7, 1.3)
    for t, objs in enumerate(plan.visible):
        for k, cell, scale in objs:
            sig = world.vis_sig[k] * (world.vis_strength[k] * vgain * scale)
            pre[t, cell] += sig * rng.uniform(0.8, 1.2, VISUAL_DIM).astype(np.float32)
            if rng.random() < p.second_cell_p:  # the object also covers a neighbouring cell
                r, cc = divmod(cell, GRID)
                nb = [(r + dr) * GRID + cc + dc for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))
                      if 0 <= r + dr < GRID and 0 <= cc + dc < GRID]
                pre[t, nb[rng.integers(len(nb))]] += 0.6 * sig
    visual = np.maximum(pre, 0.0).reshape(T, GRID, GRID, VISUAL_DIM)
    if p.visual_gain != 1.0:
        visual *= np.float32(p.visual_gain)

    ambient = world.aud_bias + rng.normal(0, p.aud_video_std, AUDIO_DIM).astype(np.float32)  # (128,)
    audio = ambient[None] + rng.normal(0, p.aud_noise, (T, AUDIO_DIM)).astype(np.float32)  # (10, 128)
    again = rng.uniform(0.7, 1.3)
    for t, sounds in enumerate(plan.audible):
        for k, scale in sounds:
            jitter = rng.uniform(0.8, 1.2, AUDIO_DIM).astype(np.float32)
            audio[t] += world.aud_sig[k] * (world.aud_strength[k] * again * scale) * jitter
    if p.audio_scale != 1.0:
        audio *= np.float32(p.audio_scale)
    audio = np.clip(audio, 0.0, AUDIO_MAX)

    amap = None
    if audio_maps:
        h, w, ch = AUDIO_MAP_SHAPE
        pre_a = rng.standard_normal((T, h, w, ch), dtype=np.float32) * p.vis_noise - p.vis_noise
        for t, sounds in enumerate(plan.audible):
            for k, scale in sounds:
                rows = rng.random(h) < 0.8  # the sound fills most time cells of its frequency band
                pre_a[t, rows, world.map_band[k]] += world.map_sig[k] * (world.aud_strength[k] * again * scale)
        amap = np.maximum(pre_a, 0.0)
    return audio, visual, amap


# --------------------------------------------------------------------------- whole directory


def _video_rng(seed: int, index: int, noisy: bool = False) -> np.random.Generator:
    return np.random.default_rng([seed, 1 if noisy else 0, index])


def default_noisy(num_videos: int) -> int:
    """Background-only videos for a dataset of `num_videos` rows (the release's ratio, at least 4)."""
    return max(4, round(num_videos * NOISY_FRACTION))


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise AvelError("exists and is not a directory", out)
    if (out / "Annotations.txt").exists() and not (out / MARKER_FILE).exists() \
            and not (out / PROGRESS_FILE).exists():
        raise AvelError(f"holds a dataset that is not AVE-Synth (no {MARKER_FILE}); refusing to overwrite", out)


def generate(out_dir: str | Path, videos: int = DEFAULT_VIDEOS, seed: int = 0, audio_maps: bool = False,
             noisy: int | None = None, categories: int = NUM_EVENT_CLASSES, params: SynthParams | None = None,
             progress: bool = True, version: int = GENERATOR_VERSION) -> Path:
    """Write an AVE-Synth dataset directory with `videos` rows; returns its path.

    `version` picks the generator (VERSIONS; `params` None means that version's parameters).
    Deterministic for (videos, seed, version, params). An interrupted run resumes where it stopped when
    called again with the same arguments. The marker file is written last: a directory without
    it is incomplete. The folder is locked (`output_lock`) while writing: a second writer fails at
    once. A full disk removes every temporary (no resume data is worth a full disk) and names the folder.
    """
    out = Path(out_dir)
    if not 2 <= categories <= NUM_EVENT_CLASSES:
        raise AvelError(f"categories must be in 2..{NUM_EVENT_CLASSES}, got {categories}")
    if videos < categories:
        raise AvelError(f"--videos must be at least {categories} (one per category), got {videos}")
    _check_out_dir(out)
    params = params or params_for(version)
    with output_lock(out):
        remove_temporaries(out)  # atomic-write temporaries of a killed run (the resumable parts are kept)
        try:
            return _write(out, videos, seed, audio_maps, noisy, categories, params, progress, version)
        except Exception as exc:
            if not is_write_failure(exc):
                raise
            for name in BIG_FILES.values():  # the progress record stays: it marks the folder as AVE-Synth's
                (out / f".{name}.part").unlink(missing_ok=True)
            if isinstance(exc, AvelError):
                raise
            raise AvelError(f"cannot write AVE-Synth: {write_problem(exc)} (temporary files removed)", out) from None


BIG_FILES = {"audio": "audio_feature.h5", "visual": "visual_feature.h5", "audio_map": AUDIO_MAP_FILE}


def _write(out: Path, videos: int, seed: int, audio_maps: bool, noisy: int | None, categories: int,
           params: SynthParams, progress: bool, version: int) -> Path:
    """The body of `generate`, with the folder locked."""
    import h5py

    p = params
    n_noisy = default_noisy(videos) if noisy is None else noisy
    world = make_world(seed, p)
    catalog = make_catalog(videos, seed, categories)
    cats = catalog.categories
    meta = {"generator": "avel.data.synth", "version": version, "seed": seed, "videos": videos,
            "categories": categories, "noisy_videos": n_noisy, "audio_maps": audio_maps, "params": asdict(p)}
    if not (out / PROGRESS_FILE).exists():  # from here on the directory is ours to (re)write and resume
        write_json(out / PROGRESS_FILE, {**meta, "rows_done": 0})
    (out / MARKER_FILE).unlink(missing_ok=True)

    # Small files first: annotations, labels, splits.
    write_text(out / "Annotations.txt", "".join(format_line(a) + "\n" for a in catalog.rows))
    write_label_files(catalog, out)
    order, match = make_splits(catalog, seed)
    for s, rows in order.items():
        write_order(out / ORDER_FILES[s], rows)
    for s, rows in match.items():
        write_order(out / MATCH_FILES[s], rows)

    # Background-only videos (small: generated in memory).
    noisy_a, noisy_v = [], []
    for j in range(n_noisy):
        rng = _video_rng(seed, j, noisy=True)
        a, v, _ = render_video(rng, world, p, plan_video(rng, world, p, None, cats), False)
        noisy_a.append(a)
        noisy_v.append(v)
    noisy_audio = np.asarray(noisy_a, np.float64).reshape(n_noisy, NUM_SEGMENTS, AUDIO_DIM)  # (M, 10, 128)
    noisy_visual = np.asarray(noisy_v, np.float64).reshape(n_noisy, NUM_SEGMENTS, GRID, GRID, VISUAL_DIM)
    write_h5(out / "audio_feature_noisy.h5", {H5_KEY: noisy_audio})
    write_h5(out / "visual_feature_noisy.h5", {H5_KEY: noisy_visual})
    noisy_labels = np.zeros((n_noisy, NUM_CLASSES), np.float32)
    noisy_labels[:, BACKGROUND] = 1.0
    write_h5(out / "labels_noisy.h5", {H5_KEY: noisy_labels})

    # Large files: written in chunks to temporary names, resumable, renamed at the end.
    big = {"audio": (BIG_FILES["audio"], (AUDIO_DIM,)),
           "visual": (BIG_FILES["visual"], (GRID, GRID, VISUAL_DIM))}
    if audio_maps:
        big["audio_map"] = (BIG_FILES["audio_map"], AUDIO_MAP_SHAPE)
    parts = {k: out / f".{name}.part" for k, (name, _) in big.items()}
    done = _resume_point(out, meta, parts)
    files = {}
    try:
        for k, (name, tail) in big.items():
            files[k] = h5py.File(parts[k], "r+" if done else "w")
            if not done:
                files[k].create_dataset(H5_KEY, shape=(videos, NUM_SEGMENTS, *tail), dtype=np.float64)
        cells = np.full((videos, NUM_SEGMENTS), -1, np.int64)
        for i in range(done):  # object cells of already written rows: replan (cheap, deterministic)
            cells[i] = plan_video(_video_rng(seed, i), world, p, catalog.rows[i], cats).object_cells
        with _progress(progress) as bar:
            task = bar.add_task("AVE-Synth videos", total=videos, completed=done)
            for i0 in range(done, videos, WRITE_CHUNK):
                i1 = min(i0 + WRITE_CHUNK, videos)
                buf: dict[str, list] = {k: [] for k in big}
                for i in range(i0, i1):
                    rng = _video_rng(seed, i)
                    plan = plan_video(rng, world, p, catalog.rows[i], cats)
                    cells[i] = plan.object_cells
                    a, v, m = render_video(rng, world, p, plan, audio_maps)
                    buf["audio"].append(a)
                    buf["visual"].append(v)
                    if audio_maps:
                        buf["audio_map"].append(m)
                for k, f in files.items():
                    f[H5_KEY][i0:i1] = np.asarray(buf[k], np.float64)
                    f.flush()
                write_json(out / PROGRESS_FILE, {**meta, "rows_done": i1})
                bar.update(task, completed=i1)
    finally:
        for f in files.values():
            f.close()
    write_h5(out / OBJECT_CELLS_FILE, {H5_KEY: cells})
    for k, (name, _) in big.items():
        os.replace(parts[k], out / name)
    if not audio_maps:
        (out / AUDIO_MAP_FILE).unlink(missing_ok=True)
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    write_json(out / MARKER_FILE, meta)
    return out


def _resume_point(out: Path, meta: dict, parts: dict[str, Path]) -> int:
    """Rows already written by an interrupted run with the same settings (0 to start afresh)."""
    prog = out / PROGRESS_FILE
    if not prog.is_file() or not all(x.is_file() for x in parts.values()):
        return 0
    try:
        saved = json.loads(prog.read_text())
    except (OSError, json.JSONDecodeError):
        return 0
    rows = saved.pop("rows_done", 0)
    return int(rows) if saved == json.loads(json.dumps(meta)) else 0


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return stderr_progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           TimeRemainingColumn(), disable=not enabled, transient=False)


def non_default_params(marker: dict) -> dict:
    """The generator parameters of a marker that differ from its generator version's defaults (a
    marker written before a parameter existed used its default, which is v1's)."""
    defaults = asdict(VERSIONS.get(marker.get("version", 1), SynthParams()))
    return {k: v for k, v in (marker.get("params") or {}).items() if k not in defaults or v != defaults[k]}


def read_marker(root: str | Path) -> dict | None:
    """The AVE-Synth metadata of a directory, or None when it is not AVE-Synth."""
    return read_json_if_exists(Path(root) / MARKER_FILE)


def length_histogram(catalog: Catalog) -> dict[int, int]:
    """Event length (seconds) -> number of rows."""
    out: dict[int, int] = {}
    for a in catalog.rows:
        out[a.length] = out.get(a.length, 0) + 1
    return dict(sorted(out.items()))

