"""The training loop shared by all four stages: path sampling, SGD step, logging, evaluation, checkpoints, resume.

A stage hands over a `StageSpec` (model, data, loss, how to evaluate, what the checkpoint sidecar says); the loop
owns everything that must be identical across stages: iteration-based schedule, exact resume, DDP, AMP.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from detnas.arch import Arch
from detnas.checkpoint import CheckpointMeta, checkpoint_paths, save_checkpoint, tensor_digest
from detnas.distributed import DistContext, gather_objects
from detnas.errors import DetnasError
from detnas.io import atomic_write_json, read_json_file, remove_stale_temps
from detnas.lock import RUN_MARKERS, output_lock
from detnas.space import SearchSpace
from detnas.supernet import Supernet
from detnas.train.data import SeededBatchSampler, SeededDataset
from detnas.train.optim import OffPath, build_optimizer, drop_grads, lr_at, set_lr
from detnas.train.progress import ProgressReporter
from detnas.train.recipes import TrainConfig, from_mapping
from detnas.train.sampling import broadcast_arch, make_sampler
from detnas.train.state import CheckpointDir, load_optimizer_state, optimizer_state, rng_state, set_rng_state

LossFn = Callable[[nn.Module, Any, torch.device], tuple[torch.Tensor, int]]


@dataclass
class StageSpec:
    """What a stage gives the loop."""

    kind: str  # supernet-cls | supernet-det | child-cls | child-det
    cfg: TrainConfig
    model: nn.Module  # on its device, not yet wrapped in DDP
    weights: Callable[[], dict[str, torch.Tensor]]  # the tensors a checkpoint stores
    load_weights: Callable[[dict[str, torch.Tensor]], None]
    meta: CheckpointMeta  # the checkpoints' sidecar (kind, space, arch, pixels, classes, ...) but the iteration
    train_set: Any
    collate: Callable[[list], Any] | None
    loss: LossFn
    supernet: Supernet | None = None  # set for supernet stages: a path is sampled every iteration
    set_arch: Callable[[Arch], None] | None = None
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    extra_state: dict[str, Any] = field(default_factory=dict)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   off_path: list[nn.Parameter] | tuple = ()) -> None:
    """Backward, forget off-path gradients (so SGD leaves those parameters and buffers alone), step, clear."""
    scaler.scale(loss).backward()
    drop_grads(off_path)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _start_run_dir(spec: StageSpec, ckpts: CheckpointDir, resume: bool) -> int | None:
    """Fresh run: refuse to mix with an old run's checkpoints. Resume: the recipe must be the one saved."""
    out = Path(spec.cfg.out)
    saved = out / "config.json"
    latest = ckpts.latest()
    if not resume:
        if latest is not None:
            raise DetnasError(f"{out}: already holds checkpoints (latest iteration {latest}); pass --resume to "
                              "continue that run or choose another --out")
        return None
    if latest is None:
        raise DetnasError(f"{out}: no complete checkpoint to resume from; start without --resume")
    old = from_mapping(read_json_file(saved, "run's saved config", "it is needed to resume; start a new run in another "
                                      "--out"), source=str(saved))
    changed = [k for k, v in spec.cfg.recipe_dict().items() if old.recipe_dict()[k] != v]
    if changed:
        diffs = ", ".join(f"{k}: {old.recipe_dict()[k]!r} -> {spec.cfg.recipe_dict()[k]!r}" for k in changed)
        raise DetnasError(f"{out}: --resume with a changed recipe ({diffs}); resume with the saved "
                          f"config.json or start a new run in another --out")
    return latest


def _check_resumed_meta(spec: StageSpec, meta: CheckpointMeta, where: Path) -> None:
    """A resumed run continues the saved one: the same stage kind, space, arch, classes and detector."""
    run = spec.meta
    for name, saved, wanted in (("kind", meta.kind, run.kind), ("space", meta.space, run.space),
                                ("arch", meta.arch, run.arch), ("classes", meta.classes, run.classes),
                                ("detector", meta.detector, run.detector)):
        if saved != wanted:
            raise DetnasError(f"{where}: checkpoint '{name}' is {_shown(saved)} but this run has {_shown(wanted)}; "
                              "resume with the same data, arch and stage")


def _shown(value: Any) -> str:
    if isinstance(value, SearchSpace):
        return f"'{value.name}' ({value.digest})"
    if isinstance(value, Arch):
        return repr(value.compact())
    return repr(list(value) if isinstance(value, tuple) else value)


def fit(spec: StageSpec, ctx: DistContext, resume: bool = False) -> Path:
    """Train `spec` to `cfg.iterations` (or `stop_at`); returns the final weights (`<out>/final.safetensors`),
    or the checkpoint it stopped at. The main process holds the output folder (`output_lock`) throughout."""
    with output_lock(spec.cfg.out, kind="training") if ctx.is_main else nullcontext():
        return _fit(spec, ctx, resume)


