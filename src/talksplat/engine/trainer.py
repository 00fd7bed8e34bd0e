"""The training loop every recipe shares: sampling, losses, optimizers, densification, held-out
evaluation, previews, checkpoints, exact resume and the run summary.

Layout of a run (inside the subject folder by default)::

    <subject>/runs/<recipe>/
        config.json            the recipe config used (also inside every checkpoint)
        checkpoints/step-N/    safetensors + meta.json, written atomically; newest two kept
        previews/step-N.png    ground truth | render of a held-out frame
        log.jsonl              one line of stats per logged step
        curves.png             training loss and PSNR against the step, stages marked
        summary.json           per-stage held-out scores, wall time, iteration time

Resuming: re-running ``train`` continues from the newest checkpoint, bitwise as if never stopped.
Settings that differ from the run's saved config are refused with the list of differences (pass
``restart=True`` / ``--restart`` to start over, or choose another run folder): a run never silently
continues with settings other than the ones it was started with. A run whose subject was re-prepared
from another video is refused too.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from talksplat.data.subject import load_subject_data
from talksplat.engine.checkpoint import load_latest_valid, save_checkpoint
from talksplat.engine.config import config_to_dict, differences
from talksplat.engine.contract import Batch, Recipe, Stage, View
from talksplat.engine.device import resolve_device
from talksplat.engine.evaluate import evaluate_held_out, to_uint8
from talksplat.engine.losses import psnr
from talksplat.engine.runs import check_fingerprint, default_run_dir
from talksplat.errors import TalksplatError, UsageError
from talksplat.features.registry import parse_feature_name
from talksplat.io.paths import require_writable_folder


@dataclass
class TrainerConfig:
    checkpoint_every_s: float = 120.0
    preview_every: int = 500
    log_every: int = 25
    eval_frames: int = 8   # held-out frames scored at the end of each stage
    quiet: bool = False
    # Where the steps run (engine.device: auto|cpu|cuda). Not part of the recipe's config: a run
    # trained on one device resumes and renders on any other.
    device: str = "cpu"


# ------------------------------------------------------------------------------------------ stages
def stage_at(stages: list[Stage], step: int) -> tuple[Stage, int]:
    """The stage that global step ``step`` belongs to, and the step its stage starts at."""
    start = 0
    for stage in stages:
        if step < start + stage.iterations:
            return stage, start
        start += stage.iterations
    return stages[-1], start - stages[-1].iterations


def total_iterations(stages: list[Stage]) -> int:
    return sum(s.iterations for s in stages)


def _selected(selectors: tuple[str, ...], kind: str, owner: str, name: str) -> bool:
    """Whether optimizer group ``owner.name`` of ``kind`` (gaussians|networks) trains under ``selectors``."""
    return any(sel in (kind, f"{kind}.{name}", f"{owner}.{name}") for sel in selectors)


# ------------------------------------------------------------------------------------------ engine
class Engine:
    """Trains one recipe instance: owns the optimizers of its networks, its samplers and the RNG."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.stages = recipe.stages()
        self.total = total_iterations(self.stages)
        self.image_size = (recipe.cfg.size, recipe.cfg.size)
        self._network_groups: dict[str, dict] = {}
        for group in recipe.network_param_groups():
            if group["name"] in self._network_groups:
                raise ValueError(f"network parameter group {group['name']!r} is declared twice")
            self._network_groups[group["name"]] = {**group, "params": list(group["params"])}
        self._network_optimizers: dict[str, torch.optim.Adam] | None = None
        self._pending_optim: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
        self.samplers = {stage.name: recipe.sampler(stage) for stage in self.stages}

    @property
    def network_optimizers(self) -> dict[str, torch.optim.Adam]:
        """One Adam per network group, made on first use (as GaussianSet's: an avatar loaded only to
        render never builds an optimizer, whose first construction imports torch._dynamo)."""
        if self._network_optimizers is None:
            # eps 1e-15 as in 3DGS; one Adam per group (Adam is per parameter, so this equals one
            # optimizer with several groups) lets a stage train any subset of the groups.
            self._network_optimizers = {name: torch.optim.Adam(group["params"], lr=group["lr"], eps=1e-15)
                                        for name, group in self._network_groups.items()}
            for name, states in self._pending_optim.items():
                params = self._network_groups[name]["params"]
                for i, state in states.items():
                    self._network_optimizers[name].state[params[i]] = state
            self._pending_optim = {}
        return self._network_optimizers

    def _network_adam_states(self, group: str) -> dict[int, dict[str, torch.Tensor]]:
        if self._network_optimizers is None:
            return self._pending_optim.get(group, {})
        optimizer = self._network_optimizers[group]
        return {i: optimizer.state[p] for i, p in enumerate(optimizer.param_groups[0]["params"])
                if p in optimizer.state}

    def stage(self, step: int) -> Stage:
        return stage_at(self.stages, step)[0]

    def to_device(self, device: torch.device) -> Engine:
        """Moves the recipe (and its subject's tensors) and the networks' Adam moments to ``device``."""
        self.recipe.to_device(device)
        self._pending_optim = {group: {i: _moved(state, device) for i, state in states.items()}
                               for group, states in self._pending_optim.items()}
        for optimizer in (self._network_optimizers or {}).values():
            for param, state in optimizer.state.items():
                optimizer.state[param] = _moved(state, device)
        return self

    def train_step(self, step: int) -> dict:
        recipe, rng = self.recipe, self.recipe.rng
        stage, start = stage_at(self.stages, step)
        t = self.samplers[stage.name].sample(step, start, stage.iterations, rng)
        batch = Batch(frame=t, image=recipe.data.image(t))
        conditions = recipe.training_conditions(t, stage) if stage.deform else None
        out = recipe(View(t), conditions, stage)
        if stage.densify:
            for name, gaussians in recipe.sets.items():
                gaussians.step_pre_backward(out["metas"][name])
        terms = recipe.losses(out, batch, stage)
        weights = recipe.loss_weights()
        loss = sum(weights[name] * value for name, value in terms.items())
        loss.backward()
        changes: dict[str, dict[str, int]] = {}
        if stage.densify:
            for name, gaussians in recipe.sets.items():
                changed = gaussians.step_post_backward(step, out["metas"][name], self.image_size)
                if changed:
                    changes[name] = changed
        self._step_optimizers(stage)
        stats = {"loss": loss.item(), "psnr": psnr(out["image"], batch.image), "stage": stage.name,
                 "gaussians": recipe.num_gaussians()}
        stats.update({f"loss_{name}": float(value.detach()) for name, value in terms.items()})
        if changes:
            stats["densify"] = changes
        return stats

    def _step_optimizers(self, stage: Stage) -> None:
        for set_name, gaussians in self.recipe.sets.items():
            trained = tuple(p for p in gaussians.params if _selected(stage.trains, "gaussians", set_name, p))
            gaussians.step_optimizers(trained)
        for name, optimizer in self.network_optimizers.items():
            if _selected(stage.trains, "networks", "networks", name):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    # ---------------------------------------------------------------------------- state
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything needed to resume exactly, as named tensors (for safetensors)."""
        recipe = self.recipe
        tensors: dict[str, torch.Tensor] = {}
        for name, gaussians in recipe.sets.items():
            tensors.update(gaussians.state_tensors(f"sets/{name}"))
        for key, value in recipe.state_dict().items():
            if not key.startswith("sets."):
                tensors[f"modules/{key}"] = value
        for group in self._network_groups:
            for i, state in self._network_adam_states(group).items():
                for key, value in state.items():
                    tensors[f"optim/{group}/{i}/{key}"] = torch.as_tensor(value)
        tensors["rng/torch"] = torch.get_rng_state()
        tensors["rng/numpy"] = torch.tensor(_numpy_rng_words(recipe.rng), dtype=torch.int64)
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restores :meth:`state_tensors`; KeyError/ValueError/RuntimeError when they do not fit."""
        recipe = self.recipe
        for name, gaussians in recipe.sets.items():
            gaussians.load_state_tensors(tensors, f"sets/{name}")
        modules = {k[len("modules/"):]: v for k, v in tensors.items() if k.startswith("modules/")}
        missing, unexpected = recipe.load_state_dict(modules, strict=False)
        missing = [k for k in missing if not k.startswith("sets.")]
        if missing or unexpected:
            raise KeyError(f"network weights do not match (missing {missing[:3]}, unexpected {unexpected[:3]})")
        for group, spec in self._network_groups.items():
            states = {}
            for i in range(len(spec["params"])):
                state = {k.rsplit("/", 1)[1]: v.clone() for k, v in tensors.items()
                         if k.startswith(f"optim/{group}/{i}/")}
                if state:
                    states[i] = state
            if self._network_optimizers is None:
                self._pending_optim[group] = states
                continue
            optimizer = self._network_optimizers[group]
            optimizer.state.clear()
            for i, state in states.items():
                optimizer.state[optimizer.param_groups[0]["params"][i]] = state
        torch.set_rng_state(tensors["rng/torch"])
        _restore_numpy_rng(recipe.rng, tensors["rng/numpy"])


