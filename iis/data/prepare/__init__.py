"""Preparing training data from the official downloads, and SHA-256 manifests (``iis-data``; README.md here).

* `prepare_cocolvis`: LVIS v1 + COCO panoptic 2017 -> RITM's packed COCO+LVIS layout (protocol.md §C.3).
* `prepare_sbd`: checks an SBD folder (layout, counts, readable masks); writes nothing into it.
* `write_manifest` / `verify_manifest`: ``MANIFEST.sha256`` in ``sha256sum`` format.
"""

from .cocolvis import STATE_NAME, CocoLvisReport, prepare_cocolvis
from .manifest import (MANIFEST_NAME, build_manifest, file_sha256, manifest_digest, read_manifest, verify_manifest,
                       write_manifest)
from .merge import decode_layers, encode_layers, masks_hierarchy, merge_image, merge_masks, rasterize_segmentation
from .sbd import SBDReport, find_sbd_root, manifest_cache_dir, prepare_sbd

__all__ = [
    "MANIFEST_NAME",
    "STATE_NAME",
    "CocoLvisReport",
    "SBDReport",
    "build_manifest",
    "decode_layers",
    "encode_layers",
    "file_sha256",
    "find_sbd_root",
    "manifest_cache_dir",
    "manifest_digest",
    "masks_hierarchy",
    "merge_image",
    "merge_masks",
    "prepare_cocolvis",
    "prepare_sbd",
    "rasterize_segmentation",
    "read_manifest",
    "verify_manifest",
    "write_manifest",
]
