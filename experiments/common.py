"""Shared plumbing of the paper experiments: CLI, run folders, result records.

Every experiment is `python -m experiments.<name> --preset quick|paper --out DIR` and writes
`config.json`, `env.json`, `summary.json`, `metrics.csv`, PNG figures and parameters into DIR.

`summary.json` schema (read by outside tools)::

    {"experiment": str, "preset": str, "runtime_s": float, "env": {...},
     "results": [{"experiment", "dataset", "model", <swept settings>,
                  "n_seeds" (used), "n_total", "n_diverged", "n_unconverged", "n_failed",
                  "seed_status": ["ok" | "diverged" | "unconverged" | ...],
                  "metrics": {name: {"mean", "std", "n", "per_seed": [...],
                                     "sampling_se" (AUC / accuracy with a known test size)}}}]}

    mean and std are over the used seeds only (failed models are excluded and counted); std is the
    sample std over seeds (ddof=1); sampling_se is the test set's own sampling error of the metric.

Usage inside an experiment (`Experiment` runs parse -> preset + --set -> check -> start_run ->
parts -> finish; docs/contributing.md has a whole example)::

    def part_table4(ctx: Context) -> None:
        r = run_sweep(ctx.run, "lms5_fcn", train_config(ctx.preset.train), model, train, val)
        ctx.run.add_result(dataset="lms5", model="fcn_100x1", metrics={"test_acc": acc}, status=r)

    EXPERIMENT = Experiment("extreme_sb", __doc__, PRESETS, parts={"table4": part_table4},
                            select="flag", check=check_preset)
    main = EXPERIMENT.main
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbjax import io

log = logging.getLogger("sbjax.experiments")

PRESET_CHOICES = ("quick", "paper")

# What each preset name means; experiments add their own (e.g. suboptimal_generalization's nb03).
PRESET_HELP = {
    "smoke": "seconds; tiny sizes for the test suite (checks plumbing, not results)",
    "quick": "CPU minutes; smaller data and fewer seeds, still shows the paper's effect",
    "paper": "the paper's sizes, architectures and >= 5 seeds (for a GPU / TPU)",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's paragraphs, bullets and example commands as written, and adds
    "(default: X)" to an option's help only where X says something (not None / False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default:" in text
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return text + " (default: %(default)s)"


def make_parser(
    name: str,
    description: str | None,
    presets: Mapping[str, Any],
    preset_help: Mapping[str, str] | None = None,
) -> argparse.ArgumentParser:
    """The common CLI: --preset, --set, --out, --seeds, --seed, --resume, --overwrite, --devices.

    Args:
      name: the experiment's module name (`python -m experiments.<name>`).
      description: the module docstring (shown verbatim by --help).
      presets: preset name -> preset.
      preset_help: one line per preset name that `PRESET_HELP` does not explain.
    """
    p = argparse.ArgumentParser(
        prog=f"python -m experiments.{name}",
        description=description,
        formatter_class=HelpFormatter,
    )
    helps = {**PRESET_HELP, **dict(preset_help or {})}
    missing = [k for k in presets if k not in helps]
    if missing:
        raise ValueError(f"preset_help is missing a line for preset(s) {missing}")
    p.add_argument(
        "--preset",
        choices=sorted(presets),
        default="quick",
        help="; ".join(f"{k}: {helps[k]}" for k in sorted(presets)),
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one preset value, e.g. --set train.lr=0.05 --set n_train=50000 "
        "(dotted path into the preset; repeatable; recorded in config.json)",
    )
    p.add_argument(
        "--out",
        default=f"runs/{name}",
        help="run folder (must not exist unless --resume or --overwrite)",
    )
    p.add_argument(
        "--seeds", type=int, default=None, help="number of seeds (default: the preset's)"
    )
    p.add_argument("--seed", type=int, default=0, help="root PRNG seed")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--resume", action="store_true", help="continue a killed run in --out from its checkpoints"
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out, only if it is a run folder of this experiment",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        help="CPU only: number of CPU devices, 1..cores (default: $SBJAX_CPU_DEVICES, "
        "else one per core); recorded in env.json",
    )
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use the persistent XLA compilation cache (~/.cache/sbjax/xla, "
        "or $SBJAX_COMPILATION_CACHE)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host: call jax.distributed.initialize() first",
    )
    p.add_argument(
        "--compute-dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="training forward/backward dtype: bfloat16 = mixed precision for GPUs and TPUs "
        "(float32 master weights, optimizer and evaluation; slower on CPU); recorded in "
        "config.json",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def apply_overrides(preset: Any, overrides: Sequence[str]) -> Any:
    """A copy of `preset` with dotted-path overrides "a.b=value" applied (configs as data).

    The preset is a tree of frozen dataclasses and dicts. Each value is parsed as a Python
    literal (numbers, booleans, None, strings, lists, tuples, dicts; a bare word is a string) and
    must fit the type of the value it replaces (an int field takes an int, a float field a
    number, a bool field True/False); unknown keys are an error that lists the allowed ones.

    Raises:
      ValueError: naming the override, the value and what is allowed.
    """
    for item in overrides:
        path, sep, text = item.partition("=")
        if not sep or not path.strip():
            raise ValueError(f"--set {item!r} is invalid: expected KEY=VALUE, e.g. train.lr=0.05")
        preset = _override(preset, path.strip().split("."), text.strip(), item)
    return preset


def resolve_preset(presets: Mapping[str, Any], args: argparse.Namespace) -> Any:
    """The preset named by --preset with the --set overrides applied (checked before any work)."""
    return apply_overrides(presets[args.preset], getattr(args, "overrides", []) or [])


def _parse_literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string (e.g. --set optimizer=adam)


def _coerce(old: Any, new: Any, item: str) -> Any:
    """`new` converted to the type of `old` where that is safe; a ValueError otherwise."""
    if old is None or new is None:
        return new
    if isinstance(old, bool):
        if isinstance(new, bool):
            return new
        if isinstance(new, str) and new.lower() in ("true", "false"):
            return new.lower() == "true"
    elif isinstance(old, int):
        if isinstance(new, int) and not isinstance(new, bool):
            return new
        if isinstance(new, float) and new.is_integer():
            return int(new)
    elif isinstance(old, float):
        if isinstance(new, (int, float)) and not isinstance(new, bool):
            return float(new)
    elif isinstance(old, str):
        if isinstance(new, str):
            return new
    elif isinstance(old, (list, tuple)):
        if isinstance(new, (list, tuple)):
            return type(old)(new)
    elif isinstance(old, Mapping):
        if isinstance(new, Mapping):
            return dict(new)
    else:
        return new
    raise ValueError(
        f"--set {item!r} is invalid: expected a value of type "
        f"{type(old).__name__} like the preset's {old!r}"
    )


def _override(node: Any, path: list[str], text: str, item: str) -> Any:
    key, rest = path[0], path[1:]
    if dataclasses.is_dataclass(node):
        names = [f.name for f in dataclasses.fields(node)]
        if key not in names:
            raise ValueError(
                f"--set {item!r} is invalid: {key!r} is not a preset key; expected "
                "one of " + ", ".join(names)
            )
        old = getattr(node, key)
        new = _override(old, rest, text, item) if rest else _coerce(old, _parse_literal(text), item)
        return dataclasses.replace(node, **{key: new})
    if isinstance(node, Mapping):
        if key not in node:
            raise ValueError(
                f"--set {item!r} is invalid: {key!r} is not a preset key; expected "
                "one of " + ", ".join(map(str, node))
            )
        old = node[key]
        new = _override(old, rest, text, item) if rest else _coerce(old, _parse_literal(text), item)
        return {**node, key: new}
    raise ValueError(
        f"--set {item!r} is invalid: {key!r} goes below a {type(node).__name__} value ({node!r})"
    )


# Per-seed status labels in summary records. "unconverged_used": the model hit its budget where
# the experiment does not require convergence, so it is used in means (and still counted).
SEED_OK, SEED_DIVERGED, SEED_UNCONVERGED, SEED_UNCONVERGED_USED, SEED_NONFINITE = (
    "ok",
    "diverged",
    "unconverged",
    "unconverged_used",
    "nonfinite_metric",
)
_USED = (SEED_OK, SEED_UNCONVERGED_USED)


def seed_status(stop_reason: Any, *, require_converged: bool = False) -> list[str]:
    """Per-seed status from a sweep's stop reasons (`SweepResult.stop_reason`, or the result).

    A diverged model is always a failure. A model that ran out of budget ("max_steps") is
    "unconverged": a failure only where the experiment requires convergence
    (`require_converged=True`), otherwise it is used and only counted.

    Returns:
      A list of statuses, one per model: "ok", "diverged" or "unconverged".
    """
    reasons = getattr(stop_reason, "stop_reason", stop_reason)
    out = []
    for r in reasons:
        if r == "diverged":
            out.append(SEED_DIVERGED)
        elif r == "converged" or not require_converged:
            out.append(SEED_OK if r == "converged" else SEED_UNCONVERGED_USED)
        else:
            out.append(SEED_UNCONVERGED)
    return out


def stats(per_seed: Any, used: Any = None) -> dict[str, Any]:
    """{"mean", "std", "n", "per_seed"} of a per-seed metric over the used seeds only.

    Args:
      per_seed: float [n_seeds] values (NaN allowed for failed seeds).
      used: bool [n_seeds]: seeds that enter mean and std (default: all). A used seed with a
        non-finite value is a caller error (`Run.add_result` marks such seeds as failed for the
        whole record first, so every metric of a record has one denominator).

    Returns:
      mean and std (the sample std over seeds, ddof=1; None with fewer than two used seeds)
      over used seeds, their count n, and every seed's value (failed seeds included, so the
      per-seed list keeps the seed order). mean is None when no seed is used.
    """
    a = np.asarray(per_seed, dtype=np.float64).reshape(-1)
    u = np.ones(a.shape, bool) if used is None else np.asarray(used, bool).reshape(-1)
    if u.shape != a.shape:
        raise ValueError(f"used has {u.size} entries for {a.size} per-seed values")
    v = a[u]
    if not np.all(np.isfinite(v)):
        raise ValueError("stats: a used seed has a non-finite value; mark it failed instead")
    return {
        "mean": float(v.mean()) if v.size else None,
        "std": float(v.std(ddof=1)) if v.size > 1 else None,
        "n": int(v.size),
        "per_seed": [float(x) for x in a],
    }


def sampling_se(name: str, mean: float | None, n_pos: int, n_neg: int) -> float | None:
    """The test set's own sampling error of a metric, to read next to the seed std.

    AUC: the null standard error sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg)) of a ROC-AUC of
    scores independent of the label (Mann-Whitney; about 0.006 at n_pos = n_neg = 5000), i.e. how
    far a randomized AUC may sit from 0.5 by chance. Accuracy: the binomial standard error
    sqrt(p (1 - p) / n) at the observed mean p. None for other metrics.
    """
    n = n_pos + n_neg
    if name.endswith("_auc") and n_pos > 0 and n_neg > 0:
        return float(np.sqrt((n + 1) / (12.0 * n_pos * n_neg)))
    if name.endswith("_acc") and mean is not None and n > 0:
        return float(np.sqrt(max(mean * (1 - mean), 0.0) / n))
    return None


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
    overwrite: bool = False
    config: dict = dataclasses.field(default_factory=dict)
    results: list[dict] = dataclasses.field(default_factory=list)
    rows: list[dict] = dataclasses.field(default_factory=list)
    figures: list[str] = dataclasses.field(default_factory=list)
    t0: float = dataclasses.field(default_factory=time.perf_counter)
    lock: Any = None  # the folder's `sbjax.io.RunLock`, held from start_run to finish
    _ready: bool = False

    @property
    def compute_dtype(self) -> str:
        """TrainConfig.compute_dtype of every sweep (--compute-dtype; in config.json when not
        float32)."""
        return self.config.get("compute_dtype", "float32")

    def ensure_folder(self) -> Path:
        """Creates (or reopens / replaces) the run folder on first use and writes config.json and
        env.json.

        The folder is made only when the first thing is written into it (a sweep's checkpoint, a
        figure, the summary), so a start that fails on its checks, its data or its model names
        leaves nothing behind and a retry is not refused. In a multi-process run (--distributed)
        only process 0 writes; the others get the path and write nothing.
        """
        if not self._ready and _is_main_process():
            io.prepare_run_dir(
                self.out, experiment=self.name, overwrite=self.overwrite, resume=self.resume
            )
            io.record_owned(self.out, io.RUN_MARKER, "env.json")
            io.write_json(self.out / io.RUN_MARKER, self.config)
            io.write_json(self.out / "env.json", io.environment_info())
            self._ready = True
        return self.out

    def own(self, name: str) -> Path:
        """The run folder's `name` (a file or folder), recorded as sbjax's (`--overwrite` then
        replaces it) before it is written; the folder is created first if needed."""
        out = self.ensure_folder()
        if _is_main_process():
            io.record_owned(out, name)
        return out / name

    def release(self) -> None:
        """Releases the run folder's lock (idempotent; `finish` calls it)."""
        if self.lock is not None:
            self.lock.release()

    def sweep_kwargs(self, sweep_name: str) -> dict[str, Any]:
        """Keyword arguments for `train_sweep`: checkpoint folder, resume flag, progress label."""
        return {
            "out_dir": self.own("sweeps") / sweep_name,
            "resume": self.resume,
            "progress": self.progress,
            "desc": sweep_name,
        }

    def path(self, filename: str) -> Path:
        """A file of the run folder (created first if needed), recorded as sbjax's."""
        return self.own(filename)

    def add_result(
        self,
        *,
        dataset: str,
        model: str,
        metrics: Mapping[str, Any],
        status: Any = None,
        require_converged: bool = False,
        paper: Mapping[str, Any] | None = None,
        test_size: tuple[int, int] | Mapping[str, tuple[int, int]] | None = None,
        **settings: Any,
    ) -> dict:
        """Appends one summary record; failed models are excluded from every mean and counted.

        Args:
          dataset, model: record names.
          metrics: name -> per-seed values [n_seeds] (every metric of a record has the same
            seeds).
          status: per-seed status ("ok" / "diverged" / "unconverged" / ..., see `seed_status`),
            or a `SweepResult` / list of stop reasons (then `require_converged` decides whether a
            model that hit its budget is a failure). None: every seed is used.
          require_converged: with stop reasons, treat "max_steps" as a failure.
          test_size: (n_pos, n_neg) of the test set, or {metric name: (n_pos, n_neg)} where
            metrics use sets of different sizes: adds each test AUC / accuracy metric's
            `sampling_se` (the test set's own sampling error) next to the seed std (not to
            train_* metrics).
          paper: metric name -> the paper's (or reference's) value for this setting, printed
            beside sbjax's in the log line and the closing results table, stored as "paper".
          settings: extra fields of the record (part, n_complex, ...); "part" and "expect" (a
            short phrase saying what the record should show) name the record in logs.

        A seed whose metrics are not all finite (e.g. the NaN AUC of a degenerate model) is marked
        "nonfinite_metric" and excluded from every metric of the record, so no mean mixes
        denominators. The record carries n_seeds (used), n_total, n_diverged, n_unconverged,
        n_failed and seed_status; a record whose models all failed says so in "status" and has
        mean None.
        """
        per_seed = {k: np.asarray(v, np.float64).reshape(-1) for k, v in metrics.items()}
        n_total = max((v.size for v in per_seed.values()), default=0)
        for k, v in per_seed.items():
            if v.size != n_total:
                raise ValueError(f"metric {k!r} has {v.size} seeds, others {n_total}")
        if status is None:
            st = [SEED_OK] * n_total
        elif hasattr(status, "stop_reason") or all(
            s in ("converged", "diverged", "max_steps") for s in status
        ):  # stop reasons (a list of only "diverged" reads the same either way)
            st = seed_status(status, require_converged=require_converged)
        else:
            st = list(status)
        if len(st) != n_total:
            raise ValueError(f"status has {len(st)} entries for {n_total} seeds")
        finite = (
            np.all([np.isfinite(v) for v in per_seed.values()], axis=0)
            if per_seed
            else (np.ones(n_total, bool))
        )
        st = [
            SEED_NONFINITE if s in _USED and not f else s for s, f in zip(st, finite, strict=True)
        ]
        used = np.asarray([s in _USED for s in st], bool)
        per = {k: stats(v, used) for k, v in per_seed.items()}
        if test_size is not None:
            for k, v in per.items():
                size = test_size.get(k) if isinstance(test_size, Mapping) else test_size
                if size is None or k.startswith("train_"):  # train metrics: not a test set
                    continue
                se = sampling_se(k, v["mean"], int(size[0]), int(size[1]))
                if se is not None:
                    v["sampling_se"] = se
        rec: dict[str, Any] = {"experiment": self.name, "dataset": dataset, "model": model}
        rec["n_seeds"] = int(used.sum())
        rec["n_total"] = int(n_total)
        rec["n_diverged"] = st.count(SEED_DIVERGED)
        rec["n_unconverged"] = st.count(SEED_UNCONVERGED) + st.count(SEED_UNCONVERGED_USED)
        rec["n_failed"] = int(n_total - used.sum())
        rec["seed_status"] = st
        if n_total and not used.any():
            rec["status"] = "all models failed"
        rec.update(io.to_jsonable(settings))
        if paper:
            rec["paper"] = io.to_jsonable(dict(paper))
        rec["metrics"] = per
        self.results.append(rec)
        for name, s in per.items():
            for i, v in enumerate(s["per_seed"]):
                row = {
                    "dataset": dataset,
                    "model": model,
                    **io.to_jsonable(settings),
                    "metric": name,
                    "seed": i,
                    "status": st[i],
                    "value": v,
                }
                self.rows.append(row)
        label = record_label(rec)
        if rec.get("status"):
            log.warning("%s: all %d models failed (%s)", label, n_total, st)
        else:
            shown = {k: v for k, v in per.items() if not paper or k in paper} or per
            log.info(
                "%s (%d of %d seeds used): %s",
                label,
                rec["n_seeds"],
                n_total,
                ", ".join(
                    f"{k}={_fmt(v)}" + (f" (paper {paper[k]})" if paper and k in paper else "")
                    for k, v in shown.items()
                ),
            )
        return rec

    def figure(self, filename: str, kind: str, **args: Any) -> Path:
        """Saves a figure's data in the run folder and draws it (`sbjax.plots.save_and_draw`),
        so `python -m sbjax.plots RUN_DIR` can redraw it without rerunning.

        Args:
          filename: PNG file name inside the run folder.
          kind: a figure kind registered in `sbjax.plots.FIGURES`.
          args: the drawing function's arguments (arrays, dicts, lists, numbers, strings).
        """
        from sbjax import plots

        self.figures.append(filename)
        if not _is_main_process():
            return self.out / filename
        self.own("figures")  # the figure's data, for `python -m sbjax.plots RUN_DIR`
        self.own(filename)
        return plots.save_and_draw(self.out, filename, kind, **args)

    def save_params(self, name: str, tree: Any) -> None:
        """Saves stacked model variables to params/<name>.npz (process 0 only)."""
        if not _is_main_process():
            return
        io.save_npz(self.own("params") / f"{name}.npz", tree)

    def finish(self, extra: Mapping[str, Any] | None = None) -> dict:
        """Writes summary.json and metrics.csv, releases the folder's lock; returns the summary."""
        self.ensure_folder()
        summary = {
            "experiment": self.name,
            "preset": self.preset,
            "n_seeds": self.n_seeds,
            "seed": self.seed,
            "runtime_s": time.perf_counter() - self.t0,
            "env": io.environment_info(),
            "results": self.results,
        }
        if self.figures:
            summary["figures"] = list(self.figures)
        if extra:
            summary.update(io.to_jsonable(dict(extra)))
        if not _is_main_process():  # every process computed it; process 0 writes it
            return summary
        io.write_json(self.own("summary.json"), summary)
        io.write_csv(self.own("metrics.csv"), self.rows)
        self.release()
        print(results_table(self.results), flush=True)
        log.info("wrote %s (%.1f s)", self.out / "summary.json", summary["runtime_s"])
        return summary


