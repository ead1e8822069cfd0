"""Read PyTorch checkpoints (whole modules or state dicts) without executing anything they contain.

`torch.save(net)` pickles the module objects themselves; unpickling such a file normally imports
the classes it names and calls whatever callables it lists, so a crafted file runs arbitrary code.
Here a `pickle.Unpickler` subclass resolves every global through one allow-list
(`ALLOWED_GLOBALS`): tensor and storage rebuilding, OrderedDict and set, and *inert stand-ins* for
module classes: those of the networks avel imports (avel.foreign.kinds: the AVE authors' and the
later methods'), any `torch.nn.modules` class, and the torch internals 0.3 pickles reference (a
stand-in records the attributes pickle hands it and runs nothing, so standing in is always safe). Any other global (`posix.system`,
`builtins.eval`, `subprocess.Popen`, ...) stops the load with one line naming it. The source code
that a 0.3 file carries for each module class is never executed or imported.

Two containers are read:
- PyTorch 0.3 legacy format: pickled magic number, protocol version (1001), system info; the object
  pickle (storages as persistent ids `('storage', type, key, location, numel, view)`); the sorted
  storage keys; then each storage as an int64 element count followed by its raw little-endian data.
- The zip format of PyTorch >= 1.6: `<name>/data.pkl` (persistent ids
  `('storage', type, key, location, numel)`), each storage in `<name>/data/<key>`.
Storages saved on a GPU are read onto the CPU (the location is only recorded).
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
import struct
import tarfile
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from avel.errors import AvelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION of the 0.x legacy format

# Storage classes -> element type of their data.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

# Torch internals that 0.3 whole-module pickles reference: loaded as inert stand-ins.
TORCH_INTERNALS = (
    "torch.nn.backends.thnn._get_thnn_function_backend",  # 0.3 modules' shared `_backend`
    "torch.backends.cudnn.rnn.Unserializable",  # 0.3 LSTM `dropout_state` entries
)
TORCH_MODULES = "torch.nn.modules."  # every torch layer class (Linear, LSTM, MultiheadAttention, ...) stands in


class StandIn:
    """An inert object in place of a pickled class instance: keeps what pickle gives it, runs nothing."""

    qualname = ""  # the global this stands in for, e.g. "torch.nn.modules.rnn.LSTM"
    args: tuple = ()  # constructor arguments, when pickle called the class
    state: Any = None  # what pickle's BUILD gave (a module's attribute dict)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in {self.qualname}>"


@dataclass
class Ref:
    """A storage, tensor or parameter from the file. The wrapper keeps pickle's BUILD opcode away from
    torch's own `__setstate__` (which could re-point a tensor); a parameter's state (0.3: requires_grad,
    volatile, hooks) is dropped."""

    data: torch.Tensor
    kind: str  # "storage" (a 1-D buffer) | "tensor" | "parameter"

    def __setstate__(self, state: Any) -> None:
        pass


@dataclass(frozen=True)
class StorageType:
    """`torch.FloatStorage` etc. as named in a pickle: only its element type is used."""

    name: str

    @property
    def dtype(self) -> torch.dtype:
        return STORAGE_DTYPES[self.name]


def _stand_in_class(qualname: str) -> type[StandIn]:
    return type(qualname.rsplit(".", 1)[-1], (StandIn,), {"qualname": qualname})


def module_state(obj: StandIn) -> dict[str, Any]:
    """A pickled module's attribute dict, with Python 2 byte-string keys decoded."""
    state = obj.state if isinstance(obj.state, dict) else {}
    return {_text(k): v for k, v in state.items()}


def _parameter(data: Any, requires_grad: Any = True, *_: Any) -> Ref:
    """torch.nn.Parameter(tensor) (0.3) and torch._utils._rebuild_parameter(tensor, ...) (current)."""
    if not isinstance(data, Ref) or data.kind != "tensor":
        raise pickle.UnpicklingError(f"a parameter of something that is not a tensor ({type(data).__name__})")
    return Ref(data.data, "parameter")


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> Ref:
    """A view of `storage` (a 1-D buffer) after checking every index stays inside it."""
    if not isinstance(storage, Ref) or storage.kind != "storage":
        raise pickle.UnpicklingError("a tensor refers to something that is not a storage")
    storage = storage.data
    if not (isinstance(offset, int) and all(isinstance(v, int) and v >= 0 for v in (*size, *stride))
            and len(size) == len(stride) and offset >= 0):
        raise pickle.UnpicklingError(f"invalid tensor geometry (offset {offset!r}, size {size!r}, stride {stride!r})")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= storage.numel():
        raise pickle.UnpicklingError(f"tensor of size {tuple(size)} at offset {offset} runs past its storage "
                                     f"({storage.numel()} elements)")
    return Ref(storage.as_strided(tuple(size), tuple(stride), storage.storage_offset() + offset), "tensor")


