"""The public interactive API (see the README section "Python API").

    seg = iis.load("simpleclick_vit_base", weights="w.pth", device="cuda")
    sess = seg.session(image); pred = sess.click(120, 80); sess.undo(); sess.set_mask(m)
    pred = seg.predict(image, [iis.Click(120, 80, True)])          # stateless replay
    pred.mask, pred.prob, pred.to_polygons(), pred.to_rle(), pred.to_png(path)
"""

from .cache import ImageStateCache, image_key
from .clicks import check_clicks, clicks_from_percent, clicks_from_yx
from .errors import (InvalidClickError, InvalidImageError, InvalidMaskError, NothingToUndoError,
                     ProtocolOptionError, UnknownMethodError, WeightsMismatchError)
from .prediction import Polygon, Prediction
from .segmenter import Segmenter, Session, check_rgb, load

__all__ = ["load", "Segmenter", "Session", "Prediction", "Polygon", "clicks_from_yx", "clicks_from_percent",
           "check_clicks", "check_rgb", "image_key", "ImageStateCache", "InvalidClickError", "InvalidImageError",
           "InvalidMaskError", "NothingToUndoError", "ProtocolOptionError", "UnknownMethodError",
           "WeightsMismatchError"]
