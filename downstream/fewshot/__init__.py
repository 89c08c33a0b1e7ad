"""Few-shot segmentation: fine-tune a (pretrained or random) UNet with a 1x1x1 head on k labelled volumes."""
from .protocol import PROTOCOLS, FewshotProtocol, get_protocol
from .run import run_fewshot, run_one
from .splits import draw_split, load_or_make_splits
from .train import FewshotNet, finetune, lr_at, predict

__all__ = [
    "PROTOCOLS",
    "FewshotProtocol",
    "get_protocol",
    "run_fewshot",
    "run_one",
    "draw_split",
    "load_or_make_splits",
    "FewshotNet",
    "finetune",
    "lr_at",
    "predict",
]
