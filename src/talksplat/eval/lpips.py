"""LPIPS (Zhang et al. 2018, AlexNet variant, v0.1) from weights the user already has on disk.

No package ships these weights and talksplat never downloads, so LPIPS is computed only when the
user points to a folder holding both:

- an AlexNet backbone as a torchvision state dict (``features.0.weight`` (64, 3, 11, 11), ...;
  e.g. torchvision's ``alexnet-owt-7be5be79.pth``; classifier weights are ignored);
- the LPIPS linear calibration layers (``lin0.model.1.weight`` (1, 64, 1, 1) ... ``lin4``; the
  LPIPS project's ``weights/v0.1/alex.pth``).

Files are recognised by their tensors, not their names (``.pth``/``.pt`` loaded with
``weights_only=True``, or ``.safetensors``). The network is written here (no torchvision needed):
inputs scaled to [-1, 1] and normalised with LPIPS's shift/scale, the five ReLU outputs of AlexNet's
feature stack unit-normalised over channels, squared differences weighted by the linear layers,
averaged over positions and summed over layers. Images smaller than 64 px are upsampled to 64
(bilinear) so every layer has at least one position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talksplat.errors import UsageError

ALEX_CHANNELS = (64, 192, 384, 256, 256)
ALEX_CONV_INDICES = (0, 3, 6, 8, 10)            # conv layers inside torchvision's alexnet.features
TAP_AFTER = (1, 4, 7, 9, 11)                    # the ReLU outputs LPIPS compares
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
MIN_SIDE = 64
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


def alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet ``features`` stack (same layer indices, so its state dict loads)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))


class AlexLPIPS(nn.Module):
    """LPIPS distance with an AlexNet backbone; load weights with :func:`load_lpips`."""

    def __init__(self) -> None:
        super().__init__()
        self.features = alexnet_features()
        self.lins = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in ALEX_CHANNELS])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def _taps(self, x: Tensor) -> list[Tensor]:
        x = (x - self.shift) / self.scale
        taps = []
        for i, layer in enumerate(self.features[:TAP_AFTER[-1] + 1]):
            x = layer(x)
            if i in TAP_AFTER:
                taps.append(x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return taps

    @torch.no_grad()
    def forward(self, img: Tensor, ref: Tensor) -> Tensor:
        """img, ref: (B, 3, H, W) in [-1, 1] -> (B,) distances."""
        if min(img.shape[-2:]) < MIN_SIDE:
            scale = MIN_SIDE / min(img.shape[-2:])
            img, ref = (F.interpolate(t, scale_factor=scale, mode="bilinear", align_corners=False) for t in (img, ref))
        total = img.new_zeros(img.shape[0])
        for a, b, w in zip(self._taps(img), self._taps(ref), self.lins, strict=True):
            total = total + F.conv2d((a - b).square(), w).mean(dim=(1, 2, 3))
        return total

    def distance(self, img: np.ndarray, ref: np.ndarray) -> float:
        """LPIPS of two (H, W, 3) images, uint8 or float in [0, 1]."""
        from talksplat.eval.metrics import _pair

        a, b = _pair(img, ref)
        x, y = (torch.from_numpy(2 * t - 1).float().permute(2, 0, 1)[None] for t in (a, b))
        return float(self(x, y)[0])


def _read_tensors(path: Path) -> dict[str, Tensor] | None:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not one of ours
        return None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        return None
    return {str(k).removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}


def _backbone(state: dict[str, Tensor]) -> dict[str, Tensor] | None:
    first = state.get("features.0.weight")
    if first is None or tuple(first.shape) != (64, 3, 11, 11):
        return None
    return {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}


def _linear(state: dict[str, Tensor]) -> list[Tensor] | None:
    layers = []
    for i, c in enumerate(ALEX_CHANNELS):
        w = state.get(f"lin{i}.model.1.weight", state.get(f"lin{i}.weight"))
        if w is None or w.numel() != c:
            return None
        layers.append(w.reshape(1, c, 1, 1).float())
    return layers


def load_lpips(folder: Path) -> AlexLPIPS:
    """An :class:`AlexLPIPS` with the backbone and linear weights found in ``folder``.

    Raises TalksplatError (one line, saying what is missing) when either part is not there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"LPIPS weights folder {folder} does not exist")
    backbone, linear = None, None
    for path in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        state = _read_tensors(path)
        if state is None:
            continue
        backbone = backbone or _backbone(state)
        linear = linear or _linear(state)
    if backbone is None:
        raise UsageError(f"no AlexNet backbone in {folder}: put torchvision's AlexNet state dict there "
                         "(features.0.weight of shape (64, 3, 11, 11), e.g. alexnet-owt-7be5be79.pth)")
    if linear is None:
        raise UsageError(f"no LPIPS linear layers in {folder}: put the LPIPS v0.1 alex.pth there "
                         "(lin0.model.1.weight ... lin4.model.1.weight)")
    model = AlexLPIPS()
    wanted = {f"{i}.{kind}" for i in ALEX_CONV_INDICES for kind in ("weight", "bias")}
    missing = wanted - set(backbone)
    if missing:
        raise UsageError(f"the AlexNet weights in {folder} lack {', '.join(sorted(missing))}")
    try:
        model.features.load_state_dict({k: backbone[k].float() for k in wanted})
    except RuntimeError as exc:
        raise UsageError(f"the AlexNet weights in {folder} do not fit AlexNet: {str(exc).splitlines()[0]}") from exc
    with torch.no_grad():
        for p, w in zip(model.lins, linear, strict=True):
            p.copy_(w)
    return model.eval()
