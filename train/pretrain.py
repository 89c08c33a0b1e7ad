"""Contrastive pretraining: the torchrun entry point and the single-process trainer.

    torchrun --nproc_per_node=G train/pretrain.py --store STORE --out RUN [--steps N] [--crop C]
        [--resume] [--elastic] [--device cpu|cuda] [--config CFG] [--source store|engine] [--workers W]
    torchrun --nproc_per_node=G -m synthvox.train.pretrain ...      (from anywhere)
    python -m synthvox.train.pretrain ...   /   synthvox pretrain ...   (one process)

env:// init (nccl on GPU, gloo on CPU); rank 0 logs and checkpoints. Run by path, this file's
folder is first on sys.path, so it imports the package absolutely (synthvox.train...).
Outputs in RUN: config.json (resolved), log.jsonl (one line per step, val lines), checkpoints/.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from synthvox.core.atomic import write_json, write_text
from synthvox.engine.config import EngineConfig, load_engine_config
from synthvox.engine.schema import SCHEMA_VERSION
from synthvox.engine.seeds import torch_generator
from synthvox.train.augment import augment_batch, minmax, random_crop, to_float_views, validate_crop
from synthvox.train.checkpoint import load_state, load_weights, resolve_checkpoint, save_checkpoint
from synthvox.train.config import TrainConfig, load_train_config
from synthvox.train.data import (DataError, EngineSource, StoreSource, UnitStream, make_loader, positions_from_state,
                                 views_on_device)
from synthvox.train.loss import VoxelContrastiveLoss
from synthvox.train.model import build_model, default_taps, init_weights, tap_channels, tap_stride

__all__ = ["lr_at", "Pretrainer", "pretrain", "main", "build_parser"]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of (0-based) `step`: linear warmup to cfg.lr, then linear decay to lr x min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (1.0 - (1.0 - cfg.min_lr_ratio) * frac)


class Pretrainer(nn.Module):
    """UNet + per-tap heads + loss in one module (what DDP wraps): forward -> (loss, per-tap losses)."""

    def __init__(self, model: nn.Module, criterion: VoxelContrastiveLoss, views: int) -> None:
        super().__init__()
        self.model, self.criterion, self.views = model, criterion, views

    def forward(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _, feats = self.model.forward_with_taps(x, self.criterion.taps)
        return self.criterion(feats, labels, self.views, generator)


def build_pretrainer(cfg: TrainConfig, views: int) -> Pretrainer:
    """Model and heads initialised from the seed tree (global RNG untouched)."""
    mcfg = cfg.model_config()
    model = build_model(mcfg, generator=torch_generator(cfg.seed, 0, "train.init.model"))
    model = model.to(memory_format=torch.channels_last_3d) if cfg.channels_last else model
    depth = len(cfg.widths) - 1
    taps = tuple(cfg.taps) if cfg.taps else default_taps(depth)
    with torch.device("meta"):
        crit = VoxelContrastiveLoss({t: tap_channels(mcfg, t) for t in taps}, {t: tap_stride(depth, t) for t in taps},
                                    n_voxels=cfg.n_voxels, temperature=cfg.temperature, tap_weights=cfg.tap_weights,
                                    balanced=cfg.balanced, head_width=cfg.head_width, head_layers=cfg.head_layers,
                                    chunk_rows=cfg.chunk_rows, bg_max=cfg.anchor_bg_max)
    crit = init_weights(crit.to_empty(device="cpu"), torch_generator(cfg.seed, 0, "train.init.heads"))
    return Pretrainer(model, crit, views)


# ----------------------------------------------------------------------------- distributed


def setup_distributed(device_arg: str | None, timeout_s: int) -> tuple[int, int, int, torch.device]:
    """(rank, world, local_rank, device); env:// init when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = device_arg or ("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda but no CUDA device is available; pass --device cpu")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout_s))
    return rank, world, local, device


def _dist() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _dist():
        torch.distributed.all_reduce(t)
    return t


def _all_gather(t: torch.Tensor, world: int) -> list[torch.Tensor]:
    if not _dist():
        return [t]
    out = [torch.zeros_like(t) for _ in range(world)]
    torch.distributed.all_gather(out, t)
    return out