def _moved(state: dict, device: torch.device) -> dict:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in state.items()}


def _numpy_rng_words(rng: np.random.Generator) -> list[int]:
    state = rng.bit_generator.state  # PCG64: 128-bit state and increment
    words = []
    for value in (state["state"]["state"], state["state"]["inc"]):
        words += [(value >> shift) & 0xFFFFFFFF for shift in (96, 64, 32, 0)]
    return words + [state["has_uint32"], state["uinteger"]]


def _restore_numpy_rng(rng: np.random.Generator, words: torch.Tensor) -> None:
    w = [int(x) for x in words.tolist()]

    def join(part):
        return sum(v << shift for v, shift in zip(part, (96, 64, 32, 0)))

    state = rng.bit_generator.state
    state["state"] = {"state": join(w[0:4]), "inc": join(w[4:8])}
    state["has_uint32"], state["uinteger"] = w[8], w[9]
    rng.bit_generator.state = state


# ------------------------------------------------------------------------------------------ building
def build_recipe(recipe_cls: type[Recipe], subject_dir: Path, cfg) -> Recipe:
    """Seeds the generators, loads the subject's data at the config's size, builds the recipe."""
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(f"invalid {recipe_cls.name} settings: {exc}") from exc
    data = load_subject_data(Path(subject_dir), cfg.size, cfg.audio_feature)
    data.require(recipe_cls.required_channels)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    return recipe_cls(data, cfg, rng)


