"""python -m sbjax.plots RUN_DIR [--out DIR]: redraw every figure of a run from its saved data."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sbjax.plots",
        description="Redraws every figure of an sbjax run folder from the data saved with it "
        "(<run>/figures/*.json + .npz), without rerunning anything.",
    )
    p.add_argument("run_dir", nargs="?", help="a run folder written by an experiment command")
    p.add_argument("--out", default=None, help="write the PNGs here instead of into RUN_DIR")
    p.add_argument("--list", action="store_true", help="list the registered figure kinds")
    args = p.parse_args(argv)
    from sbjax.plots.registry import FIGURES, RedrawError, load_kinds, redraw

    if args.list:
        load_kinds()
        print("\n".join(sorted(FIGURES)))
        return 0
    if args.run_dir is None:
        p.error("the following argument is required: run_dir")
    try:
        paths = redraw(args.run_dir, args.out)
    except RedrawError as e:  # the intact figures were drawn; name the others
        for path in e.written:
            print(path)
        p.exit(1, f"error: {e}\n")
    except (ValueError, FileNotFoundError) as e:
        p.exit(2, f"error: {e}\n")
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
