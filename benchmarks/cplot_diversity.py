"""Prompt diversity of trained CPlot models: mean pairwise cosine of the prompt maps S* (paper Fig. 1).

CPOT is meant to make the N prompts attend to different parts of the object; without it they tend to
collapse onto one map. For each checkpoint this prints the mean pairwise cosine (1 = identical
prompts) and its centred version (Pearson) over the first click of every instance.

Usage:
    make train METHOD=cplot EXP=tiny                                    # with CPOT (default)
    make train METHOD=cplot EXP=tiny ARGS="--trainer.default_root_dir runs/cplot/tiny_no_cpot \
        --model.init_args.model_kwargs '{use_cpot: false}'"
    python benchmarks/cplot_diversity.py runs/cplot/tiny/latest/checkpoints/last.ckpt runs/cplot/tiny_no_cpot/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from iis.core.clicker import next_click
from iis.core.predictor import clicks_tensor
from iis.data import get_dataset
from iis.eval.checkpoint import load_checkpoint_model
from iis.methods.cplot.loss import prompt_diversity


@torch.no_grad()
def diversity(model, ds, limit: int | None) -> tuple[float, float]:
    plain, centred = [], []
    for i in range(min(len(ds), limit or len(ds))):
        s = ds[i]
        c = next_click(s.gt, np.zeros(s.gt.shape, bool))
        image = torch.from_numpy(s.image).permute(2, 0, 1)[None].float() / 255
        out = model.forward_train(image, clicks_tensor([c]), torch.zeros(1, 1, *s.gt.shape))
        plain.append(prompt_diversity(out["s_star"]).item())
        centred.append(prompt_diversity(out["s_star"], center=True).item())
    return float(np.mean(plain)), float(np.mean(centred))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpts", nargs="+")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--data-root")
    ap.add_argument("--limit", type=int)
    args = ap.parse_args()
    ds = get_dataset(args.dataset, args.data_root)
    print(f"{'checkpoint':60s} {'CPOT':>5s} {'cosine':>7s} {'pearson':>8s}")
    for path in args.ckpts:
        model, meta = load_checkpoint_model(path)
        cos, pear = diversity(model, ds, args.limit)
        print(f"{path:60s} {str(meta['model']['kwargs'].get('use_cpot', True)):>5s} {cos:7.3f} {pear:8.3f}")


if __name__ == "__main__":
    main()
