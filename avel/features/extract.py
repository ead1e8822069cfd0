"""`avel extract`: a folder, list or single file of videos -> features in the released AVE layout.

Output folder:
  audio_feature.h5   avadataset (N, T, 128) float64   VGGish embeddings
  visual_feature.h5  avadataset (N, T, 7, 7, 512) float64   VGG-19 pool5 maps (224-px frames)
  timestamps.h5      avadataset (N, T, 2) float64: [start, end) s of each segment;
                     frame_times (N, T, F) float64: presentation time of every averaged frame
  extractor.json     extractor identity (weights hashes, preprocessing, sizes) + one entry per row
  Annotations.txt    the extracted rows (in the given file's order) when --annotations is given,
  labels.h5 ...      with their label files (labels, mil_labels, labels_closs; 10-s segments only)
  *_order*.h5        split files found beside the annotations (the release's), renumbered to the
                     extracted rows (rows whose video failed are left out)
  videos.txt         the video of each row
  failures.txt       one line per failed video: key, path, reason (only when some failed)
  parts/             per-video results while work is in progress (removed after a clean merge)

Rows follow Annotations.txt when given (a video used by several rows is decoded once), else the
sorted video names. A row is written only when its video was fully extracted. Work is resumable:
every finished video is an atomically written part file, so a crash loses at most the video in
flight, and a rerun skips finished parts. Sharding: rank r of n takes videos r, r+n, ...; each
rank writes parts, and the merge (rank 0 after a barrier under torchrun, or `--merge-only`)
writes the final files.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avel.data.catalog import Catalog, format_line, read_annotations
from avel.errors import AvelError
from avel.io import H5_KEY, atomic_path, read_json_if_exists, write_json, write_text

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".flv", ".m4v", ".mpg", ".mpeg",
                            ".3gp", ".ts", ".wmv", ".ogv"})
PARTS_DIR = "parts"
PART_SUFFIX, FAILED_SUFFIX = ".npz", ".failed"
FILES = {"audio": "audio_feature.h5", "visual": "visual_feature.h5", "timestamps": "timestamps.h5",
         "extractor": "extractor.json", "annotations": "Annotations.txt", "videos": "videos.txt",
         "failures": "failures.txt"}
FRAME_TIMES_KEY = "frame_times"
# Recorded in extractor.json but not part of the extractor's identity: parts computed in another
# precision (e.g. on another machine) may be mixed in, and a rerun does not redo finished videos.
RUNTIME_INFO_KEYS = ("precision",)


@dataclass
class Plan:
    """What to extract and in which row order."""

    videos: dict[str, Path]  # key (file stem / video ID) -> file, in order of first use
    rows: list[tuple[int, str]]  # output rows before failures: (source row index, video key)
    catalog: Catalog | None = None  # the annotations, when given
    missing: dict[str, str] = field(default_factory=dict)  # annotated video key -> reason (no file)


def read_video_list(path: Path) -> list[Path]:
    """The paths of a text list (one a line, relative to the list; blank and '#' lines skipped).
    A file that is not UTF-8 text is one AvelError naming it."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise AvelError("neither a video file (suffixes: " + ", ".join(sorted(VIDEO_SUFFIXES)) + ") nor a UTF-8 "
                        "text list of video paths", path)
    lines = [ln.strip() for ln in text.splitlines()]
    return [(path.parent / ln) if not Path(ln).is_absolute() else Path(ln) for ln in lines if ln and not ln.startswith("#")]


