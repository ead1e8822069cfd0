"""Training recipes (avel.train.recipes): the authors' preset matches their released scripts, and the
training loop honours each of its fields (StepLR per batch, batches in split order, validation every
k epochs, checkpoint selection); DMRN fine-tuned from an A+V-att run (--init-from)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avel.errors import AvelError
from avel.train.config import TrainConfig
from avel.train.recipes import NEVER, RECIPES, epoch_batches, recipe_config, step_lr

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_MODEL = {"hidden": 8, "attention_dim": 8}


def test_authors_recipe_is_their_scripts_settings():
    sup = recipe_config("authors", weak=False)
    # supervised_main.py: MultiLabelSoftMarginLoss on softmax, Adam 1e-3, StepLR(15000, 0.1), 300 epochs,
    # batch 64 in order, `nb_batch = len // batch_size`, val() every 5 epochs reading the test order file
    expected = {"recipe": "authors", "loss": "authors", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64,
                "epochs": 300, "lr_step": 15000, "lr_gamma": 0.1, "shuffle": False, "drop_last": True,
                "val_every": 5, "val_split": "test", "selection": "first-best", "patience": NEVER}
    assert {k: getattr(sup, k) for k in expected} == expected
    weak = recipe_config("authors", weak=True)
    # weak_supervised_main.py: 250 epochs, validation split, max-pooled scores, checkpoint overwritten each time
    assert (weak.epochs, weak.loss, weak.val_split, weak.selection, weak.val_every, weak.lr_step) == \
        (250, "authors-max", "val", "last", 5, 15000)
    if hasattr(sup, "standardize"):
        assert sup.standardize is False  # their features go in unscaled


def test_avel_recipe_is_trainconfig_defaults():
    assert recipe_config("avel", weak=False) == TrainConfig()
    assert recipe_config("avel", weak=True) == TrainConfig()
    assert set(RECIPES) == {"avel", "authors", "cmran", "psp", "cmbs"}
    cfg = recipe_config("authors", weak=False, seed=3, epochs=20)  # explicit options win over the preset
    assert (cfg.seed, cfg.epochs, cfg.lr_step) == (3, 20, 15000)
    with pytest.raises(AvelError, match="unknown recipe 'paper'"):
        recipe_config("paper", weak=False)


def test_step_lr_matches_torch_steplr_stepped_before_each_optimizer_step():
    cfg = recipe_config("authors", weak=False, lr_step=4)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.1)
    for k in range(1, 14):
        with pytest.warns(UserWarning) if k == 1 else _nothing():
            sched.step()  # the authors' order: scheduler.step() then optimizer.step()
        opt.step()
        assert step_lr(cfg, k) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
    # by hand: steps 1-3 at 1e-3, 4-7 at 1e-4, 8-11 at 1e-5, 12- at 1e-6
    assert [step_lr(cfg, k) for k in (1, 3, 4, 7, 8, 12)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-6])
    assert step_lr(TrainConfig(), 10**6) == 1e-3  # avel: constant


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_epoch_batches_in_order_or_shuffled():
    cfg = recipe_config("authors", weak=False, batch_size=4)
    batches = epoch_batches(10, cfg, epoch=7)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # in order, short tail dropped
    shuffled = epoch_batches(10, TrainConfig(batch_size=4), epoch=0)
    assert [len(b) for b in shuffled] == [4, 4, 2]
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(10))
    assert np.concatenate(shuffled).tolist() != list(range(10))


def test_authors_max_loss_by_hand():
    from avel.train.losses import LOSSES

    logits = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]]])  # (B=1, T=2, C=3)
    target = torch.tensor([[0.0, 1.0, 0.0]])
    pooled = torch.tensor([1.0, 2.0, 0.0])  # max over time
    p = torch.softmax(pooled, -1)
    expected = -(target * torch.log(torch.sigmoid(p)) + (1 - target) * torch.log(torch.sigmoid(-p))).mean()
    assert LOSSES["authors-max"](logits, target, True).item() == pytest.approx(expected.item(), rel=1e-6)
    sup = torch.zeros(1, 2, 3)
    sup[0, :, 1] = 1
    assert LOSSES["authors-max"](logits, sup, False).item() == LOSSES["authors"](logits, sup, False).item()


# ---------------------------------------------------------------- the loop under the authors' recipe

@pytest.fixture(scope="module")
def ds(tiny_synth):
    from avel.data.dataset import AVEDataset

    return AVEDataset.open(tiny_synth, progress=False)


def test_authors_loop_lr_order_and_validation_points(ds, tmp_path, monkeypatch):
    """A tiny run with StepLR every 3 steps: the lr of every optimizer step, the rows of every batch
    and the validated epochs are what the authors' loop does."""
    from avel.models.registry import ModelConfig
    from avel.train import trainer
    from avel.train.trainer import train

    lrs, batches = [], []
    real_step = torch.optim.Adam.step

    def step(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    real_take = trainer.ConcatSource.take

    def take(self, positions):
        batches.append(np.asarray(positions).tolist())
        return real_take(self, positions)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    monkeypatch.setattr(trainer.ConcatSource, "take", take)
    cfg = recipe_config("authors", weak=False, lr_step=3, batch_size=40, epochs=7, lr=1e-2)
    res = train(ds, ModelConfig(name="A", **TINY_MODEL), cfg, tmp_path / "run", progress=False)
    n_train = len(ds.split("train"))
    per_epoch = n_train // 40  # the last short batch is dropped
    assert len(lrs) == 7 * per_epoch
    assert lrs == pytest.approx([1e-2 * 0.1 ** (k // 3) for k in range(1, len(lrs) + 1)])
    expect = [list(range(i * 40, i * 40 + 40)) for i in range(per_epoch)] * 7  # split order, every epoch
    assert batches == expect
    curves = (tmp_path / "run" / "curves.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in curves] == [1, 6]  # 0-based epochs 0 and 5: `epoch % 5 == 0`
    assert res["epochs_run"] == 7 and res["best_epoch"] in (1, 6)
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert doc["train"]["recipe"] == "authors" and doc["train"]["val_split"] == "test"


def test_selection_rules():
    from avel.train.recipes import selection_key

    val = {"val_accuracy": 50.0, "val_video_accuracy": 40.0, "val_loss": 1.0}
    better_loss = {**val, "val_loss": 0.5}
    best, first, last = (TrainConfig(selection=s) for s in ("best", "first-best", "last"))
    assert selection_key(best, False, better_loss, 5) > selection_key(best, False, val, 0)  # tie -> lower loss
    assert not selection_key(first, False, better_loss, 5) > selection_key(first, False, val, 0)  # first kept
    assert selection_key(last, False, {**val, "val_accuracy": 0.1}, 5) > selection_key(last, False, val, 0)
    # the authors' weak script saves only when accuracy > 0 (their best_val_acc stays 0)
    assert not selection_key(last, False, {**val, "val_accuracy": 0.0}, 10) > selection_key(last, False, val, 5)
    assert selection_key(best, True, val, 0)[0] == 40.0  # weak: video-level accuracy


# ---------------------------------------------------------------- --init-from

@pytest.fixture(scope="module")
def avatt_run(ds, tmp_path_factory):
    from avel.models.registry import ModelConfig
    from avel.train.trainer import train

    out = tmp_path_factory.mktemp("avatt") / "run"
    train(ds, ModelConfig(name="A+V-att", **TINY_MODEL), TrainConfig(epochs=1, batch_size=48), out, progress=False)
    return out


def test_init_from_copies_attention_and_lstms(avatt_run):
    from avel.models.registry import ModelConfig, create_model
    from avel.train.checkpoint import load_tensors
    from avel.train.init_from import init_from_run

    src = load_tensors(avatt_run / "model.safetensors")
    torch.manual_seed(1)
    cfg = ModelConfig(name="DMRN", **TINY_MODEL)
    model = create_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = init_from_run(model, cfg, TrainConfig(), avatt_run)
    own = model.state_dict()
    shared = [k for k in own if k.startswith(("visual_encoder.", "body.temporal_a.", "body.temporal_v."))]
    assert shared and info["tensors"] == len(shared) and info["model"] == "A+V-att"
    for k in shared:
        assert torch.equal(own[k], src[k]), k
    for k in own:
        if k not in shared:
            assert torch.equal(own[k], before[k]), k  # the DMRN block and the head keep their own init


def test_train_init_from_records_the_source(avatt_run, ds, tmp_path):
    from avel.models.registry import ModelConfig
    from avel.train.trainer import train

    cfg = TrainConfig(epochs=1, batch_size=48, init_from=str(avatt_run))
    res = train(ds, ModelConfig(name="DMRN", **TINY_MODEL), cfg, tmp_path / "dmrn", progress=False)
    assert res["epochs_run"] == 1
    doc = json.loads((tmp_path / "dmrn" / "config.json").read_text())
    assert doc["train"]["init_from"] == str(avatt_run) and doc["model"]["name"] == "DMRN"
    with pytest.raises(AvelError, match="--init-from"):  # refused before anything is written
        train(ds, ModelConfig(name="A+V", **TINY_MODEL), cfg, tmp_path / "av", progress=False)
    assert not (tmp_path / "av").exists()


def test_init_from_refuses_other_architectures(avatt_run, ds, tmp_path):
    from avel.models.registry import ModelConfig, create_model
    from avel.train.init_from import init_from_run
    from avel.train.trainer import train

    a_run = tmp_path / "a"
    train(ds, ModelConfig(name="A", **TINY_MODEL), TrainConfig(epochs=1, batch_size=48), a_run, progress=False)
    cfg = ModelConfig(name="DMRN", **TINY_MODEL)
    with pytest.raises(AvelError, match="holds a A run; DMRN starts only from A\\+V-att"):
        init_from_run(create_model(cfg), cfg, TrainConfig(), a_run)
    wide = ModelConfig(name="DMRN", hidden=16, attention_dim=8)
    with pytest.raises(AvelError, match="shape"):
        init_from_run(create_model(wide), wide, TrainConfig(), avatt_run)
    av = ModelConfig(name="A+V", **TINY_MODEL)
    with pytest.raises(AvelError, match="A\\+V has no initialisation"):
        init_from_run(create_model(av), av, TrainConfig(), avatt_run)


# ---------------------------------------------------------------- avel reproduce --recipes (fake trainer)

class _Catalog(list):
    categories = ("cat0", "cat1")


class _FakeData:
    is_synthetic = True

    def __init__(self) -> None:
        self.catalog = _Catalog([None] * 20)
        self.mil_labels = np.eye(3, dtype=np.float32)[np.arange(20) % 2]
        self.audio_map = None

    def split(self, name: str) -> np.ndarray:
        return {"train": np.arange(12), "val": np.arange(12, 16), "test": np.arange(16, 20)}[name]


def test_reproduce_recipes_reports_accuracy_and_time_side_by_side(tmp_path):
    from avel.report.pipeline import Backend, Options
    from avel.report.recipes import parse_recipes, reproduce_recipes

    calls = []

    def fake_train(ds, model_kwargs, cfg, run_dir):
        calls.append((cfg.recipe, model_kwargs["name"], cfg.seed))
        authors = cfg.recipe == "authors"
        assert cfg.lr_step == (15000 if authors else 0)  # each run gets its recipe's fields
        acc = 60.0 + 2 * cfg.seed + (0.0 if authors else 5.0)
        return {"best_epoch": 1, "epochs_run": 300 if authors else 20, "train_seconds": 100.0 if authors else 8.0 + cfg.seed,
                "val": {"accuracy": acc},
                "test": {"accuracy": acc, "per_class": {},
                         "degenerate": model_kwargs["name"] == "A+V-att" and cfg.seed == 1 and not authors},
                "test_at_validation": {"best": acc + (0.0 if authors else 1.0 + cfg.seed),
                                       "difference": 0.0 if authors else 1.0 + cfg.seed}}

    backend = Backend(open_dataset=lambda root, progress: _FakeData(), train=fake_train, figures=lambda **kw: [])
    opts = Options(out=tmp_path / "cmp", data=tmp_path / "data", seeds=2, cells=("A", "A+V-att"), progress=False)
    res = reproduce_recipes(opts, parse_recipes("avel,authors"), backend)
    assert len(calls) == 2 * 2 * 2
    row = next(r for r in res["rows"] if r["cell"] == "A")
    assert row["recipes"]["avel"]["accuracy"]["mean"] == 66.0 and row["recipes"]["authors"]["accuracy"]["mean"] == 61.0
    assert row["recipes"]["avel"]["accuracy"]["std"] == pytest.approx(np.sqrt(2.0))  # 65, 67
    assert row["time_ratio"]["authors"] == pytest.approx(100.0 / 8.5)
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "synthetic" in report and "| A | 66.0 ± 1.4 | 8 ± 1 | 20,20 | 61.0 ± 1.4 | 100 ± 0 | 300,300 | 11.76 |" in report
    assert "test accuracy" in report  # what the authors' recipe selects on is stated
    # a seed predicting one class everywhere is marked as the main report marks it (markdown.fmt_entry)
    assert "| A+V-att | 66.0 ± 1.4 (degenerate in 1 of 2 seeds) | 8 ± 1 | 20,20 | 61.0 ± 1.4 | 100 ± 0 |" in report
    # the price of test-split selection, per recipe: avel 65/67 selected, 66/69 best -> gap 1, 2
    assert "| A | avel | 66.0 ± 1.4 | 67.5 ± 2.1 | 1.50 ± 0.71 |" in report
    assert "| A | authors | 61.0 ± 1.4 | 61.0 ± 1.4 | 0.00 ± 0.00 |" in report
    again = reproduce_recipes(opts, ("avel", "authors"), backend)  # finished runs are reused
    assert len(calls) == 8 and again["timing"]["runs_reused"] == 8
    with pytest.raises(AvelError, match="unknown recipe"):
        parse_recipes("avel,paper")
    one = reproduce_recipes(Options(out=tmp_path / "one", data=tmp_path / "data", seeds=1, cells=("A",),
                                    progress=False), ("avel",), backend)
    assert one["rows"][0]["recipes"]["avel"]["test_selection"]["difference"]["std"] == 0.0  # summarize's one seed
    assert "| A | avel | 65.0 | 66.0 | 1.00 |" in (tmp_path / "one" / "report.md").read_text()  # no "± 0.00"
