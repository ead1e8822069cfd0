"""`avel import-peer`: the later methods' checkpoints, as their training scripts save them, become runs.

Each file is written here the way the method's own script writes it (CMRAN, CMBS: the state dict of
an `nn.DataParallel` model trained in float64; PSP: the whole `psp_net` module pickled from their
`fully_model.py` / `weakly_model.py`), under *their* parameter names: avel's random weights renamed
through the inverse of the key map, plus the tensors their code registers but never uses. The run
must compute exactly what the avel model with those weights computes.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from avel.cli import main
from avel.foreign import families
from avel.models.registry import ModelConfig, create_model
from avel.train.checkpoint import load_run

PEERS = ("CMRAN", "W-CMRAN", "PSP", "W-PSP", "CMBS", "W-CMBS")
# what their code registers beside the weights its forward uses (dropped by the key maps)
UNUSED = {"CMRAN": "spatial_channel_att.affine_video_guided_1.weight", "PSP": "L3.weight",
          "W-PSP": "temperature", "CMBS": "video_norm.weight", "W-CMBS": "classifier.weight"}


def their_state(model: nn.Module, kind: str) -> dict[str, torch.Tensor]:
    """avel's state dict under the method's names (the inverse of the family's key map, longest prefix)."""
    inverse = {ours: theirs for theirs, ours in families()[kind].key_map.items() if ours is not None}
    out = {}
    for key, value in model.state_dict().items():
        prefix = max((p for p in inverse if key.startswith(p)), key=len, default="")
        out[inverse.get(prefix, "") + key[len(prefix):]] = value.clone()
    if kind in UNUSED:
        out[UNUSED[kind]] = torch.randn(3, 2)
    return out


def pickled_module(state: dict[str, torch.Tensor], qualname: str, path: Path) -> None:
    """torch.save of a module tree whose root class is `qualname` and whose inner modules are classes of the
    same module, holding `state` as parameters: what `torch.save(net_model)` writes for their network."""
    module_name, root_name = qualname.rsplit(".", 1)
    code = types.ModuleType(module_name)
    classes = {n: type(n, (nn.Module,), {"__module__": module_name}) for n in (root_name, "Inner")}
    for n, c in classes.items():
        setattr(code, n, c)
    sys.modules[module_name] = code
    try:
        root = classes[root_name]()
        for name, tensor in state.items():
            *parents, leaf = name.split(".")
            m = root
            for p in parents:
                if p not in m._modules:
                    m.add_module(p, classes["Inner"]())
                m = m._modules[p]
            m.register_parameter(leaf, nn.Parameter(tensor))
        torch.save(root, path)
    finally:
        del sys.modules[module_name]


def write_checkpoint(kind: str, path: Path, seed: int = 0) -> nn.Module:
    """The avel model with random weights, and its checkpoint file in the method's own format."""
    family = families()[kind]
    torch.manual_seed(seed)
    model = create_model(ModelConfig(name=family.model, weak=family.weak)).eval()
    state = their_state(model, kind)
    if family.pickled_classes:
        pickled_module(state, family.pickled_classes[0], path)
    else:  # nn.DataParallel(model).double().state_dict()
        torch.save({f"module.{k}": v.double() for k, v in state.items()}, path)
    return model


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 10, 128, generator=g), torch.rand(2, 10, 7, 7, 512, generator=g)


