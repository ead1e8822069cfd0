"""The table of networks avel imports: one `Family` each (avel.foreign.reader reads them all alike).

The AVE authors' networks (whole-module pickles, their own parameter names) and the later methods'
(CMRAN and CMBS: `nn.DataParallel` state dicts saved by their supv_main.py / weakly_main.py; PSP:
whole `psp_net` modules pickled by fully_supervised_main.py / weakly_supervised_main.py), renamed
with the key map kept beside each avel model (avel.models.cmran / psp / cmbs).

A family names the avel model that computes the network's forward pass, the classes its
whole-module pickles name, the key map from its parameter names to avel's, how its config is read
from the weights, and its training script's settings.

The AVE authors' three PyTorch networks (YapengTian/AVE-ECCV18) are whole-module pickles, read
under their own parameter names (avel.models.authors uses them); their sizes come from the weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from avel.errors import AvelError
from avel.foreign.unpickle import StandIn, allow_module, allow_module_class, module_state


@dataclass(frozen=True)
class Family:
    """One kind of foreign checkpoint avel imports."""

    name: str  # the --kind value and the paper's name: A+V-att, W-A+V-att, DMRN, CMRAN, W-PSP, ...
    model: str  # avel registry name of the network that computes its forward pass
    origin: str  # the repository its code and checkpoints come from
    config: Callable[[dict[str, torch.Tensor], Any, Path], Any]  # (avel-named tensors, pickled root, path) -> ModelConfig
    training: Callable[[], Any]  # -> the TrainConfig of its training script (recorded in config.json)
    pickled_classes: tuple[str, ...] = ()  # module.class its whole-module checkpoints are pickled as (the root)
    code_modules: tuple[str, ...] = ()  # modules of its code whose classes appear inside such pickles (stand-ins)
    key_map: Mapping[str, str | None] = field(default_factory=dict)  # their name prefix -> avel's (None: dropped)
    published: tuple[tuple[str, str], ...] = ()  # (path in `origin`, git blob SHA-1) of its released checkpoints
    weak: bool = False  # trained from video-level labels

    def to_avel(self, name: str) -> str | None:
        """avel's parameter name for the checkpoint's `name`: its longest matching prefix in `key_map`
        replaced (None: a tensor the network never uses, dropped); a name no prefix matches is kept,
        so that the fit check reports it as unexpected."""
        match = max((p for p in self.key_map if name.startswith(p)), key=len, default=None)
        if match is None:
            return name
        ours = self.key_map[match]
        return None if ours is None else ours + name[len(match):]


FAMILIES: dict[str, Family] = {}  # name -> family, in registration order
PICKLED_CLASSES: dict[str, str] = {}  # pickled class -> family name


def families(names: tuple[str, ...] | None = None) -> dict[str, Family]:
    """The importable network families (all, or those of `names` that exist), in registration order."""
    return dict(FAMILIES) if names is None else {n: FAMILIES[n] for n in names if n in FAMILIES}


def register_family(family: Family) -> Family:
    """Add `family` to the table; its pickled classes become loadable stand-ins."""
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} registered twice")
    FAMILIES[family.name] = family
    for cls in family.pickled_classes:
        PICKLED_CLASSES[cls] = family.name
        allow_module_class(cls)
    for module in family.code_modules:
        allow_module(module)
    return family


AUTHORS_REPO = "YapengTian/AVE-ECCV18"
AUTHORS_EPOCHS = {"A+V-att": 300, "W-A+V-att": 250, "DMRN": 300}  # their training scripts' epoch budgets


# ---------------------------------------------------------------- the AVE authors' networks

def _lstm_flags(root: Any) -> dict[str, Any]:
    """batch_first / bidirectional / num_layers of the pickled LSTMs (what shapes alone do not show)."""
    flags = {}
    if not isinstance(root, StandIn):
        return flags
    for name in ("lstm_audio", "lstm_video"):
        child = (module_state(root).get("_modules") or {}).get(name)
        if isinstance(child, StandIn):
            state = module_state(child)
            flags[name] = {k: state[k] for k in ("batch_first", "bidirectional", "num_layers") if k in state}
    return flags


def authors_hyperparameters(kind: str, root: Any, tensors: dict[str, torch.Tensor], path: Path) -> dict[str, int]:
    """The constructor arguments of the authors' class, read from the weights' shapes."""
    needed = ("lstm_audio.weight_ih_l0", "lstm_audio.weight_hh_l0", "lstm_video.weight_ih_l0",
              "affine_audio.weight", "affine_v.weight", "L2.weight")
    missing = [k for k in needed if k not in tensors or tensors[k].dim() != 2]
    if missing:
        raise AvelError(f"not the authors' {kind} network: no {', '.join(missing)} (another architecture?)", path)
    for lstm, flags in _lstm_flags(root).items():
        expected = {"batch_first": True, "bidirectional": True, "num_layers": 1}
        wrong = {k: v for k, v in flags.items() if v != expected[k]}
        if wrong:
            raise AvelError(f"not the authors' {kind} network: {lstm} has {wrong}", path)
    regions = tensors["affine_v.weight"].shape[0]
    if math.isqrt(regions) ** 2 != regions:
        raise AvelError(f"attention over {regions} regions: not a square grid", path)
    hp = {"hidden_dim": tensors["lstm_audio.weight_hh_l0"].shape[1],
          "hidden_size": tensors["affine_audio.weight"].shape[0],
          "tagset_size": tensors["L2.weight"].shape[0],
          "audio_dim": tensors["lstm_audio.weight_ih_l0"].shape[1],
          "visual_dim": tensors["lstm_video.weight_ih_l0"].shape[1],
          "regions": regions}
    if kind == "DMRN":
        blocks = module_state(root).get("nb_block", 1) if isinstance(root, StandIn) else 1
        if not isinstance(blocks, int) or blocks < 1:
            raise AvelError(f"nb_block {blocks!r} is not a positive integer", path)
        hp["nb_block"] = blocks
    return {k: int(v) for k, v in hp.items()}


def model_config(kind: str, hp: dict[str, int]):
    """The avel ModelConfig that rebuilds the authors' network `kind` with hyperparameters `hp`."""
    from avel.models.registry import ModelConfig

    return ModelConfig(name=f"authors-{kind}", num_classes=hp["tagset_size"], audio_dim=hp["audio_dim"],
                       visual_dim=hp["visual_dim"], visual_grid=math.isqrt(hp["regions"]), hidden=hp["hidden_dim"],
                       attention_dim=hp["hidden_size"], fusion_blocks=hp.get("nb_block", 1))