ALLOWED_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set,  # a module's _non_persistent_buffers_set (current PyTorch)
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _parameter,
    "torch.nn.parameter.Parameter": _parameter,
    **{f"torch.{name}": StorageType(name) for name in STORAGE_DTYPES},
    **{name: _stand_in_class(name) for name in TORCH_INTERNALS},
}


STAND_IN_MODULES: set[str] = set()  # modules of a network's own code: any class of theirs stands in


def allow_module(module: str) -> None:
    """Let pickles name any class of `module` (a network's own code, e.g. "fully_model"): each loads as an
    inert stand-in."""
    STAND_IN_MODULES.add(module)


def allow_module_class(qualname: str) -> None:
    """Let pickles name the module class `qualname` (e.g. "fully_model.psp_net"): it loads as an inert
    stand-in (avel.foreign.kinds registers the classes of the networks it imports)."""
    ALLOWED_GLOBALS.setdefault(qualname, _stand_in_class(qualname))


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside ALLOWED_GLOBALS."""

    def __init__(self, qualname: str) -> None:
        super().__init__(qualname)
        self.qualname = qualname


def _text(x: Any) -> Any:
    """Python 2 pickles hold names as byte strings."""
    return x.decode("latin-1") if isinstance(x, bytes) else x


@dataclass
class Storages:
    """The storages one checkpoint's pickle refers to, created on first reference (1-D CPU buffers)."""

    budget: int  # bytes the storages may occupy in all (the file's size: every byte must be in it)
    fetch: Any = None  # zip format: key -> raw bytes; legacy format: None (data follows the pickle)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    declared: dict[str, tuple[StorageType, int]] = field(default_factory=dict)
    locations: set[str] = field(default_factory=set)

    def get(self, typ: Any, key: Any, location: Any, numel: Any) -> torch.Tensor:
        key, location = str(_text(key)), _text(location)
        if not isinstance(typ, StorageType) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage reference {key!r}")
        if not (isinstance(location, str) and (location == "cpu" or location.startswith("cuda"))):
            raise pickle.UnpicklingError(f"storage {key!r} has an unknown location {location!r}")
        if key in self.buffers:
            return self.buffers[key]
        self.locations.add(location)
        nbytes = numel * torch.empty((), dtype=typ.dtype).element_size()
        self.budget -= nbytes
        if self.budget < 0:
            raise pickle.UnpicklingError(f"storage {key!r} declares {numel} elements, more than the file holds")
        if self.fetch is None:
            buf = torch.zeros(numel, dtype=typ.dtype)  # filled once the pickle is read
        else:
            raw = self.fetch(key)
            if len(raw) != nbytes:
                raise pickle.UnpicklingError(f"storage {key!r}: {len(raw)} bytes stored, {nbytes} declared")
            buf = torch.frombuffer(bytearray(raw), dtype=typ.dtype) if nbytes else torch.zeros(0, dtype=typ.dtype)
        self.buffers[key] = buf
        self.declared[key] = (typ, numel)
        return buf


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals only through ALLOWED_GLOBALS; persistent ids only as module classes and storages."""

    def __init__(self, f: io.BytesIO, storages: Storages | None = None) -> None:
        super().__init__(f, encoding="latin-1")
        self.stream = f
        self.storages = storages

    def load(self) -> Any:
        """Check the opcodes first (see `scan_opcodes`), then unpickle."""
        start = self.stream.tell()
        scan_opcodes(self.stream)
        self.stream.seek(start)
        return super().load()

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__.set, ...), mapped as pickle's own find_class maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        qualname = f"{module}.{name}"
        known_code = qualname.startswith(TORCH_MODULES) or module in STAND_IN_MODULES
        if qualname not in ALLOWED_GLOBALS and known_code and name[:1].isalpha():
            allow_module_class(qualname)  # a torch layer or a class of the network's code: inert like any stand-in
        if qualname not in ALLOWED_GLOBALS:
            raise RefusedGlobal(qualname)
        return ALLOWED_GLOBALS[qualname]

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        tag = _text(pid[0])
        if tag == "module" and len(pid) >= 2 and isinstance(pid[1], type) and issubclass(pid[1], StandIn):
            return pid[1]  # the class; the source text beside it (pid[2:]) is ignored, never run
        if tag == "storage" and len(pid) in (5, 6) and self.storages is not None:
            buf = self.storages.get(*pid[1:5])
            view = pid[5] if len(pid) == 6 else None
            if view is None:
                return Ref(buf, "storage")
            _, offset, size = view  # 0.3 storage views: (view key, offset, size) into the root storage
            if not (isinstance(offset, int) and isinstance(size, int) and 0 <= offset <= offset + size <= len(buf)):
                raise pickle.UnpicklingError(f"storage view {view!r:.80} outside its storage")
            return Ref(buf[offset:offset + size], "storage")
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")


MEMO_OPCODES = ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET")


def scan_opcodes(stream: io.BytesIO) -> None:
    """Walk one pickle's opcodes up to STOP without running them (pickletools), refusing memo indices no
    pickler writes: a memo slot beyond the opcodes read so far would make the unpickler allocate
    gigabytes for nothing."""
    start = stream.tell()
    for op, arg, pos in pickletools.genops(stream):
        if op.name in MEMO_OPCODES and int(arg) > pos - start:
            raise pickle.UnpicklingError(f"memo index {arg} at byte {pos} is out of range")


@dataclass
class Loaded:
    """A checkpoint's unpickled object tree and how it was stored."""

    root: Any  # StandIn tree (a whole module) or whatever else the file held
    container: str  # "PyTorch 0.3 legacy format" | "PyTorch zip format"
    locations: set[str]  # where the storages lived when saved ("cuda:0", "cpu")


