"""Preview of the synthetic data, like Fig. 2 of Shah et al. 2020 (Sec. 3.1 / App. B).

Writes into ``--out``:

* ``data_preview.png``: top row, each 1-D block's two class-conditional histograms (linear, noisy
  linear, 3-, 5- and 7-slab); bottom row, scatter plots of S (canonical coordinate 0) against one
  S^c coordinate (canonical coordinate 1) for LMS-5, noisy LMS-5 and MS-(5,7). The scatter points
  are sampled in the rotated model basis and mapped back with ``to_canonical``.
* ``blocks.json``: per block, the class balance, each class's empirical support per slab (min / max,
  hit count, fraction of the class, and the theoretical interval and probability), E[x], E[x^2]
  per class, and the accuracy of the block's Bayes rule measured on the samples next to its
  theoretical value; per dataset, class balance, the S and S^c rules' accuracies and the data
  range of the rotated inputs (max - min, used by the reference's attack budgets).
* ``config.json`` and ``env.json``; ``figures/data_preview.{json,npz}``: the samples the figure is
  drawn from, so ``python -m sbjax.plots RUN_DIR`` redraws it without sampling again.

Usage (a few seconds on a CPU)::

    python -m experiments.show_data --out runs/show_data
    python -m experiments.show_data --margin 0.05 --d 20 --out runs/show_data_m005
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from experiments.common import HelpFormatter

log = logging.getLogger("sbjax.experiments.show_data")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.show_data",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--out",
        default="runs/show_data",
        help="output folder (must be empty or absent unless --overwrite)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--n", type=int, default=20_000, help="points per 1-D block")
    p.add_argument("--n-scatter", type=int, default=1_500, help="points per 2-D scatter panel")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed")
    p.add_argument("--d", type=int, default=50, help="dimension of the scatter datasets")
    p.add_argument("--margin", type=float, default=0.1, help="effective margin gamma")
    p.add_argument("--width", type=float, default=1.0, help="data width B")
    p.add_argument("--p", type=float, default=0.1, help="noise fraction of the noisy linear block")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _intervals(kind: str, k: int | None, margin: float, width: float, p: float) -> list[dict]:
    """Theoretical class-conditional supports: [{label, lo, hi, prob}] (REFERENCE.md Sec. 1.2)."""
    from sbjax.data import blocks as B

    m = margin * width
    if kind == "linear":
        return [
            {"label": 0, "lo": -width, "hi": -m, "prob": 1.0},
            {"label": 1, "lo": m, "hi": width, "prob": 1.0},
        ]
    if kind == "noisy_linear":
        return [
            {"label": 0, "lo": -width, "hi": -m, "prob": 1 - p},
            {"label": 0, "lo": -m, "hi": m, "prob": p},
            {"label": 1, "lo": -m, "hi": m, "prob": p},
            {"label": 1, "lo": m, "hi": width, "prob": 1 - p},
        ]
    probs = B.default_level_probs(k)
    return [
        {
            "label": g["label"],
            "j": g["j"],
            "lo": g["lo"],
            "hi": g["hi"],
            "prob": probs[g["level"]] * (1.0 if g["j"] == 0 else 0.5),
        }
        for g in B.slab_geometry(k, margin, width)
    ]


def block_stats(
    x,
    y,
    kind: str,
    *,
    k: int | None = None,
    margin: float = 0.1,
    width: float = 1.0,
    p: float = 0.0,
) -> dict[str, Any]:
    """Empirical statistics of one 1-D block's samples (``x`` float [n], ``y`` int [n])."""
    import numpy as np

    from sbjax.data import blocks as B

    x, y = np.asarray(x, np.float64), np.asarray(y)
    out: dict[str, Any] = {"kind": kind, "n": int(x.size), "class_balance": float(y.mean())}
    if k is not None:
        out["k"] = k
        out["slab_width"] = B.slab_width(k, margin, width)
    out["params"] = {
        "margin": margin,
        "width": width,
        **({"p": p} if kind == "noisy_linear" else {}),
    }
    out["classes"] = {
        str(c): {
            "n": int((y == c).sum()),
            "min": float(x[y == c].min()),
            "max": float(x[y == c].max()),
            "mean": float(x[y == c].mean()),
            "E_x2": float((x[y == c] ** 2).mean()),
        }
        for c in (0, 1)
    }
    tol = 1e-6
    supports = []
    for iv in _intervals(kind, k, margin, width, p):
        c = iv["label"]
        xc = x[y == c]
        # The noisy-linear band is open and the clean pieces closed: assign band points first.
        hit = (xc >= iv["lo"] - tol) & (xc <= iv["hi"] + tol)
        if kind == "noisy_linear":
            band = np.abs(xc) < margin * width
            hit = band if iv["lo"] == -margin * width else hit & ~band
        sel = xc[hit]
        supports.append(
            {
                **iv,
                "n_hit": int(hit.sum()),
                "fraction_of_class": float(hit.mean()),
                "emp_min": float(sel.min()) if sel.size else None,
                "emp_max": float(sel.max()) if sel.size else None,
            }
        )
    out["supports"] = supports
    out["n_outside_supports"] = int(x.size - sum(s["n_hit"] for s in supports))
    if kind in ("linear", "noisy_linear"):
        pred = np.asarray(B.linear_rule(x))
        out["bayes_rule"] = "label 1 iff x > 0"
        out["bayes_accuracy_expected"] = 1.0 if kind == "linear" else 1.0 - p / 2
    else:
        pred = np.asarray(B.slab_rule(x, k, margin, width))
        out["bayes_rule"] = f"{k - 1}-piece: parity of the nearest slab's level |j|"
        out["bayes_accuracy_expected"] = 1.0
    out["bayes_accuracy"] = float((pred == y).mean())
    return out


def _sample_all(args: argparse.Namespace):
    """All blocks and datasets in ONE compiled program (compile time dominates at these sizes)."""
    import jax
    import jax.numpy as jnp

    from sbjax.data import blocks as B
    from sbjax.data import make_dataset

    mw = {"margin": args.margin, "width": args.width}
    blocks = {
        "linear": (dict(kind="linear"), lambda key, y: B.linear(key, y, **mw)),
        "noisy_linear": (
            dict(kind="noisy_linear", p=args.p),
            lambda key, y: B.noisy_linear(key, y, p=args.p, **mw),
        ),
        **{
            f"slab{k}": (
                dict(kind="slab", k=k),
                (lambda kk: lambda key, y: B.slab(key, y, k=kk, **mw))(k),
            )
            for k in (3, 5, 7)
        },
    }
    datasets = {
        "LMS-5": make_dataset("lms", k=5, d=args.d, **mw),
        f"noisy LMS-5 (p={args.p:g})": make_dataset("noisy_lms", k=5, d=args.d, p=args.p, **mw),
        "MS-(5,7)": make_dataset("ms", k_simple=5, k_complex=7, d=args.d, **mw),
    }

    def run(key):
        ky, kb, kd = jax.random.split(key, 3)
        y = jax.random.bernoulli(ky, 0.5, (args.n,)).astype(jnp.int32)
        xb = {
            name: fn(jax.random.fold_in(kb, i), y)
            for i, (name, (_, fn)) in enumerate(blocks.items())
        }
        xd = {}
        for i, (name, ds) in enumerate(datasets.items()):
            x, yd = ds.sample(jax.random.fold_in(kd, i), args.n_scatter)
            xd[name] = (x, ds.to_canonical(x), yd)
        return y, xb, xd

    y, xb, xd = jax.jit(run)(jax.random.key(args.seed))
    return blocks, datasets, y, xb, xd


