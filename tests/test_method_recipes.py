"""The later methods' recipes (avel.train.recipes: cmran, psp, cmbs): each preset against the values
in its repository's scripts, the per-epoch multi-step schedule, gradient-norm clipping, the validation
points, the selection rules, old run configs, `avel reproduce --recipes` with the later methods, and
a tiny `avel train --model PSP --recipe psp` run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_recipes import _FakeData

from avel.errors import AvelError
from avel.train.config import TrainConfig
from avel.train.recipes import (NEVER, clip_gradients, epoch_lr, recipe_config, scheduled_lr, selection_key,
                                validates)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_MODEL = {"hidden": 8, "attention_dim": 8}
FIELDS = ("lr", "weight_decay", "batch_size", "shuffle", "drop_last", "epochs", "lr_step", "lr_milestones",
          "lr_gamma", "clip_grad_norm", "val_every", "val_start", "val_split", "selection", "patience",
          "standardize", "loss", "use_noisy")


def preset(name: str, weak: bool) -> dict:
    cfg = recipe_config(name, weak)
    return {k: getattr(cfg, k) for k in FIELDS}


# Hand-written from the scripts; every value names the file it comes from.
SHARED = {"weight_decay": 0.0,  # CMRAN / CMBS: Adam(params, lr=args.lr) (the yaml's 5e-4 is never passed); PSP: Adam(lr=1e-3)
          "shuffle": True,  # DataLoader(shuffle=True) / PSP's dataloader.py random.shuffle at each epoch's first batch
          "lr_step": 0, "patience": NEVER, "standardize": False,  # no per-step StepLR, no early stopping, raw features
          "val_split": "test",  # every script evaluates (and saves on) the test loader
          "loss": "ce",  # the models' own method_loss is used; the recipe sets no loss
          "use_noisy": True}  # weak datasets append the background-only videos (AVE_dataset_weak.py, dataloader.py)

EXPECTED = {
    # FloretCat/CMRAN supv_main.py + supv_train.sh (--lr 0.0005 --clip_gradient 0.1 --n_epoch 200) over
    # configs/default_config.yaml (batch_size 32, eval_freq 1); MultiStepLR([10, 20, 30], 0.5) after every epoch;
    # `if acc > best_accuracy` on the test loader
    ("cmran", False): {**SHARED, "lr": 5e-4, "batch_size": 32, "drop_last": False, "epochs": 200,
                       "lr_milestones": (10, 20, 30), "lr_gamma": 0.5, "clip_grad_norm": 0.1, "val_every": 1,
                       "val_start": 0, "selection": "first-best"},
    # CMRAN weakly_main.py + weakly_train.sh (--lr 0.0005 --n_epoch 200; clip_gradient 0.5 from the yaml);
    # MultiStepLR([5, 20, 40], 0.5)
    ("cmran", True): {**SHARED, "lr": 5e-4, "batch_size": 32, "drop_last": False, "epochs": 200,
                      "lr_milestones": (5, 20, 40), "lr_gamma": 0.5, "clip_grad_norm": 0.5, "val_every": 1,
                      "val_start": 0, "selection": "first-best"},
    # jasongief/PSP_CVPR_2021 fully_supervised_main.py: Adam 1e-3, --batch_size 128, --nb_epoch 300,
    # nb_batch = len // batch_size, Optim.py update_lr (x0.8) when (epoch+1) % 60 == 0 and epoch < 170,
    # no clipping, check_epoch 5 with epoch != 0, `if test_acc >= best_test_acc`
    ("psp", False): {**SHARED, "lr": 1e-3, "batch_size": 128, "drop_last": True, "epochs": 300,
                     "lr_milestones": (60, 120), "lr_gamma": 0.8, "clip_grad_norm": None, "val_every": 5,
                     "val_start": 1, "selection": "last-best"},
    # PSP weakly_supervised_main.py: the same with update_lr when (epoch+1) % 80 == 0 and epoch < 200
    ("psp", True): {**SHARED, "lr": 1e-3, "batch_size": 128, "drop_last": True, "epochs": 300,
                    "lr_milestones": (80, 160), "lr_gamma": 0.8, "clip_grad_norm": None, "val_every": 5,
                    "val_start": 1, "selection": "last-best"},
    # marmot-xy/CMBS supv_main.py + supv_train.sh (--lr 0.0007 --clip_gradient 0.5 --n_epoch 200 --b 64);
    # MultiStepLR([10, 20, 30], 0.5); eval_freq 1 (configs/default_config.yaml); `if acc > best_accuracy`
    ("cmbs", False): {**SHARED, "lr": 7e-4, "batch_size": 64, "drop_last": False, "epochs": 200,
                      "lr_milestones": (10, 20, 30), "lr_gamma": 0.5, "clip_grad_norm": 0.5, "val_every": 1,
                      "val_start": 0, "selection": "first-best"},
    # CMBS weakly_main.py + weakly_train.sh (--lr 0.0006 --b 64 --clip_gradient 0.5 --n_epoch 200);
    # MultiStepLR([10, 20, 40], 0.5)
    ("cmbs", True): {**SHARED, "lr": 6e-4, "batch_size": 64, "drop_last": False, "epochs": 200,
                     "lr_milestones": (10, 20, 40), "lr_gamma": 0.5, "clip_grad_norm": 0.5, "val_every": 1,
                     "val_start": 0, "selection": "first-best"},
}


@pytest.mark.parametrize("name,weak", list(EXPECTED), ids=[f"{'W-' if w else ''}{n}" for n, w in EXPECTED])
def test_preset_is_their_scripts_settings(name: str, weak: bool) -> None:
    assert preset(name, weak) == EXPECTED[(name, weak)]
    assert recipe_config(name, weak).recipe == name


def test_loss_weights_are_the_models_and_match_their_scripts() -> None:
    from avel.models.registry import ModelConfig, create_model

    # PSP fully_supervised_main.py: loss = loss_cls + args.LAMBDA * loss_avps, --LAMBDA default 100
    assert create_model(ModelConfig(name="PSP")).avps_weight == 100.0


def test_epoch_lr_matches_torch_multisteplr_stepped_after_each_epoch() -> None:
    cfg = recipe_config("cmran", weak=False)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10, 20, 30], gamma=0.5)
    for epoch in range(45):  # CMRAN's order: train the epoch (optimizer steps), then scheduler.step()
        assert epoch_lr(cfg, epoch) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), epoch
        opt.step()
        sched.step()
    # by hand: 0-9 at 5e-4, 10-19 at 2.5e-4, 20-29 at 1.25e-4, 30- at 6.25e-5
    assert [epoch_lr(cfg, e) for e in (0, 9, 10, 19, 20, 30, 199)] == pytest.approx(
        [5e-4, 5e-4, 2.5e-4, 2.5e-4, 1.25e-4, 6.25e-5, 6.25e-5])
    assert scheduled_lr(cfg, 10, step=10**6) == pytest.approx(2.5e-4)  # the step count plays no part


@pytest.mark.parametrize("weak,period,stop", [(False, 60, 170), (True, 80, 200)])
def test_psp_schedule_is_their_update_lr_rule(weak: bool, period: int, stop: int) -> None:
    cfg = recipe_config("psp", weak)
    lr, used = 1e-3, []
    for epoch in range(300):  # fully_supervised_main.py / weakly_supervised_main.py with Optim.py, by hand
        used.append(lr)
        if (epoch + 1) % period == 0 and epoch < stop:
            lr *= 0.8
    assert [epoch_lr(cfg, e) for e in range(300)] == pytest.approx(used, rel=1e-12)
    assert epoch_lr(cfg, 299) == pytest.approx(1e-3 * 0.8 ** 2)  # twice: epoch 179 (or 239) is past the stop


def test_validation_points() -> None:
    psp = recipe_config("psp", weak=False)
    points = [e for e in range(psp.epochs) if validates(psp, e)]
    assert points == list(range(5, 300, 5))  # `epoch % 5 == 0 and epoch != 0`: 0-based 5 .. 295
    cmran = recipe_config("cmran", weak=True)
    assert [e for e in range(200) if validates(cmran, e)] == list(range(200))  # eval_freq 1
    short = recipe_config("psp", weak=False, epochs=3)  # no scheduled validation in 3 epochs
    assert [e for e in range(3) if validates(short, e, has_checkpoint=False)] == [2]  # the last, for a checkpoint
    assert not validates(short, 2, has_checkpoint=True)


def kept_epoch(cfg: TrainConfig, accuracies: list[float], weak: bool = False, losses: list[float] | None = None) -> int:
    """The epoch the trainer keeps: a new checkpoint whenever the key beats the kept one (as _end_epoch)."""
    best_key, best = None, None
    for i, acc in enumerate(accuracies):
        val = {"val_accuracy": acc, "val_video_accuracy": acc, "val_loss": (losses or [1.0] * len(accuracies))[i]}
        key = selection_key(cfg, weak, val, i)
        if best_key is None or key > best_key:
            best_key, best = key, i
    return best


def test_selection_rules_on_a_synthetic_history() -> None:
    acc = [50.0, 60.0, 60.0, 55.0, 60.0, 40.0]
    rule = {s: TrainConfig(selection=s) for s in ("best", "first-best", "last-best", "last")}
    assert kept_epoch(rule["first-best"], acc) == 1  # CMRAN / CMBS: `acc > best_accuracy`
    assert kept_epoch(rule["last-best"], acc) == 4  # PSP: `test_acc >= best_test_acc`
    assert kept_epoch(rule["last"], acc) == 5  # the authors' weak script
    assert kept_epoch(rule["best"], acc, losses=[1.0, 0.9, 0.5, 0.4, 0.7, 0.3]) == 2  # tie to the lower loss
    assert kept_epoch(rule["last-best"], [0.0, 0.0]) == 1  # PSP starts from best_test_acc = 0: 0 >= 0 saves
    assert kept_epoch(rule["last-best"], [70.0, 69.9, 10.0]) == 0


def test_clip_gradients_by_hand() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    q = torch.nn.Parameter(torch.zeros(1))
    model = torch.nn.ParameterList([p, q])
    p.grad, q.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # total L2 norm 5
    assert clip_gradients(model, TrainConfig(clip_grad_norm=1.0)) == pytest.approx(5.0)
    assert p.grad.tolist() == pytest.approx([0.6, 0.0], rel=1e-5) and q.grad.tolist() == pytest.approx([0.8], rel=1e-5)
    assert clip_gradients(model, TrainConfig()) is None  # off by default
    assert p.grad.tolist() == pytest.approx([0.6, 0.0], rel=1e-5)


def test_config_checks_and_old_run_configs() -> None:
    for bad, message in [({"lr_milestones": (20, 10)}, "lr_milestones must be increasing"),
                         ({"lr_milestones": (0, 5)}, "lr_milestones must be increasing"),
                         ({"lr_milestones": (5,), "lr_step": 100}, "exclude each other"),
                         ({"clip_grad_norm": 0.0}, "clip_grad_norm must be > 0"),
                         ({"val_start": -1}, "val_start must be >= 0"),
                         ({"selection": "best-ever"}, "selection must be one of best, first-best, last-best, last")]:
        with pytest.raises(AvelError, match=message):
            TrainConfig(**bad).validate()
    # a config.json written before these fields existed loads with their defaults
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("lr_milestones", "clip_grad_norm", "val_start")}
    assert TrainConfig.from_dict(json.loads(json.dumps(old))) == TrainConfig()
    # and its result fields (what run records and resuming compare) are the ones it had then
    assert TrainConfig().result_fields().keys() == {k for k in old if k not in
                                                    ("device", "num_threads", "cache_gb", "tune_allocator", "precision")}
    cfg = recipe_config("cmran", weak=False)
    stored = json.loads(json.dumps(cfg.to_dict()))
    assert stored["lr_milestones"] == [10, 20, 30] and TrainConfig.from_dict(stored) == cfg
    assert cfg.result_fields()["clip_grad_norm"] == 0.1
    with pytest.raises(AvelError, match="field 'lr_milestones'"):
        TrainConfig.from_dict({**stored, "lr_milestones": [10, "20"]})
    assert TrainConfig(lr_milestones=[3, 4]) == TrainConfig(lr_milestones=(3, 4))


# ---------------------------------------------------------------- the training loop

@pytest.fixture(scope="module")
def ds(tiny_synth):
    from avel.data.dataset import AVEDataset

    return AVEDataset.open(tiny_synth, progress=False)


def _spy_steps(monkeypatch) -> list[tuple[float, float]]:
    """(lr, gradient L2 norm) seen by every Adam step."""
    seen = []
    real_step = torch.optim.Adam.step

    def step(self, *a, **k):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        seen.append((self.param_groups[0]["lr"], float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))))
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return seen


def test_loop_applies_the_epoch_schedule_and_clipping(ds, tmp_path, monkeypatch) -> None:
    from avel.models.registry import ModelConfig
    from avel.train.trainer import train

    seen = _spy_steps(monkeypatch)
    cfg = recipe_config("cmran", weak=False, epochs=3, batch_size=40, lr=1e-2, lr_milestones=(1, 2),
                        clip_grad_norm=1e-3, precision="fp32", seed=0)
    res = train(ds, ModelConfig(name="A", **TINY_MODEL), cfg, tmp_path / "clip", progress=False)
    per_epoch = -(-len(ds.split("train")) // 40)  # last short batch kept (drop_last off)
    assert len(seen) == 3 * per_epoch and res["epochs_run"] == 3
    assert [lr for lr, _ in seen] == pytest.approx([1e-2] * per_epoch + [5e-3] * per_epoch + [2.5e-3] * per_epoch)
    assert all(norm == pytest.approx(1e-3, rel=1e-4) for _, norm in seen)  # every step clipped to the bound
    seen.clear()
    train(ds, ModelConfig(name="A", **TINY_MODEL), recipe_config("cmran", weak=False, epochs=1, batch_size=40,
                                                                  clip_grad_norm=None, precision="fp32"),
          tmp_path / "free", progress=False)
    assert min(norm for _, norm in seen) > 1e-2  # without clipping the same steps' gradients are far larger


def test_selection_rules_in_training(ds, tmp_path) -> None:
    """With a learning rate too small to change any prediction every validation scores the same:
    PSP's `>=` keeps the last validated epoch, CMRAN's `>` the first."""
    from avel.models.registry import ModelConfig
    from avel.train.trainer import train

    kept = {}
    for name in ("psp", "cmran"):
        cfg = recipe_config(name, weak=False, epochs=5, val_every=2, batch_size=40, lr=1e-12, precision="fp32")
        res = train(ds, ModelConfig(name="A", **TINY_MODEL), cfg, tmp_path / name, progress=False)
        rows = (tmp_path / name / "curves.csv").read_text().splitlines()[1:]
        epochs = [int(r.split(",")[0]) for r in rows]
        accs = {float(r.split(",")[3]) for r in rows}
        assert len(accs) == 1, accs  # the same accuracy at every validation
        kept[name] = (epochs, res["best_epoch"])
    assert kept["psp"] == ([3, 5], 5)  # val_start 1 skips 0-based epoch 0; 2 and 4 are validated
    assert kept["cmran"] == ([1, 3, 5], 1)


def test_drop_last_needs_one_full_batch(ds, tmp_path) -> None:
    from avel.models.registry import ModelConfig
    from avel.train.trainer import train

    cfg = recipe_config("psp", weak=False, epochs=1, precision="fp32")  # batch 128 > the tiny training split
    with pytest.raises(AvelError, match="fewer than one batch of 128.*lower --batch-size"):
        train(ds, ModelConfig(name="A", **TINY_MODEL), cfg, tmp_path / "r", progress=False)


def test_cli_train_psp_with_its_recipe(tiny_synth, tmp_path, capsys) -> None:
    from avel.cli import main
    from avel.train.checkpoint import MODEL_JSON

    out = tmp_path / "psp"
    rc = main(["train", "--data", str(tiny_synth), "--model", "PSP", "--recipe", "psp", "--epochs", "3",
               "--batch-size", "16", "--threads", "1", "--quiet", "--precision", "fp32", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0 and stdout.startswith("PSP: selected epoch 3 of 3 (max epochs)")
    doc = json.loads((out / "config.json").read_text())["train"]
    assert (doc["recipe"], doc["lr_milestones"], doc["lr_gamma"], doc["val_every"], doc["val_start"],
            doc["selection"], doc["val_split"], doc["epochs"], doc["batch_size"]) == \
        ("psp", [60, 120], 0.8, 5, 1, "last-best", "test", 3, 16)
    results = json.loads((out / "results.json").read_text())
    # 3 epochs hold no scheduled validation (0-based 5, 10, ...): the last epoch is validated so that a
    # checkpoint exists, and it is the one kept
    assert results["best_epoch"] == 3 and results["epochs_run"] == 3
    assert [int(r.split(",")[0]) for r in (out / "curves.csv").read_text().splitlines()[1:]] == [3]
    assert json.loads((out / MODEL_JSON).read_text())["epoch"] == 3  # the saved weights are that epoch's


# ---------------------------------------------------------------- avel reproduce --recipes

def test_reproduce_recipes_with_the_later_methods(tmp_path) -> None:
    from avel.report.pipeline import Backend, Options
    from avel.report.recipes import parse_recipes, reproduce_recipes

    calls = []

    def fake_train(ds, model_kwargs, cfg, run_dir):
        calls.append((cfg.recipe, model_kwargs["name"], model_kwargs["weak"], cfg.lr_milestones))
        acc = 70.0 if cfg.recipe == "psp" else 65.0
        return {"best_epoch": 6, "epochs_run": 300, "train_seconds": 10.0, "val": {"accuracy": acc},
                "test": {"accuracy": acc, "per_class": {}}, "test_at_validation": {"best": acc, "difference": 0.0}}

    backend = Backend(open_dataset=lambda root, progress: _FakeData(), train=fake_train, figures=lambda **kw: [])
    opts = Options(out=tmp_path / "cmp", data=tmp_path / "data", seeds=1, cells=("PSP", "W-PSP", "A"), progress=False)
    res = reproduce_recipes(opts, parse_recipes("avel,psp,authors"), backend)
    assert ("psp", "PSP", False, (60, 120)) in calls and ("psp", "PSP", True, (80, 160)) in calls
    assert ("authors", "A", False, ()) in calls
    assert not any(r == "authors" and m == "PSP" for r, m, _, _ in calls)  # the authors' loss: PSP refuses it
    assert len(calls) == 3 * 3 - 2
    assert {(s["recipe"], s["cell"]) for s in res["skipped"]} == {("authors", "PSP"), ("authors", "W-PSP")}
    row = next(r for r in res["rows"] if r["cell"] == "PSP")
    assert row["recipes"]["psp"]["accuracy"]["mean"] == 70.0 and "own loss" in row["recipes"]["authors"]["skipped"]
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "| PSP | 65.0 | 10 | 300 | 70.0 | 10 | 300 | skipped | - | - | 1.00 | n/a |" in report
    assert "PSP under authors: PSP trains with its own loss; the authors recipe's loss 'authors' does not apply" in report
    assert "PSP's fully_supervised_main.py" in report  # what the psp recipe does and selects on
    with pytest.raises(AvelError, match="no recipe applies to the chosen cells"):
        reproduce_recipes(Options(out=tmp_path / "none", data=tmp_path / "data", seeds=1, cells=("CMRAN",),
                                  progress=False), ("authors",), backend)
    with pytest.raises(AvelError, match="unknown cell"):  # the later methods are named only through --cells
        reproduce_recipes(Options(out=tmp_path / "bad", data=tmp_path / "data", seeds=1, cells=("DMRN",),
                                  progress=False), ("avel",), backend)
