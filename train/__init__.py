"""synthvox.train: the 3D UNet, the contrastive loss, data streaming, checkpoints and the trainer.

    from synthvox.train.model import UNet3D, build_model
    from synthvox.train.checkpoint import load_model, resolve_checkpoint
    torchrun --nproc_per_node=G train/pretrain.py --store STORE --out RUN

Submodules are imported explicitly (nothing heavy at package import).
"""

__all__ = ["model", "heads", "loss", "augment", "config", "data", "feed", "ddp", "runlog", "trainer", "options", "checkpoint",
           "pretrain", "plot"]
