"""avel's built-in models: the AVE authors' published trained networks, by name.

`--model NAME` (and `avel.load_model(NAME)`) accepts a name below or a run directory. A name is
downloaded once into the cache (avel.cache), hash-checked, converted into an ordinary avel run
directory by the foreign-weights importer (avel.foreign) and kept there, so later calls are
instant. Each name also records the feature extractor its network was trained on (the authors':
Keras ImageNet VGG-19 + VGGish, 16 frames per second, 224 px, stretched), so `avel localize`
fetches those backbone weights too and nobody retypes weight paths.

Light on purpose (no torch at import): `avel models` lists this table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from avel.cache import GIT_BLOB, CachedFile, cache_root, fetch, file_digest, is_cached, matches
from avel.errors import AvelError
from avel.io import output_lock

AUTHORS_REPO_RAW = "https://raw.githubusercontent.com/YapengTian/AVE-ECCV18/master"
MODELS_SUBDIR = "models"  # cache folder of downloaded checkpoints
RUNS_SUBDIR = "runs"  # cache folder of imported run directories
RUN_CONFIG = "config.json"  # avel.train.checkpoint.CONFIG_FILE: present = a complete run directory
EXTRACTOR_FILE = "extractor.json"  # avel.features.extract.FILES["extractor"], read by avel.inference.runinfo
DEFAULT_MODEL = "authors-av-att"  # what `avel localize` and `avel.localize` use without --model / model=
# The authors' extractor (their feature scripts): ExtractorConfig field values, weights by source name.
AUTHORS_EXTRACTOR = {"vgg19_weights": "keras", "vggish_weights": "torchvggish", "vgg19_preprocessing": "keras",
                     "frames_per_second": 16, "image_size": 224, "resize": "stretch"}


@dataclass(frozen=True)
class PretrainedModel:
    """A built-in model name: the published checkpoint, how to import it, the features it needs."""

    name: str  # value of --model
    kind: str  # the network's family, as avel.foreign names it (A+V-att, W-A+V-att, DMRN, ...)
    checkpoint: CachedFile  # the published file (digest None: no verifiable hash, local copy only)
    description: str  # one line for `avel models`
    extractor: dict = field(default_factory=lambda: dict(AUTHORS_EXTRACTOR))  # ExtractorConfig defaults

    @property
    def run_dir(self) -> Path:
        """Where the imported run directory is cached (named by the checkpoint's hash when known)."""
        tag = (self.checkpoint.digest or "local")[:12]
        return cache_root() / RUNS_SUBDIR / f"{self.name}-{tag}"

    def is_imported(self) -> bool:
        return (self.run_dir / RUN_CONFIG).is_file()


def _authors_file(what: str, repo_path: str, digest: str, size_mb: float) -> CachedFile:
    return CachedFile(what, f"{AUTHORS_REPO_RAW}/{repo_path}", f"{MODELS_SUBDIR}/{Path(repo_path).name}",
                      GIT_BLOB, digest, size_mb)


def _drive_file(what: str, url: str, name: str, size_mb: float) -> CachedFile:
    """A checkpoint linked on Google Drive without a published hash: used from a local copy only."""
    return CachedFile(what, url, f"{MODELS_SUBDIR}/{name}", GIT_BLOB, None, size_mb)


# Sizes are approximate (float32 parameter count of the network); the git blob hash pins the exact bytes.
PRETRAINED: dict[str, PretrainedModel] = {m.name: m for m in (
    PretrainedModel("authors-av-att", "A+V-att",
                    _authors_file("the AVE authors' trained A+V-att network", "model/AV_att.pt",
                                  "8e7224d07cfb27edb6aed3307d0211dad324a5e3", 5.4),
                    "A+V-att, supervised (Table 1), the authors' trained network"),
    PretrainedModel("authors-w-av-att", "W-A+V-att",
                    _authors_file("the AVE authors' trained W-A+V-att network", "model/AV_att_weak.pt",
                                  "b1ba4dd0fdf4b5537f26cccf1ccbf82ee8f97860", 5.4),
                    "W-A+V-att, weakly supervised (Table 1), the authors' trained network"),
    PretrainedModel("authors-dmrn", "DMRN",
                    _drive_file("the AVE authors' trained DMRN network (linked from their README)",
                                "https://drive.google.com/file/d/1D6M6lnUkS4yby0Y4LODIYAQUR6N_GtaR/view",
                                "DMRN.pt", 6.4),
                    "DMRN fusion (Table 1), the authors' trained network; Google Drive only: local file"),
    # The later methods link their trained weights on Google Drive, without a hash: local-file entries
    # (CMBS's scripts save float64 state dicts: twice the float32 size).
    PretrainedModel("psp", "PSP",
                    _drive_file("PSP's trained network (PSP_fully.pt, linked from jasongief/PSP_CVPR_2021)",
                                "https://drive.google.com/drive/folders/1YEyEH6e988v1NUwwVYohrwY2DSpVtVoT",
                                "PSP_fully.pt", 6.2),
                    "PSP (Zhou et al., CVPR 2021), supervised, its authors' trained network; Google Drive only: "
                    "local file"),
    PretrainedModel("w-psp", "W-PSP",
                    _drive_file("W-PSP's trained network (PSP_weakly.pt, linked from jasongief/PSP_CVPR_2021)",
                                "https://drive.google.com/drive/folders/1YEyEH6e988v1NUwwVYohrwY2DSpVtVoT",
                                "PSP_weakly.pt", 5.0),
                    "W-PSP, weakly supervised, its authors' trained network; Google Drive only: local file"),
    PretrainedModel("cmbs", "CMBS",
                    _drive_file("CMBS's trained supervised network (linked from marmot-xy/CMBS)",
                                "https://drive.google.com/file/d/1crF9vKpdi3Ec_Zkagz7rJB_yVHYnxpJE/view",
                                "CMBS_supervised.pth.tar", 73.6),
                    "CMBS (Xia and Zhao, CVPR 2022), supervised, its authors' trained network; Google Drive only: "
                    "local file"),
    PretrainedModel("w-cmbs", "W-CMBS",
                    _drive_file("CMBS's trained weakly-supervised network (linked from marmot-xy/CMBS)",
                                "https://drive.google.com/file/d/100cp82dIrJLuqqEvV-9dbxyTQpWkY-3c/view",
                                "CMBS_weakly.pth.tar", 75.2),
                    "W-CMBS, weakly supervised, its authors' trained network; Google Drive only: local file"),
)}


@dataclass
class ResolvedModel:
    """What `--model NAME_OR_RUN_DIR` names: a run directory plus the extractor its features need."""

    run_dir: Path
    name: str | None  # the built-in name, None for a run directory given as a path
    extractor: dict  # ExtractorConfig field defaults (named weight sources) the model was trained with


def unknown_model_error(value: str) -> AvelError:
    return AvelError(f"unknown model '{value}': give a run directory or one of {', '.join(PRETRAINED)}")


def import_checkpoint(path: Path, out_dir: Path, kind: str) -> Path:
    """Convert a published checkpoint into a run directory (avel.foreign.import_run, atomic)."""
    from avel.foreign import import_run

    return import_run(path, out_dir, kind=kind)


def resolve_model(value: str | Path, weights: tuple[str, ...] = ("vgg19", "vggish"),
                  log: Callable[[str], None] | None = None) -> ResolvedModel:
    """A run directory for `value` (a built-in name or a run directory), fetching what is missing.

    For a built-in name: downloads and checks its checkpoint unless already imported, the backbone
    weights of `weights` ("vgg19", "vggish"; those the caller will load by source name), and imports
    the checkpoint into the cache. Without a network, one line per missing file, then one error.
    """
    entry = PRETRAINED.get(str(value))
    if entry is None:
        path = Path(value).expanduser()
        if not path.exists() and not any(sep in str(value) for sep in ("/", "\\")) and not path.suffix:
            raise unknown_model_error(str(value))
        return ResolvedModel(path, None, _recorded_extractor(path))
    needed = [] if entry.is_imported() else [entry.checkpoint]
    if weights:
        from avel.features.weights import WEIGHT_SOURCES, find_cached

        for net in weights:
            source = WEIGHT_SOURCES[entry.extractor[f"{net}_weights"]]
            if find_cached(source) is None:
                needed.append(source.cached_file())
    weights_missing = any(item.relpath.startswith("weights/") for item in needed)
    hint = "for the backbone weights, --vgg19-weights / --vggish-weights PATH also work" if weights_missing else ""
    paths = fetch(needed, log=log, hint=hint)
    if not entry.is_imported():
        checkpoint = paths[entry.checkpoint]
        if entry.checkpoint.digest is not None and not matches(entry.checkpoint, checkpoint):
            got = file_digest(checkpoint, entry.checkpoint.algorithm)
            raise AvelError(f"{entry.checkpoint.algorithm} {got[:16]}... does not match the published "
                            f"{entry.checkpoint.digest} of {entry.checkpoint.url}: not the authors' file "
                            "(delete it and run again to download it)", checkpoint)
        if entry.checkpoint.digest is None:
            (log or _stderr)(f"{entry.name}: importing {checkpoint} as it is (published without a verifiable hash)")
        with output_lock(cache_root()):
            if not entry.is_imported():  # another process may have imported it while we waited
                import_checkpoint(checkpoint, entry.run_dir, entry.kind)
    if set(weights) == {"vgg19", "vggish"}:
        record_extractor(entry)
    return ResolvedModel(entry.run_dir, entry.name, dict(entry.extractor))


def record_extractor(entry: PretrainedModel) -> None:
    """Write extractor.json into the imported run directory, once: the authors' extractor settings with
    the backbone weight files found here, so `avel localize` knows (rather than assumes, with a warning)
    which features the network needs, and refuses features from other weights."""
    from avel.features.weights import HDF5_MAGIC, WEIGHT_SOURCES, find_cached
    from avel.io import write_json

    path = entry.run_dir / EXTRACTOR_FILE
    if path.is_file():
        return
    files = {net: find_cached(WEIGHT_SOURCES[entry.extractor[f"{net}_weights"]]) for net in ("vgg19", "vggish")}
    if None in files.values():
        return
    with open(files["vgg19"], "rb") as f:
        vgg19_format = "h5" if f.read(8) == HDF5_MAGIC else "torch"
    info = {"vgg19_weights": files["vgg19"].name, "vgg19_sha256": file_digest(files["vgg19"]),
            "vgg19_format": vgg19_format, "vgg19_preprocessing": entry.extractor["vgg19_preprocessing"],
            "vggish_weights": files["vggish"].name, "vggish_sha256": file_digest(files["vggish"]),
            **{k: entry.extractor[k] for k in ("frames_per_second", "image_size", "resize")},
            "source": f"{entry.name}: the AVE authors' extractor (Keras ImageNet VGG-19 pool5, VGGish), "
                      "recorded by avel with the weight files it uses for them"}
    try:
        with output_lock(cache_root()):
            write_json(path, info)
    except (AvelError, OSError):
        pass  # a read-only cache (e.g. shared, filled by someone else): localize then assumes the extractor


def _stderr(msg: str) -> None:
    print(f"avel: {msg}", file=sys.stderr)


def _recorded_extractor(run_dir: Path) -> dict:
    """ExtractorConfig defaults from what a run directory records about its features."""
    from avel.inference.runinfo import extractor_defaults, extractor_record, run_document

    info, _ = extractor_record(run_dir, run_document(run_dir))
    return extractor_defaults(info)


@dataclass
class ModelStatus:
    """One row of `avel models`."""

    name: str
    kind: str
    description: str
    url: str
    size_mb: float
    verifiable: bool  # a published hash avel checks (False: local copy only)
    cached: bool  # imported run directory present (instant to use)
    downloaded: bool  # checkpoint file present in the cache
    path: Path  # where the checkpoint goes in the cache


def model_statuses() -> list[ModelStatus]:
    """Every built-in name and whether it is already cached."""
    return [ModelStatus(m.name, m.kind, m.description, m.checkpoint.url, m.checkpoint.size_mb,
                        m.checkpoint.downloadable, m.is_imported(), is_cached(m.checkpoint), m.checkpoint.path)
            for m in PRETRAINED.values()]