def restore(engine: Engine, tensors: dict, checkpoint: Path, fix: str) -> None:
    """Loads checkpoint tensors into a freshly built engine; one-line error if they do not fit."""
    try:
        engine.load_state_tensors(tensors)
    except (RuntimeError, KeyError, ValueError, IndexError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TalksplatError(f"checkpoint {checkpoint} does not fit this talksplat's {engine.recipe.name} recipe "
                             f"({reason}); {fix}") from exc


# ------------------------------------------------------------------------------------------ train
def train(subject_dir: Path, recipe_cls: type[Recipe], recipe_cfg=None, trainer_cfg: TrainerConfig | None = None,
          out_dir: Path | None = None, restart: bool = False, stop_after: int | None = None) -> dict:
    """Trains (or resumes) ``recipe_cls`` on a prepared subject; returns the summary.

    ``recipe_cfg`` None resumes with the run's saved config (or the defaults for a new run); a config
    that differs from a resumed run's saved one is refused. ``stop_after`` ends the run after that step
    (and its checkpoint), as an interruption would.
    """
    trainer_cfg = trainer_cfg or TrainerConfig()
    subject_dir = Path(subject_dir)
    out_dir = Path(out_dir) if out_dir else default_run_dir(subject_dir, recipe_cls.name)
    # What the arguments alone decide is refused before a checkpoint or the subject is loaded (a real
    # subject takes ~15 s) and before --restart deletes anything.
    _check_run_folder(out_dir)
    device = resolve_device(trainer_cfg.device, recipe_cls.devices, f"recipe {recipe_cls.name}")
    if recipe_cfg is not None:
        _check_settings(recipe_cls, recipe_cfg)
    if restart:
        _clear_run(out_dir)
    found = load_latest_valid(out_dir / "checkpoints", recipe=recipe_cls.name, config_type=recipe_cls.Config)
    state, latest, start, elapsed_before, stage_scores = None, None, 0, 0.0, {}
    if found is not None:
        latest, state, saved_cfg, meta = found
        check_fingerprint(meta.get("subject") or {}, subject_dir, f"`talksplat train {subject_dir} --restart`")
        if recipe_cfg is not None and recipe_cfg != saved_cfg:
            raise UsageError(_differs_message(out_dir, saved_cfg, recipe_cfg))
        recipe_cfg = saved_cfg
        start = meta["step"] + 1
        elapsed_before = float(meta["progress"].get("train_seconds", 0.0))
        stage_scores = dict(meta["progress"].get("stage_scores", {}))
    recipe_cfg = recipe_cfg if recipe_cfg is not None else recipe_cls.Config()
    _check_settings(recipe_cls, recipe_cfg)
    recipe = build_recipe(recipe_cls, subject_dir, recipe_cfg)
    engine = Engine(recipe)
    if engine.total <= 0:   # a recipe whose stages do not mirror cfg.iterations
        raise UsageError(NOTHING_TO_TRAIN)
    if state is not None:
        restore(engine, state, latest, f"start over with `talksplat train {subject_dir} --restart`")
        if not trainer_cfg.quiet:
            print(f"resuming {recipe.name} from {latest.name} (step {start} of {engine.total})")
    if device.type != "cpu":    # built and restored on the CPU (checkpoints hold CPU tensors), then moved
        engine.to_device(device)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config_to_dict(recipe_cfg), indent=1))
    except OSError as exc:
        raise TalksplatError(f"cannot write the run folder {out_dir} ({exc.strerror or exc}); "
                             "choose another with -o") from exc
    eval_frames = _spread(recipe.data.val_frames, trainer_cfg.eval_frames)
    loop = _Loop(engine, trainer_cfg, out_dir, eval_frames, elapsed_before, stage_scores)
    loop.run(start, stop_after)
    return loop.write_summary()


