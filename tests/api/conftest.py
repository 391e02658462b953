from iis_api_fixtures import (grabcut_full, grabcut_sample, ritm_weights, simpleclick_weights,  # noqa: F401
                               small_image, weights_dir)
