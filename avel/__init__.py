"""avel: audio-visual event localization in videos (Tian et al., ECCV 2018).

    import avel
    result = avel.localize("clip.mp4")        # events found by the AVE authors' A+V-att network
    model = avel.load_model("authors-av-att")  # or a run directory from `avel train`

The API (avel.api) loads on first use, so `import avel` stays light (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"localize": "avel.api", "load_model": "avel.api", "Model": "avel.api", "Event": "avel.api",
         "LocalizeResult": "avel.api", "AvelError": "avel.errors"}  # public name -> module defining it
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'avel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
