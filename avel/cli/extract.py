"""`avel extract`: VGG-19 + VGGish features from raw videos, in the released AVE layout (docs/extraction.md)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from avel.cli.options import device, nonneg_int, out_dir, positive_int
from avel.precision import EXTRACT_PRECISION_HELP, EXTRACT_PRECISIONS


def add_extractor_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `avel extract` and `avel localize`."""
    g = p.add_argument_group("feature extractor")
    g.add_argument("--vgg19-weights", default=None, metavar="PATH|NAME",
                   help="VGG-19 weights: Keras h5, torchvision vgg19 state dict, or a named source "
                        "(keras [default, the authors'], torchvision: downloaded and hash-checked when online)")
    g.add_argument("--vggish-weights", default=None, metavar="PATH|NAME",
                   help="VGGish weights: torchvggish-port state dict, or the named source torchvggish (default)")
    g.add_argument("--vgg19-preprocessing", default=None, choices=("auto", "keras", "torchvision"),
                   help="input preprocessing; auto: from the weights file (h5 -> keras, state dict -> torchvision)")
    g.add_argument("--frames-per-second", type=positive_int, default=None, metavar="F",
                   help="frames sampled and averaged per second (default 16, as the paper)")
    g.add_argument("--image-size", type=positive_int, default=None, metavar="PX", help="VGG-19 input side (default 224)")
    g.add_argument("--resize", choices=("stretch", "crop"), default=None,
                   help="stretch frames to a square (default, the authors) or resize the short side and centre-crop")
    g.add_argument("--batch-size", type=nonneg_int, default=0, help="frames per VGG-19 pass (0: 64 on CUDA, 16 on CPU)")
    g.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--precision", choices=EXTRACT_PRECISIONS, default="auto", help=EXTRACT_PRECISION_HELP)


def extractor_config(args: argparse.Namespace, defaults: dict | None = None):
    """ExtractorConfig from CLI options; unset options take `defaults` (e.g. a model's recorded extractor)."""
    from avel.features.extractor import ExtractorConfig

    base = ExtractorConfig()
    d = defaults or {}
    pick = lambda opt, key: opt if opt is not None else d.get(key, getattr(base, key))  # noqa: E731
    return ExtractorConfig(
        vgg19_weights=pick(args.vgg19_weights, "vgg19_weights"), vggish_weights=pick(args.vggish_weights, "vggish_weights"),
        # the recorded preprocessing belongs to the recorded weights: not to weights given on the command line
        vgg19_preprocessing=args.vgg19_preprocessing or (
            d.get("vgg19_preprocessing") if args.vgg19_weights is None else None) or base.vgg19_preprocessing,
        frames_per_second=pick(args.frames_per_second, "frames_per_second"),
        image_size=pick(args.image_size, "image_size"), resize=pick(args.resize, "resize"),
        batch_size=args.batch_size, device=args.device, precision=args.precision)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="extract VGG-19 / VGGish features from videos (released AVE layout)",
                       description="Extract per-second VGG-19 pool5 and VGGish features from raw videos. "
                                   "Resumable; shard with torchrun --nproc-per-node N -m avel extract ...")
    p.add_argument("--videos", type=Path, required=True, metavar="DIR|VIDEO|LIST",
                   help="folder of videos (file name = video ID), one video file, or a text file with one path per line")
    p.add_argument("--annotations", type=Path, default=None,
                   help="Annotations.txt: rows in its order (a video used by several rows is decoded once)")
    p.add_argument("--out", type=out_dir, required=True, metavar="DATASET_DIR", help="output folder")
    p.add_argument("--seconds", type=positive_int, default=10,
                   help="segments per video (AVE clips: 10); longer videos are cut, shorter ones fail")
    p.add_argument("--shard", default=None, metavar="RANK/N",
                   help="extract only shard RANK of N (separate jobs); then run once more with --merge-only")
    p.add_argument("--merge-only", action="store_true", help="only merge finished parts into the final files")
    p.add_argument("--keep-parts", action="store_true", help="keep per-video part files after a clean merge")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_extractor_options(p)
    p.set_defaults(func=_extract)


def _rank(args: argparse.Namespace) -> tuple[int, int, bool]:
    """(rank, world size, launched by torchrun)."""
    from avel.errors import AvelError

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if args.shard:
            raise AvelError("--shard cannot be combined with torchrun (ranks shard automatically)")
        return int(os.environ["RANK"]), world, True
    if args.shard:
        try:
            rank, world = (int(x) for x in args.shard.split("/"))
        except ValueError:
            raise AvelError(f"--shard must look like RANK/N (e.g. 0/4), got '{args.shard}'") from None
        if not 0 <= rank < world:
            raise AvelError(f"--shard {args.shard}: need 0 <= RANK < N")
        return rank, world, False
    return 0, 1, False


def _extract(args: argparse.Namespace) -> int:
    """One process writing the whole output holds its folder's lock throughout (and first clears a killed
    run's temporaries); shards and torchrun ranks share the folder, so they lock only for the merge."""
    from avel.features.extract import PARTS_DIR
    from avel.io import output_lock, remove_temporaries

    rank, world, distributed = _rank(args)
    if world > 1:
        return _extract_locked(args, rank, world, distributed, locked=False)
    with output_lock(args.out):
        remove_temporaries(args.out)
        remove_temporaries(args.out / PARTS_DIR)
        return _extract_locked(args, rank, world, distributed, locked=True)


def _extract_locked(args: argparse.Namespace, rank: int, world: int, distributed: bool, locked: bool) -> int:
    import json
    from contextlib import nullcontext

    from avel.errors import AvelError
    from avel.features.extract import FILES, PARTS_DIR, extract_shard, is_complete, make_plan, merge, wait_for_ranks
    from avel.io import output_lock

    plan = make_plan(args.videos, args.annotations)
    if args.merge_only:
        info_path = args.out / PARTS_DIR / FILES["extractor"]
        if not info_path.is_file():
            raise AvelError("no extraction parts to merge", args.out / PARTS_DIR)
        info = json.loads(info_path.read_text())
    else:
        from avel.features.extractor import FeatureExtractor

        if distributed and args.device == "auto":
            import torch

            if torch.cuda.is_available():
                args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        extractor = FeatureExtractor(extractor_config(args))
        info = extractor.info
        if is_complete(plan, args.out, info, args.seconds):
            if rank == 0:
                print(f"{args.out} already holds all {len(plan.rows)} rows with these settings: nothing to do")
            return 0
        show = not args.quiet and rank == 0
        ok, failed = extract_shard(plan, extractor, args.out, args.seconds, rank, world, show_progress=show)
        if distributed:
            wait_for_ranks(world)
            if rank != 0:
                return 0
        elif world > 1:
            print(f"shard {rank}/{world}: {ok} videos extracted, {failed} failed; "
                  f"after all shards finish: avel extract ... --merge-only")
            return 0
    with nullcontext() if locked else output_lock(args.out):
        result = merge(plan, args.out, info, keep_parts=args.keep_parts)
    n_videos = len({r["video"] for r in json.loads((args.out / FILES["extractor"]).read_text())["rows"]})
    print(f"wrote {result.rows} rows ({n_videos} videos) to {args.out}")
    if result.failures:
        print(f"{len(result.failures)} videos failed: see {args.out / FILES['failures']}")
    return 0