def releases_run_lock(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for an experiment's `main`: the run folder's lock (taken by `start_run`) is
    released when `main` returns or raises, so a failed start leaves no lock file behind."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        finally:
            io.RunLock.release_all()

    return wrapped


def start_run(
    name: str,
    args: argparse.Namespace,
    preset_config: Any,
    extra_config: Mapping[str, Any] | None = None,
) -> Run:
    """Sets up devices, logging and the compilation cache, and checks the run folder.

    Call it after the experiment's own arguments, data and model names are checked, and before
    the first JAX computation (it fixes the CPU device count: --devices N, else
    $SBJAX_CPU_DEVICES, else one per core; a bad count is an error). Nothing is created or
    deleted here: `Run.ensure_folder` does that when the first file is written. On --resume, the
    stored config must equal this run's, so a resumed run cannot silently mix settings.
    """
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_third_party_loggers(args.verbose)
    from sbjax.runtime import configure_cpu_devices, init_distributed

    n_seeds = args.seeds if args.seeds is not None else _get(preset_config, "n_seeds", 1)
    if n_seeds < 1:
        raise ValueError(f"--seeds={n_seeds} is invalid: expected an integer >= 1")
    n_devices = configure_cpu_devices(args.devices)
    config = {
        "experiment": name,
        "preset": args.preset,
        "overrides": list(getattr(args, "overrides", []) or []),
        "n_seeds": n_seeds,
        "seed": args.seed,
        "preset_config": io.to_jsonable(preset_config),
        **io.to_jsonable(dict(extra_config or {})),
    }
    compute_dtype = getattr(args, "compute_dtype", "float32")
    if compute_dtype != "float32":  # absent at the default: older run folders still resume
        config["compute_dtype"] = compute_dtype
    out = io.check_run_dir(args.out, experiment=name, overwrite=args.overwrite, resume=args.resume)
    _check_resume_config(out, config, args.resume)
    init_distributed(args.distributed or None)
    lock = None
    if _is_main_process():
        # One run per folder: a second run on this --out fails here, before it touches anything.
        # The folder is checked again under the lock (it may have changed while we waited).
        lock = io.RunLock(out, name).acquire()
        try:
            io.check_run_dir(out, experiment=name, overwrite=args.overwrite, resume=args.resume)
            _check_resume_config(out, config, args.resume)
        except BaseException:
            lock.release()
            raise
    if not getattr(args, "no_compile_cache", False):
        enable_compilation_cache()
    import jax

    # This process's devices: with --distributed, jax.devices() lists every process's.
    have = len(jax.local_devices(backend="cpu"))
    if jax.default_backend() == "cpu" and have != n_devices:
        raise RuntimeError(f"asked XLA for {n_devices} CPU devices, got {have}")
    return Run(
        name=name,
        out=out,
        preset=args.preset,
        preset_config=preset_config,
        n_seeds=n_seeds,
        seed=args.seed,
        resume=args.resume,
        overwrite=args.overwrite,
        config=config,
        progress=not args.no_progress and os.environ.get("SBJAX_NO_PROGRESS") is None,
        lock=lock,
    )


def _check_resume_config(out: Path, config: Mapping[str, Any], resume: bool) -> None:
    """On --resume, the stored config must equal this run's (no silent mix of settings)."""
    cfg_path = out / io.RUN_MARKER
    if resume and cfg_path.exists():
        old = io.read_json(cfg_path)
        if json.dumps(old, sort_keys=True) != json.dumps(io.to_jsonable(config), sort_keys=True):
            raise ValueError(
                f"--resume is invalid: {str(cfg_path)!r} was written with a different "
                "configuration; use a new --out or --overwrite"
            )


def quiet_third_party_loggers(verbose: bool = False) -> None:
    """JAX's "Unable to initialize backend 'tpu'" and matplotlib's font-cache lines are INFO
    messages about the environment, not the run: show them only with --verbose."""
    level = logging.DEBUG if verbose else logging.WARNING
    for name in ("jax", "jax._src.xla_bridge", "matplotlib", "absl"):
        logging.getLogger(name).setLevel(level)


CACHE_ENV = "SBJAX_COMPILATION_CACHE"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache, unless the user configured one already.

    Identical programs (every sweep of a resumed run, a rerun with another --out) then load
    from disk instead of recompiling. Default folder: $SBJAX_COMPILATION_CACHE, else
    ~/.cache/sbjax/xla (set $SBJAX_COMPILATION_CACHE=0 to turn the cache off).

    Returns:
      The cache folder in effect, or None when off.
    """
    from sbjax.train.sweep import enable_compilation_cache as enable

    env = os.environ.get(CACHE_ENV)
    if env == "0":
        return None
    return str(enable(path or env or (Path.home() / ".cache" / "sbjax" / "xla")))


def _get(cfg: Any, key: str, default: Any) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _fmt(st: Mapping[str, Any]) -> str:
    """mean ± sample std (± '-' with one seed) for log lines."""
    mean, std = st["mean"], st["std"]
    if mean is None:
        return "n/a"
    return f"{mean:.4f}±{std:.4f}" if std is not None else f"{mean:.4f}±-"


def record_label(rec: Mapping[str, Any]) -> str:
    """How logs and tables name a record: "[part] dataset / model (what is expected)"."""
    text = f"{rec['dataset']} / {rec['model']}"
    if rec.get("part"):
        text = f"[{rec['part']}] {text}"
    if rec.get("expect"):
        text += f" ({rec['expect']})"
    return text


def results_table(results: Sequence[Mapping[str, Any]], max_metrics: int = 4) -> str:
    """A short plain-text table of every record: its headline metrics as mean ± sample std over
    the used seeds, with the paper's value beside each where the record has one."""
    lines = ["", "Results (mean ± sample std over used seeds; paper value in brackets):"]
    for rec in results:
        per = rec.get("metrics", {})
        paper = rec.get("paper") or {}
        names = [k for k in paper if k in per] or list(per)[:max_metrics]
        if rec.get("status"):
            cells = [rec["status"]]
        elif rec.get("report", "ok") != "ok":  # e.g. "did not fit": no number in the table
            cells = [rec["report"]]
        else:
            cells = [
                f"{k} {_fmt(per[k])}" + (f" [{paper[k]}]" if k in paper else "") for k in names
            ]
        used = f"{rec.get('n_seeds', '?')}/{rec.get('n_total', '?')} seeds"
        lines.append(f"  {record_label(rec)}: " + "; ".join(cells) + f"  ({used})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Small helpers shared by experiments with parts and sweeps.


def check_train_fields(
    prefix: str = "",
    *,
    keys: Mapping[str, str] | None = None,
    need: Iterable[str] = (),
    **fields: Any,
):
    """Validates a preset's training settings once, by `sbjax.train.TrainConfig` itself.

    Builds `TrainConfig(**fields)` (None fields left out: the experiment fills them in later)
    and re-raises its ValueError with the field named as --set spells it, so every training
    setting (lr, momentum, weight_decay, batch_size, max_steps, eval_every, patience, stop_rule,
    stop_eps, optimizer, lr_boundaries, adv_*, ...) is checked by the one rule that trains.

    Args:
      prefix: the dotted preset key holding the fields (e.g. "studies.lms5", "train"); "" for
        fields at the preset's top level.
      keys: field -> its --set key where that is not `prefix.field` (e.g. {"max_steps":
        "max_steps.lms5"}, {"lr_boundaries": "adv_lr_boundaries"}).
      need: fields that must not be None here (an integer >= 1 is expected).
      fields: `TrainConfig` fields and their preset values.

    Returns:
      The `TrainConfig`.

    Raises:
      ValueError: "<key>=<value> is invalid: expected <what is allowed>", e.g.
        "studies.lms5.lr=-0.1 is invalid: expected a finite real number in (0.0, inf)".
    """
    from sbjax.train.config import TrainConfig
    from sbjax.validate import fail

    def key(field: str) -> str:
        if keys and field in keys:
            return keys[field]
        return f"{prefix}.{field}" if prefix else field

    for f in need:
        if fields.get(f) is None:
            fail(key(f), fields.get(f), "an integer >= 1")
    try:
        return TrainConfig(**{k: v for k, v in fields.items() if v is not None})
    except ValueError as e:
        field, sep, rest = str(e).partition("=")
        if not sep or field not in fields:
            raise
        raise ValueError(f"{key(field)}={rest}") from None


def train_field(field: str):
    """`check(key, value)` of one `TrainConfig` field, for `check_per_dataset` (e.g. a
    {dataset: max_steps} map): TrainConfig's rule, the error naming `key`."""
    return lambda key, value: check_train_fields(keys={field: key}, **{field: value})


def parse_parts(text: str, parts: Sequence[str]) -> list[str]:
    """--parts: 'all' or a comma-separated subset of `parts` -> list in canonical order.

    Raises:
      ValueError: naming "parts", the value and the allowed names.
    """
    from sbjax.validate import fail

    if text.strip() == "all":
        return list(parts)
    wanted = [p.strip() for p in text.split(",") if p.strip()]
    if not wanted or any(p not in parts for p in wanted):
        fail("parts", text, "'all' or a comma-separated subset of " + ", ".join(parts))
    return [p for p in parts if p in wanted]


def used_mask(rec: Mapping[str, Any]) -> np.ndarray:
    """bool [n_total]: the seeds of a summary record that enter its means (not failed)."""
    return np.asarray([s in _USED for s in rec["seed_status"]], bool)


def run_sweep(
    run: Run,
    name: str,
    cfg: Any,
    model: Any,
    train: Any,
    val: Any,
    *,
    save: str | None = "params",
    timings: dict | None = None,
    n_seeds: int | None = None,
    seed: int | None = None,
    **kwargs: Any,
):
    """`sbjax.train.train_sweep` of run.n_seeds seeds with the run's checkpoints and progress.

    Saves the stacked `save` field of the result ("params", "best_params" or None) to
    params/<name>.npz, records {"compile_s", "wall_s"} (the sweep's own) and "call_s" (the whole
    call, host work included) in `timings[name]` and logs the models that diverged or did not
    converge.

    Args:
      run: the `Run`. name: the sweep's name (checkpoint folder, progress label, params file).
      cfg, model, train, val: `train_sweep`'s arguments. n_seeds: seeds of this sweep (default
        run.n_seeds). seed: the root seed of its keys (default run.seed). kwargs: more of them
        (grid, periods_per_chunk, n_members, ...).
    """
    from sbjax.train import train_sweep

    # the fastest program per model family on CPU (sbjax.train.sweep.resolve_loop / _vectorize)
    kwargs.setdefault("loop", "auto")
    kwargs.setdefault("vectorize", "auto")
    from sbjax.train.engine import prepare_data

    if run.compute_dtype != "float32":
        cfg = dataclasses.replace(cfg, compute_dtype=run.compute_dtype)
    # The engine's data checks (shapes, batch size <= training set, finite inputs) before the
    # run folder is created or replaced: a bad --set value leaves the previous run intact.
    prepare_data(cfg, train, val, kwargs.get("monitor"))
    t0 = time.perf_counter()
    r = train_sweep(
        cfg,
        model,
        train,
        val,
        n_seeds=run.n_seeds if n_seeds is None else n_seeds,
        seed=run.seed if seed is None else seed,
        **kwargs,
        **run.sweep_kwargs(name),
    )
    wall = time.perf_counter() - t0
    if save:
        run.save_params(name, getattr(r, save))
    if timings is not None:
        timings[name] = {
            "compile_s": float(getattr(r, "compile_s", float("nan"))),
            "wall_s": float(getattr(r, "wall_s", wall)),
            "call_s": float(wall),
        }
    reasons = list(r.stop_reason)
    bad = {s: [i for i, v in enumerate(reasons) if v == s] for s in ("diverged", "max_steps")}
    if bad["diverged"]:
        log.warning("%s: models %s of %d diverged", name, bad["diverged"], len(reasons))
    if bad["max_steps"] and getattr(cfg, "stop_rule", None) != "none":  # none: a fixed budget
        log.info(
            "%s: models %s of %d used their whole budget (did not converge)",
            name,
            bad["max_steps"],
            len(reasons),
        )
    return r


def _is_main_process() -> bool:
    """Process 0 of a multi-process run (always True in one process); only it writes files."""
    import jax

    return jax.process_index() == 0


# ------------------------------------------------------------------------------------------------
# The experiment skeleton: parse -> preset + --set -> CLI flags -> check -> start_run -> parts ->
# figures and summary extras -> finish (summary.json, metrics.csv, the closing table).


@dataclasses.dataclass
class Context:
    """What an experiment's hooks and parts see (`Experiment`).

    Attributes:
      args: the parsed command line (the common flags and the experiment's own).
      preset: the preset after --set, the experiment's CLI flags (`Experiment.prepare`) and, from
        `Experiment.check` on, checked.
      parser: the command-line parser (for `parser.error` in a hook).
      parts: the parts that run, in the experiment's order.
      run: the `Run` (None before `start_run`).
      extra: summary.json's experiment-specific fields, in the order they are written (with
        --parts: starts as {"parts": [...]}); parts and hooks fill it.
      outputs: part name -> what the part returned.
      part_s: part name -> its wall time in seconds.
      state: whatever `Experiment.setup` shares with the parts (data draws, progress bars).
    """

    args: argparse.Namespace
    preset: Any
    parser: argparse.ArgumentParser
    parts: list[str] = dataclasses.field(default_factory=list)
    run: Run | None = None
    extra: dict = dataclasses.field(default_factory=dict)
    outputs: dict = dataclasses.field(default_factory=dict)
    part_s: dict = dataclasses.field(default_factory=dict)
    state: dict = dataclasses.field(default_factory=dict)


Hook = Callable[[Context], Any]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment's command: every step the ten experiments share, in one order.

    `Experiment.main(argv)` parses the command line (`make_parser` plus `options`), picks the
    parts (`select`), resolves the preset (--preset, then --set), applies the experiment's flags
    (`prepare`), checks it (`check`), then -- only now -- calls `start_run` (devices, run folder,
    lock) with the `config` entries, runs `setup`, every selected part (or `body`), `finish`, and
    `Run.finish` (summary.json with `Context.extra`, metrics.csv, the closing table). The run
    folder's lock is released however `main` ends. Nothing before `start_run` imports JAX's
    backends, so every bad value fails in milliseconds and leaves no folder behind.

    Attributes:
      name: the module name (`python -m experiments.<name>`), the run folder's experiment.
      doc: the module docstring (--help shows it verbatim).
      presets: preset name -> preset (a frozen dataclass tree; --set edits it).
      parts: part name -> `part(ctx)` run in this order (its return value lands in
        `ctx.outputs[name]`), or just the names when `body` runs them.
      preset_help: one line per preset that `PRESET_HELP` does not explain.
      select: which parts run: "all" (every part), "flag" (a --parts option: 'all' or a
        comma-separated subset, `parse_parts`; config.json and summary.json record the list as
        "parts"), or `select(ctx) -> names` (from the experiment's own flags).
      options: `options(parser)` adds the experiment's own flags.
      prepare: `prepare(ctx) -> preset`: the preset with the experiment's flags applied (e.g.
        --models); checks those flags. Runs after --set, before `check`.
      check: `check(preset)`: validates the preset (errors name the key as --set spells it).
      config: `config(ctx) -> {key: value}`: more config.json entries (the flags that change
        results); may check flags against the checked preset.
      setup: `setup(ctx)`: after `start_run`, before the first part (shared data, `ctx.extra`'s
        first keys).
      body: `body(ctx)`: runs the selected parts itself (for experiments whose parts share one
        loop); None: the skeleton calls each selected part in order.
      finish: `finish(ctx)`: figures and the last summary extras, after the parts.
    """

    name: str
    doc: str | None
    presets: Mapping[str, Any]
    parts: Mapping[str, Hook] | Sequence[str] = ()
    preset_help: Mapping[str, str] | None = None
    select: str | Hook = "all"
    options: Callable[[argparse.ArgumentParser], None] | None = None
    prepare: Hook | None = None
    check: Callable[[Any], None] | None = None
    config: Hook | None = None
    setup: Hook | None = None
    body: Hook | None = None
    finish: Hook | None = None

    def __post_init__(self) -> None:
        if self.body is None and not isinstance(self.parts, Mapping):
            raise ValueError(f"{self.name}: parts must map names to functions when body is None")
        if isinstance(self.select, str) and self.select not in ("all", "flag"):
            raise ValueError(f"{self.name}: select must be 'all', 'flag' or a function")

    @property
    def part_names(self) -> list[str]:
        return list(self.parts)

    def make_parser(self) -> argparse.ArgumentParser:
        """The command line: `make_parser`'s common flags, --parts (select="flag"), `options`."""
        parser = make_parser(self.name, self.doc, self.presets, preset_help=self.preset_help)
        if self.select == "flag":
            parser.add_argument(
                "--parts",
                default="all",
                help="comma-separated subset of " + ", ".join(self.part_names) + " (or all)",
            )
        if self.options is not None:
            self.options(parser)
        return parser

    def prepare_context(self, argv: Sequence[str] | None = None) -> Context:
        """Every step before `start_run`: parse, select the parts, resolve, prepare and check the
        preset. Raises (ValueError naming the key, or SystemExit from the parser) before any
        work."""
        parser = self.make_parser()
        args = parser.parse_args(argv)
        ctx = Context(args=args, preset=None, parser=parser)
        if self.select == "flag":
            ctx.parts = parse_parts(args.parts, self.part_names)
        ctx.preset = resolve_preset(self.presets, args)
        if self.select == "all":
            ctx.parts = self.part_names
        elif callable(self.select):
            ctx.parts = list(self.select(ctx))
        if self.prepare is not None:
            ctx.preset = self.prepare(ctx)
        if self.check is not None:
            self.check(ctx.preset)
        return ctx

    def main(self, argv: Sequence[str] | None = None) -> dict:
        """Runs the experiment (`python -m experiments.<name> ...`); returns the summary."""
        try:
            ctx = self.prepare_context(argv)
            config: dict[str, Any] = {"parts": ctx.parts} if self.select == "flag" else {}
            if self.config is not None:
                config.update(self.config(ctx) or {})
            ctx.run = start_run(self.name, ctx.args, ctx.preset, extra_config=config or None)
            if self.select == "flag":
                ctx.extra["parts"] = ctx.parts
            if self.setup is not None:
                self.setup(ctx)
            if self.body is not None:
                self.body(ctx)
            else:
                for part in ctx.parts:
                    t0 = time.perf_counter()
                    ctx.outputs[part] = self.parts[part](ctx)
                    ctx.part_s[part] = time.perf_counter() - t0
                    log.info("part %s done in %.1f s", part, ctx.part_s[part])
            if self.finish is not None:
                self.finish(ctx)
            return ctx.run.finish(ctx.extra)
        finally:
            io.RunLock.release_all()


def t_interval(values: Any) -> dict[str, Any]:
    """{"mean", "ci95" [lo, hi], "n"}: 95 % t-interval over the finite values (None if n < 2)."""
    from scipy.stats import t as student_t

    v = np.asarray(values, np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean = float(v.mean())
    if n < 2:
        return {"mean": mean, "ci95": None, "n": n}
    half = float(student_t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}
