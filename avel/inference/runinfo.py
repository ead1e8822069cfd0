"""What a run directory tells `avel localize`: class names, training clip length, feature extractor.

The extractor record is looked up, in order, in the run's config.json (`data.extractor`), in an
extractor.json beside the run, and in the extractor.json of the dataset the run was trained on
(`data.root`). A run trained on features avel did not extract (e.g. the released AVE features)
has none: then the authors' extractor (Keras VGG-19, VGGish) at the paper's settings is assumed.
"""

from __future__ import annotations

from pathlib import Path

from avel.data.catalog import AVE_CATEGORIES, NUM_CLASSES, NUM_SEGMENTS, read_annotations
from avel.data.classes import output_names
from avel.errors import AvelError
from avel.features.extract import FILES, read_extractor_info
from avel.features.weights import WEIGHT_SOURCES


def run_document(run_dir: Path) -> dict:
    from avel.train.checkpoint import read_run_config

    return read_run_config(run_dir)


def dataset_root(doc: dict) -> Path | None:
    root = (doc.get("data") or {}).get("root")
    return Path(root) if root and Path(root).is_dir() else None


def extractor_record(run_dir: Path, doc: dict) -> tuple[dict | None, str]:
    """(the extractor the run's features came from, where that was found) or (None, reason)."""
    data = doc.get("data") or {}
    if isinstance(data.get("extractor"), dict):
        return data["extractor"], f"{run_dir}/config.json"
    for folder in (run_dir, dataset_root(doc)):
        if folder is not None:
            info = read_extractor_info(folder)
            if info is not None:
                return info, str(folder / FILES["extractor"])
    return None, "the run records no feature extractor (trained on features avel did not extract?)"


def extractor_defaults(info: dict | None) -> dict:
    """ExtractorConfig field values that reproduce a recorded extractor (named sources by file name)."""
    if not info:
        return {}
    by_file = {s.filename: name for name, s in WEIGHT_SOURCES.items()}
    out = {k: info[k] for k in ("frames_per_second", "image_size", "resize", "vgg19_preprocessing") if k in info}
    for net in ("vgg19", "vggish"):
        name = by_file.get(str(info.get(f"{net}_weights")))
        if name is not None:
            out[f"{net}_weights"] = name
    return out


def class_names(doc: dict, num_classes: int) -> tuple[list[str], int]:
    """(name of every output index, background index): the run's class list. The categories the run
    records (`data.categories`: `avel train` records its dataset's, an imported authors' network AVE's),
    else, for a run written before avel recorded them, those of the dataset it was trained on, else AVE's."""
    data = doc.get("data") or {}
    categories = data.get("categories")
    root = dataset_root(doc)
    if categories is None and root is not None and (root / FILES["annotations"]).is_file():
        try:
            categories = list(read_annotations(root / FILES["annotations"]).categories)
        except AvelError:
            categories = None
    if categories is None and num_classes == NUM_CLASSES:
        categories = list(AVE_CATEGORIES)
    return output_names(categories, num_classes), num_classes - 1


def training_length(doc: dict, info: dict | None) -> int:
    """Seconds per training clip (the inference window)."""
    data = doc.get("data") or {}
    return int(data.get("num_segments") or (info or {}).get("num_segments") or NUM_SEGMENTS)


def synthetic_warning(doc: dict, run_dir: Path) -> str | None:
    """The warning for a run trained on AVE-Synth (its config.json's `data.synthetic`), else None."""
    if not (doc.get("data") or {}).get("synthetic"):
        return None
    return (f"the model {run_dir} was trained on AVE-Synth, the generated stand-in dataset, not on real "
            "video: its events on a real video are not meaningful (train on real AVE features for real use)")
