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
