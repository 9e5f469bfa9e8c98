"""The trainer shared by every model, so that only the model differs between runs.

* AdamW with three parameter groups: SSM dynamics parameters (A, Δ, B, C, D of every
  SSMLayer; see ``SSMLayer.dynamics_parameters``) get ``ssm_lr`` and no weight decay (S4,
  S5); biases, norm weights and other vectors get ``lr`` and no weight decay; matrices get
  ``lr`` and ``weight_decay``.
* Linear warmup for ``warmup_steps``, then cosine decay to 0 at ``max_steps``.
* Gradient clipping by global norm; bf16 autocast and optional ``torch.compile`` on GPU.
* Seeds: the model is initialised from the run seed (by the caller); the order of
  training batches is a function of (seed, epoch) alone, so a resumed run sees exactly
  the batches it would have seen.
* A task with a curriculum (``Task.train_stage``: e.g. the length curriculum of the
  state-tracking tasks) gives the stage of each step; the batches of a stage come from that
  stage's training data (``Task.train_split``), epochs counted from the stage's first step,
  so the order is a function of (seed, stage, epoch) and a resumed run still sees exactly
  the batches it would have seen. A task without one has a single stage: the train split.
* Metrics a task derives from an evaluation (``Task.derived_metrics``, e.g. scaled
  accuracy) are recorded beside the metric: in the curve (``val_<name>``), at the last and
  at the best validation (``final_val_<name>``, ``best_val_<name>``: the value at the
  evaluation with the best metric), for the test split (``test_<name>``) and for every extra
  evaluation (``<set>_<name>``).
* Evaluation on the validation split every ``eval_every`` steps and at the end; a
  checkpoint at each evaluation (model, optimiser, schedule, RNG state, curve), from which
  an interrupted run resumes.
* ``threads`` sets torch's CPU threads (null: torch's default, one per core); parallel
  launchers on one machine should give each run cores / n_jobs threads.
* A non-finite loss stops the run with status ``diverged``; ``time_budget_s`` stops it
  early with ``stopped_by='time_budget'``.
* Times: ``train_time_s`` counts the training steps only (forward, backward, optimiser),
  except the steps that run under the memory profiler on a CPU, the first of each curriculum
  stage (its tokens are left out of ``tokens_per_s`` too, not out of ``tokens_seen``);
  ``wall_time_s`` counts everything the run's processes spent in :meth:`Trainer.fit`
  (training, evaluation, checkpoints), summed over every process when a run was resumed.
* Peak memory is the run's own (``ablate.memory.RunMemory``), not the process's.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from models import SSMLayer

from .config import TrainerConfig
from .files import atomic_write
from .memory import RunMemory, held_bytes
from .preemption import Preempted, PreemptionWatcher
from .tasks import Split, Task

log = logging.getLogger(__name__)


def parameter_groups(model: nn.Module, cfg: TrainerConfig) -> tuple[list[dict], dict[str, list[str]]]:
    """AdamW groups and the parameter names in each ('ssm', 'no_decay', 'decay')."""
    dynamics = set()
    for prefix, module in model.named_modules():
        if isinstance(module, SSMLayer):
            dynamics.update(f"{prefix}.{name}" if prefix else name for name in module.dynamics_parameters())
    names: dict[str, list[str]] = {"ssm": [], "no_decay": [], "decay": []}
    params: dict[str, list[nn.Parameter]] = {"ssm": [], "no_decay": [], "decay": []}
    for name, p in model.named_parameters():
        group = "ssm" if name in dynamics else ("no_decay" if p.ndim < 2 else "decay")
        names[group].append(name)
        params[group].append(p)
    settings = {"ssm": (cfg.ssm_lr, 0.0), "no_decay": (cfg.lr, 0.0), "decay": (cfg.lr, cfg.weight_decay)}
    groups = [dict(params=params[g], lr=settings[g][0], weight_decay=settings[g][1], name=g)
              for g in names if params[g]]
    return groups, names


def warmup_cosine(warmup: int, total: int):
    """Multiplier of the base learning rate at a step (LambdaLR)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def spread_over_gpus(device: str, job_number: int) -> str:
    """``auto`` on a machine with several GPUs: job n of a sweep uses GPU n mod count, so
    parallel runs (joblib launcher) spread one per GPU. Anything else is kept."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto" and count > 1:
        return f"cuda:{job_number % count}"
    return device


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} is not valid: no CUDA device is available; expected 'cpu' or 'auto'")
    return torch.device(name)


@dataclass
class TrainResult:
    status: str
    stopped_by: str
    steps: int
    metrics: dict[str, Any]
    curve: list[dict[str, Any]]
    param_groups: dict[str, list[str]] = field(default_factory=dict)


class Trainer:
    def __init__(self, cfg: TrainerConfig, seed: int, checkpoint_path: str | None = None):
        self.cfg = cfg
        self.seed = seed
        self.checkpoint_path = checkpoint_path if cfg.checkpoint else None
        self.device = resolve_device(cfg.device)
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        self.autocast = self.device.type == "cuda" and cfg.precision in ("auto", "bf16")
        self.steps_done = 0  # optimiser steps taken by the run so far (resumed ones included)

    # ------------------------------------------------------------------ data order
    def _batch(self, train: Split, step: int, cache: dict, stage: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` (counted from the first step of curriculum ``stage``) of ``train``."""
        n = len(train)
        per_epoch = max(1, n // self.cfg.batch_size)  # drop the last partial batch
        epoch, index = divmod(step, per_epoch)
        if cache.get("epoch") != (stage, epoch):
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 7_919 * stage)
            cache["epoch"], cache["order"] = (stage, epoch), torch.randperm(n, generator=generator)
        idx = cache["order"][index * self.cfg.batch_size : (index + 1) * self.cfg.batch_size]
        return train.x[idx].to(self.device), train.y[idx].to(self.device)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, task: Task, split: Split,
                 memory: RunMemory | None = None, held: Callable[[], int] = lambda: 0) -> dict[str, float]:
        """Mean loss and metric over the scored positions of ``split`` (each batch's mean loss
        weighted by its scored positions); with ``memory``, its first batch is measured."""
        was_training = model.training
        model.eval()
        loss_sum, metric_sum, items = 0.0, 0.0, 0
        # the same number of tokens per batch at any length (extrapolation sets are longer)
        batch_size = max(1, self.cfg.eval_batch_size * task.spec.length // split.x.shape[1])
        for batch in split.batches(batch_size, shuffle=False):
            batch = batch.to(self.device)
            out = memory.measure("eval", lambda: self._forward(model, batch.x), held) if memory else \
                self._forward(model, batch.x)
            s, k = task.score(out, batch.y)
            if k:  # a batch without a scored position has no loss (a mean over nothing)
                loss_sum += task.loss(out, batch.y).item() * k
            metric_sum, items = metric_sum + s, items + k
        model.train(was_training)
        scores = {"loss": loss_sum / max(1, items), task.spec.metric: metric_sum / max(1, items)}
        return scores | task.derived_metrics(scores)

    def _forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            return model(x)

    # ------------------------------------------------------------------ checkpoints
    def _save(self, state: dict) -> None:
        if self.checkpoint_path:
            atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def _load(self) -> dict | None:
        if not self.checkpoint_path or not os.path.exists(self.checkpoint_path):
            return None
        try:
            # on the CPU: the RNG states must stay there (torch.set_rng_state takes a CPU tensor);
            # load_state_dict moves the weights and the optimiser state to the parameters' device
            return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        except Exception as err:  # a checkpoint torn by a crash: start over
            log.warning("ignoring unreadable checkpoint %s (%s)", self.checkpoint_path, err)
            return None

    def remove_checkpoint(self) -> None:
        if self.checkpoint_path and os.path.exists(self.checkpoint_path):
            os.remove(self.checkpoint_path)

    # ------------------------------------------------------------------ training
    def fit(self, model: nn.Module, task: Task, label: str = "") -> TrainResult:
        """Train, evaluate on schedule, test at the end. Raises :class:`Preempted` (after
        saving a checkpoint) when SIGTERM or SIGUSR1 arrives."""
        with PreemptionWatcher() as watcher:
            return self._fit(model, task, label, watcher)

    def _fit(self, model: nn.Module, task: Task, label: str, watcher: PreemptionWatcher) -> TrainResult:
        cfg, metric = self.cfg, task.spec.metric
        model.to(self.device).train()
        groups, group_names = parameter_groups(model, cfg)
        optimizer = torch.optim.AdamW(groups)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.warmup_steps, cfg.max_steps))
        forward = torch.compile(model) if (cfg.compile and self.device.type == "cuda") else model
        val = task.split("val")
        step, curve, best, train_time, tokens, running = 0, [], None, 0.0, 0, None
        began, earlier_wall_time, untimed_tokens = time.perf_counter(), 0.0, 0

        def checkpoint() -> None:
            self._save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                        "step": step,
                        "curve": curve, "best": best, "train_time": train_time, "tokens": tokens,
                        "running": running, "wall_time": earlier_wall_time + time.perf_counter() - began,
                        "untimed_tokens": untimed_tokens, "memory": memory.state()})

        saved = self._load()
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            torch.set_rng_state(saved["rng"])
            if saved.get("cuda_rng") is not None and self.device.type == "cuda":  # dropout on the GPU
                torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
            step, curve, best = saved["step"], saved["curve"], saved["best"]
            train_time, tokens, running = saved["train_time"], saved["tokens"], saved["running"]
            earlier_wall_time, untimed_tokens = saved.get("wall_time", 0.0), saved.get("untimed_tokens", 0)
            log.info("%s resumed from step %d", label, step)
        self.steps_done = step
        memory = RunMemory(self.device, saved.get("memory") if saved is not None else None)

        def held() -> int:
            return held_bytes(model, optimizer)

        def train_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            """One optimiser step on a batch (none if the loss is not finite); returns the loss."""
            loss = task.loss(self._forward(forward, x), y)
            if torch.isfinite(loss):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                schedule.step()
            return loss.detach()

        cache: dict = {}
        status, stopped_by = "ok", "max_steps"
        bar = tqdm(total=cfg.max_steps, initial=step, desc=label, disable=not cfg.progress, leave=False)
        while step < cfg.max_steps:
            if watcher.requested:
                checkpoint()
                bar.close()
                raise Preempted(watcher.received, step, watcher)
            stage, first = task.train_stage(step, cfg.max_steps)
            x, y = self._batch(task.train_split(stage), step - first, cache, stage)
            kind = f"train, stage {stage}"  # each stage of a curriculum has its own shapes
            profiled = memory.will_profile(kind)
            start = time.perf_counter()
            loss = memory.measure(kind, lambda: train_step(x, y), held)
            if not torch.isfinite(loss):
                status, stopped_by = "diverged", "nan"
                log.warning("%s diverged at step %d (loss %s)", label, step, loss.item())
                break
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            if profiled:
                untimed_tokens += x.shape[0] * x.shape[1]
            else:
                train_time += time.perf_counter() - start
            tokens += x.shape[0] * x.shape[1]
            step += 1
            self.steps_done = step
            running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
            bar.update(1)
            over_budget = cfg.time_budget_s is not None and train_time >= cfg.time_budget_s
            if step % cfg.eval_every == 0 or step == cfg.max_steps or over_budget:
                scores = self.evaluate(model, task, val, memory, held)
                curve.append({"step": step, "train_time_s": train_time, "tokens": tokens, "train_loss": running,
                              **{f"val_{name}": value for name, value in scores.items()}})
                if best is None or _better(scores[metric], best, task.spec.higher_is_better):
                    best = scores[metric]
                bar.set_postfix(loss=f"{running:.3f}", **{metric: f"{scores[metric]:.3f}"},
                                tok_s=f"{tokens / max(train_time, 1e-9):.0f}")
                checkpoint()
            if over_budget:
                stopped_by = "time_budget"
                break
        bar.close()
        timed = tokens - untimed_tokens
        metrics: dict[str, Any] = {"train_time_s": train_time, "tokens_seen": tokens,
                                   "tokens_per_s": timed / train_time if train_time > 0 else float("nan")}
        if status == "ok":
            final_val = curve[-1] if curve else {}
            metrics.update({f"final_val_{metric}": final_val.get(f"val_{metric}"), "final_val_loss": final_val.get("val_loss"),
                            f"best_val_{metric}": best})
            best_row = next((row for row in curve if row.get(f"val_{metric}") == best), {})
            for key in [k for k in final_val if k.startswith("val_") and k not in ("val_loss", f"val_{metric}")]:
                # derived metrics: at the last evaluation, and at the one with the best metric
                metrics.update({f"final_{key}": final_val[key], f"best_{key}": best_row.get(key)})
            test = self.evaluate(model, task, task.split("test"))
            metrics.update({f"test_{name}": value for name, value in test.items()})
            for name, split in task.extra_evaluations().items():
                extra = self.evaluate(model, task, split)
                metrics.update({f"{name}_{key}": value for key, value in extra.items() if key != "loss"})
        if watcher.requested:  # a signal during the final evaluations: stop, resume from here
            checkpoint()
            raise Preempted(watcher.received, step, watcher)
        metrics.update(memory.record())
        metrics["wall_time_s"] = earlier_wall_time + time.perf_counter() - began
        return TrainResult(status=status, stopped_by=stopped_by, steps=step, metrics=metrics, curve=curve,
                           param_groups=group_names)


def _better(value: float, best: float, higher: bool) -> bool:
    return value > best if higher else value < best
