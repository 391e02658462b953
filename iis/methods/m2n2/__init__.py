"""M2N2: Markov-Map Nearest Neighbour (Karmann & Urfalioglu, CVPR 2025), training-free; importing registers it."""

from .attention import (SD2_LAYER_WEIGHTS, AffinityAttention, DinoV2Attention, EffNetAttention, SD2Attention,
                        accumulate_attention)
from .markov import (JointBilateralUpsampler, attention_distance, change_temperature, flood_fill, ipf,
                     kl_distance, markov_chain, start_states)
from .predictor import M2N2Predictor, make_attention
from .segment import ThresholdTable, integer_sobel, select_threshold, threshold_table, truncated_nn

__all__ = [
    "SD2_LAYER_WEIGHTS", "SD2Attention", "DinoV2Attention", "AffinityAttention", "EffNetAttention",
    "accumulate_attention", "change_temperature", "ipf", "start_states", "markov_chain", "attention_distance",
    "kl_distance", "JointBilateralUpsampler", "flood_fill", "ThresholdTable", "integer_sobel", "threshold_table",
    "select_threshold", "truncated_nn", "M2N2Predictor", "make_attention",
]
