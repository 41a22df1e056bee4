"""The shared ground of the experiments: presets as data with --set overrides, the help text,
figures saved with their data and redrawn from a run folder, the closing results table."""

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import common
from tests.helpers import assert_figure

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    steps: int = 100


@dataclasses.dataclass(frozen=True)
class Preset:
    n_seeds: int = 3
    train: Inner = Inner()
    per_dataset: dict = dataclasses.field(default_factory=lambda: {"lms5": 1000, "ms57": 2000})
    models: tuple = ("fcn_100x1",)
    verbose_flag: bool = False


def test_overrides_walk_dataclasses_and_dicts_and_keep_types():
    p = common.apply_overrides(
        Preset(),
        [
            "train.lr=0.05",
            "per_dataset.ms57=5000",
            "models=('a', 'b')",
            "verbose_flag=true",
            "n_seeds=5",
        ],
    )
    assert p.train == Inner(lr=0.05, steps=100) and p.per_dataset == {"lms5": 1000, "ms57": 5000}
    assert p.models == ("a", "b") and p.verbose_flag is True and p.n_seeds == 5
    assert Preset().train.lr == 0.1  # the original is unchanged
    assert isinstance(common.apply_overrides(Preset(), ["train.lr=1"]).train.lr, float)


@pytest.mark.parametrize(
    "item,match",
    [
        ("train.lrr=0.1", "'lrr' is not a preset key; expected one of lr, steps"),
        ("train.steps=1.5", "type int"),
        ("n_seeds", "KEY=VALUE"),
        ("n_seeds.x=1", "goes below"),
        ("verbose_flag=2", "type bool"),
    ],
)
def test_bad_overrides_name_the_key_and_what_is_allowed(item, match):
    with pytest.raises(ValueError, match=match):
        common.apply_overrides(Preset(), [item])


def test_help_shows_paragraphs_and_defaults_once_and_explains_presets():
    doc = "Title.\n\n* first bullet\n* second bullet\n\n    python -m experiments.x --preset quick"
    text = common.make_parser(
        "x",
        doc,
        {"quick": 1, "smoke": 1, "nb03": 1},
        preset_help={"nb03": "the notebook's single run"},
    ).format_help()
    assert "* first bullet\n* second bullet" in text and "\n    python -m experiments.x" in text
    assert "(default: None)" not in text and "(default: the preset's) (default" not in text
    assert "nb03: the notebook's single run" in text and "smoke: seconds" in text
    with pytest.raises(ValueError, match="preset_help"):
        common.make_parser("x", doc, {"custom": 1})


def test_figures_are_saved_with_their_data_and_redrawn(tmp_path):
    from sbjax import plots

    run = common.Run(
        name="x",
        out=tmp_path / "run",
        preset="smoke",
        preset_config={},
        n_seeds=2,
        seed=0,
        resume=False,
        progress=False,
    )
    scores = {
        "standard": np.linspace(-3, 3, 200).reshape(2, 100),
        "s_randomized": np.zeros((2, 100)),
        "sc_randomized": np.ones((2, 100)),
    }
    y = np.arange(100) % 2
    png = run.figure(
        "fig.png", "logit_histograms", panels=plots.logit_panels(scores, y), title="test figure"
    )
    assert_figure(png)
    first = png.read_bytes()
    spec = json.loads((run.out / "figures" / "fig.json").read_text())
    assert spec["tree"]["kind"] == "logit_histograms" and spec["tree"]["file"] == "fig.png"
    png.unlink()
    out = subprocess.run(
        [sys.executable, "-m", "sbjax.plots", str(run.out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert_figure(png)
    assert png.read_bytes() == first  # the same data draws the same picture
    with pytest.raises(ValueError, match="kind"):
        run.figure("bad.png", "no_such_kind", x=1)


def test_redraw_of_a_folder_without_figure_data_is_a_clear_error(tmp_path):
    from sbjax import plots

    with pytest.raises(ValueError, match="run_dir"):
        plots.redraw(tmp_path)


def test_records_name_their_part_and_the_table_shows_paper_values(capsys):
    run = common.Run(
        name="x",
        out=Path("unused"),
        preset="smoke",
        preset_config={},
        n_seeds=2,
        seed=0,
        resume=False,
        progress=False,
    )
    run.add_result(
        dataset="lms5",
        model="fcn_100x1",
        part="s_removed",
        expect="relies on S^c: S^c-rand AUC near 0.5",
        metrics={"sc_rand_auc": [0.49, 0.51], "test_acc": [0.99, 1.0]},
        paper={"sc_rand_auc": 0.5},
    )
    table = common.results_table(run.results)
    assert "[s_removed] lms5 / fcn_100x1 (relies on S^c" in table
    assert "sc_rand_auc 0.5000±0.0141 [0.5]" in table and "2/2 seeds" in table
    t0 = time.perf_counter()
    assert common.record_label(run.results[0]).startswith("[s_removed]")
    assert time.perf_counter() - t0 < 0.1


def test_compute_dtype_option_reaches_every_sweep_config(tmp_path, monkeypatch):
    """--compute-dtype is recorded in config.json (only when not float32, so older run folders
    still resume) and run_sweep trains with it; other values are refused by the parser."""
    import sbjax.train

    parser = common.make_parser("x", "doc", {"smoke": None}, preset_help={"smoke": "s"})
    with pytest.raises(SystemExit):
        parser.parse_args(["--compute-dtype", "float16"])
    seen = []
    monkeypatch.setattr(
        sbjax.train, "train_sweep", lambda cfg, *a, **k: seen.append(cfg.compute_dtype) or 1 / 0
    )
    kw = dict(name="x", preset="smoke", preset_config={}, n_seeds=1, seed=0)
    train = (np.zeros((256, 2), np.float32), np.arange(256) % 2)  # passes the engine's checks
    for config, want in (({}, "float32"), ({"compute_dtype": "bfloat16"}, "bfloat16")):
        out = tmp_path / want
        run = common.Run(**kw, out=out, resume=False, progress=False, config=config)
        assert run.compute_dtype == want
        with pytest.raises(ZeroDivisionError):
            common.run_sweep(run, "s", sbjax.train.TrainConfig(), None, train, None)
    assert seen == ["float32", "bfloat16"]


# ------------------------------------------------------------------------------------------------
# The experiment skeleton (`common.Experiment`), training settings checked by TrainConfig, and
# docs/contributing.md's worked examples, executed as written.

EXPERIMENT_MODULES = (
    "extreme_sb",
    "suboptimal_generalization",
    "mnist_cifar",
    "uaps",
    "robustness_of_sb",
    "adversarial_training",
    "ensembles",
    "mitigation",
    "diagnostics",
    "shortcut_atlas",
)


@pytest.mark.parametrize("name", EXPERIMENT_MODULES)
def test_every_experiment_main_is_the_skeleton(name):
    import importlib

    mod = importlib.import_module(f"experiments.{name}")
    exp = mod.EXPERIMENT
    assert isinstance(exp, common.Experiment) and exp.name == mod.NAME == name
    assert mod.main == exp.main and exp.check is mod.check_preset
    if hasattr(mod, "PARTS"):  # the part names tests, docs and --parts use
        assert tuple(exp.part_names) == tuple(mod.PARTS)


def test_check_train_fields_names_the_set_key_value_and_rule():
    cfg = common.check_train_fields("studies.lms5", lr=0.05, batch_size=32, max_steps=None)
    assert (cfg.lr, cfg.batch_size, cfg.max_steps) == (0.05, 32, 10_000)  # None: the default
    cases = [
        (dict(prefix="studies.lms5", lr=-0.1), r"^studies\.lms5\.lr=-0\.1 is invalid: expected a "),
        (dict(momentum=1.0), r"^momentum=1\.0 is invalid: expected .*\[0\.0, 1\.0\)"),
        (dict(prefix="train", optimizer="lbfgs"), r"^train\.optimizer='lbfgs' is invalid: .*'sgd'"),
        (
            dict(keys={"lr_boundaries": "adv_lr_boundaries"}, lr_boundaries=(30, 10)),
            r"^adv_lr_boundaries=\(30, 10\) is invalid: expected a tuple of strictly increasing",
        ),
        (dict(keys={"max_steps": "max_steps.ms57"}, max_steps=0), r"^max_steps\.ms57=0 is inv"),
        (dict(prefix="train", need=("eval_every",), eval_every=None), r"^train\.eval_every=None"),
    ]
    for kw, match in cases:
        prefix = kw.pop("prefix", "")
        with pytest.raises(ValueError, match=match):
            common.check_train_fields(prefix, **kw)
    with pytest.raises(ValueError, match=r"^table7\.l2=-1 is invalid"):
        common.train_field("weight_decay")("table7.l2", -1)


def _doc_block(tag: str) -> str:
    """The fenced block after `<!-- example: tag -->` in docs/contributing.md."""
    text = (ROOT / "docs" / "contributing.md").read_text()
    start = text.index(f"<!-- example: {tag} -->")
    body = text[text.index("\n", text.index("```", start)) + 1 :]
    return body[: body.index("\n```")] + "\n"


def _import_file(name: str, path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(name, None)
    return mod


def _apply_unified_diff(text: str, diff: str) -> str:
    """Applies a unified diff's hunks by their context (line numbers are ignored)."""
    hunks, cur = [], None
    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            cur = ([], [])
            hunks.append(cur)
        elif cur is not None:
            tag, body = line[:1], line[1:]
            if tag in (" ", "-"):
                cur[0].append(body)
            if tag in (" ", "+"):
                cur[1].append(body)
    for old, new in hunks:
        before, after = "\n".join(old) + "\n", "\n".join(new) + "\n"
        assert text.count(before) == 1, f"the doc's patch no longer applies:\n{before}"
        text = text.replace(before, after)
    return text


def test_contributing_example_experiment_runs_with_its_parts(tmp_path):
    """docs/contributing.md's whole experiment, as written: --help, a bad --set, --parts."""
    path = tmp_path / "my_study.py"
    path.write_text(_doc_block("experiment"))
    mod = _import_file("my_study", path)
    assert mod.EXPERIMENT.part_names == ["depth1", "depth2"]
    with pytest.raises(SystemExit):
        mod.main(["--help"])
    with pytest.raises(ValueError, match=r"^train\.lr=-1\.0 is invalid"):
        mod.main(["--preset", "smoke", "--set", "train.lr=-1", "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "run"
    s = mod.main(["--preset", "smoke", "--parts", "depth2", "--out", str(out), "--no-progress"])
    (rec,) = s["results"]
    assert (rec["part"], rec["model"], rec["n_total"]) == ("depth2", "fcn_100x2", 2)
    assert set(rec["metrics"]) == {"test_acc", "s_rand_acc", "sc_rand_acc"}
    assert s["parts"] == ["depth2"] and set(s["part_runtime_s"]) == {"depth2"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["parts"] == ["depth2"] and cfg["experiment"] == "my_study"
    assert (out / "metrics.csv").exists()


def test_contributing_example_mitigation_method_is_four_lines(tmp_path):
    """docs/contributing.md's new mitigation method, applied to mitigation.py as written: the
    grid axis comes from the penalty's name, the generic trainer runs it, the record shows it."""
    from experiments import mitigation

    src = (ROOT / "experiments" / "mitigation.py").read_text()
    patched = _apply_unified_diff(src, _doc_block("mitigation"))
    path = tmp_path / "mitigation_logit_norm.py"
    path.write_text(patched)
    mod = _import_file("mitigation_logit_norm", path)
    assert "logit_norm" in mod.METHODS and mod.grid_hparam("logit_norm") == "lambda_logit_norm"
    assert not hasattr(mod.Methods, "run_logit_norm")  # the generic one-model trainer
    assert mitigation.grid_hparam("dbat") == "lambda_dbat"  # the module itself is unchanged
    argv = ["--preset", "smoke", "--methods", "logit_norm", "--set", "grids.logit_norm=[0.1]"]
    s = mod.main([*argv, "--out", str(tmp_path / "run"), "--no-progress"])
    rec, rec_source = s["results"]  # one record per selection rule
    assert (rec["method"], rec["hparams"]) == ("logit_norm", {"lambda": 0.1})
    assert (rec["selection"], rec_source["selection"]) == ("target_val", "source_val")
    assert rec["n_total"] == 2 and rec["metrics"]["test_acc"]["mean"] is not None


def test_mitigation_grid_axes_are_the_objectives_penalty_names():
    """One name per number: each grid's traced hyperparameter is its penalty's `hparam`."""
    from experiments import mitigation as mit

    want = {
        "spectral_decoupling": "lambda_spectral_decoupling",
        "sam": "sam_rho",
        "jtt": "lambda_jtt_up",
        "grad_diversity": "lambda_grad_similarity",
        "dbat": "lambda_dbat",
        "divdis": "lambda_divdis_mi",
        "dfr": None,  # a logistic-regression refit, not a training sweep
        "orthop": None,
        "group_dro": "dro_step",  # loss rules: their traced hyperparameter
        "lff": "lff_q",
    }
    assert {m: mit.grid_hparam(m) for m in mit.GRID_AXIS} == want
    for m, spec in mit.objectives().items():
        rule = spec.objective.loss_rule
        assert spec.axis in spec.objective.penalties or spec.axis.hparam in rule.hparams, m
        assert spec.axis.hparam in spec.objective.hparam_defaults, m
