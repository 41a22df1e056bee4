"""Checks shared by test modules."""

from pathlib import Path

import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_figure(path: str | Path, *, min_width: int = 300, min_height: int = 200) -> None:
    """`path` is a PNG with a figure drawn on it: at least the given pixel size, many colours and
    some ink (non-white pixels) on part of the page. A blank or truncated file fails."""
    import matplotlib.image as mpimg

    path = Path(path)
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert w >= min_width and h >= min_height, (path, w, h)
    rgb = img[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 16, f"{path}: blank or single-colour image"
    ink = float(np.mean(np.any(rgb < 0.9, axis=1)))
    assert 0.01 < ink < 0.99, (path, ink)
