"""The pretraining loop: one process of a (torchrun) run, over one data interface (`feed.Feed`).

Per step: the next batch of the feed, a random crop, augmentation, forward/backward of the
UNet + heads + contrastive loss, and two collectives (the summed losses with the stop flag
all ranks agree on, then the batch indices for the log). Rank 0 logs (`runlog`), validates,
probes and checkpoints. A checkpoint keeps the optimizer, heads and stream position, so a
`--resume`d run continues bit for bit as the straight run would have.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from synthvox.core.atomic import write_json
from synthvox.engine.config import EngineConfig
from synthvox.engine.schema import SCHEMA_VERSION
from synthvox.engine.seeds import torch_generator

from .augment import augment_batch, centre_crop, minmax, random_crop, to_float_views, validate_crop
from .checkpoint import load_record, load_state, load_weights, resolve_checkpoint, save_checkpoint
from .config import TrainConfig
from .ddp import StopFlag, all_gather, all_reduce_sum, barrier, broadcast_object, setup_distributed
from .feed import open_feed
from .loss import VoxelContrastiveLoss
from .model import build_model, default_taps, init_weights, tap_channels, tap_stride
from .rundir import RunDirError, prepare_run_dir, run_settings
from .runlog import Console, ConsoleConfig, RunLog

__all__ = ["lr_at", "Pretrainer", "build_pretrainer", "pretrain", "validate", "RunDirError"]

ProbeHook = Callable[[nn.Module, int], dict[str, float]]


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


def prepare_out(out: Path) -> None:
    """Create the run directory, or say why it cannot be written (no OSError traceback)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create the run directory {out}: {e.strerror}; pass --out a writable directory") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunDirError(f"the run directory {out} is not writable; pass --out a writable directory")


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
    console: ConsoleConfig | None = None,
    probe_hook: ProbeHook | None = None,
    allow_incomplete: bool = False,
    skip_bad_shards: bool = False,
    overwrite: bool = False,
    resume_with_changes: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Train for cfg.steps steps (or until SIGTERM) and return a summary dict (the same on every rank,
    but `rank`, `params_sha256`).

    stop_after: stop (with a checkpoint) once this many steps are done, keeping the schedule
    of cfg.steps, e.g. for jobs with a time limit that `--resume` later. probe_hook: called
    by rank 0 at every validation with the UNet; its values go into the validation record.
    `weights_sha256` is the sha256 of the last written model.safetensors (equal to `sha256sum`).
    A run directory holding a run is refused unless `resume` (its recorded settings must match,
    but `resume_with_changes` fields) or `overwrite` (the old run is moved aside): `train.rundir`.
    """
    rank, world, _, dev = setup_distributed(device, cfg.dist_timeout_s)
    out = Path(out)
    is_main = rank == 0
    say = log if is_main else (lambda msg: None)
    if is_main:
        prepare_out(out)

    # resume: the checkpoint's state first (the stream position and tasks open the feed)
    start, state = 0, None
    ckpt = resolve_checkpoint(out) if resume and (out / "checkpoints" / "latest").is_file() else None
    if ckpt is not None:
        state = load_state(ckpt)
        start = int(state["step"])
    feed = open_feed(cfg, store, dev, rank, world, engine_cfg=engine_cfg, stream_state=(state or {}).get("stream"),
                     elastic=elastic, allow_incomplete=allow_incomplete, skip_bad_shards=skip_bad_shards)
    crop = validate_crop(cfg.crop, feed.volume_shape, cfg.divisor, str(store or "the engine config"))
    # the run directory: refused when it holds a run (unless --resume / --overwrite), settings compared on
    # --resume. Every rank checks the untouched directory first (so all refuse together, none waits in a
    # collective); then rank 0 alone checks again and moves, cleans and records; the others wait for it
    settings = run_settings(cfg, store_manifest_hash=feed.manifest_hash, engine_config_hash=feed.engine_config_hash,
                            world_size=world)
    allow = tuple(resume_with_changes) + (("world_size",) if elastic else ())
    prepare_run_dir(out, resume=resume, overwrite=overwrite, settings=settings, allow_changes=allow, rank0=False)
    barrier()
    prep = prepare_run_dir(out, resume=resume, overwrite=overwrite, settings=settings, allow_changes=allow, rank0=True) \
        if is_main else None
    barrier()
    for note in prep.notes if prep is not None else ():
        say(note)
    if resume and prep is not None and prep.resumed and ckpt is None:
        say(f"--resume: no checkpoint in {out} yet, starting from step 0")

    net = build_pretrainer(cfg, feed.views).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    if ckpt is not None and state is not None:
        load_weights(ckpt, net.model)
        net.criterion.heads.load_state_dict(state["heads"])
        opt.load_state_dict(state["optimizer"])
        say(f"resumed from {ckpt} at step {start}")

    model: nn.Module = net
    if cfg.compile:  # the UNet only: the loss samples voxels with Python control flow
        net.model.forward_with_taps = torch.compile(net.model.forward_with_taps)  # type: ignore[method-assign]
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    amp = cfg.amp and dev.type == "cuda"
    record_extra = {"engine_config_hash": feed.engine_config_hash, "store_manifest_hash": feed.manifest_hash,
                    "train_config": cfg.to_dict(), "taps": list(net.criterion.taps), "world_size": world,
                    "sample_schema_version": SCHEMA_VERSION, "views": feed.views, "source": cfg.source,
                    "store": str(store) if store else None}

    con = Console(log, console or ConsoleConfig(), cfg.steps, start, enabled=is_main)
    runlog = None
    if is_main:
        write_json(out / "config.json", {"train": cfg.to_dict(), "store": str(store) if store else None,
                                         "world_size": world, "device": str(dev)}, indent=2, sort_keys=False)
        runlog = RunLog(out, start, cfg.tensorboard, say)
        _header(con, cfg, feed.describe(), out, start, dev, world, net, crop, probe_hook is not None)
    val_items = feed.val_samples() if (is_main and cfg.val_samples) else []
    last_saved: list[Path] = []

    def save(step: int) -> None:
        pos = torch.tensor(feed.positions, dtype=torch.int64)
        allpos = [p.tolist() for p in all_gather(pos, world)]
        if is_main:
            stream = {"world": world, "workers": feed.workers, "positions": allpos}
            if feed.tasks is not None:
                stream["tasks"] = feed.tasks
            st = {"step": step, "optimizer": opt.state_dict(), "heads": net.criterion.heads.state_dict(), "stream": stream}
            last_saved[:] = [save_checkpoint(out, step, net.model, st, record_extra, keep=cfg.keep)]
            con.say(f"saved {last_saved[0]}")

    stop = StopFlag()
    stop.install()
    net.train()
    t_start, done, stopped, skipped = time.perf_counter(), start, False, 0
    if start >= cfg.steps:
        con.say(f"nothing to do: the run is at step {start} >= --steps {cfg.steps}")
    batches = feed.batches(start)
    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            batch = next(batches)
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
            # the summed losses, skipped shards and the stop flag all ranks agree on; then the indices for the log
            stats = torch.tensor([loss.item()] + [per[t].item() for t in net.criterion.taps]
                                 + [float(len(batch["bad_shards"])), float(stop.set)], dtype=torch.float64)
            stats = all_reduce_sum(stats)
            idx = all_gather(torch.tensor(batch["index"], dtype=torch.int64), world)
            dt = time.perf_counter() - t0
            skipped += int(stats[-2].item())
            if is_main:
                rec = {"step": step, "loss": stats[0].item() / world,
                       "taps": {t: stats[1 + i].item() / world for i, t in enumerate(net.criterion.taps)},
                       "lr": lr, "grad_norm": float(gnorm), "samples_per_s": world * cfg.batch_size / dt,
                       "data_wait": t_data / dt, "indices": [i.tolist() for i in idx], "time": time.time()}
                if "render_s" in batch:  # seconds rendering / painting this batch's views on the fly
                    rec["render_s"] = batch["render_s"]
                if skipped:  # damaged shards skipped (--skip-bad-shards) since the last record
                    rec["skipped_shards"] = skipped
                if runlog is not None and (step % cfg.log_every == 0 or step == cfg.steps - 1):
                    runlog.write(rec)
                    skipped = 0
                con.step(step, rec["loss"], lr, rec["samples_per_s"], rec["data_wait"], dt, int(stats[-2].item()))
            if is_main and (val_items or probe_hook) and ((step + 1) % cfg.val_every == 0 or step == cfg.steps - 1):
                vrec = _validation(step, net, val_items, crop, cfg, dev, probe_hook)
                if runlog is not None:
                    runlog.write(vrec)
                con.say(f"step {step + 1:6d}  " + "  ".join(f"{k} {v:.4f}" for k, v in vrec.items()
                                                          if k != "step" and not k.endswith("seconds")))
            done = step + 1
            if stats[-1].item() > 0:
                con.say(f"stop requested (SIGTERM): saving at step {done} and exiting")
                save(done)
                stopped = True
                break
            if done % cfg.ckpt_every == 0 or done == cfg.steps or done == stop_after:
                save(done)
            if done == stop_after:
                break
    finally:
        batches.close()  # ends the loader workers now, not at garbage collection
        stop.restore()
        con.close()
        if runlog is not None:
            runlog.close()
    latest = last_saved[0] if last_saved else (resolve_checkpoint(out) if is_main and (out / "checkpoints" / "latest").is_file() else None)
    # the record holds the written file's sha256 (save_checkpoint hashed it): no second read of the weights
    sha = load_record(latest).get("sha256") if is_main and latest is not None else None
    return {"out": str(out), "start": start, "steps": done, "stopped": stopped,
            "seconds": time.perf_counter() - t_start, "world_size": world, "rank": rank,
            "weights_sha256": broadcast_object(sha), "params_sha256": _params_hash(net)}


def _header(con: Console, cfg: TrainConfig, source: str, out: Path, start: int, dev: torch.device, world: int,
            net: Pretrainer, crop: tuple[int, int, int], probes: bool) -> None:
    n_model = sum(p.numel() for p in net.model.parameters())
    n_heads = sum(p.numel() for p in net.criterion.parameters())
    con.say(f"pretrain: {source}")
    con.say(f"  out {out}  steps {start}->{cfg.steps}  device {dev}  world size {world}  "
            f"parameters {n_model / 1e6:.2f}M UNet + {n_heads / 1e6:.2f}M heads  widths {list(cfg.widths)}")
    con.say(f"  crop {'x'.join(map(str, crop))}  batch {cfg.batch_size} per rank ({cfg.batch_size * world} in all)  "
            f"lr {cfg.lr:g} (warm-up {cfg.warmup_steps} steps)  val {cfg.val_samples} samples every {cfg.val_every} steps"
            + ("  probes on" if probes else ""))
    if cfg.steps < cfg.warmup_steps:
        con.say(f"warning: --steps {cfg.steps} is shorter than the warm-up ({cfg.warmup_steps} steps): the lr peaks at "
                f"{lr_at(cfg.steps - 1, cfg):.2e}, never its target {cfg.lr:g}; train longer or lower train.warmup_steps")


def _params_hash(model: nn.Module) -> str:
    """sha256 over a module's parameters (equal on every rank under DDP), to compare ranks."""
    h = hashlib.sha256()
    for k, v in sorted(model.named_parameters()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _validation(step: int, net: Pretrainer, items: list[dict[str, Any]], crop: tuple[int, int, int], cfg: TrainConfig,
                dev: torch.device, probe_hook: ProbeHook | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"step": step}
    if items:
        rec["val_loss"] = validate(net, items, crop, cfg, dev)
    if probe_hook is not None:
        rec.update(probe_hook(net.model, step + 1))
    return rec


@torch.no_grad()
def validate(net: Pretrainer, items: list[dict[str, Any]], crop: tuple[int, int, int], cfg: TrainConfig, dev: torch.device) -> float:
    """Mean loss over held-out samples: centre crop (the training crop's code), no augmentation, fixed voxel sampling."""
    was = net.training
    net.eval()
    losses = []
    for it in items:
        v = torch.as_tensor(it["views"]).to(dev)
        lab = it["labels"]
        lab = (torch.from_numpy(lab.astype(np.int64)) if isinstance(lab, np.ndarray) else lab).to(dev).long()
        v, lab = centre_crop(v[None], lab[None], crop)
        v = minmax(to_float_views(v[0]))
        loss, _ = net(v[:, None], lab, torch_generator(cfg.seed, int(it["index"]), "train.val"))
        losses.append(loss.item())
    net.train(was)
    return float(sum(losses) / len(losses))
