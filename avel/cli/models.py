"""`avel models`: the built-in model names, where each comes from, its size, and whether it is cached."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the built-in models (the AVE authors' networks) and the cache",
                       description="List the names --model accepts besides a run directory: the AVE authors' "
                                   "published trained networks, downloaded once into the cache ($AVEL_CACHE, "
                                   "default $XDG_CACHE_HOME/avel or ~/.cache/avel) and hash-checked, with the "
                                   "backbone weights their features need.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_models)


def _state(s) -> str:  # noqa: ANN001 - avel.pretrained.ModelStatus
    if s.cached:
        return "ready"
    if s.downloaded:
        return "downloaded"
    return "not cached" if s.verifiable else "local file only"


def _models(args: argparse.Namespace) -> int:
    import json

    from avel.cache import cache_root
    from avel.pretrained import DEFAULT_MODEL, model_statuses

    rows = model_statuses()
    if args.json:
        print(json.dumps({"cache": str(cache_root()), "default": DEFAULT_MODEL, "models": [
            {"name": s.name, "kind": s.kind, "description": s.description, "url": s.url, "size_mb": s.size_mb,
             "hash_verified": s.verifiable, "state": _state(s), "path": str(s.path)} for s in rows]}, indent=2))
        return 0
    width = max(len(s.name) for s in rows)
    print(f"{'NAME':<{width}}  {'KIND':<9}  {'SIZE':>8}  {'STATE':<15}  SOURCE")
    for s in rows:
        default = "  (default)" if s.name == DEFAULT_MODEL else ""
        print(f"{s.name:<{width}}  {s.kind:<9}  {f'~{s.size_mb:g} MB':>8}  {_state(s):<15}  {s.url}{default}")
    for s in rows:
        if not s.verifiable and not s.downloaded:
            print(f"{s.name}: published without a verifiable hash; download it yourself and put it at {s.path}")
    print(f"cache: {cache_root()} (set AVEL_CACHE to move it); avel localize also fetches the backbone weights "
          "(Keras VGG-19 ~80 MB, VGGish ~275 MB) on first use")
    return 0
