"""Data-parallel pretraining across processes and machines with ``torch.distributed`` (DDP).

A one-shot model (``recipes/sdtalk.py``) is pretrained once on many identities instead of being fitted
to one subject, so it does not go through ``engine.trainer``; this module is its training loop, with
the engine's checkpoints (``engine.checkpoint``: safetensors + JSON, digest-checked), configs and
stage selection.

How processes are started (like ``torchrun``):

- ``launch(spec, nproc)`` on one machine spawns ``nproc`` worker processes
  (``torch.multiprocessing.start_processes``, start method ``spawn``) that rendezvous over TCP on
  127.0.0.1 at a free port;
- started by ``torchrun`` itself (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` in the environment), the
  process is one worker of torchrun's group (``init_method="env://"``): several machines join
  through torchrun's rendezvous options (docs/sdtalk.md shows the command).

Backend: gloo on CPU tensors, NCCL when the job runs on CUDA devices (``process_backend``). Each
worker wraps the model in ``DistributedDataParallel``: gradients are all-reduced (averaged) by DDP
during ``backward``; nothing here sums gradients by hand.

Determinism: the global batch of step ``s`` is a function of (seed, s) only (the job's ``draw``);
process ``r`` of ``W`` takes items ``[r*B, (r+1)*B)``. So W processes x batch B see exactly the
samples of 1 process x batch W*B, and with loss terms that are means over the batch, DDP's averaged
gradient is the gradient of the global mean: both runs reach the same parameters (up to the order
of float sums). A resumed run draws what an uninterrupted one would (no generator state to carry).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from talksplat.engine.checkpoint import latest_checkpoint, load_latest_valid, save_checkpoint
from talksplat.engine.contract import Stage
from talksplat.engine.trainer import stage_at, total_iterations
from talksplat.errors import TalksplatError

CHECKPOINTS = "checkpoints"
CONFIG_JSON = "config.json"
LOG_JSONL = "log.jsonl"
SUMMARY_JSON = "summary.json"
LOCALHOST = "127.0.0.1"
# The first steps pay one-off costs (kernel builds, allocator warm-up): throughput skips them.
WARMUP_STEPS = 2


@dataclass
class PretrainJob:
    """What a recipe hands the distributed loop (built in every process, identically).

    ``model``: an ``nn.Module`` whose ``forward(samples, stage_name)`` returns unweighted loss terms
    (means over ``samples``) and whose ``param_groups()`` lists ``{"name", "params", "lr"}``;
    ``stages``: ``Stage``s whose ``trains`` name those groups; ``draw(step, n)``: the step's global
    batch (n items, a function of the step only); ``make(item)``: an item as the model's sample;
    ``weights``: loss weights by term; ``subjects``: what the model trains on (recorded in checkpoints
    and the summary)."""

    model: nn.Module
    stages: list[Stage]
    draw: Callable[[int, int], list]
    make: Callable[[object], object]
    weights: dict[str, float]
    subjects: list[dict] = field(default_factory=list)


@dataclass
class LaunchSpec:
    """Everything a worker needs (pickled to spawned processes; ``build`` by reference)."""

    build: Callable[[list[str], object], PretrainJob]
    subject_dirs: list[str]
    config: object
    recipe: str
    out_dir: str
    batch_size: int                  # per process
    checkpoint_every: int
    threads: int | None = None       # torch threads per process; None = cores / processes
    quiet: bool = False
    stop_after: int | None = None    # stop (as if killed) after this global step; tests and benchmarks


def process_backend(device: torch.device | str = "cpu") -> str:
    """gloo for CPU tensors, NCCL for CUDA tensors (NCCL cannot reduce CPU tensors)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def launch(spec: LaunchSpec, nproc: int) -> dict:
    """Runs the pretraining on ``nproc`` local processes (or as one worker under torchrun) and returns
    the summary rank 0 wrote (empty for other torchrun ranks)."""
    if launched_by_torchrun():
        run_worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://", spec)
    elif nproc == 1:
        run_worker(0, 1, f"tcp://{LOCALHOST}:{free_port()}", spec)
    else:
        _spawn(spec, nproc)
    summary = Path(spec.out_dir) / SUMMARY_JSON
    return json.loads(summary.read_text()) if summary.is_file() else {}


