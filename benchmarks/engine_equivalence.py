"""Bitwise comparison of a tiny TalkingGaussian run: a checkout from before the engine (issue 12) vs
this one, each in its own process (PYTHONPATH), same seed and settings.

    git worktree add /tmp/oldmain 2420a35
    .venv/bin/python benchmarks/engine_equivalence.py SUBJECT /tmp/oldmain/src src

Prints how many checkpoint tensors were compared (Gaussians, their Adam moments, densification
statistics, motion fields, audio encoder, random generators) and which differ; the networks' Adam
moments are compared as multisets (one optimizer with groups before, one per group now)."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(tempfile.mkdtemp(prefix="talksplat-equivalence-"))
OLD = """
import sys
from pathlib import Path
from talksplat.recipes.talkinggaussian import TalkingGaussianConfig
from talksplat.train.trainer import TrainerConfig, train
cfg = TalkingGaussianConfig(size=64, face_points=600, mouth_points=100, refine_every=4)
cfg.iterations.static, cfg.iterations.motion, cfg.iterations.finetune = 20, 20, 5
train(Path(sys.argv[1]), "talkinggaussian", cfg, TrainerConfig(eval_frames=2, preview_every=10**6), out_dir=Path(sys.argv[2]), resume=False)
"""
NEW = """
import sys
from pathlib import Path
from talksplat.recipes.talkinggaussian import TalkingGaussian, TalkingGaussianConfig
from talksplat.engine.trainer import TrainerConfig, train
cfg = TalkingGaussianConfig(size=64, face_points=600, mouth_points=100, refine_every=4)
cfg.iterations.static, cfg.iterations.motion, cfg.iterations.finetune = 20, 20, 5
train(Path(sys.argv[1]), TalkingGaussian, cfg, TrainerConfig(eval_frames=2, preview_every=10**6, quiet=True), out_dir=Path(sys.argv[2]), restart=True)
"""
subject, old_src, new_src = sys.argv[1:4]
env = {**os.environ, "OMP_NUM_THREADS": "1"}
subprocess.run([sys.executable, "-c", OLD, subject, str(OUT / "old")], env={**env, "PYTHONPATH": old_src}, check=True, capture_output=True)
subprocess.run([sys.executable, "-c", NEW, subject, str(OUT / "new")], env={**env, "PYTHONPATH": new_src}, check=True, capture_output=True)
from safetensors.torch import load_file


def latest(run):
    return max((Path(run) / "checkpoints").glob("step-*")) / "tensors.safetensors"
a, b = load_file(str(latest(OUT / "old"))), load_file(str(latest(OUT / "new")))
def rename(k):
    for branch in ("face", "mouth"):
        if k.startswith(f"{branch}/motion/"):
            return f"modules/{branch}_motion." + k[len(branch) + 8:]
        if k.startswith(f"{branch}/"):
            return "sets/" + k
    if k.startswith("audio/"):
        return "modules/audio.encoder." + k[6:]
    return k
mapped = {rename(k): v for k, v in a.items() if not k.startswith("net_adam/")}
common = [k for k in mapped if k in b]
missing = [k for k in mapped if k not in b]
diff = [k for k in common if not (mapped[k].shape == b[k].shape and bool((mapped[k] == b[k]).all()))]
# network Adam moments: old one optimizer with groups (index over all params), new one per group
old_net = sorted({int(k.split("/")[1]) for k in a if k.startswith("net_adam/")})
new_net = [k for k in b if k.startswith("optim/")]
old_vals = sorted(float(a[k].double().abs().sum()) for k in a if k.startswith("net_adam/"))
new_vals = sorted(float(b[k].double().abs().sum()) for k in new_net)
print(json.dumps({"compared": len(common), "unmapped_old": missing, "differing": diff,
                  "network_adam_tensors": [len(old_vals), len(new_vals)],
                  "network_adam_equal_as_multisets": old_vals == new_vals}, indent=1))
