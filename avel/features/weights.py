"""Pretrained weights for VGG-19 and VGGish: named sources (URL + hash), local files, checks, random sets.

`--vgg19-weights` / `--vggish-weights` take either a source name below or a file path:
  * `keras` (VGG-19 default, what the AVE authors used): Keras ImageNet weights, no top (h5).
  * `torchvision`: torchvision's `vgg19` ImageNet state dict (.pth).
  * `torchvggish` (VGGish default): the harritaylor/torchvggish port of the AudioSet VGGish weights (.pth).
A named source is looked up in avel's cache (`weights/` in avel.cache.cache_root(): $AVEL_CACHE, default
~/.cache/avel), then in the caches of the tools that usually fetched it (~/.keras/models,
$TORCH_HOME/hub/checkpoints), and otherwise downloaded by avel.cache and checked against its published
hash (unless AVEL_OFFLINE=1).

The file's format picks the VGG-19 preprocessing: an h5 file is Keras weights (BGR, mean
subtraction, no scaling); a PyTorch / safetensors state dict is torchvision's (RGB, mean / std).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from avel.cache import CachedFile, cache_root, fetch, file_digest
from avel.errors import AvelError, require_finite_weights
from avel.io import atomic_path

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class WeightSource:
    """A published weight file: where to get it and how to check it."""

    name: str  # value of --vgg19-weights / --vggish-weights
    net: str  # "vgg19" or "vggish"
    url: str
    filename: str  # file name in the cache (as the original tool names it)
    hash_algorithm: str  # "sha256" or "md5"
    digest: str  # hex digest; torch hub file names publish only the first 8 hex digits of the sha256
    size_mb: int  # approximate download size (MB), for messages
    description: str

    def cached_file(self) -> CachedFile:
        """This source as an entry of avel's download cache."""
        return CachedFile(f"{NET_TITLES[self.net]} weights: {self.description}", self.url,
                          f"{WEIGHTS_SUBDIR}/{self.filename}", self.hash_algorithm, self.digest, self.size_mb)


WEIGHT_SOURCES: dict[str, WeightSource] = {s.name: s for s in (
    WeightSource("keras", "vgg19",
                 "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
                 "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "md5", "253f8cb515780f3b799900260a226db6",
                 80, "Keras ImageNet VGG-19, no top (the AVE authors' extractor)"),
    WeightSource("torchvision", "vgg19", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
                 "vgg19-dcbb9e9d.pth", "sha256",
                 "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
                 548, "torchvision ImageNet VGG-19"),
    WeightSource("torchvggish", "vggish",
                 "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
                 "vggish-10086976.pth", "sha256", "10086976", 275,
                 "AudioSet VGGish, PyTorch port (harritaylor/torchvggish)"),
)}
DEFAULT_WEIGHTS = {"vgg19": "keras", "vggish": "torchvggish"}
NET_TITLES = {"vgg19": "VGG-19", "vggish": "VGGish"}
WEIGHTS_SUBDIR = "weights"  # folder of the cache that holds backbone weights


@dataclass
class LoadedWeights:
    """A checked state dict plus what identifies it."""

    net: str  # "vgg19" or "vggish"
    state_dict: dict[str, torch.Tensor]
    file_format: str  # "h5", "torch" or "safetensors"
    path: Path
    sha256: str  # of the file: recorded with the features, compared by `avel localize`


def cache_dir() -> Path:
    return cache_root() / WEIGHTS_SUBDIR


def _other_caches() -> list[Path]:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return [torch_home / "hub" / "checkpoints", Path.home() / ".keras" / "models"]


def _matches(source: WeightSource, path: Path) -> bool:
    return file_digest(path, source.hash_algorithm).startswith(source.digest)


def find_cached(source: WeightSource) -> Path | None:
    """The source's file in avel's cache or another tool's cache (hash-checked), None when absent."""
    for folder in [cache_dir(), *_other_caches()]:
        path = folder / source.filename
        if path.is_file():
            if not _matches(source, path):
                raise AvelError(f"{source.hash_algorithm} does not match the published {source.digest} "
                                f"(corrupt download? delete it)", path)
            return path
    return None


def locate(value: str, net: str) -> Path:
    """A weights file for `--<net>-weights VALUE`: an existing path, or a named source (cached or downloaded)."""
    source = WEIGHT_SOURCES.get(value)
    if source is None:
        path = Path(value).expanduser()
        if not path.is_file():
            names = ", ".join(n for n, s in WEIGHT_SOURCES.items() if s.net == net)
            raise AvelError(f"{NET_TITLES[net]} weights file not found (give a path or one of: {names})", path)
        return path
    if source.net != net:
        raise AvelError(f"'{value}' names {NET_TITLES[source.net]} weights, not {NET_TITLES[net]}")
    return find_cached(source) or download(source)


def download(source: WeightSource) -> Path:
    """Fetch a named source into the cache (avel.cache: temporary name, hash check, rename)."""
    item = source.cached_file()
    return fetch([item], hint=f"or pass --{source.net}-weights PATH")[item]


