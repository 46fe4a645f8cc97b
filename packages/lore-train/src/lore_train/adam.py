"""torch.optim.Adam without the one-time import of torch._dynamo.

torch.optim wraps ``Optimizer.step`` (and ``add_param_group``, ``zero_grad``,
``state_dict``, ``load_state_dict``) in helpers that import torch._dynamo on
their first call, for torch.compile's sake: about 1.7 s (4 s on a busy
machine) of a `lore-train` run that never compiles anything. This subclass
calls the wrapped methods underneath, with the same arguments and the same
grad mode, so the arithmetic and the state dicts are torch's own, bit for
bit. Where a torch version does not expose them, the normal methods run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer


def _unwrapped(method: Any) -> Any | None:
    """The function a torch.optim helper decorator wraps (functools.wraps), or None."""
    return getattr(method, "__wrapped__", None)


_STEP = _unwrapped(torch.optim.Adam.step)
_ADD_PARAM_GROUP = _unwrapped(Optimizer.add_param_group)
_ZERO_GRAD = _unwrapped(Optimizer.zero_grad)
_STATE_DICT = _unwrapped(Optimizer.state_dict)
_LOAD_STATE_DICT = _unwrapped(Optimizer.load_state_dict)


class Adam(torch.optim.Adam):
    """`torch.optim.Adam` for eager use only (not for torch.compile: dynamo is not told
    to skip these methods)."""

    def step(self, closure=None):  # type: ignore[override]
        if _STEP is None or self.defaults["differentiable"]:
            return super().step(closure)
        with torch.no_grad():  # what torch's wrapper does for differentiable=False
            return _STEP(self, closure)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if _ADD_PARAM_GROUP is None:
            return super().add_param_group(param_group)
        return _ADD_PARAM_GROUP(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if _ZERO_GRAD is None:
            return super().zero_grad(set_to_none)
        return _ZERO_GRAD(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        if _STATE_DICT is None:
            return super().state_dict()
        return _STATE_DICT(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if _LOAD_STATE_DICT is None:
            return super().load_state_dict(state_dict)
        return _LOAD_STATE_DICT(self, state_dict)
