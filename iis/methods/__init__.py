"""One folder per method; importing this package registers every model and predictor."""

import importlib

# each method package registers its models/predictors on import; a method whose optional
# dependency is missing must not break the others, so failures surface only when it is used
for _name in ("classical", "simpleclick", "ritm", "adaptiveclick", "cplot", "gpcis", "m2n2", "toy"):
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as e:  # the folder does not exist yet, or an optional dep is absent
        if e.name and e.name.startswith(f"{__name__}.{_name}"):
            continue
        raise
