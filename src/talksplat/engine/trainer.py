"""The training loop every recipe shares: progress, previews, checkpoints, exact resume, summary.

Layout of a run (inside the subject folder by default)::

    <subject>/runs/<recipe>/
        config.json            the recipe config used (also inside every checkpoint)
        checkpoints/step-N/    safetensors + meta.json, written atomically; newest two kept
        previews/step-N.png    ground truth | render of a held-out frame
        log.jsonl              one line of stats per logged step
        summary.json           per-stage held-out PSNR/SSIM, wall time, iteration time
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from talksplat.errors import TalksplatError
from talksplat.recipes import RECIPES
from talksplat.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


@dataclass
class TrainerConfig:
    checkpoint_every_s: float = 120.0
    preview_every: int = 500
    log_every: int = 25
    eval_frames: int = 8   # held-out frames scored at the end of each stage


def recipe_classes(name: str):
    if name not in RECIPES:
        raise TalksplatError(f"unknown recipe {name!r}; choose one of {', '.join(sorted(RECIPES))}")
    module_name, cls_name, cfg_name = RECIPES[name]
    module = importlib.import_module(module_name)
    return getattr(module, cls_name), getattr(module, cfg_name)


def run_dir(subject_dir: Path, recipe: str) -> Path:
    return Path(subject_dir) / "runs" / recipe


def train(subject_dir: Path, recipe_name: str, recipe_cfg, trainer_cfg: TrainerConfig | None = None,
          out_dir: Path | None = None, resume: bool = True, stop_after: int | None = None) -> dict:
    """Trains (or resumes) a recipe on a prepared subject; returns the summary.

    ``stop_after`` ends the run after that step (and its checkpoint), as an interruption would.
    """
    from talksplat.recipes.data import load_subject_data

    trainer_cfg = trainer_cfg or TrainerConfig()
    recipe_cls, cfg_cls = recipe_classes(recipe_name)
    out_dir = Path(out_dir) if out_dir else run_dir(subject_dir, recipe_name)
    ckpt_dir = out_dir / "checkpoints"
    latest = latest_checkpoint(ckpt_dir) if resume else None
    state, start, elapsed_before, stage_scores = None, 0, 0.0, {}
    if latest is not None:
        state, recipe_cfg, meta = load_checkpoint(latest, recipe=recipe_name, config_type=cfg_cls)
        start = meta["step"] + 1
        elapsed_before = meta["progress"].get("train_seconds", 0.0)
        stage_scores = meta["progress"].get("stage_scores", {})
    data = load_subject_data(Path(subject_dir), recipe_cfg.size, getattr(recipe_cfg, "audio_feature", "mel"))
    recipe = recipe_cls(data, recipe_cfg)
    if state is not None:
        try:
            recipe.load_state_tensors(state)
        except (RuntimeError, KeyError, ValueError, IndexError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise TalksplatError(f"checkpoint {latest} does not fit this talksplat's {recipe_name} recipe "
                                 f"({reason}); start over with `talksplat train {subject_dir} --restart`") from exc
        print(f"resuming {recipe_name} from {latest.name} (step {start} of {recipe.total_iterations})")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(dataclasses.asdict(recipe_cfg), indent=1))

    eval_frames = _spread(data.val_frames, trainer_cfg.eval_frames)
    loop = _Loop(recipe, recipe_name, recipe_cfg, trainer_cfg, out_dir, eval_frames, elapsed_before, stage_scores)
    loop.run(start, stop_after)
    return loop.write_summary()


def _spread(frames: np.ndarray, k: int) -> np.ndarray:
    if len(frames) <= k:
        return frames
    return frames[np.linspace(0, len(frames) - 1, k).round().astype(int)]


class _Loop:
    def __init__(self, recipe, name, recipe_cfg, cfg: TrainerConfig, out_dir: Path, eval_frames, elapsed, scores):
        self.recipe, self.name, self.recipe_cfg, self.cfg = recipe, name, recipe_cfg, cfg
        self.out_dir, self.eval_frames = out_dir, eval_frames
        self.elapsed_before, self.stage_scores = elapsed, scores
        self.step_times: list[float] = []

    def run(self, start: int, stop_after: int | None = None) -> None:
        total = self.recipe.total_iterations
        t0 = time.perf_counter()
        last_ckpt = t0
        bar = tqdm(range(start, total), initial=start, total=total, desc=self.name, unit="it", dynamic_ncols=True)
        with (self.out_dir / "log.jsonl").open("a") as log:
            for step in bar:
                tic = time.perf_counter()
                stats = self.recipe.train_step(step)
                self.step_times.append(time.perf_counter() - tic)
                if step % self.cfg.log_every == 0:
                    bar.set_postfix(stage=stats["stage"], loss=f"{stats['loss']:.4f}", psnr=f"{stats['psnr']:.2f}",
                                    gaussians=stats["gaussians"])
                    log.write(json.dumps({"step": step, **stats}) + "\n")
                    log.flush()
                if step % self.cfg.preview_every == 0 or step == total - 1:
                    self._preview(step)
                stage_ends = step == total - 1 or self.recipe.stage(step + 1) != stats["stage"]
                if stage_ends:
                    self.stage_scores[stats["stage"]] = self.recipe.evaluate(self.eval_frames)
                    bar.write(f"end of {stats['stage']} stage: held-out {self.stage_scores[stats['stage']]}")
                if stage_ends or time.perf_counter() - last_ckpt > self.cfg.checkpoint_every_s:
                    self._checkpoint(step, time.perf_counter() - t0)
                    last_ckpt = time.perf_counter()
                if stop_after is not None and step >= stop_after:
                    break
        self.train_seconds = self.elapsed_before + time.perf_counter() - t0

    def _checkpoint(self, step: int, seconds: float) -> None:
        progress = {"train_seconds": self.elapsed_before + seconds, "stage_scores": self.stage_scores}
        save_checkpoint(self.out_dir / "checkpoints", step, self.recipe.state_tensors(), recipe=self.name,
                        config=self.recipe_cfg, progress=progress)

    @torch.no_grad()
    def _preview(self, step: int) -> None:
        import imageio.v3 as iio

        t = int(self.eval_frames[len(self.eval_frames) // 2]) if len(self.eval_frames) else 0
        deform = self.recipe.stage(step) != "static"
        rendered = self.recipe.render(t, deform=deform)["image"].clamp(0, 1)
        both = torch.cat([self.recipe.data.image(t), rendered], dim=1)
        path = self.out_dir / "previews" / f"step-{step:08d}.png"
        path.parent.mkdir(exist_ok=True)
        iio.imwrite(path, (both.numpy() * 255).round().astype(np.uint8))

    def write_summary(self) -> dict:
        times = self.step_times[5:] or self.step_times  # the first steps include warm-up
        summary = {"recipe": self.name, "train_seconds": round(self.train_seconds, 1),
                   "iterations": self.recipe.total_iterations, "gaussians": self.recipe.num_gaussians(),
                   "ms_per_iteration_median": round(float(np.median(times)) * 1000, 1) if times else None,
                   "held_out_by_stage": self.stage_scores, "threads": torch.get_num_threads(),
                   **getattr(self.recipe, "summary_extras", dict)()}
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary
