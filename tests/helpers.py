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


def imported_modules(path: str | Path, *, with_names: bool = False) -> list[str]:
    """Modules a Python file imports (`import a.b` -> "a.b"; `from a import b` -> "a", and also
    "a.b" with `with_names`, which catches `from experiments import extreme_sb`)."""
    import ast

    mods: list[str] = []
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            mods += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mods.append(node.module or "")
            if with_names and node.module:
                mods += [f"{node.module}.{a.name}" for a in node.names]
    return mods
