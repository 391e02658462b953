"""One folder per method; importing this package registers every model and predictor.

Optional heavy dependencies (diffusers, transformers) are imported inside the functions that need them,
so importing a method package never fails for their absence.
"""

from . import adaptiveclick, classical, cplot, custom, gpcis, m2n2, ritm, simpleclick  # noqa: F401

__all__ = ["adaptiveclick", "classical", "cplot", "custom", "gpcis", "m2n2", "ritm", "simpleclick"]
