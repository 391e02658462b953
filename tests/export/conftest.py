import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from iis_api_fixtures import grabcut_full, grabcut_sample, small_image  # noqa: E402,F401
