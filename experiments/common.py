"""Shared plumbing of the paper experiments: CLI, run folders, result records.

Every experiment is `python -m experiments.<name> --preset quick|paper --out DIR` and writes
`config.json`, `env.json`, `summary.json`, `metrics.csv`, PNG figures and parameters into DIR.

`summary.json` schema (read by outside tools)::

    {"experiment": str, "preset": str, "runtime_s": float, "env": {...},
     "results": [{"experiment", "dataset", "model", "n_seeds", <swept settings>,
                  "metrics": {name: {"mean", "std", "per_seed": [...]}}}]}

Usage inside an experiment::

    parser = make_parser("extreme_sb", __doc__, PRESETS)
    args = parser.parse_args(argv)
    run = start_run("extreme_sb", args, PRESETS[args.preset])
    result = train_sweep(cfg, model, train, val, n_seeds=run.n_seeds, seed=run.seed,
                         **run.sweep_kwargs("lms5_fcn"))
    run.add_result(dataset="lms5", model="fcn_100x1", metrics={"test_acc": per_seed_array})
    run.finish()
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sbjax import io

log = logging.getLogger("sbjax.experiments")

PRESET_CHOICES = ("quick", "paper")


def make_parser(name: str, description: str | None, presets: Mapping[str, Any]) -> argparse.ArgumentParser:
    """The common CLI: --preset, --out, --seeds, --seed, --resume, --overwrite, --devices."""
    p = argparse.ArgumentParser(
        prog=f"python -m experiments.{name}",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(presets), default="quick",
                   help="quick: CPU minutes, still shows the effect; paper: the paper's sizes")
    p.add_argument("--out", default=f"runs/{name}", help="run folder (must not exist unless "
                   "--resume or --overwrite)")
    p.add_argument("--seeds", type=int, default=None,
                   help="number of seeds (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="root PRNG seed")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true",
                   help="continue a killed run in --out from its checkpoints")
    g.add_argument("--overwrite", action="store_true", help="delete --out first")
    p.add_argument("--devices", type=int, default=None,
                   help="CPU only: number of CPU devices to expose (default: one per core)")
    p.add_argument("--distributed", action="store_true",
                   help="multi-host: call jax.distributed.initialize() first")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def stats(per_seed: Any) -> dict[str, Any]:
    """{"mean", "std", "per_seed"} of a per-seed metric, ignoring NaNs (diverged seeds) in mean/std.

    The std is the population std over seeds (ddof 0), as mean +- std in the paper's tables.
    """
    a = np.asarray(per_seed, dtype=np.float64).reshape(-1)
    finite = a[np.isfinite(a)]
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std()) if finite.size else float("nan"),
        "per_seed": [float(v) for v in a],
    }


@dataclasses.dataclass
class Run:
    """One experiment's run folder and its accumulated results."""

    name: str
    out: Path
    preset: str
    preset_config: Any
    n_seeds: int
    seed: int
    resume: bool
    progress: bool
    results: list[dict] = dataclasses.field(default_factory=list)
    rows: list[dict] = dataclasses.field(default_factory=list)
    t0: float = dataclasses.field(default_factory=time.perf_counter)

    def sweep_kwargs(self, sweep_name: str) -> dict[str, Any]:
        """Keyword arguments for `train_sweep`: checkpoint folder, resume flag, progress label."""
        return {
            "out_dir": self.out / "sweeps" / sweep_name,
            "resume": self.resume,
            "progress": self.progress,
            "desc": sweep_name,
        }

    def path(self, filename: str) -> Path:
        return self.out / filename

    def add_result(self, *, dataset: str, model: str, metrics: Mapping[str, Any],
                   n_seeds: int | None = None, **settings: Any) -> dict:
        """Appends one summary record; `metrics` maps names to per-seed arrays (or stats dicts)."""
        rec: dict[str, Any] = {"experiment": self.name, "dataset": dataset, "model": model}
        per = {k: (v if isinstance(v, Mapping) else stats(v)) for k, v in metrics.items()}
        if n_seeds is None:
            n_seeds = max((len(v["per_seed"]) for v in per.values()), default=0)
        rec["n_seeds"] = int(n_seeds)
        rec.update(io.to_jsonable(settings))
        rec["metrics"] = per
        self.results.append(rec)
        for name, st in per.items():
            for i, v in enumerate(st["per_seed"]):
                row = {"dataset": dataset, "model": model, **io.to_jsonable(settings),
                       "metric": name, "seed": i, "value": v}
                self.rows.append(row)
        log.info("%s / %s: %s", dataset, model,
                 ", ".join(f"{k}={v['mean']:.4f}±{v['std']:.4f}" for k, v in per.items()))
        return rec

    def save_params(self, name: str, tree: Any) -> None:
        """Saves stacked model variables to params/<name>.npz."""
        io.save_npz(self.out / "params" / f"{name}.npz", tree)

    def finish(self, extra: Mapping[str, Any] | None = None) -> dict:
        """Writes summary.json and metrics.csv; returns the summary."""
        summary = {
            "experiment": self.name,
            "preset": self.preset,
            "n_seeds": self.n_seeds,
            "seed": self.seed,
            "runtime_s": time.perf_counter() - self.t0,
            "env": io.environment_info(),
            "results": self.results,
        }
        if extra:
            summary.update(io.to_jsonable(dict(extra)))
        io.write_json(self.out / "summary.json", summary)
        io.write_csv(self.out / "metrics.csv", self.rows)
        log.info("wrote %s (%.1f s)", self.out / "summary.json", summary["runtime_s"])
        return summary


def start_run(name: str, args: argparse.Namespace, preset_config: Any,
              extra_config: Mapping[str, Any] | None = None) -> Run:
    """Sets up devices and logging, creates the run folder and writes config.json and env.json.

    Must be called before the first JAX computation (it exposes every CPU core as a device).
    On --resume, the stored config must equal this run's, so a resumed run cannot silently mix
    settings.
    """
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sbjax.runtime import init_distributed, use_all_cpu_cores

    use_all_cpu_cores(args.devices)
    init_distributed(args.distributed or None)
    n_seeds = args.seeds if args.seeds is not None else _get(preset_config, "n_seeds", 1)
    if n_seeds < 1:
        raise ValueError(f"--seeds={n_seeds} is invalid: expected an integer >= 1")
    config = {
        "experiment": name,
        "preset": args.preset,
        "n_seeds": n_seeds,
        "seed": args.seed,
        "preset_config": io.to_jsonable(preset_config),
        **io.to_jsonable(dict(extra_config or {})),
    }
    out = io.prepare_run_dir(args.out, overwrite=args.overwrite, resume=args.resume)
    cfg_path = out / "config.json"
    if args.resume and cfg_path.exists():
        old = io.read_json(cfg_path)
        if json.dumps(old, sort_keys=True) != json.dumps(io.to_jsonable(config), sort_keys=True):
            raise ValueError(
                f"--resume is invalid: {str(cfg_path)!r} was written with a different "
                "configuration; use a new --out or --overwrite"
            )
    io.write_json(cfg_path, config)
    io.write_json(out / "env.json", io.environment_info())
    return Run(name=name, out=out, preset=args.preset, preset_config=preset_config,
               n_seeds=n_seeds, seed=args.seed, resume=args.resume,
               progress=not args.no_progress and os.environ.get("SBJAX_NO_PROGRESS") is None)


def _get(cfg: Any, key: str, default: Any) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)
