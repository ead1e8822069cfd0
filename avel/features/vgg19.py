"""VGG-19 up to pool5 (`block5_pool`), in torchvision's `vgg19` state-dict layout (`features.N.*`).

Frames go in as uint8 RGB; the preprocessing that matches the weights (Keras ImageNet weights:
BGR, mean subtraction, 0..255 scale; torchvision weights: RGB, ImageNet mean / std) is applied on
the device, and pool5 maps come out channels-last, (B, H/32, W/32, 512): 7 x 7 x 512 for 224 x 224
frames, the layout of the released visual_feature.h5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from avel.errors import AvelError

# torchvision's configuration "E": conv widths, "M" = 2x2 max-pool (stride 2).
VGG19_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                    512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
POOL5_CHANNELS = 512  # channels of the pool5 map
POOL5_STRIDE = 32  # pixels per pool5 cell (five 2x2 pools)
RGB_CHANNELS = 3
# Keras layer names of the 16 convolutions, in order (block{b}_conv{c}).
KERAS_CONV_NAMES: tuple[str, ...] = tuple(
    f"block{b}_conv{c}" for b, n in enumerate((2, 2, 4, 4, 4), start=1) for c in range(1, n + 1))


def make_layers(cfg: tuple[int | str, ...], in_channels: int) -> nn.Sequential:
    """3x3 conv (padding 1) + ReLU per number, 2x2 max-pool per "M": torchvision's / torchvggish's indexing."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = int(v)
    return nn.Sequential(*layers)


def conv_indices(cfg: tuple[int | str, ...]) -> list[int]:
    """Positions of the convolutions inside `make_layers(cfg)` (the N in `features.N.weight`)."""
    out, i = [], 0
    for v in cfg:
        if v == "M":
            i += 1
        else:
            out.append(i)
            i += 2
    return out


def conv_macs(cfg: tuple[int | str, ...], in_channels: int, height: int, width: int) -> int:
    """Multiply-accumulates of the conv layers of `make_layers(cfg)` on one height x width input."""
    macs = 0
    for v in cfg:
        if v == "M":
            height, width = height // 2, width // 2
        else:
            macs += height * width * int(v) * in_channels * 9
            in_channels = int(v)
    return macs


@dataclass(frozen=True)
class Preprocessing:
    """How a weight set expects its input: channel order and per-channel normalisation of 0..255 pixels."""

    name: str
    channel_order: str  # "RGB" or "BGR": order of the first conv's input channels
    mean: tuple[float, float, float]  # pixel units (0..255), in channel_order
    std: tuple[float, float, float]  # pixel units (0..255), in channel_order


PREPROCESSING: dict[str, Preprocessing] = {
    # keras.applications.vgg19.preprocess_input ("caffe" mode): RGB -> BGR, minus the BGR mean, no scaling.
    "keras": Preprocessing("keras", "BGR", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0)),
    # torchvision: x / 255, minus ImageNet mean, over ImageNet std (expressed here in 0..255 units).
    "torchvision": Preprocessing("torchvision", "RGB", (0.485 * 255, 0.456 * 255, 0.406 * 255),
                                 (0.229 * 255, 0.224 * 255, 0.225 * 255)),
}


class VGG19Features(nn.Module):
    """The VGG-19 convolutional trunk: (B, 3, H, W) normalised images -> (B, 512, H/32, W/32) pool5."""

    def __init__(self) -> None:
        super().__init__()
        self.features = make_layers(VGG19_CFG, RGB_CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class VisualEncoder(nn.Module):
    """uint8 RGB frames (B, H, W, 3) -> pool5 maps (B, H/32, W/32, 512), preprocessing included."""

    def __init__(self, trunk: VGG19Features, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.trunk = trunk
        self.preprocessing = preprocessing
        order = [0, 1, 2] if preprocessing.channel_order == "RGB" else [2, 1, 0]
        self.register_buffer("order", torch.tensor(order), persistent=False)
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 1, 1, 3), persistent=False)
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 1, 1, 3), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.to(self.mean.dtype).index_select(-1, self.order)  # (B, H, W, 3) in the weights' order
        x = (x - self.mean) / self.std
        x = x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)  # (B, 3, H, W), NHWC in memory
        pool5 = self.trunk(x)  # (B, 512, H/32, W/32)
        return pool5.permute(0, 2, 3, 1)  # (B, H/32, W/32, 512)


def keras_to_state_dict(path) -> dict[str, torch.Tensor]:
    """Read Keras VGG-19 ImageNet weights (h5, e.g. vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5)
    into torchvision's layout: kernels (3, 3, in, out) -> (out, in, 3, 3); layers found by name."""
    import h5py

    out: dict[str, torch.Tensor] = {}
    try:
        with h5py.File(path, "r") as f:
            groups = _keras_layer_groups(f)
            for name, idx in zip(KERAS_CONV_NAMES, conv_indices(VGG19_CFG)):
                if name not in groups:
                    raise AvelError(f"Keras VGG-19 weights: no layer '{name}' "
                                    f"(found: {', '.join(sorted(groups)[:6]) or 'none'})", path)
                kernel, bias = _kernel_and_bias(groups[name], name, path)
                out[f"features.{idx}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
                out[f"features.{idx}.bias"] = torch.from_numpy(bias.copy())
    except OSError as exc:
        raise AvelError(f"not a readable HDF5 file: {exc}", path) from None
    return out


def _keras_layer_groups(f) -> dict:
    """Map layer name -> h5 group, for Keras 1/2 files (root groups) and Keras 3 files (layers/NAME)."""
    import h5py

    found: dict = {}

    def visit(name: str, obj) -> None:
        leaf = name.rsplit("/", 1)[-1]
        if isinstance(obj, h5py.Group) and leaf in KERAS_CONV_NAMES and leaf not in found:
            found[leaf] = obj

    f.visititems(visit)
    return found


def _kernel_and_bias(group, name: str, path):
    """The 4-D kernel and 1-D bias stored under a layer's group (in the order weight_names gives)."""
    import h5py
    import numpy as np

    arrays: list = []
    names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
    if names:
        arrays = [np.asarray(group[n]) for n in names]
    else:
        group.visititems(lambda _, obj: arrays.append(np.asarray(obj)) if isinstance(obj, h5py.Dataset) else None)
    kernels = [a for a in arrays if a.ndim == 4]
    biases = [a for a in arrays if a.ndim == 1]
    if len(kernels) != 1 or len(biases) != 1:
        raise AvelError(f"Keras VGG-19 weights: layer '{name}' should hold one 4-D kernel and one bias, "
                        f"found shapes {[a.shape for a in arrays]}", path)
    return kernels[0].astype(np.float32), biases[0].astype(np.float32)