@pytest.mark.parametrize("kind", PEERS)
def test_import_peer_reproduces_the_network(tmp_path: Path, kind: str, capsys) -> None:
    model = write_checkpoint(kind, tmp_path / "ckpt.pth.tar")
    assert main(["import-peer", str(tmp_path / "ckpt.pth.tar"), "--kind", kind, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    holds = "a pickled " if families()[kind].pickled_classes else "a state dict"
    assert f"imported {kind} ({holds}" in out and "PyTorch zip format" in out
    imported, cfg, _ = load_run(tmp_path / "run")
    assert (cfg.name, cfg.weak) == (families()[kind].model, families()[kind].weak)
    audio, visual = inputs()
    with torch.no_grad():
        want, got = model(audio, visual), imported.eval()(audio, visual)
    np.testing.assert_allclose(got.logits.numpy(), want.logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.attention.numpy(), want.attention.numpy(), rtol=1e-5, atol=1e-6)
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert doc["imported"]["kind"] == kind and doc["imported"]["origin"] == families()[kind].origin
    assert doc["train"]["recipe"] == families()[kind].model.lower()  # the settings of the script that trained it
    assert doc["train"]["val_split"] == "test"  # which selected its checkpoint on the test split


def test_an_imported_peer_is_evaluated_and_loaded(tmp_path: Path, tiny_synth: Path, capsys) -> None:
    import avel

    write_checkpoint("PSP", tmp_path / "PSP_45_fully.pt")
    assert main(["import-peer", str(tmp_path / "PSP_45_fully.pt"), "--kind", "PSP", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(tiny_synth), "--json", "--precision", "fp32"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["accuracy"] <= 100 and result["model"] == "PSP"
    probs = avel.load_model(tmp_path / "run").predict(*[x.numpy() for x in inputs()], precision="fp32")
    assert probs.shape == (2, 10, 29)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_another_methods_checkpoint_is_refused_naming_the_keys(tmp_path: Path, capsys) -> None:
    write_checkpoint("CMBS", tmp_path / "cmbs.pth.tar")
    assert main(["import-peer", str(tmp_path / "cmbs.pth.tar"), "--kind", "CMRAN", "--out", str(tmp_path / "run")]) == 2
    err = _error(capsys)
    assert err.startswith(f"avel: error: {tmp_path / 'cmbs.pth.tar'}: weights do not fit the CMRAN network "
                          "(FloretCat/CMRAN): ")
    assert "unexpected " in err and " more" in err, err  # the first few names, then a count
    assert not (tmp_path / "run").exists()
    write_checkpoint("W-PSP", tmp_path / "weak.pt")  # a pickled weakly_model.psp_net named as the supervised one
    assert main(["import-peer", str(tmp_path / "weak.pt"), "--kind", "PSP", "--out", str(tmp_path / "run")]) == 2
    assert "expected PSP (--kind), but the file holds weakly_model.psp_net (W-PSP)" in _error(capsys)
    assert not (tmp_path / "run").exists()


def test_missing_extra_and_nan_weights_are_refused(tmp_path: Path, capsys) -> None:
    model = write_checkpoint("CMRAN", tmp_path / "good.pth")
    state = {f"module.{k}": v for k, v in their_state(model, "CMRAN").items()}
    cases = {
        "missing": ({k: v for k, v in state.items() if not k.startswith("module.v_fc.")}, "missing visual_fc.bias"),
        "extra": ({**state, "module.mystery.weight": torch.zeros(2)}, "unexpected mystery.weight"),
        "shape": ({**state, "module.v_fc.weight": torch.zeros(3, 3)}, "visual_fc.weight (3, 3) (expected"),
        "nan": ({**state, "module.v_fc.bias": torch.full_like(state["module.v_fc.bias"], float("nan"))},
                "non-finite weights (NaN/Inf) in visual_fc.bias"),
    }
    for name, (bad, expected) in cases.items():
        torch.save(bad, tmp_path / f"{name}.pth")
        assert main(["import-peer", str(tmp_path / f"{name}.pth"), "--kind", "CMRAN", "--out",
                     str(tmp_path / "run")]) == 2, name
        assert expected in _error(capsys), name
        assert not (tmp_path / "run").exists()


def test_a_code_running_pickle_is_refused(tmp_path: Path, capsys) -> None:
    import pickle

    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"module.v_fc.weight": torch.zeros(1), "x": RunsCode()}, tmp_path / "evil.pth", pickle_module=pickle)
    assert main(["import-peer", str(tmp_path / "evil.pth"), "--kind", "CMRAN", "--out", str(tmp_path / "run")]) == 2
    assert "refuses to load global '" in _error(capsys)  # the callable it names is never resolved
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_state_dict_needs_its_kind_and_the_cli_lists_the_table() -> None:
    from avel.cli.import_weights import AUTHORS_KINDS, PEER_KINDS
    from avel.foreign import AUTHORS, PEERS as TABLE
    from avel.errors import AvelError
    from avel.foreign import read_checkpoint

    assert AUTHORS_KINDS == AUTHORS and PEER_KINDS == TABLE == PEERS
    with pytest.raises(SystemExit):
        main(["import-peer", "x.pt", "--out", "run"])  # --kind is required
    with pytest.raises(AvelError, match="unknown kind 'CMRAN'; valid: A\\+V-att, W-A\\+V-att, DMRN"):
        read_checkpoint("x.pt", kind="CMRAN", allowed=AUTHORS)


def test_a_state_dict_without_a_kind_is_refused(tmp_path: Path) -> None:
    from avel.errors import AvelError
    from avel.foreign import read_checkpoint

    write_checkpoint("CMRAN", tmp_path / "sd.pth")
    with pytest.raises(AvelError, match="holds a state dict, which does not name its network: give --kind"):
        read_checkpoint(tmp_path / "sd.pth")


def test_a_linked_checkpoint_put_in_the_cache_is_a_built_in_model(tmp_path: Path, monkeypatch) -> None:
    """`psp` (PSP_fully.pt, linked on Google Drive without a hash): the file put where `avel models` says
    is imported once and served by name."""
    import avel

    monkeypatch.setenv("AVEL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "models").mkdir(parents=True)
    model = write_checkpoint("PSP", tmp_path / "cache" / "models" / "PSP_fully.pt")
    served = avel.load_model("psp")
    assert served.config.name == "PSP" and not served.config.weak and served.name == "psp"
    audio, visual = inputs(3)
    with torch.no_grad():
        want = torch.softmax(model(audio, visual).logits, -1).numpy()
    np.testing.assert_allclose(served.predict(audio.numpy(), visual.numpy(), precision="fp32"), want, atol=1e-5)