def _spawn(spec: LaunchSpec, nproc: int) -> None:
    import torch.multiprocessing as mp

    init = f"tcp://{LOCALHOST}:{free_port()}"
    try:
        mp.start_processes(_spawned_worker, args=(nproc, init, spec), nprocs=nproc, join=True,
                           start_method="spawn")
    except mp.ProcessRaisedException as exc:
        # The worker's traceback is in the message; the user gets its last line (the error itself).
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise TalksplatError(f"a training process failed: {lines[-1] if lines else exc}") from None
    except mp.ProcessExitedException as exc:
        raise TalksplatError(f"a training process exited unexpectedly ({exc}); the newest checkpoint "
                             "resumes the run") from None


def _spawned_worker(rank: int, world: int, init: str, spec: LaunchSpec) -> None:
    run_worker(rank, world, init, spec)


def run_worker(rank: int, world: int, init_method: str, spec: LaunchSpec) -> None:
    """One process of the group: joins it, builds the job, trains, leaves."""
    threads = spec.threads or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    dist.init_process_group(process_backend("cpu"), init_method=init_method, rank=rank, world_size=world)
    try:
        job = spec.build(spec.subject_dirs, spec.config)
        DistributedPretrainer(job, spec, rank, world).run()
    finally:
        dist.destroy_process_group()


def select_trainable(groups: list[dict], stage: Stage) -> None:
    """Only the stage's groups require gradients: a frozen part (e.g. a renderer the motion stage
    backpropagates through) gets no gradient to compute or all-reduce."""
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(group["name"] in stage.trains)


