"""Writers of the authors' checkpoint formats, for tests (no PyTorch 0.3 needed).

`legacy_file` writes what `torch.save(net)` wrote under PyTorch 0.3 on a GPU: the legacy container
(pickled magic number, protocol 1001, system info; the object pickle; the sorted storage keys; each
storage as an int64 count + raw float32 data), with the object pickle produced opcode by opcode
by `LegacyPickler` (protocol 2; Python 3 style with unicode names, or Python 2 style with byte
strings and OrderedDicts reduced from lists of pairs). `authors_tree` builds the 0.3 module objects
of att_Net / TBMRF_Net: a shared `_backend`, OrderedDicts, Parameters rebuilt from storages (one flat
cuDNN buffer per LSTM, views at non-zero offsets), `dropout_state` with an Unserializable, ...
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
GATES = 4  # LSTM i, f, g, o


@dataclass(eq=False)
class Global:
    module: str
    name: str


@dataclass(eq=False)
class ModuleClass(Global):
    """An nn.Module subclass: pickled as a ('module', cls, file, source) persistent id on first use."""

    source: str = "class X(nn.Module):\n    pass\n"


@dataclass(eq=False)
class Storage:
    key: str
    data: np.ndarray  # float32, 1-D
    location: str = "cuda:0"


@dataclass(eq=False)
class Reduce:
    func: Global
    args: tuple
    state: Any = None  # BUILD state, when not None


@dataclass(eq=False)
class NewObj:
    cls: Global
    state: Any


@dataclass(eq=False)
class ODict:
    items: list = field(default_factory=list)


OD_GLOBAL = Global("collections", "OrderedDict")
STORAGE_GLOBAL = Global("torch", "FloatStorage")


class LegacyPickler:
    """A protocol-2 pickle writer for the objects above and plain Python values."""

    def __init__(self, py2: bool = False) -> None:
        self.py2 = py2
        self.out = bytearray()
        self.memo: dict[int, int] = {}
        self.used_classes: set[int] = set()

    def dumps(self, obj: Any) -> bytes:
        self.out = bytearray(b"\x80\x02")
        self.memo.clear()
        self.used_classes.clear()
        self.save(obj)
        self.out += b"."
        return bytes(self.out)

    def _memoize(self, obj: Any) -> None:
        idx = len(self.memo)
        self.memo[id(obj)] = idx
        self.out += b"q" + bytes([idx]) if idx < 256 else b"r" + struct.pack("<I", idx)

    def _get(self, obj: Any) -> bool:
        idx = self.memo.get(id(obj))
        if idx is None:
            return False
        self.out += b"h" + bytes([idx]) if idx < 256 else b"j" + struct.pack("<I", idx)
        return True

    def save_str(self, s: str) -> None:
        raw = s.encode("utf-8")
        if self.py2:
            self.out += (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<i", len(raw))) + raw
        else:
            self.out += b"X" + struct.pack("<I", len(raw)) + raw

    def save_int(self, n: int) -> None:
        if 0 <= n < 256:
            self.out += b"K" + bytes([n])
        elif -2**31 <= n < 2**31:
            self.out += b"J" + struct.pack("<i", n)
        else:
            raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(raw)]) + raw

    def save_global(self, g: Global) -> None:
        if isinstance(g, ModuleClass) and id(g) not in self.used_classes:
            self.used_classes.add(id(g))
            self.save(("module", _PlainGlobal(g), f"/home/authors/AVE/{g.module}.py", g.source))
            self.out += b"Q"
            return
        if self._get(g):
            return
        self.out += b"c" + f"{g.module}\n{g.name}\n".encode()
        self._memoize(g)

    def save(self, obj: Any) -> None:
        out = self.out
        if isinstance(obj, _PlainGlobal):
            if not self._get(obj.g):
                out += b"c" + f"{obj.g.module}\n{obj.g.name}\n".encode()
                self._memoize(obj.g)
        elif isinstance(obj, Global):
            self.save_global(obj)
        elif obj is None:
            out += b"N"
        elif obj is True or obj is False:
            out += b"\x88" if obj else b"\x89"
        elif isinstance(obj, int):
            self.save_int(obj)
        elif isinstance(obj, float):
            out += b"G" + struct.pack(">d", obj)
        elif isinstance(obj, str):
            self.save_str(obj)
        elif isinstance(obj, tuple):
            out += b"(" if obj else b")"
            for x in obj:
                self.save(x)
            if obj:
                out += b"t"
        elif isinstance(obj, list):
            out += b"]("
            for x in obj:
                self.save(x)
            out += b"e"
        elif isinstance(obj, dict):
            out += b"}("
            for k, v in obj.items():
                self.save(k)
                self.save(v)
            out += b"u"
        elif isinstance(obj, Storage):  # a persistent id at every reference, like torch 0.3
            self.save(("storage", STORAGE_GLOBAL, obj.key, obj.location, int(obj.data.size), None))
            out += b"Q"
        elif isinstance(obj, ODict):
            self.save_odict(obj)
        elif isinstance(obj, Reduce):
            if self._get(obj):
                return
            self.save(obj.func)
            self.save(obj.args)
            self.out += b"R"
            self._memoize(obj)
            if obj.state is not None:
                self.save(obj.state)
                self.out += b"b"
        elif isinstance(obj, NewObj):
            if self._get(obj):
                return
            self.save(obj.cls)
            self.out += b")\x81"
            self._memoize(obj)
            self.save(obj.state)
            self.out += b"b"
        else:
            raise TypeError(f"LegacyPickler cannot write {type(obj).__name__}")

    def save_odict(self, od: ODict) -> None:
        self.save_global(OD_GLOBAL)
        if self.py2:  # Python 2.7: OrderedDict([[k, v], ...])
            self.save(([list(kv) for kv in od.items],))
            self.out += b"R"
        else:  # Python 3: OrderedDict() then SETITEMS
            self.out += b")R("
            for k, v in od.items:
                self.save(k)
                self.save(v)
            self.out += b"u"


@dataclass(eq=False)
class _PlainGlobal:
    """A class inside the ('module', ...) persistent id: written as a plain GLOBAL."""

    g: Global


def legacy_file(root: Any, storages: list[Storage], py2: bool = False) -> bytes:
    """The bytes of a PyTorch 0.3 `torch.save(obj)` file whose pickle references `storages`."""
    p = LegacyPickler(py2)
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 8}}
    keys = sorted(s.key for s in storages)
    by_key = {s.key: s for s in storages}
    body = b"".join(p.dumps(x) for x in (MAGIC, 1001, sys_info, root, keys))
    data = b"".join(struct.pack("<q", by_key[k].data.size) + by_key[k].data.astype("<f4").tobytes() for k in keys)
    return body + data


# ---- the authors' module objects as PyTorch 0.3 pickles them ----------------------------------------

TORCH_CLASSES = {name: ModuleClass(module, name) for module, name in (
    ("torch.nn.modules.rnn", "LSTM"), ("torch.nn.modules.linear", "Linear"), ("torch.nn.modules.activation", "ReLU"),
    ("torch.nn.modules.activation", "Tanh"), ("torch.nn.modules.activation", "Sigmoid"),
    ("torch.nn.modules.container", "Sequential"))}
AUTHORS_CLASSES = {"A+V-att": ModuleClass("models", "att_Net"), "W-A+V-att": ModuleClass("models_weakly", "att_Net"),
                   "DMRN": ModuleClass("models_fusion", "TBMRF_Net")}


class TreeBuilder:
    """Builds the 0.3 module objects for a dict of weights (authors' parameter names -> float32 arrays)."""

    def __init__(self, weights: dict[str, np.ndarray], location: str = "cuda:0") -> None:
        self.weights = weights
        self.location = location
        self.storages: list[Storage] = []
        self.backend = Reduce(Global("torch.nn.backends.thnn", "_get_thnn_function_backend"), ())
        self.next_key = 94_000_000

    def storage(self, data: np.ndarray) -> Storage:
        self.next_key += 4096
        s = Storage(str(self.next_key), np.ascontiguousarray(data, np.float32).ravel(), self.location)
        self.storages.append(s)
        return s

    @staticmethod
    def parameter(storage: Storage, offset: int, shape: tuple[int, ...]) -> Reduce:
        stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
        tensor = Reduce(Global("torch._utils", "_rebuild_tensor"), (storage, offset, tuple(shape), stride))
        return Reduce(Global("torch.nn.parameter", "Parameter"), (tensor,), state=(True, False, None))

    def module(self, cls: Global, params: list, children: list, **attrs: Any) -> NewObj:
        state = {"_backend": self.backend, "_parameters": ODict(params), "_buffers": ODict(),
                 "_backward_hooks": ODict(), "_forward_hooks": ODict(), "_forward_pre_hooks": ODict(),
                 "_modules": ODict(children), "training": False, **attrs}
        return NewObj(cls, state)

    def linear(self, name: str) -> NewObj:
        w = self.weights[f"{name}.weight"]
        b = self.weights.get(f"{name}.bias")
        params = [("weight", self.parameter(self.storage(w), 0, w.shape)),
                  ("bias", None if b is None else self.parameter(self.storage(b), 0, b.shape))]
        return self.module(TORCH_CLASSES["Linear"], params, [], in_features=w.shape[1], out_features=w.shape[0])

    def lstm(self, name: str) -> NewObj:
        """One flat (cuDNN) storage for all eight weights; each parameter a view at its offset."""
        names = [n for sfx in ("", "_reverse") for n in
                 (f"weight_ih_l0{sfx}", f"weight_hh_l0{sfx}", f"bias_ih_l0{sfx}", f"bias_hh_l0{sfx}")]
        arrays = [self.weights[f"{name}.{n}"] for n in names]
        flat = self.storage(np.concatenate([a.ravel() for a in arrays]))
        params, offset = [], 0
        for n, a in zip(names, arrays):
            params.append((n, self.parameter(flat, offset, a.shape)))
            offset += a.size
        w_ih = self.weights[f"{name}.weight_ih_l0"]
        unserializable = NewObj(Global("torch.backends.cudnn.rnn", "Unserializable"), "<unserializable>")
        return self.module(TORCH_CLASSES["LSTM"], params, [], mode="LSTM", input_size=w_ih.shape[1],
                           hidden_size=w_ih.shape[0] // GATES, num_layers=1, bias=True, batch_first=True,
                           dropout=0, dropout_state={"desc_0": unserializable}, bidirectional=True,
                           _all_weights=[names[:4], names[4:]], _data_ptrs=[140_000_000 + 64 * i for i in range(8)],
                           _param_buf_size=int(flat.data.size))

    def act(self, name: str) -> NewObj:
        attrs = {"threshold": 0, "value": 0, "inplace": False} if name == "ReLU" else {}
        return self.module(TORCH_CLASSES[name], [], [], **attrs)

    def sequential(self, prefix: str) -> NewObj:
        return self.module(TORCH_CLASSES["Sequential"], [], [
            ("0", self.linear(f"{prefix}.0")), ("1", self.act("Tanh")), ("2", self.linear(f"{prefix}.2"))])

    def attention(self) -> list:
        return [(n, self.linear(n)) for n in ("affine_audio", "affine_video", "affine_v", "affine_g", "affine_h")]


def authors_tree(kind: str, weights: dict[str, np.ndarray], hidden: int, blocks: int = 1,
                 location: str = "cuda:0") -> tuple[NewObj, list[Storage]]:
    """(root module object, storages) of the authors' `kind` network holding `weights`."""
    b = TreeBuilder(weights, location)
    if kind == "DMRN":
        children = [("sigmoid", b.act("Sigmoid")), ("tanh", b.act("Tanh")), ("relu", b.act("ReLU")),
                    ("lstm_audio", b.lstm("lstm_audio")), ("lstm_video", b.lstm("lstm_video")), *b.attention(),
                    ("U_v", b.sequential("U_v")), ("U_a", b.sequential("U_a")), ("L2", b.linear("L2"))]
        root = b.module(AUTHORS_CLASSES[kind], [], children, hidden_dim=hidden, nb_block=blocks)
    else:
        children = [("lstm_audio", b.lstm("lstm_audio")), ("lstm_video", b.lstm("lstm_video")),
                    ("relu", b.act("ReLU")), *b.attention(), ("L1", b.linear("L1")), ("L2", b.linear("L2"))]
        root = b.module(AUTHORS_CLASSES[kind], [], children, hidden_dim=hidden)
    return root, b.storages


def random_weights(kind: str, rng: np.random.Generator, *, audio: int = 128, visual: int = 512, hidden: int = 8,
                   d: int = 16, regions: int = 49, classes: int = 29) -> dict[str, np.ndarray]:
    """Random float32 weights in the authors' parameter names and shapes (scaled so nothing saturates)."""
    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    out: dict[str, np.ndarray] = {}
    for name, dim in (("lstm_audio", audio), ("lstm_video", visual)):
        for sfx in ("", "_reverse"):
            out[f"{name}.weight_ih_l0{sfx}"] = w(GATES * hidden, dim)
            out[f"{name}.weight_hh_l0{sfx}"] = w(GATES * hidden, hidden)
            out[f"{name}.bias_ih_l0{sfx}"] = w(GATES * hidden)
            out[f"{name}.bias_hh_l0{sfx}"] = w(GATES * hidden)
    out.update({"affine_audio.weight": w(d, audio), "affine_audio.bias": w(d), "affine_video.weight": w(d, visual),
                "affine_video.bias": w(d), "affine_v.weight": w(regions, d), "affine_g.weight": w(regions, d),
                "affine_h.weight": w(1, regions) * 3})
    if kind == "DMRN":
        for branch in ("U_v", "U_a"):
            for i in (0, 2):
                out[f"{branch}.{i}.weight"] = w(2 * hidden, 2 * hidden)
                out[f"{branch}.{i}.bias"] = w(2 * hidden)
        out.update({"L2.weight": w(classes, 2 * hidden) * 3, "L2.bias": w(classes)})
    else:
        out.update({"L1.weight": w(64, 4 * hidden), "L1.bias": w(64), "L2.weight": w(classes, 64) * 3,
                    "L2.bias": w(classes)})
    return out


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def np_bilstm(w: dict, name: str, x: np.ndarray) -> np.ndarray:
    """Bidirectional batch-first LSTM from zero states, gates (i, f, g, o): (B, T, D) -> (B, T, 2H)."""
    B, T, _ = x.shape
    outs = []
    for sfx, steps in (("", range(T)), ("_reverse", range(T - 1, -1, -1))):
        W_ih, W_hh = w[f"{name}.weight_ih_l0{sfx}"], w[f"{name}.weight_hh_l0{sfx}"]
        b = w[f"{name}.bias_ih_l0{sfx}"] + w[f"{name}.bias_hh_l0{sfx}"]
        H = W_hh.shape[1]
        h, c, out = np.zeros((B, H)), np.zeros((B, H)), np.zeros((B, T, H))
        for t in steps:
            i, f, g, o = np.split(x[:, t] @ W_ih.T + h @ W_hh.T + b, 4, axis=-1)
            c = _np_sigmoid(f) * c + _np_sigmoid(i) * np.tanh(g)
            h = _np_sigmoid(o) * np.tanh(c)
            out[:, t] = h
        outs.append(out)
    return np.concatenate(outs, -1)