def authors_training(kind: str):
    """The TrainConfig of the authors' training script for `kind`, as far as avel's fields say it:
    the "authors" recipe (avel.train.recipes)."""
    from avel.train.config import TrainConfig
    from avel.train.recipes import recipe_fields

    wanted = recipe_fields("authors", kind.startswith("W-"))
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in wanted.items() if k in names})


def _authors(kind: str, pickled_class: str, published: tuple[tuple[str, str], ...] = ()) -> Family:
    def config(tensors: dict[str, torch.Tensor], root: Any, path: Path):
        return model_config(kind, authors_hyperparameters(kind, root, tensors, path))

    return register_family(Family(name=kind, model=f"authors-{kind}", origin=AUTHORS_REPO, config=config,
                                  training=lambda: authors_training(kind), pickled_classes=(pickled_class,),
                                  published=published, weak=kind.startswith("W-")))


AUTHORS = tuple(f.name for f in (
    _authors("A+V-att", "models.att_Net", (("model/AV_att.pt", "8e7224d07cfb27edb6aed3307d0211dad324a5e3"),)),
    _authors("W-A+V-att", "models_weakly.att_Net",
             (("model/AV_att_weak.pt", "b1ba4dd0fdf4b5537f26cccf1ccbf82ee8f97860"),)),
    _authors("DMRN", "models_fusion.TBMRF_Net"),  # DMRN.pt is published on Google Drive only
))


# ---------------------------------------------------------------- the later methods

def _peer_training(recipe: str, weak: bool):
    """The TrainConfig recorded for an imported peer: its repository's recipe (avel.train.recipes)."""
    from avel.train.recipes import recipe_config

    return recipe_config(recipe, weak)


def _peer(name: str, model: str, origin: str, key_map: Mapping[str, str | None], weak: bool,
          pickled_class: str | None = None) -> Family:
    def config(tensors: dict[str, torch.Tensor], root: Any, path: Path):
        from avel.models.registry import ModelConfig

        return ModelConfig(name=model, weak=weak)

    code = (pickled_class.rsplit(".", 1)[0],) if pickled_class else ()
    return register_family(Family(name=name, model=model, origin=origin, config=config,
                                  training=lambda: _peer_training(model.lower(), weak),
                                  pickled_classes=(pickled_class,) if pickled_class else (), code_modules=code,
                                  key_map=key_map, weak=weak))


def _register_peers() -> tuple[str, ...]:
    from avel.models import cmbs, cmran, psp

    return tuple(f.name for f in (
        _peer("CMRAN", "CMRAN", "FloretCat/CMRAN", cmran.KEY_MAP, weak=False),
        _peer("W-CMRAN", "CMRAN", "FloretCat/CMRAN", getattr(cmran, "WEAK_KEY_MAP", cmran.KEY_MAP), weak=True),
        _peer("PSP", "PSP", "jasongief/PSP_CVPR_2021", psp.KEY_MAP, weak=False, pickled_class="fully_model.psp_net"),
        _peer("W-PSP", "PSP", "jasongief/PSP_CVPR_2021", psp.WEAK_KEY_MAP, weak=True,
              pickled_class="weakly_model.psp_net"),
        _peer("CMBS", "CMBS", "marmot-xy/CMBS", cmbs.KEY_MAP, weak=False),
        _peer("W-CMBS", "CMBS", "marmot-xy/CMBS", cmbs.WEAK_KEY_MAP, weak=True),
    ))


PEERS = _register_peers()