def _fit(spec: StageSpec, ctx: DistContext, resume: bool) -> Path:
    cfg = spec.cfg
    out = Path(cfg.out)
    if cfg.batch_size % ctx.world:
        raise DetnasError(f"batch_size {cfg.batch_size} must be divisible by the {ctx.world} processes")
    if len(spec.train_set) == 0:
        raise DetnasError(f"{cfg.data}: the training set is empty; point --images at a folder with images")
    ckpts = CheckpointDir(out, cfg.keep_last)
    start_ckpt = _start_run_dir(spec, ckpts, resume)
    ctx.barrier()  # every rank has checked before rank 0 writes anything
    if ctx.is_main:
        for folder in (out, ckpts.root, out / "ranks"):
            remove_stale_temps(folder)  # what a kill -9 of an earlier run left half-written
    if ctx.is_main and start_ckpt is None:
        atomic_write_json(out / RUN_MARKERS["training"], cfg.to_dict())

    model = spec.model
    optimizer = build_optimizer(model, cfg)
    use_amp = cfg.amp and ctx.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    # seeded per rank on purpose: only the broadcast from rank 0 makes the ranks agree on the path
    sampler = make_sampler(cfg.sampler, spec.supernet.space, cfg.seed + ctx.rank, cfg.flops_bins) \
        if spec.supernet else None
    off_path = OffPath(spec.supernet) if spec.supernet is not None else None
    start = 0
    if start_ckpt is not None:
        weights, meta, state_tensors, state_meta = ckpts.load(start_ckpt)
        _check_resumed_meta(spec, CheckpointMeta.from_dict(meta, checkpoint_paths(ckpts.base(start_ckpt))[1]),
                            ckpts.base(start_ckpt))
        spec.load_weights(weights)
        load_optimizer_state(optimizer, state_tensors, state_meta["optimizer"])
        if sampler is not None:
            sampler.load_state_dict(state_meta["sampler"])
        if use_amp and state_meta.get("scaler"):
            scaler.load_state_dict(state_meta["scaler"])
        if str(ctx.rank) in state_meta["rng"]:
            set_rng_state(f"rng.{ctx.rank}", state_tensors, state_meta["rng"][str(ctx.rank)])
        start = start_ckpt

    wrapped: nn.Module = model
    if ctx.active:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=spec.supernet is not None)
    per_rank = cfg.batch_size // ctx.world
    loader = DataLoader(SeededDataset(spec.train_set),
                        batch_sampler=SeededBatchSampler(len(spec.train_set), per_rank, cfg.seed, ctx.rank, ctx.world,
                                                         start),
                        num_workers=cfg.workers, collate_fn=spec.collate, pin_memory=ctx.device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))
    batches = iter(loader)
    progress = ProgressReporter(out, cfg.iterations, start, ctx.is_main, spec.kind)
    paths_digest = hashlib.sha256()

    def save(iteration: int) -> None:
        rng = gather_objects(rng_state(f"rng.{ctx.rank}"), ctx)
        if not ctx.is_main:
            return
        opt_tensors, opt_meta = optimizer_state(optimizer)
        state_tensors = dict(opt_tensors)
        rng_meta = {}
        for rank, (tensors, meta) in enumerate(rng):
            state_tensors.update(tensors)
            rng_meta[str(rank)] = meta
        state_meta = {"optimizer": opt_meta, "rng": rng_meta, "iteration": iteration,
                      "sampler": sampler.state_dict() if sampler else None,
                      "scaler": scaler.state_dict() if use_amp else None}
        path = ckpts.save(iteration, spec.weights(), spec.meta.with_extra(iteration=iteration).to_dict(), state_tensors,
                          state_meta)
        progress.event(iteration, "checkpoint", {"path": str(path)})

    def evaluate(iteration: int) -> None:
        if spec.evaluate is not None and ctx.is_main:
            model.eval()
            with torch.no_grad():
                results = spec.evaluate(model)
            model.train()
            progress.event(iteration, "eval", results)
        ctx.barrier()

    model.train()
    if start == 0 and cfg.eval_every:
        evaluate(0)  # the starting point of the curve
    end = cfg.stop_at if 0 < cfg.stop_at < cfg.iterations else cfg.iterations
    window_start, window_images = time.perf_counter(), 0
    try:
        for it in range(start, end):
            batch = next(batches)
            arch = None
            if sampler is not None:
                arch = broadcast_arch(sampler.sample(), ctx.device)
                spec.set_arch(arch)
                paths_digest.update(arch.compact().encode() + b";")
            lr = lr_at(cfg, it)
            set_lr(optimizer, lr)
            autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
            with autocast:
                loss, images = spec.loss(wrapped, batch, ctx.device)
            if not torch.isfinite(loss):
                raise DetnasError(f"loss is {loss.item()} at iteration {it}; lower the learning rate (--set lr=...) "
                                  "and resume from the last checkpoint")
            optimizer_step(loss, optimizer, scaler, off_path(arch) if arch is not None else ())
            done = it + 1
            window_images += images * ctx.world
            log = done % cfg.log_every == 0 or done == cfg.iterations
            values = {"loss": float(loss.item()), "lr": lr}
            if log:
                elapsed = time.perf_counter() - window_start
                values["img_s"] = window_images / elapsed if elapsed > 0 else 0.0
                window_start, window_images = time.perf_counter(), 0
                if arch is not None:
                    values["path"] = arch.compact()
            progress.step(done, values, log)
            if done % cfg.checkpoint_every == 0 or done == end:
                save(done)
            if (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.iterations:
                evaluate(done)
    finally:
        progress.close()

    if end < cfg.iterations:
        ctx.barrier()
        return ckpts.base(end).with_suffix(".safetensors")
    final = out / "final"
    if ctx.is_main:
        save_checkpoint(final, spec.weights(), spec.meta.with_extra(iteration=cfg.iterations).to_dict())
    if ctx.active:
        atomic_write_json(out / "ranks" / f"rank{ctx.rank}.json",
                          {"rank": ctx.rank, "world": ctx.world, "backend": dist.get_backend(),
                           "sync_bn": any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()),
                           "paths_sha256": paths_digest.hexdigest(),
                           "parameters_sha256": tensor_digest(dict(model.named_parameters()))[:16]})
    ctx.barrier()
    return final.with_name("final.safetensors")
