"""A class is its name: `avel evaluate` scores a model's outputs as the categories its own class list
names, whatever order (or subset) of the categories a dataset's Annotations.txt lists.

Datasets here are the test rows of the tiny AVE-Synth written out again in another row order (every
h5 file's rows permuted to match, so the categories' first appearance changes), or only the rows of
some categories, with the label files kept or left for avel to derive. Expected numbers are computed
by hand from the model's per-second predictions and the annotation lines, by category name.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avel.cli import main
from avel.data.catalog import AVE_CATEGORIES, read_annotations
from avel.data.classes import align_label_columns, class_map, output_names
from avel.data.dataset import AVEDataset
from avel.errors import AvelError
from avel.io import H5_KEY, read_h5, write_h5
from avel.data.splits import write_order

pytestmark = pytest.mark.usefixtures("one_thread")
ROW_FILES = ("audio_feature.h5", "visual_feature.h5", "labels.h5", "mil_labels.h5", "labels_closs.h5",
             "object_cells.h5")  # the per-row files copied into a derived dataset
LABEL_FILES = ("labels.h5", "mil_labels.h5", "labels_closs.h5")
EXAMPLES = settings(max_examples=5, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NOT_NUMBERS = ("run_dir", "dataset", "training_data", "training_data_differences")  # paths, data identity


@pytest.fixture(scope="module")
def source(tiny_synth: Path) -> dict:
    """The tiny AVE-Synth's test rows: annotation lines and every per-row array."""
    ds = AVEDataset.open(tiny_synth, progress=False)
    rows = np.sort(ds.split("test"))
    lines = (tiny_synth / "Annotations.txt").read_text().splitlines()
    lines = [ln for ln in lines if ln and not ln.startswith("Category&")]
    arrays = {name: read_h5(tiny_synth / name)[rows] for name in ROW_FILES if (tiny_synth / name).is_file()}
    return {"root": tiny_synth, "lines": [lines[r] for r in rows], "arrays": arrays, "n": len(rows)}


