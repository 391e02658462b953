"""CPlot: click prompts + prompt-pixel alignment + optimal transport on a SimpleClick encoder (see README.md)."""

from .loss import CPlotLoss, mean_prob_logit, prompt_diversity
from .model import (PROMPT_INITS, CPOT, PPAM, ClickEncoder, CPlotModel, MaskDecoder, PPAMBlock, build_cplot,
                    cplot_test, cplot_vit_base, cplot_vit_xtiny, masked_average)
from .sinkhorn import marginal_error, sinkhorn

__all__ = ["PROMPT_INITS", "CPOT", "PPAM", "ClickEncoder", "CPlotModel", "MaskDecoder", "PPAMBlock", "build_cplot",
           "cplot_test", "cplot_vit_base", "cplot_vit_xtiny", "masked_average", "CPlotLoss", "mean_prob_logit",
           "prompt_diversity", "marginal_error", "sinkhorn"]
