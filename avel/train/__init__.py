"""Training and evaluation of the event localizers: config, trainer, evaluation, checkpoints, DDP."""
