"""Contrastive pretraining: the torchrun entry point (and the trainer's public names).

    torchrun --nproc_per_node=G train/pretrain.py --store STORE --out RUN [--steps N] [--crop C]
        [--resume] [--elastic] [--device cpu|cuda] [--config CFG] [--source store|engine] [--workers W]
    torchrun --nproc_per_node=G -m synthvox.train.pretrain ...      (from anywhere)
    torchrun --nproc_per_node=G -m synthvox.cli.main pretrain ...    (the same; --probes too)
    python -m synthvox.train.pretrain ...   /   synthvox pretrain ...   (one process)

Both front ends parse the same options (`train/options.py`); the loop is `train/trainer.py`,
its data interface `train/feed.py`, torchrun plumbing `train/ddp.py`, logs `train/runlog.py`.
env:// init (nccl on GPU, gloo on CPU); rank 0 logs, checkpoints and prints the summary. Run
by path, this file's folder is first on sys.path, so it imports the package absolutely.
Outputs in RUN: config.json (resolved), log.jsonl (training and validation lines), checkpoints/.
"""
from __future__ import annotations

import sys

from synthvox.train.options import config_from_options, main, pretrain_options
from synthvox.train.trainer import Pretrainer, build_pretrainer, lr_at, pretrain, validate

__all__ = ["lr_at", "Pretrainer", "build_pretrainer", "pretrain", "validate", "main", "pretrain_options",
           "config_from_options"]

if __name__ == "__main__":
    sys.exit(main())