NOTHING_TO_TRAIN = "every stage has 0 iterations: nothing to train; give at least one iteration"


def _check_settings(recipe_cls: type[Recipe], cfg) -> None:
    """Refuses invalid settings and a run with no iterations. The stages' iteration counts are the
    fields of ``cfg.iterations`` by convention, so this needs no subject loaded."""
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(f"invalid {recipe_cls.name} settings: {exc}") from exc
    parse_feature_name(cfg.audio_feature)   # a misspelt feature fails now, not after the subject's frames load
    iterations = getattr(cfg, "iterations", None)
    if dataclasses.is_dataclass(iterations) and sum(dataclasses.astuple(iterations)) <= 0:
        raise UsageError(NOTHING_TO_TRAIN)


def _check_run_folder(out_dir: Path) -> None:
    require_writable_folder(out_dir, "run folder", "choose another with -o")


def _clear_run(out_dir: Path) -> None:
    """--restart: the previous run's checkpoints, previews, log and summary go."""
    for name in ("checkpoints", "previews"):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in ("log.jsonl", "summary.json", "config.json"):
        (out_dir / name).unlink(missing_ok=True)


def _differs_message(out_dir: Path, saved, wanted) -> str:
    diffs = differences(saved, wanted)
    shown = ", ".join(f"{k}: run {a!r} vs asked {b!r}" for k, a, b in diffs[:4])
    more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
    return (f"run {out_dir} was started with other settings ({shown}{more}); re-run without settings to "
            "resume it, add --restart to start it over with the new ones, or give a new run folder with -o")


def _spread(frames: np.ndarray, k: int) -> np.ndarray:
    if len(frames) <= k:
        return frames
    return frames[np.linspace(0, len(frames) - 1, k).round().astype(int)]


