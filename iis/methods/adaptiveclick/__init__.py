"""AdaptiveClick: SimpleClick ViT + MSDeformAttn pixel decoder + click-aware mask decoder (see README.md)."""

from .loss import AdaptiveClickCriterion, build_targets
from .matcher import HungarianMatcher, hungarian_assign, pairwise_afl_cost, pairwise_dice_cost
from .model import (AdaptiveClickModel, attention_mask, ClickAwareMaskDecoder, PixelDecoder, adaptiveclick_test,
                    adaptiveclick_vit_base, adaptiveclick_vit_huge, click_open_mask, merge_queries, pool_clicks)

__all__ = ["AdaptiveClickModel", "ClickAwareMaskDecoder", "PixelDecoder", "AdaptiveClickCriterion", "build_targets",
           "HungarianMatcher", "hungarian_assign", "pairwise_afl_cost", "pairwise_dice_cost", "adaptiveclick_test",
           "adaptiveclick_vit_base", "adaptiveclick_vit_huge", "click_open_mask", "merge_queries", "pool_clicks",
           "attention_mask"]
