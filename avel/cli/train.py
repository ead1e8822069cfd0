"""`avel train`: train one event-localization model (Table 1 names) into a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from avel.cli.options import device, nonneg_int, out_dir, positive_float, positive_int
from avel.precision import PRECISION_HELP, PRECISIONS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train an event-localization model (A, V, V-att, A+V, A+V-att, DMRN, ...)",
        description="Train a localizer on an AVE dataset directory: Adam, checkpoint selected on the "
                    "validation split, early stopping, test evaluated once at the end. Re-running the same "
                    "command resumes an interrupted run. Works under `torchrun --nproc-per-node N -m avel train`.")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="AVE dataset directory")
    p.add_argument("--model", required=True, metavar="NAME", help="model name: A, V, V-att, A+V, A+V-att, DMRN, CMRAN, PSP, CMBS, or any registered model")
    p.add_argument("--out", type=out_dir, required=True, metavar="RUN_DIR", help="run directory to write")
    p.add_argument("--weak", action="store_true", help="weakly supervised (W-) variant: video labels + MIL pooling")
    p.add_argument("--epochs", type=positive_int, default=None, help="maximum epochs (default 100; early stopping)")
    p.add_argument("--patience", type=positive_int, default=None, help="epochs without validation gain before stopping (8)")
    p.add_argument("--min-steps", type=nonneg_int, default=None,
                   help="never stop early before this many optimizer steps (250)")
    p.add_argument("--no-standardize", dest="standardize", action="store_const", const=False, default=None,
                   help="feed the features unscaled (default: standardize each channel with the training "
                        "split's mean and std, stored in the checkpoint)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="global batch size (64)")
    p.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (1e-3)")
    p.add_argument("--seed", type=nonneg_int, default=None, help="random seed (0)")
    p.add_argument("--loss", default=None, help="ce (default: cross-entropy on logits) or authors")
    p.add_argument("--device", type=device, default=None, help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--fusion", default=None, help="fusion method for A+V models (default concat)")
    p.add_argument("--fusion-stage", default=None, choices=("early", "late", "decision"),
                   help="where A+V models fuse (default late)")
    p.add_argument("--no-bidirectional", action="store_true", help="one-directional LSTMs")
    p.add_argument("--recipe", default="avel", metavar="NAME",
                   help="training preset (docs/localization.md): avel (default: cross-entropy, shuffled batches, "
                        "best-validation checkpoint, early stopping), authors (the 2018 authors' released loop: "
                        "300 epochs, StepLR, batches in split order, checkpoint kept on test accuracy), or the "
                        "later methods' own loops: cmran, psp, cmbs (their optimizer settings, schedule, "
                        "clipping, epochs and test-split checkpoint); explicit options override its fields")
    p.add_argument("--fusion-blocks", type=positive_int, default=None, metavar="N",
                   help="DMRN/MRN fusion: stack N residual blocks (default 1, as the paper)")
    p.add_argument("--init-from", type=Path, default=None, metavar="RUN_DIR",
                   help="start from a trained run's attention and LSTM weights (DMRN from an A+V-att run)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help=PRECISION_HELP)
    p.set_defaults(func=_train)


# CLI option -> TrainConfig field
TRAIN_OPTIONS = {"epochs": "epochs", "patience": "patience", "min_steps": "min_steps", "standardize": "standardize",
                 "batch_size": "batch_size", "lr": "lr",
                 "seed": "seed", "loss": "loss", "device": "device", "threads": "num_threads",
                 "precision": "precision"}


def _train(args: argparse.Namespace) -> int:
    import os

    from avel.data.dataset import AVEDataset
    from avel.models.registry import ModelConfig, model_spec
    from avel.train.recipes import recipe_config
    from avel.train.distributed import DistInfo
    from avel.train.trainer import train

    from avel.data.dataset import require_model_inputs

    spec = model_spec(args.model)  # unknown name: one line listing the valid ones, before opening any data
    require_model_inputs(args.data, args.model, spec.inputs)
    model_kw = {"name": args.model, "weak": args.weak, "bidirectional": not args.no_bidirectional}
    if args.fusion is not None:
        model_kw["fusion"] = args.fusion
    if args.fusion_stage is not None:
        model_kw["fusion_stage"] = args.fusion_stage
    if args.fusion_blocks is not None:
        model_kw["fusion_blocks"] = args.fusion_blocks
    train_kw = {field: getattr(args, opt) for opt, field in TRAIN_OPTIONS.items() if getattr(args, opt) is not None}
    init_kw = {"init_from": str(args.init_from.resolve())} if args.init_from is not None else {}
    ds = AVEDataset.open(args.data, progress=not args.quiet)
    results = train(ds, ModelConfig(**model_kw), recipe_config(args.recipe, args.weak, **train_kw, **init_kw), args.out, progress=not args.quiet)
    if DistInfo(rank=int(os.environ.get("RANK", "0"))).is_main:
        test = results["test"]
        print(f"{results['model']}: selected epoch {results['best_epoch']} of {results['epochs_run']} "
              f"({results['stopped']}); val {results['val']['accuracy']:.2f}%, test {test['accuracy']:.2f}%"
              + (" (degenerate: one class on "
                 f"{test['most_predicted_share']:.1f}% of seconds)" if test.get("degenerate") else "")
              + (f"; majority class {test['majority_rate']:.2f}%, chance {test['chance_rate']:.2f}%"
                 if test.get("majority_rate") is not None else "")
              + (f"; attention on the sounding object {test['attention_hit_rate']:.1f}% "
                 f"(chance {test['attention_chance_rate']:.1f}%)" if test.get("attention_hit_rate") is not None
                 else ""))
        sel = results.get("test_at_validation") or {}
        if sel.get("best") is not None:
            print(f"test accuracy over validation points (never used to select): best {sel['best']:.2f}% at "
                  f"epoch {sel['best_epoch']}, {sel['difference']:.2f} points above the selected checkpoint's")
        data = results.get("dataset") or {}
        if data:
            print(f"data: {data['name']} at {data.get('root')}" + (f" ({data['note']})" if data.get("synthetic")
                                                                       else ""))
        print(f"wrote {args.out}")
    return 0