class _Loop:
    def __init__(self, engine: Engine, cfg: TrainerConfig, out_dir: Path, eval_frames, elapsed, scores):
        self.engine, self.recipe, self.cfg = engine, engine.recipe, cfg
        self.out_dir, self.eval_frames = out_dir, eval_frames
        self.elapsed_before, self.stage_scores = elapsed, scores
        self.step_times: list[float] = []
        self.train_seconds = elapsed

    def run(self, start: int, stop_after: int | None = None) -> None:
        total = self.engine.total
        t0 = time.perf_counter()
        last_ckpt = t0
        bar = tqdm(range(start, total), initial=start, total=total, desc=self.recipe.name, unit="it",
                   dynamic_ncols=True, disable=self.cfg.quiet)
        with (self.out_dir / "log.jsonl").open("a") as log:
            for step in bar:
                tic = time.perf_counter()
                stats = self.engine.train_step(step)
                self.step_times.append(time.perf_counter() - tic)
                if step % self.cfg.log_every == 0:
                    bar.set_postfix(stage=stats["stage"], loss=f"{stats['loss']:.4f}", psnr=f"{stats['psnr']:.2f}",
                                    gaussians=stats["gaussians"])
                    log.write(json.dumps({"step": step, **stats}) + "\n")
                    log.flush()
                if step % self.cfg.preview_every == 0 or step == total - 1:
                    self._preview(step)
                stage_ends = step == total - 1 or self.engine.stage(step + 1).name != stats["stage"]
                if stage_ends:
                    self.recipe.eval()
                    self.stage_scores[stats["stage"]] = evaluate_held_out(self.recipe, self.eval_frames)
                    self.recipe.train()
                    if not self.cfg.quiet:
                        bar.write(f"end of {stats['stage']} stage: held-out {self.stage_scores[stats['stage']]}")
                if stage_ends or time.perf_counter() - last_ckpt > self.cfg.checkpoint_every_s:
                    self._checkpoint(step, time.perf_counter() - t0)
                    last_ckpt = time.perf_counter()
                if stop_after is not None and step >= stop_after:
                    break
        self.train_seconds = self.elapsed_before + time.perf_counter() - t0

    def _checkpoint(self, step: int, seconds: float) -> None:
        progress = {"train_seconds": self.elapsed_before + seconds, "stage_scores": self.stage_scores,
                    "total_iterations": self.engine.total}
        try:
            save_checkpoint(self.out_dir / "checkpoints", step, self.engine.state_tensors(), recipe=self.recipe.name,
                            config=self.recipe.cfg, progress=progress, subject=self.recipe.data.fingerprint)
        except OSError as exc:
            raise TalksplatError(f"cannot write a checkpoint in {self.out_dir} ({exc.strerror or exc}); free disk "
                                 "space or choose another run folder with -o, then re-run to resume") from exc

    @torch.no_grad()
    def _preview(self, step: int) -> None:
        import imageio.v3 as iio

        data = self.recipe.data
        t = int(self.eval_frames[len(self.eval_frames) // 2]) if len(self.eval_frames) else 0
        stage = self.engine.stage(step)
        rendered = self.recipe(View(t), self.recipe.conditions(t) if stage.deform else None, stage)["image"]
        both = torch.cat([data.image(t), rendered.clamp(0, 1)], dim=1).cpu()
        path = self.out_dir / "previews" / f"step-{step:08d}.png"
        path.parent.mkdir(exist_ok=True)
        iio.imwrite(path, to_uint8(both))

    def write_summary(self) -> dict:
        times = self.step_times[5:] or self.step_times  # the first steps include warm-up
        summary = {"recipe": self.recipe.name, "train_seconds": round(self.train_seconds, 1),
                   "iterations": self.engine.total, "gaussians": self.recipe.num_gaussians(),
                   "ms_per_iteration_median": round(float(np.median(times)) * 1000, 1) if times else None,
                   "held_out_by_stage": self.stage_scores, "threads": torch.get_num_threads(),
                   "device": str(self.recipe.device),
                   **self.recipe.summary_extras()}
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        plot_training_curves(self.out_dir / "log.jsonl", self.out_dir / "curves.png", self.engine.stages)
        return summary


def plot_training_curves(log_path: Path, out_path: Path, stages: list[Stage]) -> None:
    """Loss and training PSNR from ``log.jsonl`` against the step, with the stage boundaries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_psnr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    ax_loss.semilogy(steps, [r["loss"] for r in rows], lw=0.8)
    ax_loss.set_ylabel("loss (weighted sum)")
    ax_psnr.plot(steps, [r["psnr"] for r in rows], lw=0.8)
    ax_psnr.set_ylabel("training PSNR (dB)")
    ax_psnr.set_xlabel("step")
    start = 0
    for stage in stages:
        for ax in (ax_loss, ax_psnr):
            ax.axvline(start, color="grey", lw=0.5, ls="--")
        ax_loss.text(start, 1.0, f" {stage.name}", transform=ax_loss.get_xaxis_transform(), va="top", fontsize=8)
        start += stage.iterations
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