def find_videos(spec: str | Path) -> dict[str, Path]:
    """Video files from a folder (by suffix, sorted), a single video file (by suffix) or a text list
    (one path a line, relative to the list)."""
    spec = Path(spec)
    if spec.is_dir():
        paths = sorted(p for p in spec.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    elif spec.is_file() and spec.suffix.lower() in VIDEO_SUFFIXES:
        paths = [spec]
    elif spec.is_file():
        paths = read_video_list(spec)
    else:
        raise AvelError("not a folder of videos, a video file or a list file", spec)
    videos: dict[str, Path] = {}
    for p in paths:
        if p.stem in videos:
            raise AvelError(f"two videos share the name '{p.stem}': {videos[p.stem].name} and {p.name}", spec)
        videos[p.stem] = p
    if not videos:
        raise AvelError(f"no video files (suffixes: {', '.join(sorted(VIDEO_SUFFIXES))})", spec)
    return videos


def make_plan(videos_spec: str | Path, annotations: str | Path | None = None) -> Plan:
    found = find_videos(videos_spec)
    if annotations is None:
        return Plan(videos=found, rows=[(i, k) for i, k in enumerate(found)])
    catalog = read_annotations(annotations)
    videos: dict[str, Path] = {}
    missing: dict[str, str] = {}
    for a in catalog.rows:
        if a.video_id in found:
            videos.setdefault(a.video_id, found[a.video_id])
        else:
            missing[a.video_id] = f"no video file named {a.video_id}.* in {videos_spec}"
    return Plan(videos=videos, rows=[(a.row, a.video_id) for a in catalog.rows], catalog=catalog, missing=missing)


def shard(keys: list[str], rank: int, world: int) -> list[str]:
    """Rank r of `world` takes every world-th video starting at r."""
    return keys[rank::world]


def settings_id(info: dict) -> str:
    """Short hash of the extractor identity: parts made with other settings must not be mixed in.
    The compute precision is recorded but left out (bf16 and fp32 features are interchangeable)."""
    identity = {k: v for k, v in info.items() if k not in RUNTIME_INFO_KEYS}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class PartStore:
    """parts/<key>.npz (finished videos) and parts/<key>.failed (one-line reason), written atomically."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir / PARTS_DIR

    def part(self, key: str) -> Path:
        return self.dir / f"{key}{PART_SUFFIX}"

    def failed(self, key: str) -> Path:
        return self.dir / f"{key}{FAILED_SUFFIX}"

    def check_settings(self, info: dict) -> None:
        """Record the extractor identity, or refuse to mix with parts made by another one."""
        path = self.dir / FILES["extractor"]
        if path.is_file():
            old = json.loads(path.read_text())
            if settings_id(old) != settings_id(info):
                diff = [k for k in sorted(set(old) | set(info)) if old.get(k) != info.get(k)]
                raise AvelError(f"parts here were extracted with other settings ({', '.join(diff)}): "
                                "use another --out or delete this folder", self.dir)
        else:
            write_json(path, info)

    def done(self, key: str) -> bool:
        return self.part(key).is_file()

    def save(self, key: str, feats, sid: str) -> None:
        buf = io.BytesIO()
        np.savez(buf, audio=feats.audio, visual=feats.visual, frame_times=feats.frame_times,
                 duration=np.float64(feats.duration), has_audio=np.bool_(feats.has_audio),
                 warnings=np.array(json.dumps(feats.warnings)), settings=np.array(sid))
        with atomic_path(self.part(key)) as tmp:
            tmp.write_bytes(buf.getvalue())
        self.failed(key).unlink(missing_ok=True)

    def save_failure(self, key: str, reason: str) -> None:
        write_text(self.failed(key), reason.replace("\n", " ") + "\n")

    def load(self, key: str, sid: str) -> dict:
        try:
            with np.load(self.part(key)) as z:
                d = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise AvelError(f"unreadable part file ({exc}): delete it and rerun", self.part(key)) from None
        if str(d["settings"]) != sid:
            raise AvelError("part made with other extractor settings: delete it and rerun", self.part(key))
        return d

    def failure(self, key: str) -> str | None:
        p = self.failed(key)
        return p.read_text().strip() if p.is_file() else None


def final_matches(out_dir: Path, info: dict, num_segments: int) -> dict | None:
    """The final files' extractor.json if they were made with these settings and segment count, else None."""
    meta = read_extractor_info(out_dir)
    if meta is None or meta.get("num_segments") != num_segments:
        return None
    return meta if settings_id({k: meta.get(k) for k in info}) == settings_id(info) else None


def is_complete(plan: Plan, out_dir: Path, info: dict, num_segments: int) -> bool:
    """True when the final files already hold every planned row, made with these settings."""
    meta = final_matches(out_dir, info, num_segments)
    return meta is not None and not meta.get("failed_videos") and \
        [(r["source_row"], r["video"]) for r in meta["rows"]] == plan.rows


def restore_parts(out_dir: Path, info: dict, keys: list[str], num_segments: int) -> int:
    """Recreate part files of `keys` from the final files of an earlier run with the same settings
    (a clean merge removes the parts): a rerun then extracts only what is new or failed."""
    import h5py

    meta = final_matches(out_dir, info, num_segments)
    if meta is None:
        return 0
    store, sid, wanted = PartStore(out_dir), settings_id(info), set(keys)
    first_row = {}
    for r in meta["rows"]:
        if r["video"] in wanted and not store.done(r["video"]):
            first_row.setdefault(r["video"], r)
    if not first_row:
        return 0
    with h5py.File(out_dir / FILES["audio"], "r") as fa, h5py.File(out_dir / FILES["visual"], "r") as fv, \
            h5py.File(out_dir / FILES["timestamps"], "r") as ft:
        for key, r in first_row.items():
            i = r["row"]
            feats = VideoFeaturesRow(audio=fa[H5_KEY][i].astype(np.float32), visual=fv[H5_KEY][i].astype(np.float32),
                                     frame_times=ft[FRAME_TIMES_KEY][i], duration=r["duration"],
                                     has_audio=r["has_audio"], warnings=r["warnings"])
            store.save(key, feats, sid)
    return len(first_row)


@dataclass
class VideoFeaturesRow:
    """One video's features read back from the final files (the fields PartStore.save writes)."""

    audio: np.ndarray
    visual: np.ndarray
    frame_times: np.ndarray
    duration: float
    has_audio: bool
    warnings: list[str]


def extract_shard(plan: Plan, extractor, out_dir: Path, num_segments: int, rank: int = 0, world: int = 1,
                  show_progress: bool = True) -> tuple[int, int]:
    """Extract this rank's unfinished videos into part files; returns (done now, failed now)."""
    from avel.features.progress import video_progress

    store = PartStore(out_dir)
    info = extractor.info
    store.check_settings(info)
    sid = settings_id(info)
    mine = shard(list(plan.videos), rank, world)
    restore_parts(out_dir, info, mine, num_segments)
    todo = [k for k in mine if not store.done(k)]
    ok = failed = 0
    with video_progress(len(mine), len(mine) - len(todo), f"extracting (rank {rank}/{world})" if world > 1
                        else "extracting", enabled=show_progress) as (console, advance):
        for key, result in extractor.extract_many([(k, plan.videos[k]) for k in todo], num_segments):
            if isinstance(result, AvelError):
                store.save_failure(key, plain_reason(result))
                console.print(f"avel: warning: {result}", markup=False, highlight=False, soft_wrap=True)
                failed += 1
            else:
                store.save(key, result, sid)
                for w in result.warnings:
                    console.print(f"avel: warning: {plan.videos[key]}: {w}", markup=False, highlight=False,
                                  soft_wrap=True)
                ok += 1
            advance()
    return ok, failed


def plain_reason(exc: AvelError) -> str:
    """The error's message without its leading 'PATH: ' (failures.txt has a path column)."""
    msg, prefix = str(exc), f"{exc.path}: "
    return msg[len(prefix):] if exc.path is not None and msg.startswith(prefix) else msg


@dataclass
class MergeResult:
    rows: int  # rows written
    failures: dict[str, str]  # video key -> reason
    out_dir: Path


def merge(plan: Plan, out_dir: Path, info: dict, keep_parts: bool = False) -> MergeResult:
    """Write the final files from the part files: only rows whose video fully succeeded."""
    import h5py

    store = PartStore(out_dir)
    sid = settings_id(info)
    failures: dict[str, str] = dict(plan.missing)
    for key in plan.videos:
        if not store.done(key):
            failures[key] = store.failure(key) or "not extracted (a shard has not run yet?)"
    rows = [(src, key) for src, key in plan.rows if key not in failures]
    if not rows:
        _write_failures(out_dir, plan, failures)
        raise AvelError(f"no video could be extracted ({len(failures)} failed: see {FILES['failures']})", out_dir)
    first = store.load(rows[0][1], sid)
    n, (t, *vshape) = len(rows), first["visual"].shape
    fps = first["frame_times"].shape[1]
    last: tuple[str, dict] | None = None  # rows of one video are adjacent in AVE: load it once
    meta_rows = []
    with atomic_path(out_dir / FILES["audio"]) as a_tmp, atomic_path(out_dir / FILES["visual"]) as v_tmp, \
            atomic_path(out_dir / FILES["timestamps"]) as t_tmp:
        with h5py.File(a_tmp, "w") as fa, h5py.File(v_tmp, "w") as fv, h5py.File(t_tmp, "w") as ft:
            audio = fa.create_dataset(H5_KEY, (n, t, first["audio"].shape[1]), np.float64)
            visual = fv.create_dataset(H5_KEY, (n, t, *vshape), np.float64, chunks=(1, t, *vshape))
            spans = ft.create_dataset(H5_KEY, (n, t, 2), np.float64)
            frame_times = ft.create_dataset(FRAME_TIMES_KEY, (n, t, fps), np.float64)
            for i, (src, key) in enumerate(rows):
                d = last[1] if last is not None and last[0] == key else store.load(key, sid)
                last = (key, d)
                if d["visual"].shape != first["visual"].shape or d["frame_times"].shape[1] != fps:
                    raise AvelError(f"part shape {d['visual'].shape} differs from {first['visual'].shape} "
                                    "(mixed --seconds?): delete the parts folder and rerun", store.part(key))
                audio[i], visual[i], frame_times[i] = d["audio"], d["visual"], d["frame_times"]
                spans[i] = np.stack([np.arange(t), np.arange(t) + 1], axis=1)
                meta_rows.append({"row": i, "source_row": src, "video": key, "duration": float(d["duration"]),
                                  "has_audio": bool(d["has_audio"]), "warnings": json.loads(str(d["warnings"]))})
    if plan.catalog is not None:
        write_dataset_files(plan.catalog, [src for src, _ in rows], out_dir, t)
    write_text(out_dir / FILES["videos"], "".join(f"{key}\n" for _, key in rows))
    write_json(out_dir / FILES["extractor"], {**info, "num_segments": t, "frames_per_second": fps,
                                              "rows": meta_rows, "failed_videos": len(failures)})
    _write_failures(out_dir, plan, failures)
    if not failures and not keep_parts:
        shutil.rmtree(store.dir, ignore_errors=True)
    return MergeResult(rows=len(rows), failures=failures, out_dir=out_dir)


def write_dataset_files(catalog: Catalog, source_rows: list[int], out_dir: Path, num_segments: int) -> None:
    """Annotations.txt, label files and renumbered split files for the extracted rows."""
    from dataclasses import replace

    from avel.data.catalog import NUM_SEGMENTS
    from avel.data.labels import write_label_files
    from avel.data.splits import MATCH_FILES, ORDER_FILES, read_order, write_order

    by_row = {a.row: a for a in catalog.rows}
    sub = Catalog(rows=tuple(replace(by_row[src], row=i) for i, src in enumerate(source_rows)),
                  categories=catalog.categories, path=out_dir / FILES["annotations"])
    write_text(out_dir / FILES["annotations"], "".join(format_line(a) + "\n" for a in sub.rows))
    if num_segments == NUM_SEGMENTS:  # labels are defined on the 10 AVE seconds
        write_label_files(sub, out_dir)
    new_index = {src: i for i, src in enumerate(source_rows)}
    for name in (*ORDER_FILES.values(), *MATCH_FILES.values()):
        split = catalog.path.parent / name if catalog.path is not None else None
        if split is not None and split.is_file():
            order = read_order(split, len(catalog))
            write_order(out_dir / name, np.array([new_index[r] for r in order if r in new_index], np.int64))


def _write_failures(out_dir: Path, plan: Plan, failures: dict[str, str]) -> None:
    path = out_dir / FILES["failures"]
    if not failures:
        path.unlink(missing_ok=True)
        return
    lines = [f"{key}\t{plan.videos.get(key, '-')}\t{reason}\n" for key, reason in failures.items()]
    write_text(path, "".join(lines))


def read_extractor_info(dataset_dir: str | Path) -> dict | None:
    """The extractor.json of an extracted dataset folder (None if the folder has none)."""
    return read_json_if_exists(Path(dataset_dir) / FILES["extractor"])


def wait_for_ranks(world: int) -> None:
    """Barrier across torchrun ranks (gloo; generous timeout: shards may be uneven)."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=48))
    dist.barrier()