def _refuse(exc: Exception, path: Path) -> AvelError:
    if isinstance(exc, RefusedGlobal):
        return AvelError(f"refuses to load global '{exc.qualname}' (a checkpoint may only hold tensors, storages "
                         "and the module classes of the networks avel imports; loading it could run code)", path)
    return AvelError(f"not a readable PyTorch checkpoint (truncated or corrupt?): {type(exc).__name__}: "
                     f"{str(exc)[:200]}", path)


def load_checkpoint(path: str | Path) -> Loaded:
    """Unpickle a checkpoint (0.3 legacy or zip format; a whole module or a state dict) safely; AvelError
    on anything else."""
    path = Path(path)
    if not path.is_file():
        raise AvelError("file not found", path)
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        if tarfile.is_tarfile(path):
            raise AvelError("a tar-format checkpoint (PyTorch < 0.1.10) is not supported", path)
        return _load_legacy(io.BytesIO(path.read_bytes()), path)
    except AvelError:
        raise
    except Exception as exc:  # nothing here executes pickled code: every failure is a bad file
        raise _refuse(exc, path) from None


def _load_zip(path: Path) -> Loaded:
    with zipfile.ZipFile(path) as zf:
        pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise AvelError("a zip file, but not a PyTorch checkpoint (no <name>/data.pkl)", path)
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in zf.namelist() and zf.read(f"{prefix}byteorder").strip() != b"little":
            raise AvelError("saved on a big-endian machine: not supported", path)
        storages = Storages(budget=path.stat().st_size, fetch=lambda key: zf.read(f"{prefix}data/{key}"))
        root = RestrictedUnpickler(io.BytesIO(zf.read(pickles[0])), storages).load()
    return Loaded(root, "PyTorch zip format", storages.locations)


def _load_legacy(f: io.BytesIO, path: Path) -> Loaded:
    try:
        magic = RestrictedUnpickler(f).load()
    except RefusedGlobal:
        raise
    except Exception:
        magic = None
    if magic != LEGACY_MAGIC:
        raise AvelError("not a PyTorch checkpoint (neither the 0.x legacy format nor the zip format)", path)
    version = RestrictedUnpickler(f).load()
    if version != LEGACY_PROTOCOL:
        raise AvelError(f"PyTorch legacy protocol {version!r}, expected {LEGACY_PROTOCOL}", path)
    sys_info = RestrictedUnpickler(f).load()
    if isinstance(sys_info, dict) and sys_info.get(b"little_endian", sys_info.get("little_endian")) is False:
        raise AvelError("saved on a big-endian machine: not supported", path)
    storages = Storages(budget=path.stat().st_size)
    root = RestrictedUnpickler(f, storages).load()
    keys = [str(_text(k)) for k in RestrictedUnpickler(f).load()]
    if sorted(keys) != sorted(storages.declared):
        raise AvelError("the storage list does not match the storages the pickle refers to", path)
    for key in keys:
        typ, numel = storages.declared[key]
        head = f.read(8)
        if len(head) != 8:
            raise AvelError(f"truncated: storage {key} is missing", path)
        (count,) = struct.unpack("<q", head)
        if count != numel:
            raise AvelError(f"storage {key}: {count} elements stored, {numel} declared", path)
        nbytes = numel * storages.buffers[key].element_size()
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise AvelError(f"truncated: storage {key} has {len(raw)} of {nbytes} bytes", path)
        if nbytes:
            storages.buffers[key].copy_(torch.frombuffer(bytearray(raw), dtype=typ.dtype))
    return Loaded(root, "PyTorch 0.3 legacy format", storages.locations)