# ------------------------------------------------------------------------------------ the loop
class DistributedPretrainer:
    """The loop in one process: DDP forward/backward, the stage's optimizers, logs and checkpoints."""

    def __init__(self, job: PretrainJob, spec: LaunchSpec, rank: int, world: int) -> None:
        self.job, self.spec, self.rank, self.world = job, spec, rank, world
        self.out = Path(spec.out_dir)
        self.optimizers = {g["name"]: torch.optim.Adam(g["params"], lr=g["lr"])
                           for g in job.model.param_groups() if g["params"]}
        # Stage 1 leaves the motion groups unused and stage 2 the frozen reconstruction: DDP must
        # look for unused parameters instead of waiting for their gradients.
        self.ddp = DistributedDataParallel(job.model, find_unused_parameters=True)
        self.total = total_iterations(job.stages)
        self.seconds = 0.0
        self.timed = {"steps": 0, "seconds": 0.0}
        self._trainable_for: Stage | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def run(self) -> None:
        start = self.resume()
        if start >= self.total and (self.out / SUMMARY_JSON).is_file():
            return          # already complete: its summary stands
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / CONFIG_JSON).write_text(json.dumps(dataclasses.asdict(self.spec.config), indent=1))
        bar = self._bar(start)
        recent: list[dict] = []
        for step in range(start, self.total):
            stage, _ = stage_at(self.job.stages, step)
            started = time.perf_counter()
            terms = self.train_step(step, stage)
            elapsed = time.perf_counter() - started
            self.seconds += elapsed
            if step - start >= WARMUP_STEPS:
                self.timed["steps"] += 1
                self.timed["seconds"] += elapsed
            recent = (recent + [terms])[-10:]
            if self.is_main:
                self._log(step, stage, terms, elapsed)
                bar.update(1)
                bar.set_postfix(stage=stage.name, loss=f"{terms['loss']:.4f}")
            done = step + 1
            if self._checkpoint_due(done):
                self.checkpoint(done)
            if self.spec.stop_after is not None and done >= self.spec.stop_after:
                break
        bar.close()
        if self.is_main and (self.spec.stop_after is None or self.spec.stop_after >= self.total):
            self.write_summary(recent)
        dist.barrier()

    def train_step(self, step: int, stage: Stage) -> dict[str, float]:
        if stage is not self._trainable_for:
            select_trainable(self.job.model.param_groups(), stage)
            self._trainable_for = stage
        b = self.spec.batch_size
        items = self.job.draw(step, b * self.world)[self.rank * b:(self.rank + 1) * b]
        terms = self.ddp([self.job.make(item) for item in items], stage.name)
        weights = self.job.weights
        loss = sum(weights[name] * value for name, value in terms.items() if weights.get(name, 0.0) != 0.0)
        loss.backward()          # DDP averages the gradients over the processes here
        for name in stage.trains:
            if name in self.optimizers:
                self.optimizers[name].step()
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        return self._mean_over_processes({"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}})

    def _mean_over_processes(self, values: dict[str, Tensor]) -> dict[str, float]:
        """Logged values averaged over the processes (for the log only; gradients are DDP's)."""
        stacked = torch.stack([v.float() for v in values.values()])
        if self.world > 1:
            dist.all_reduce(stacked)
            stacked /= self.world
        return dict(zip(values, stacked.tolist()))

    def _checkpoint_due(self, done: int) -> bool:
        stage_ends, total = set(), 0
        for stage in self.job.stages:
            total += stage.iterations
            stage_ends.add(total)
        return done % self.spec.checkpoint_every == 0 or done in stage_ends or \
            (self.spec.stop_after is not None and done == self.spec.stop_after)

    # -------------------------------------------------------------------------- state
    def state_tensors(self) -> dict[str, Tensor]:
        tensors = {f"modules/{k}": v for k, v in self.job.model.state_dict().items()}
        for group, optimizer in self.optimizers.items():
            for i, p in enumerate(optimizer.param_groups[0]["params"]):
                for key, value in optimizer.state.get(p, {}).items():
                    tensors[f"optim/{group}/{i}/{key}"] = torch.as_tensor(value)
        return tensors

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        modules = {k[len("modules/"):]: v for k, v in tensors.items() if k.startswith("modules/")}
        self.job.model.load_state_dict(modules, strict=True)
        for group, optimizer in self.optimizers.items():
            optimizer.state.clear()
            for i, p in enumerate(optimizer.param_groups[0]["params"]):
                state = {k.rsplit("/", 1)[1]: v.clone() for k, v in tensors.items()
                         if k.startswith(f"optim/{group}/{i}/")}
                if state:
                    optimizer.state[p] = state

    def checkpoint(self, done: int) -> None:
        if self.is_main:
            progress = {"step": done, "world_size": self.world, "batch_per_process": self.spec.batch_size,
                        "seconds": round(self.seconds, 2)}
            save_checkpoint(self.out / CHECKPOINTS, done, self.state_tensors(), recipe=self.spec.recipe,
                            config=self.spec.config, progress=progress,
                            subject={"subjects": self.job.subjects})
        dist.barrier()     # no process runs ahead of a checkpoint that a crash would resume from

    def resume(self) -> int:
        """The step to start from: that of the newest valid checkpoint (every process loads it)."""
        found = load_latest_valid(self.out / CHECKPOINTS, recipe=self.spec.recipe,
                                  config_type=type(self.spec.config))
        if found is None:
            return 0
        path, tensors, _config, meta = found
        try:
            self.load_state_tensors(tensors)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise TalksplatError(f"checkpoint {path} does not fit this model ({str(exc).splitlines()[0]}); "
                                 "start over with --restart") from exc
        self.seconds = float(meta["progress"].get("seconds", 0.0))
        return int(meta["progress"]["step"])

    # -------------------------------------------------------------------------- reporting
    def _bar(self, start: int):
        from tqdm import tqdm

        return tqdm(total=self.total, initial=start, desc=f"{self.spec.recipe} pretrain x{self.world}",
                    unit="step", disable=self.spec.quiet or not self.is_main, dynamic_ncols=True)

    def _log(self, step: int, stage: Stage, terms: dict[str, float], seconds: float) -> None:
        record = {"step": step + 1, "stage": stage.name, "seconds": round(seconds, 4), **terms}
        with open(self.out / LOG_JSONL, "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_summary(self, recent: list[dict]) -> dict:
        global_batch = self.spec.batch_size * self.world
        timed = self.timed
        rate = timed["steps"] * global_batch / timed["seconds"] if timed["seconds"] > 0 else None
        keys = {k for r in recent for k in r}
        final = {k: round(sum(r[k] for r in recent if k in r) / sum(k in r for r in recent), 5) for k in sorted(keys)}
        summary = {"recipe": self.spec.recipe, "steps": self.total, "processes": self.world,
                   "backend": dist.get_backend(), "threads_per_process": torch.get_num_threads(),
                   "batch_per_process": self.spec.batch_size, "global_batch": global_batch,
                   "samples_per_second": round(rate, 3) if rate else None,
                   "throughput_note": f"this session's steps after the first {WARMUP_STEPS}",
                   "train_seconds": round(self.seconds, 2), "final_losses_last10": final,
                   "stages": [{"name": s.name, "iterations": s.iterations, "trains": list(s.trains)}
                              for s in self.job.stages],
                   "identities": self.job.subjects,
                   "checkpoint": str(latest_checkpoint(self.out / CHECKPOINTS))}
        (self.out / SUMMARY_JSON).write_text(json.dumps(summary, indent=1))
        return summary