def read_state_dict(path: Path, net: str) -> tuple[dict[str, torch.Tensor], str]:
    """Read a weights file into a torchvision/torchvggish-layout state dict; returns (state dict, format)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head == HDF5_MAGIC:
        if net != "vgg19":
            raise AvelError("h5 weights are supported for VGG-19 (Keras) only; for VGGish give the "
                            "torchvggish port's .pth", path)
        from avel.features.vgg19 import keras_to_state_dict

        return keras_to_state_dict(path), "h5"
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), "safetensors"
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise AvelError(f"not a readable safetensors file: {exc}", path) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for foreign files
        raise AvelError(f"not a PyTorch weights file (state dict .pth, safetensors or Keras h5): "
                        f"{str(exc).splitlines()[0][:120]}", path) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AvelError("not a state dict (expected a mapping of parameter names to tensors)", path)
    return dict(obj), "torch"


def check_state_dict(state: dict[str, torch.Tensor], module: nn.Module, net: str, path: Path,
                     ignore_prefixes: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The subset of `state` that `module` needs, or a one-line AvelError naming the first problem."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel
    expected = module.state_dict()
    title = NET_TITLES[net]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and not k.startswith(ignore_prefixes)]
    layout = "torchvision vgg19" if net == "vgg19" else "torchvggish"
    if missing:
        raise AvelError(f"{title} weights lack {len(missing)} of {len(expected)} expected keys (first: {missing[0]}; "
                        f"file has e.g. {next(iter(state), 'nothing')}): not a {layout} state dict?", path)
    if unexpected:
        raise AvelError(f"{title} weights have unexpected keys (first: {unexpected[0]}): not a {layout} state dict?",
                        path)
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise AvelError(f"{title} weights: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}", path)
    return {k: state[k].to(v.dtype) for k, v in expected.items()}


def load_weights(value: str, module: nn.Module, net: str) -> LoadedWeights:
    """Locate, read, check and assign weights to `module`'s parameters (in place; `module` may be on meta)."""
    path = locate(value, net)
    state, fmt = read_state_dict(path, net)
    ignore = ("classifier.",) if net == "vgg19" else ("pproc.",)  # heads / PCA params avel does not use
    state = check_state_dict(state, module, net, path, ignore)
    require_finite_weights(state, path)  # NaN weights would turn every video into NaN features
    module.load_state_dict({k: v.contiguous() for k, v in state.items()}, assign=True)
    return LoadedWeights(net=net, state_dict=state, file_format=fmt, path=path, sha256=file_digest(path))


def he_init_(module: nn.Module, seed: int) -> nn.Module:
    """He-normal weights, zero biases (deterministic): random nets whose activations keep their scale."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            w = rng.standard_normal(tuple(m.weight.shape), dtype=np.float32) * np.float32((2.0 / fan_in) ** 0.5)
            m.weight = nn.Parameter(torch.from_numpy(w), requires_grad=False)
            m.bias = nn.Parameter(torch.zeros(m.bias.shape), requires_grad=False)
    return module


def empty_net(net: str) -> nn.Module:
    """VGG-19 trunk or VGGish with unallocated (meta) parameters: weights are assigned when loaded."""
    from avel.features.vgg19 import VGG19Features
    from avel.features.vggish import VGGish

    with torch.device("meta"):
        return {"vgg19": VGG19Features, "vggish": VGGish}[net]()


def write_random_weights(net: str, path: str | Path, seed: int = 0, layout: str = "torch") -> Path:
    """Write random (He-init) weights in a real layout: layout "torch" (torchvision vgg19 / torchvggish
    state dict, .pth) or "keras" (VGG-19 only, Keras h5). For tests and benchmarks: features from random
    weights carry the input's information but mean nothing semantically."""
    from avel.features.vgg19 import KERAS_CONV_NAMES, VGG19_CFG, conv_indices

    module = he_init_(empty_net(net), seed)
    path = Path(path)
    if layout == "torch":
        with atomic_path(path) as tmp:
            torch.save(module.state_dict(), tmp)
        return path
    if layout != "keras" or net != "vgg19":
        raise ValueError(f"no '{layout}' layout for {net}")
    import h5py

    state = module.state_dict()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in KERAS_CONV_NAMES]
        for name, idx in zip(KERAS_CONV_NAMES, conv_indices(VGG19_CFG)):
            g = f.create_group(name)
            g.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            g.create_dataset(f"{name}/kernel:0", data=state[f"features.{idx}.weight"].numpy().transpose(2, 3, 1, 0))
            g.create_dataset(f"{name}/bias:0", data=state[f"features.{idx}.bias"].numpy())
    return path


RANDOM_WEIGHT_FILES = {"vgg19": ("vgg19", "vgg19_random.pth", "torch"),
                       "vgg19_keras": ("vgg19", "vgg19_random_keras.h5", "keras"),
                       "vggish": ("vggish", "vggish_random.pth", "torch")}


def random_weight_files(folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """Random weight files in every supported layout, created once in `folder` and reused (tests, benchmarks).

    Keys: vgg19 (torchvision layout), vgg19_keras (Keras h5, same numbers), vggish (torchvggish layout).
    """
    folder = Path(folder)
    out = {}
    for key, (net, name, layout) in RANDOM_WEIGHT_FILES.items():
        out[key] = folder / name
        if not out[key].is_file():
            write_random_weights(net, out[key], seed=seed, layout=layout)
    return out
