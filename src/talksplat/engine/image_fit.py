"""Fit 2D-looking Gaussians to one image: the smallest end-to-end use of the differentiable rasterizer.

This is talksplat's smoke test and interim demo: it proves on any machine that the kernel builds,
renders and back-propagates, and shows how fast that is, in a few seconds.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from talksplat.gaussians import rasterize


@dataclass
class ImageFitConfig:
    num_gaussians: int = 6000
    iterations: int = 300
    size: int = 256
    lr_means: float = 2e-3   # in camera-plane units; the image spans [-1, 1]
    lr_scales: float = 5e-3  # on log scales
    lr_colors: float = 1e-2
    lr_opacities: float = 5e-2
    lr_quats: float = 1e-3
    seed: int = 0


FOCAL_FRACTION = 1.0  # focal length = size * this; the image plane at z=1 spans [-0.5, 0.5] / this
PLANE_DEPTH = 1.0


def _init_params(cfg: ImageFitConfig) -> dict[str, torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(cfg.seed)
    n = cfg.num_gaussians
    half_extent = 0.5 / FOCAL_FRACTION
    xy = (torch.rand(n, 2, generator=gen) * 2 - 1) * half_extent
    # Thin depth jitter gives a well-defined front-to-back order.
    z = PLANE_DEPTH + 0.01 * torch.rand(n, 1, generator=gen)
    spacing = 2 * half_extent / math.sqrt(n)
    params = {
        "means": torch.cat([xy, z], -1),
        "log_scales": torch.full((n, 3), math.log(spacing * 0.6)),
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        "opacity_logits": torch.full((n,), 1.0),
        "colors": torch.rand(n, 3, generator=gen),
    }
    return {k: torch.nn.Parameter(v) for k, v in params.items()}


def fit_image(target: np.ndarray, cfg: ImageFitConfig, out_dir: Path) -> dict:
    """Fits Gaussians to ``target`` (HxWx3 uint8), writes ``fit.png`` and ``summary.json``."""
    from skimage.transform import resize

    torch.manual_seed(cfg.seed)
    image = torch.from_numpy(resize(target, (cfg.size, cfg.size), anti_aliasing=True)).float()
    params = _init_params(cfg)
    optimizer = torch.optim.Adam([
        {"params": [params["means"]], "lr": cfg.lr_means},
        {"params": [params["log_scales"]], "lr": cfg.lr_scales},
        {"params": [params["quats"]], "lr": cfg.lr_quats},
        {"params": [params["opacity_logits"]], "lr": cfg.lr_opacities},
        {"params": [params["colors"]], "lr": cfg.lr_colors},
    ])
    focal = cfg.size * FOCAL_FRACTION
    K = torch.tensor([[focal, 0, cfg.size / 2], [0, focal, cfg.size / 2], [0, 0, 1.0]])
    viewmat = torch.eye(4)
    background = torch.zeros(3)

    def render():
        return rasterize(params["means"], params["quats"], torch.exp(params["log_scales"]),
                         torch.sigmoid(params["opacity_logits"]), params["colors"], viewmat, K,
                         cfg.size, cfg.size, background)

    start = time.perf_counter()
    progress = tqdm(range(cfg.iterations), desc="fitting Gaussians", unit="it")
    for step in progress:
        out = render()
        loss = (out.image - image).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 20 == 0 or step == cfg.iterations - 1:
            progress.set_postfix(psnr=f"{_psnr(out.image.detach(), image):.2f} dB")
    elapsed = time.perf_counter() - start

    with torch.no_grad():
        final = render()
    psnr = _psnr(final.image, image)
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_side_by_side(image, final.image, out_dir / "fit.png")
    summary = {
        "what": "Gaussians fitted to one image with the differentiable CPU rasterizer",
        "psnr_db": round(psnr, 2), "iterations": cfg.iterations, "seconds": round(elapsed, 2),
        "ms_per_iteration": round(1000 * elapsed / cfg.iterations, 1), "backend": final.meta["backend"],
        "threads": torch.get_num_threads(), "config": asdict(cfg),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = (pred.clamp(0, 1) - target).square().mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _save_side_by_side(target: torch.Tensor, render: torch.Tensor, path: Path) -> None:
    import imageio.v3 as iio

    both = torch.cat([target, render.clamp(0, 1)], dim=1)
    tmp = path.with_suffix(".tmp.png")
    iio.imwrite(tmp, (both.numpy() * 255).round().astype(np.uint8))
    tmp.replace(path)