def _figure(out, blocks, xd_order, y, xb, xd, args) -> None:
    """data_preview.png, saved with its samples (`sbjax.plots.save_and_draw`, kind data_preview)."""
    import numpy as np

    from sbjax import plots

    y = np.asarray(y)
    titles = {
        "linear": "linear",
        "noisy_linear": f"noisy linear (p={args.p:g})",
        "slab3": "3-slab",
        "slab5": "5-slab",
        "slab7": "7-slab",
    }
    # Iterate the datasets in their own order (jit returns dicts with sorted keys); the scatter
    # panels need S and one S^c coordinate only.
    plots.save_and_draw(
        out,
        "data_preview.png",
        "data_preview",
        blocks={titles[name]: {"x": np.asarray(xb[name]), "y": y} for name in blocks},
        datasets={
            name: {"z": np.asarray(xd[name][1])[:, :2], "y": np.asarray(xd[name][2])}
            for name in xd_order
        },
        width=args.width,
        d=args.d,
        title="Synthetic blocks and datasets (Shah et al. 2020, Fig. 2 style): "
        f"margin {args.margin:g}, width {args.width:g}, labels y in {{0, 1}}",
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the preview; returns the statistics written to blocks.json."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from sbjax import io, validate
    from sbjax.data import blocks as B

    validate.check_int("n", args.n, min_value=2)
    validate.check_int("n_scatter", args.n_scatter, min_value=1)
    validate.check_range("p", args.p, 0.0, 1.0)
    B.check_slab_params(7, args.margin, args.width)  # the 7-slab is the tightest block shown
    io.check_run_dir(args.out, experiment="show_data", overwrite=args.overwrite)
    with io.RunLock(args.out, "show_data"):  # one run per folder, for the life of the run
        return _preview(args)


def _preview(args) -> dict[str, Any]:
    from sbjax import io
    from sbjax.data import blocks as B

    out = io.prepare_run_dir(args.out, experiment="show_data", overwrite=args.overwrite)
    io.record_owned(out, "config.json", "env.json", "figures", "data_preview.png", "blocks.json")
    t0 = time.perf_counter()
    io.write_json(out / "config.json", {"experiment": "show_data", **vars(args)})
    io.write_json(out / "env.json", io.environment_info())

    import numpy as np

    blocks, datasets, y, xb, xd = _sample_all(args)
    mw = {"margin": args.margin, "width": args.width}
    stats: dict[str, Any] = {"blocks": {}, "datasets": {}}
    for name, (meta, _) in blocks.items():
        kw = {k: v for k, v in meta.items() if k != "kind"}
        stats["blocks"][name] = block_stats(xb[name], y, meta["kind"], **kw, **mw)
    for name, ds in datasets.items():
        x, z, yd = (np.asarray(a) for a in xd[name])
        s_rule = (
            B.linear_rule(z[:, 0])
            if ds.name in ("lms", "noisy_lms")
            else B.slab_rule(z[:, 0], ds.params.get("k_simple", 5), **mw)
        )
        k_c = ds.params.get("k_complex") or ds.params["k"]
        stats["datasets"][name] = {
            "name": ds.name,
            "params": ds.params,
            "n": int(yd.size),
            "class_balance": float(yd.mean()),
            "S_rule_accuracy": float((np.asarray(s_rule) == yd).mean()),
            "Sc_coord1_rule_accuracy": float(
                (np.asarray(B.slab_rule(z[:, 1], k_c, **mw)) == yd).mean()
            ),
            "drange_rotated": float(x.max() - x.min()),
        }
    _figure(out, blocks, list(datasets), y, xb, xd, args)
    stats["runtime_s"] = time.perf_counter() - t0
    io.write_json(out / "blocks.json", stats)
    for name, st in stats["blocks"].items():
        log.info(
            "%-13s balance %.3f  E[x^2] %.4f / %.4f  Bayes acc %.4f (expected %.4f)",
            name,
            st["class_balance"],
            st["classes"]["0"]["E_x2"],
            st["classes"]["1"]["E_x2"],
            st["bayes_accuracy"],
            st["bayes_accuracy_expected"],
        )
    log.info(
        "wrote %s and %s (%.1f s)",
        out / "data_preview.png",
        out / "blocks.json",
        stats["runtime_s"],
    )
    return stats


if __name__ == "__main__":
    main()
