"""What every lore command shares: expected errors as one line, and the device.

It lives in lore-datasets, the lowest package with a command (`lore-prepare`),
so that `lore-train` and `lore-eval` use the same code without importing each
other.

An expected failure (bad data, a bad flag value, a missing or unreadable
file, an output place that cannot be written) is printed as one line
``prog: error: ...`` and the command exits with 2. Set the environment
variable ``LORE_DEBUG=1`` to get the full traceback instead (`DEBUG_ENV`).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

from ..errors import DataError
from . import collectives

# Failures a user can fix (bad data, a missing or unreadable file, a bad
# value, an output place that cannot be written): one line, exit 2.
# FloatingPointError: a fit whose loss became NaN or inf (a learning rate too high).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (DataError, OSError, ValueError,
                                                    FloatingPointError)
DEBUG_ENV = "LORE_DEBUG"


def debugging() -> bool:
    """Whether ``LORE_DEBUG`` asks for tracebacks (any value but "", "0", "false", "no")."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


class HelpFormatter(argparse.HelpFormatter):
    """Each flag's help ends with its default, written as a user would type it.

    Left alone: help that already names its default, required flags and
    positionals (nothing to default), on/off switches (off unless given), and
    defaults of None or "not given" (the help says what happens then).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or action.required
            or not action.option_strings
            or action.nargs == 0  # store_true/false, help, version
            or default is None
            or default is argparse.SUPPRESS
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        if shown == "":
            shown = "none"
        return f"{text} (default: {str(shown).replace('%', '%%')})"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (exit 2), like every other failure,
    and whose help shows every default (`HelpFormatter`; subcommands inherit both)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def resolve_device(name: str) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; a CUDA name without CUDA is an error."""
    import torch  # late: `lore-prepare --help` should not pay for it

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DataError(f"--device {name!r}: not a device name (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DataError(f"--device {name}: this torch has no usable CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DataError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise DataError(f"--device {name!r}: lore runs on cpu or cuda")
    return name


def run_cli(
    prog: str,
    main: Callable[[], int],
    *,
    expected: tuple[type[BaseException], ...] = (),
) -> int:
    """Run ``main``; an expected failure prints ``prog: error: ...`` and returns 2.

    ``expected`` adds a command's own error types (say, an unknown user) to
    `EXPECTED_ERRORS`. Anything else is a bug and keeps its traceback; under
    ``LORE_DEBUG=1`` expected failures keep theirs too.
    """
    try:
        return main()
    except (*EXPECTED_ERRORS, *expected) as err:
        if debugging():
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def run_cli_to_the_end(
    prog: str,
    main: Callable[[], int],
    *,
    expected: tuple[type[BaseException], ...] = (),
) -> int:
    """`run_cli` that always returns an exit status: an unexpected error prints its
    traceback and gives 1 (for a process that must then end itself, see
    `lore_datasets.runtime.collectives.end_process`)."""
    try:
        return run_cli(prog, main, expected=expected)
    except Exception:  # a bug: keep its traceback
        traceback.print_exc()
        return 1


def console_entry(main: Callable[[], int]) -> int:
    """A console script's body: ``main()``, and under torchrun the process then ends
    itself (`lore_datasets.runtime.collectives.end_process`: no interpreter teardown)."""
    code = main()
    if collectives.world_size() > 1:
        collectives.end_process(code)
    return code


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (an OSError without its errno prefix)."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())
