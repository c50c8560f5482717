"""Command-line entry point: ``gearsx demo`` or ``python -m gearsx demo``."""

from __future__ import annotations

import argparse

#: The demo's arguments, as its options' error messages name them, and their flags.
_FLAGS = {
    "`out_dir`": "--out",
    "`random_state`": "--seed",
    "`n_cells_per_slide`": "--cells-per-slide",
    "`gears_epochs`": "--gears-epochs",
}


def main(argv: list[str] | None = None) -> int:
    """Run the gearsx command-line interface."""
    parser = argparse.ArgumentParser(prog="gearsx", description="gearsx command-line interface")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job on the embedded simulated data set")
    demo.add_argument("--out", default="gearsx_demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--cells-per-slide", type=int, default=20_000, help="cells per simulated section")
    demo.add_argument("--gears-epochs", type=int, default=12, help="geometry-model epochs (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import check_demo_options, run_demo

        try:  # a bad option: one line naming its flag, not a traceback after minutes of work
            check_demo_options(args.out, args.seed, args.cells_per_slide, args.gears_epochs)
        except (ValueError, NotADirectoryError) as err:
            text = str(err)
            for name, flag in _FLAGS.items():
                text = text.replace(name, flag)
            demo.error(text)
        run_demo(
            args.out, random_state=args.seed, n_cells_per_slide=args.cells_per_slide, gears_epochs=args.gears_epochs
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
