"""Classical training-free baselines (random walker, GrabCut, geodesic); importing registers them."""

from .geodesic import GeodesicPredictor, geodesic
from .grabcut import GrabCutPredictor, grabcut
from .random_walker import RandomWalkerPredictor, random_walker

__all__ = ["RandomWalkerPredictor", "GrabCutPredictor", "GeodesicPredictor", "random_walker", "grabcut",
           "geodesic"]
