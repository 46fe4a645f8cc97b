"""What every lore command shares: expected errors as one line, and the device.

It lives in lore-datasets, the lowest package with a command (`lore-prepare`),
so that `lore-train` and `lore-eval` use the same code without importing each
other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .errors import DataError

# Failures a user can fix (bad data, a missing file, a bad value): one line, exit 2.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (DataError, FileNotFoundError, ValueError)


def resolve_device(name: str) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; a CUDA name without CUDA is an error."""
    import torch  # late: `lore-prepare --help` should not pay for it

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"--device {name}: this torch has no usable CUDA device")
    return name


def run_cli(
    prog: str,
    main: Callable[[], int],
    *,
    expected: tuple[type[BaseException], ...] = (),
) -> int:
    """Run ``main``; an expected failure prints ``prog: error: ...`` and returns 2.

    ``expected`` adds a command's own error types (say, an unknown user) to
    `EXPECTED_ERRORS`. Anything else is a bug and keeps its traceback.
    """
    try:
        return main()
    except (*EXPECTED_ERRORS, *expected) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
