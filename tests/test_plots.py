"""Every figure function writes a drawn PNG of its figure from saved-style arrays and dicts."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax import plots
from sbjax.eval import boundary as bd
from sbjax.eval import randomize as r

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


SAVE_DPI = 120  # sbjax.plots.save_figure's default


def assert_png(path, fig):
    """`path` is a PNG of `fig` at SAVE_DPI with something drawn on it: several colours, and ink
    (non-white pixels) on part of the page. bbox "tight" trims empty margins and pads the drawn
    area by 0.1 in per side, so the size is within [0.8, 1] x figsize x dpi + 0.2 in."""
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    want_w, want_h = fig.get_size_inches() * SAVE_DPI
    pad = 0.2 * SAVE_DPI + 2
    assert 0.8 * want_w <= w <= want_w + pad and 0.8 * want_h <= h <= want_h + pad, (
        w,
        h,
        want_w,
        want_h,
    )
    rgb = img[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 16, "blank or single-colour image"
    ink = float(np.mean(np.any(rgb < 0.9, axis=1)))
    assert 0.01 < ink < 0.99, ink


def linear_logits(v, x):
    return x @ v["w"] + v["b"]


@pytest.fixture(scope="module")
def small_problem():
    d = 5
    w = np.asarray(jax.random.orthogonal(jax.random.key(0), d), np.float32)
    kz, ky = jax.random.split(jax.random.key(1))
    y = jax.random.bernoulli(ky, 0.5, (300,)).astype(jnp.int32)
    z = jax.random.normal(kz, (300, d)).at[:, 0].add(2.0 * (2 * y - 1))
    col = w.T @ np.eye(d, dtype=np.float32)[0]
    variables = {"w": jnp.stack([jnp.zeros(d), jnp.asarray(col)], 1)[None], "b": jnp.zeros((1, 2))}
    return z @ w, y, w, variables


def test_logit_histograms_from_report(tmp_path, small_problem):
    x, y, w, variables = small_problem
    rep = r.randomization_report(
        linear_logits,
        variables,
        x,
        y,
        jax.random.key(2),
        r.as_basis(rotation=w, simple_coords=[0]),
        return_scores=True,
    )
    panels = plots.logit_panels(rep["scores"], y)
    assert set(panels) == {"true positives (y = 1)", "true negatives (y = 0)"}
    assert len(panels["true positives (y = 1)"]["standard"]) == int(np.sum(np.asarray(y)))
    fig = plots.logit_histograms(panels, tmp_path / "a" / "fig3a.png", title="Fig. 3(a)")
    assert len(fig.axes) == 2
    assert tuple(fig.get_size_inches()) == pytest.approx((8.4, 3.4))  # 4.2 in per panel
    assert_png(tmp_path / "a" / "fig3a.png", fig)
    assert not list((tmp_path / "a").glob(".*.tmp"))  # atomic write left no temporary file


def test_randomized_auc_vs_sc_accepts_summary_records(tmp_path):
    rows = []
    for ds in ("lms5", "ms57"):
        for n_c in (9, 49, 249):
            rows.append(
                {
                    "dataset": ds,
                    "n_complex": n_c,
                    "metrics": {
                        "test_auc": {"mean": 1.0, "std": 0.0, "per_seed": [1.0, 1.0]},
                        "s_rand_auc": {"mean": 0.5, "std": 0.01, "per_seed": [0.49, 0.51]},
                        "sc_rand_auc": [1.0, 0.999],
                    },
                }
            )
    rows = json.loads(json.dumps(rows))  # as read back from summary.json
    fig = plots.randomized_auc_vs_sc(rows, tmp_path / "fig3b.png")
    assert len(fig.axes) == 2
    assert_png(tmp_path / "fig3b.png", fig)


def test_decision_boundary_from_grid_and_dict(tmp_path, small_problem):
    x, y, w, variables = small_problem
    grid = bd.boundary_projection(
        linear_logits,
        variables,
        r.as_basis(rotation=w, simple_coords=[0]),
        jax.random.key(0),
        data=(x, y),
        n_grid=10,
        n_fill=2,
    )
    fig = plots.decision_boundary(grid, tmp_path / "fig3c.png", title="Fig. 3(c)")
    assert_png(tmp_path / "fig3c.png", fig)
    saved = {k: np.asarray(v) for k, v in grid._asdict().items() if k != "fill"}
    fig = plots.decision_boundary(saved, tmp_path / "fig3c_npz.png")
    assert_png(tmp_path / "fig3c_npz.png", fig)


def test_uap_heatmaps_and_image(tmp_path):
    rng = np.random.default_rng(0)
    w = np.asarray(jax.random.orthogonal(jax.random.key(0), 50), np.float32)
    u_can = np.zeros((3, 50))
    u_can[:, 0] = 1.0
    u_can[:, 1:] = 0.01 * rng.normal(size=(3, 49))
    fig = plots.uap_heatmaps(
        {"fcn": u_can[0], "cnn": u_can[1], "gru": u_can[2]}, tmp_path / "h.png"
    )
    assert_png(tmp_path / "h.png", fig)
    fig = plots.uap_heatmaps(u_can @ w, tmp_path / "h_rot.png", rotation=w, labels=["a", "b", "c"])
    assert_png(tmp_path / "h_rot.png", fig)
    # Rotated back, the heatmap puts all mass on coordinate 0.
    img = fig.axes[0].images[0].get_array()
    assert np.allclose(np.asarray(img)[:, 0], 1.0)
    u = np.zeros((64, 32, 3))
    u[10:20, 8:24] = rng.normal(size=(10, 16, 3))
    fig = plots.uap_image_heatmap(u, tmp_path / "img.png", title="MNIST-CIFAR UAP")
    assert_png(tmp_path / "img.png", fig)


def test_coordinate_accuracy_and_transfer_matrix(tmp_path):
    acc = np.ones((3, 20))
    acc[:, 0] = [0.49, 0.51, 0.5]
    fig = plots.coordinate_accuracy({"lms5/fcn": acc, "ms57/fcn": acc[0]}, tmp_path / "c.png")
    assert_png(tmp_path / "c.png", fig)
    fig = plots.coordinate_accuracy(acc[0], tmp_path / "c1.png")
    assert_png(tmp_path / "c1.png", fig)
    mat = np.array([[0.0, 0.02, 0.5], [0.01, 0.0, 0.48], [0.3, 0.2, 0.0]])
    fig = plots.transfer_matrix(mat, ["fcn", "cnn", "gru"], tmp_path / "t.png")
    assert_png(tmp_path / "t.png", fig)
    with pytest.raises(ValueError, match="labels"):
        plots.transfer_matrix(mat, ["fcn", "cnn"])
    with pytest.raises(ValueError, match="values"):
        plots.coordinate_accuracy({"a": np.ones(3), "b": np.ones(4)})
