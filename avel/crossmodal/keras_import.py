"""Import the authors' trained Keras AVDLN (../shared/ave-release/cmm_model_weights.h5).

Layout of a Keras 2 `save_weights` file: root attribute `layer_names`; one group per layer with
attribute `weight_names` (e.g. `dense_1/kernel:0`, `dense_1/bias:0`); the arrays at
`<layer>/<weight name>`. A full `model.save` file holds the same under `model_weights`.
Dense kernels are stored (in, out) (torch's nn.Linear keeps (out, in)).

Which Dense is which: Keras numbers layers in creation order and `scmm_net` builds the visual
branch first, so the Dense layers sorted by their number are visual-1, visual-2, audio-1, audio-2
(dense_1 512->128, dense_2 128->64, dense_3 128->128, dense_4 128->64 in the released file).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from avel.crossmodal.models import AVDLN, CrossModalConfig
from avel.errors import AvelError, require_finite_weights

# Dense layers in creation order -> (module in AVDLN, human name).
DENSE_ORDER = (("visual.0", "visual branch, first Dense"), ("visual.2", "visual branch, second Dense"),
               ("audio.0", "audio branch, first Dense"), ("audio.2", "audio branch, second Dense"))


def _text(x: bytes | str) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _layer_number(name: str) -> tuple[int, str]:
    m = re.search(r"_(\d+)$", name)
    return (int(m.group(1)) if m else 0, name)


def read_keras_dense(path: str | Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every layer with a kernel in a Keras weights file: [(layer name, kernel (in, out), bias (out,))],
    sorted by the layer's creation number."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise AvelError("Keras weights file not found", path)
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise AvelError("not a Keras weights file (no 'layer_names' attribute)", path)
            dense = []
            for layer in (_text(n) for n in root.attrs["layer_names"]):
                if layer not in root:
                    raise AvelError(f"layer '{layer}' is listed in layer_names but has no group", path)
                names = [_text(n) for n in root[layer].attrs.get("weight_names", [])]
                arrays = {}
                for name in names:
                    if name not in root[layer]:
                        raise AvelError(f"layer '{layer}': weight '{name}' is listed but missing", path)
                    arrays[name.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(root[layer][name][()])
                if "kernel" in arrays:
                    if "bias" not in arrays:
                        raise AvelError(f"layer '{layer}' has a kernel but no bias (use_bias=False?)", path)
                    dense.append((layer, arrays["kernel"], arrays["bias"]))
    except OSError as exc:
        raise AvelError(f"not a readable HDF5 file (truncated or corrupt?): {exc}", path) from exc
    return sorted(dense, key=lambda d: _layer_number(d[0]))


def load_keras_avdln(path: str | Path, cfg: CrossModalConfig | None = None) -> AVDLN:
    """Build an AVDLN holding the Keras file's weights; its distances equal the Keras model's."""
    cfg = cfg or CrossModalConfig(method="avdln")
    model = AVDLN(cfg)
    dense = read_keras_dense(path)
    if len(dense) != len(DENSE_ORDER):
        found = ", ".join(d[0] for d in dense) or "none"
        raise AvelError(f"expected {len(DENSE_ORDER)} Dense layers (AVDLN), found {len(dense)}: {found}", path)
    modules = dict(model.named_modules())
    state = {}
    for (layer, kernel, bias), (module_name, what) in zip(dense, DENSE_ORDER):
        linear = modules[module_name]
        want = (linear.in_features, linear.out_features)
        if kernel.shape != want or bias.shape != (want[1],):
            raise AvelError(f"layer '{layer}' ({what}) has kernel {tuple(kernel.shape)} and bias "
                            f"{tuple(bias.shape)}, expected kernel {want} and bias ({want[1]},)", path)
        require_finite_weights({f"{layer}/kernel": kernel, f"{layer}/bias": bias}, path)
        state[f"{module_name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.T, dtype=np.float32))
        state[f"{module_name}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    model.load_state_dict(state)
    return model.eval()