class StopFlag:
    """Set by SIGTERM/SIGINT; ranks agree on it through a collective each step."""

    def __init__(self) -> None:
        self.set = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (e.g. called from a test thread)
                pass

    def _handler(self, signum: int, frame: Any) -> None:
        self.set = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ----------------------------------------------------------------------------- the trainer


def pretrain(
    out: str | Path,
    cfg: TrainConfig,
    store: str | Path | None = None,
    *,
    resume: bool = False,
    elastic: bool = False,
    device: str | None = None,
    engine_cfg: EngineConfig | None = None,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train for cfg.steps steps (or until SIGTERM) and return a summary dict (rank 0's view).

    stop_after: stop (with a checkpoint) once this many steps are done, keeping the schedule
    of cfg.steps, e.g. for jobs with a time limit that `--resume` later.
    """
    rank, world, _, dev = setup_distributed(device, cfg.dist_timeout_s)
    out = Path(out)
    is_main = rank == 0
    say = log if is_main else (lambda msg: None)

    # data
    if cfg.source == "store":
        if store is None:
            raise DataError("--source store needs --store STORE (a directory made by synthvox synth-shards)")
        # a labels store's views: painted on the training device on a GPU, by the loader workers on CPU
        source: Any = StoreSource(store, cfg.format, cfg.val_samples, render_views="device" if dev.type != "cpu" else "loader")
        views_n = int(source.engine_config.views)
    else:
        source = EngineSource(engine_cfg or EngineConfig(), cfg.seed, dev, cfg.val_samples)
        views_n = int(source.cfg.views)
    crop = validate_crop(cfg.crop, source.volume_shape, cfg.divisor, str(store or "the engine config"))

    net = build_pretrainer(cfg, views_n).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)

    # resume
    start, stream_state = 0, None
    ckpt = resolve_checkpoint(out) if resume and (out / "checkpoints" / "latest").is_file() else None
    if resume and ckpt is None:
        say(f"--resume: no checkpoint in {out} yet, starting from step 0")
    if ckpt is not None:
        load_weights(ckpt, net.model)
        state = load_state(ckpt)
        net.criterion.heads.load_state_dict(state["heads"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        stream_state = state.get("stream")
        say(f"resumed from {ckpt} at step {start}")
    workers = cfg.workers if cfg.source == "store" else 0
    if cfg.source == "store":
        positions = positions_from_state(stream_state, rank, world, workers, elastic)
        stream = UnitStream(source, cfg.seed, rank, world, workers, positions, first_worker=start % max(1, workers))
        batches = iter(make_loader(stream, cfg.batch_size, workers, cfg.prefetch))
        positions = [list(p) for p in stream.positions]
    else:
        positions = [[0, 0, 0]]

    model: nn.Module = net
    if cfg.compile:  # the UNet only: the loss samples voxels with Python control flow
        net.model.forward_with_taps = torch.compile(net.model.forward_with_taps)  # type: ignore[method-assign]
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    amp = cfg.amp and dev.type == "cuda"
    record_extra = {"engine_config_hash": source.engine_config_hash, "store_manifest_hash": source.manifest_hash,
                    "train_config": cfg.to_dict(), "taps": list(net.criterion.taps), "world_size": world,
                    "sample_schema_version": SCHEMA_VERSION, "views": views_n, "source": cfg.source,
                    "store": str(store) if store else None}

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", {"train": cfg.to_dict(), "store": str(store) if store else None,
                                         "world_size": world, "device": str(dev)}, indent=2, sort_keys=False)
        logf = _open_log(out / "log.jsonl", start)
        tb = _tensorboard(out) if cfg.tensorboard else None
    val_items = source.val_samples() if (is_main and cfg.val_samples) else []

    def save(step: int) -> None:
        pos = torch.tensor(positions, dtype=torch.int64)
        allpos = [p.tolist() for p in _all_gather(pos, world)]
        if is_main:
            state = {"step": step, "optimizer": opt.state_dict(), "heads": net.criterion.heads.state_dict(),
                     "stream": {"world": world, "workers": max(1, workers), "positions": allpos}}
            path = save_checkpoint(out, step, net.model, state, record_extra, keep=cfg.keep)
            say(f"saved {path}")

    stop = StopFlag()
    stop.install()
    net.train()
    t_start, done, stopped = time.perf_counter(), start, False
    render0 = 0.0
    if start >= cfg.steps:
        say(f"nothing to do: the run is at step {start} >= --steps {cfg.steps}")
    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            if cfg.source == "store":
                batch = views_on_device(next(batches), dev)  # a no-op unless a labels store paints on the device
                positions[batch["pos"][0]] = list(batch["pos"][1:])
            else:
                render0 = source.render_seconds
                batch = source.batch(step, rank, world, cfg.batch_size)
            t_data = time.perf_counter() - t0
            g = torch_generator(cfg.seed, step, "train.step", rank)
            gd = torch_generator(cfg.seed, step, "train.noise", rank, dev)
            v = to_float_views(batch["views"].to(dev, non_blocking=True))
            labels = batch["labels"].to(dev, non_blocking=True).long()
            v, labels = random_crop(v, labels, crop, g)
            v, labels = augment_batch(v, labels, cfg.augment, g, gd)
            x = v.reshape(-1, 1, *v.shape[-3:])
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
                loss, per = model(x, labels, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else torch.zeros(())
            opt.step()
            # two collectives per step: the summed losses with the stop flag all ranks agree on, then
            # the batch indices for the log
            stats = torch.tensor([loss.item()] + [per[t].item() for t in net.criterion.taps] + [float(stop.set)], dtype=torch.float64)
            stats = _all_reduce_sum(stats)
            idx = _all_gather(torch.tensor(batch["index"], dtype=torch.int64), world)
            dt = time.perf_counter() - t0
            if is_main and (step % cfg.log_every == 0 or step == cfg.steps - 1):
                rec = {"step": step, "loss": stats[0].item() / world,
                       "taps": {t: stats[1 + i].item() / world for i, t in enumerate(net.criterion.taps)},
                       "lr": lr, "grad_norm": float(gnorm), "samples_per_s": world * cfg.batch_size / dt,
                       "data_wait": t_data / dt, "indices": [i.tolist() for i in idx], "time": time.time()}
                if cfg.source == "engine":
                    rec["render_s"] = source.render_seconds - render0
                elif source.content == "labels":  # seconds painting this batch's views (loader workers or device)
                    rec["render_s"] = batch["render_s"]
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                if tb is not None:
                    tb.add_scalar("loss/train", rec["loss"], step)
                    tb.add_scalar("lr", lr, step)
                    for t, v in rec["taps"].items():
                        tb.add_scalar(f"loss/{t}", v, step)
                say(f"step {step:6d}  loss {rec['loss']:.4f}  lr {lr:.2e}  {rec['samples_per_s']:.2f} samples/s  data {rec['data_wait']:.0%}")
            if is_main and val_items and ((step + 1) % cfg.val_every == 0 or step == cfg.steps - 1):
                vloss = validate(net, val_items, crop, cfg, dev)
                logf.write(json.dumps({"step": step, "val_loss": vloss}) + "\n")
                logf.flush()
                say(f"step {step:6d}  val_loss {vloss:.4f}")
            done = step + 1
            if stats[-1].item() > 0:
                say(f"stop requested (SIGTERM): saving at step {done} and exiting")
                save(done)
                stopped = True
                break
            if done % cfg.ckpt_every == 0 or done == cfg.steps or done == stop_after:
                save(done)
            if done == stop_after:
                break
    finally:
        stop.restore()
        if is_main:
            logf.close()
            if tb is not None:
                tb.close()
    return {"out": str(out), "start": start, "steps": done, "stopped": stopped,
            "seconds": time.perf_counter() - t_start, "world_size": world, "rank": rank,
            "weights_sha256": _weights_hash(net.model), "params_sha256": _weights_hash(net, buffers=False)}


def _weights_hash(model: nn.Module, buffers: bool = True) -> str:
    """sha256 over a module's state (parameters, and buffers unless told not), to compare ranks and runs.

    Under DDP the parameters of all ranks are equal; BatchNorm running statistics are
    rank-local between forwards (DDP broadcasts rank 0's at the next forward).
    """
    h = hashlib.sha256()
    items = model.state_dict().items() if buffers else model.named_parameters()
    for k, v in sorted(items):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def validate(net: Pretrainer, items: list[dict[str, Any]], crop: tuple[int, int, int], cfg: TrainConfig, dev: torch.device) -> float:
    """Mean loss over held-out samples: centre crop, no augmentation, fixed voxel sampling."""
    was = net.training
    net.eval()
    losses = []
    for it in items:
        v = torch.as_tensor(it["views"]).to(dev)
        lab = it["labels"]
        lab = (torch.from_numpy(lab.astype(np.int64)) if isinstance(lab, np.ndarray) else lab).to(dev).long()
        o = [(s - c) // 2 for s, c in zip(lab.shape, crop)]
        sl = tuple(slice(a, a + c) for a, c in zip(o, crop))
        v = minmax(to_float_views(v[(slice(None),) + sl]))
        lab = lab[sl]
        loss, _ = net(v[:, None], lab[None], torch_generator(cfg.seed, int(it["index"]), "train.val"))
        losses.append(loss.item())
    net.train(was)
    return float(sum(losses) / len(losses))


def _open_log(path: Path, start: int) -> Any:
    """Append to log.jsonl, first dropping lines of steps >= start (written after the checkpoint we resume from)."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", -1) < start]
        write_text(path, "".join(ln + "\n" for ln in keep))
    return path.open("a")


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter  # lazily: tensorboard is optional
    except ImportError:
        print("tensorboard is not installed: logging to log.jsonl only (pip install tensorboard)")
        return None
    return SummaryWriter(str(out / "tb"))


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pretrain", description="Contrastive pretraining (torchrun for DDP).")
    p.add_argument("--store", help="store directory (synthvox synth-shards)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, log.jsonl)")
    p.add_argument("--config", help="YAML config with a train: (and engine:) section")
    p.add_argument("--steps", type=int)
    p.add_argument("--crop", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--source", choices=["store", "engine"])
    p.add_argument("--format", choices=["auto", "wds", "zarr"])
    p.add_argument("--val-samples", type=int)
    p.add_argument("--val-every", type=int)
    p.add_argument("--ckpt-every", type=int)
    p.add_argument("--n-voxels", type=int)
    p.add_argument("--widths", help="comma-separated UNet widths, e.g. 16,32,64,128,256")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--tensorboard", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--elastic", action="store_true", help="allow resuming with another world size / worker count")
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--stop-after", type=int, help="stop with a checkpoint after this many steps (the schedule keeps --steps)")
    p.add_argument("--size", type=int, help="engine source: volume side (engine.size)")
    return p


def config_from_args(a: argparse.Namespace) -> tuple[TrainConfig, Any]:
    """(TrainConfig, EngineConfig) from the YAML file and the flags (flags win)."""
    over: dict[str, Any] = {"steps": a.steps, "crop": a.crop, "batch_size": a.batch_size, "lr": a.lr, "workers": a.workers,
                            "seed": a.seed, "source": a.source, "format": a.format, "val_samples": a.val_samples,
                            "val_every": a.val_every, "ckpt_every": a.ckpt_every, "n_voxels": a.n_voxels}
    if a.widths:
        over["widths"] = [int(w) for w in a.widths.split(",")]
    if a.no_augment:
        over["augment.enabled"] = False
    if a.compile:
        over["compile"] = True
    if a.tensorboard:
        over["tensorboard"] = True
    cfg = load_train_config(a.config, **over)
    ecfg = load_engine_config(a.config, size=a.size)
    return cfg, ecfg


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        cfg, ecfg = config_from_args(a)
        summary = pretrain(a.out, cfg, a.store, resume=a.resume, elastic=a.elastic, device=a.device, engine_cfg=ecfg,
                           stop_after=a.stop_after)
    except (DataError, ValueError, FileNotFoundError, OSError) as e:
        print(f"pretrain: error: {e}", file=sys.stderr)
        return 2
    finally:
        if _dist():
            torch.distributed.destroy_process_group()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