def write_dataset(src: dict, order: list[int], out: Path, label_files: bool = True) -> Path:
    """A dataset of the source rows `order` (in that order): its Annotations.txt lines and h5 rows follow
    the same order; every split lists all rows; without `label_files` avel derives the labels."""
    out.mkdir(parents=True)
    (out / "Annotations.txt").write_text("".join(src["lines"][i] + "\n" for i in order))
    for name, arr in src["arrays"].items():
        if label_files or name not in LABEL_FILES:
            write_h5(out / name, {H5_KEY: arr[order]})
    for split in ("train", "val", "test"):
        write_order(out / f"{split}_order.h5", np.arange(len(order), dtype=np.int64))
    shutil.copy(src["root"] / "avel_synth.json", out / "avel_synth.json")
    return out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_synth: Path) -> Path:
    out = tmp_path_factory.mktemp("class-identity") / "run-a"
    assert main(["train", "--data", str(tiny_synth), "--model", "A", "--out", str(out), "--epochs", "3",
                 "--batch-size", "16", "--lr", "3e-3", "--threads", "1", "--precision", "fp32", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def authors_run(tmp_path_factory) -> Path:
    from authors_files import authors_tree, legacy_file, random_weights

    from avel.foreign import import_authors

    d = tmp_path_factory.mktemp("class-identity-authors")
    weights = random_weights("A+V-att", np.random.default_rng(3), hidden=8)
    (d / "AV_att.pt").write_bytes(legacy_file(*authors_tree("A+V-att", weights, hidden=8)))
    return import_authors(d / "AV_att.pt", d / "run")


@pytest.fixture(scope="module", params=["trained", "authors"])
def run(request, trained_run: Path, authors_run: Path, source: dict) -> dict:
    """A run, its class list and its per-second predicted classes on the source rows (N, 10)."""
    import avel
    from avel.train.evaluate import predict

    run_dir = trained_run if request.param == "trained" else authors_run
    model = avel.load_model(run_dir)
    arrays = source["arrays"]
    probs, _ = predict(model.network, arrays["audio_feature.h5"], arrays["visual_feature.h5"], precision="fp32")
    return {"dir": run_dir, "classes": model.classes, "pred": probs.argmax(-1), "kind": request.param}


def evaluate(run_dir: Path, data: Path) -> tuple[dict, list[str]]:
    """`avel evaluate --json` and the text report of the same run on `data` (what each prints)."""
    base = ["evaluate", str(run_dir), "--data", str(data), "--precision", "fp32"]
    printed = []
    for args in ([*base, "--json"], base):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main(args) == 0
        printed.append(out.getvalue())
    return json.loads(printed[0]), printed[1].splitlines()


def numbers(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in NOT_NUMBERS}


def text_numbers(lines: list[str]) -> list[str]:
    """The report's lines without the ones naming the data (its path, whether the run was trained on it)."""
    return [ln for ln in lines if not ln.startswith(("data: ", "WARNING: ", "note: "))]


def by_hand(run: dict, src: dict, order: list[int]) -> dict:
    """Accuracy, per-category accuracy and confusion of the rows `order`, with the truth per second
    built from the annotation lines by category name in the run's class list."""
    classes = run["classes"]
    C, bg = len(classes), len(classes) - 1
    truth = np.full((len(order), 10), bg)
    cats = []
    for k, i in enumerate(order):
        category, _, _, start, end = src["lines"][i].split("&")
        truth[k, int(start):int(end)] = classes.index(category)
        cats.append(category)
    pred = run["pred"][order]
    correct = pred == truth
    per_class = {name: round(100.0 * float(correct[[c == name for c in cats]].mean()), 3)
                 for name in classes[:-1] if name in cats}
    confusion = np.bincount(truth.ravel() * C + pred.ravel(), minlength=C * C).reshape(C, C)
    return {"accuracy": round(100.0 * float(correct.mean()), 3), "per_class": per_class,
            "confusion": {"labels": classes, "matrix": confusion.tolist()}, "num_videos": len(order)}


def check_by_hand(result: dict, expected: dict) -> None:
    assert result["accuracy"] == expected["accuracy"]
    assert result["num_videos"] == expected["num_videos"]
    assert result["per_class"] == expected["per_class"]
    assert list(result["per_class"]) == list(expected["per_class"])  # in the model's class order
    assert result["confusion"] == expected["confusion"]


@pytest.fixture(scope="module")
def in_order(run: dict, source: dict, tmp_path_factory) -> dict:
    """`avel evaluate` of the run on the source rows in their stored order: its JSON and text."""
    data = write_dataset(source, list(range(source["n"])), tmp_path_factory.mktemp("in-order") / "ds")
    result, text = evaluate(run["dir"], data)
    return {"result": result, "text": text}


def test_in_stored_order_the_numbers_are_those_by_hand(run, source, in_order):
    check_by_hand(in_order["result"], by_hand(run, source, list(range(source["n"]))))


@EXAMPLES
@given(st.data())
def test_permuting_annotations_changes_no_printed_number(run, source, in_order, tmp_path_factory, data):
    order = data.draw(st.permutations(range(source["n"])), label="row order")
    label_files = data.draw(st.booleans(), label="label files kept")
    ds_dir = write_dataset(source, order, tmp_path_factory.mktemp("permuted") / "ds", label_files)
    result, text = evaluate(run["dir"], ds_dir)
    assert numbers(result) == numbers(in_order["result"])
    assert text_numbers(text) == text_numbers(in_order["text"])
    check_by_hand(result, by_hand(run, source, order))


@EXAMPLES
@given(st.data())
def test_a_subset_of_the_categories_is_scored_by_name(run, source, tmp_path_factory, data):
    present = sorted({ln.split("&")[0] for ln in source["lines"]})
    kept = data.draw(st.sets(st.sampled_from(present), min_size=1, max_size=len(present) - 1), label="categories")
    rows = [i for i, ln in enumerate(source["lines"]) if ln.split("&")[0] in kept]
    order = data.draw(st.permutations(rows), label="row order")
    label_files = data.draw(st.booleans(), label="label files kept")
    ds_dir = write_dataset(source, order, tmp_path_factory.mktemp("subset") / "ds", label_files)
    result, text = evaluate(run["dir"], ds_dir)
    expected = by_hand(run, source, order)
    check_by_hand(result, expected)
    assert set(result["per_class"]) == kept  # the model's other classes are absent from the table
    assert set(result["per_class_videos"]) == kept
    # the same rows in their stored order print the same numbers
    again, again_text = evaluate(run["dir"], write_dataset(source, sorted(rows), tmp_path_factory.mktemp("subset")
                                                           / "ds", label_files))
    assert numbers(again) == numbers(result) and text_numbers(again_text) == text_numbers(text)


def test_a_category_the_model_does_not_know_is_one_line(trained_run, authors_run, source, tmp_path, capsys):
    """The trained run knows the tiny AVE-Synth's 6 categories; the authors' network knows all of AVE's."""
    src = {**source, "lines": [ln.replace("Bark&", "Helicopter&", 1) for ln in source["lines"]]}
    ds_dir = write_dataset(src, list(range(source["n"])), tmp_path / "ds", label_files=False)
    capsys.readouterr()
    assert main(["evaluate", str(trained_run), "--data", str(ds_dir), "--precision", "fp32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # refused before any feature is read
    assert len(err) == 1 and err[0].startswith(f"avel: error: {ds_dir / 'Annotations.txt'}: category 'Helicopter' "
                                               f"is not one of the 6 categories the run {trained_run}")
    assert main(["evaluate", str(authors_run), "--data", str(ds_dir), "--precision", "fp32", "--json"]) == 0
    assert "Helicopter" in json.loads(capsys.readouterr().out)["per_class"]


def test_label_files_that_disagree_with_the_annotations_are_one_line(source, tmp_path, capsys):
    src = {**source, "lines": [ln.replace("Bark&", "Helicopter&", 1) for ln in source["lines"]]}
    bark = [i for i, ln in enumerate(source["lines"]) if ln.startswith("Bark&")]
    src["lines"][bark[0]] = source["lines"][bark[0]]  # one Bark row left: Bark and Helicopter in one column
    ds_dir = write_dataset(src, list(range(source["n"])), tmp_path / "ds")
    ds = AVEDataset.open(ds_dir, progress=False)
    with pytest.raises(AvelError, match=r"label column 2 holds categories ('Bark', 'Helicopter'|'Helicopter', "
                                        r"'Bark') \(one category, one column\)"):
        ds.mil_labels


# ---------------------------------------------------------------- the mapping itself, by hand

def test_class_map_by_name_background_to_background() -> None:
    model = output_names(AVE_CATEGORIES, 29)
    m = class_map(["Cat", "Bark", "Church bell"], model)
    assert m[:3].tolist() == [22, 2, 0] and (m[3:28] == -1).all() and m[28] == 28
    small = output_names(["Bark", "Cat"], 29)  # a model trained on two categories
    assert small[:3] == ["Bark", "Cat", "class 2"] and small[-1] == "background"
    assert class_map(["Cat"], small)[[0, 28]].tolist() == [1, 28]
    with pytest.raises(AvelError, match="category 'Horse' is not one of the 2 categories the model"):
        class_map(["Cat", "Horse"], small)


def test_label_columns_follow_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "Annotations.txt").write_text("Cat&a&good&0&2\nBark&b&good&1&3\nCat&c&good&0&10\n")
    catalog = read_annotations(tmp_path / "Annotations.txt")  # Cat = 0, Bark = 1
    stored = np.zeros((3, 29), np.float32)
    stored[[0, 1, 2], [22, 2, 22]] = 1  # columns of AVE's order
    aligned = align_label_columns(stored, catalog)
    assert aligned.argmax(1).tolist() == [0, 1, 0] and aligned[:, 2:].sum() == 0
    same = np.zeros((3, 29), np.float32)
    same[[0, 1, 2], [0, 1, 0]] = 1
    assert align_label_columns(same, catalog) is same


def test_data_check_accepts_label_files_in_another_column_order(source, tmp_path):
    from avel.data.check import check_dataset

    first = [i for i, ln in enumerate(source["lines"]) if not ln.startswith(source["lines"][0].split("&")[0] + "&")]
    order = [*first, *(i for i in range(source["n"]) if i not in first)]  # another category comes first
    ds_dir = write_dataset(source, order, tmp_path / "ds")
    n = source["n"]
    for split, rows in (("train", range(0, n - 4)), ("val", range(n - 4, n - 2)), ("test", range(n - 2, n))):
        write_order(ds_dir / f"{split}_order.h5", np.array(rows, dtype=np.int64))  # disjoint, as check wants
    report = check_dataset(ds_dir, progress=False)
    assert any("mil_labels.h5 orders its class columns otherwise" in n for n in report.notes)
    assert report.catalog.categories[0] != source["lines"][0].split("&")[0]


def test_a_trained_run_records_its_class_list(trained_run, tiny_synth):
    from avel.inference.runinfo import class_names

    doc = json.loads((trained_run / "config.json").read_text())
    assert doc["data"]["categories"] == list(AVE_CATEGORIES[:6])  # the tiny AVE-Synth's categories, in class order
    names, background = class_names({"data": {"categories": doc["data"]["categories"]}}, 29)  # no dataset needed
    assert names[:7] == [*AVE_CATEGORIES[:6], "class 6"] and names[background] == "background"


def test_per_category_figure_names_and_paper_values_by_category() -> None:
    from types import SimpleNamespace

    from avel.report import paper
    from avel.report.draw import published_per_category, short_names

    ds = SimpleNamespace(catalog=SimpleNamespace(categories=("Cat", "Bark", "My own sound")))
    assert short_names(ds) == ["cat", "dog", "My own sound"]
    published = published_per_category(ds, "A")
    assert published[:2] == [paper.SUPP_TABLE1["A"][22], paper.SUPP_TABLE1["A"][2]] and np.isnan(published[2])
