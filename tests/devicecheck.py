"""A test shim that catches tensors created or computed off the model's device, on a CPU-only machine.

On the CPU every tensor lands on the CPU, so a forgotten ``device=`` passes every test and fails only on
a GPU. :class:`DeviceCheck` is a :class:`torch.overrides.TorchFunctionMode` that records

* **implicit factories**: a tensor factory (``torch.zeros``, ``torch.tensor``, ``torch.randn``, ...) called
  directly from package code without ``device=`` (it would land on the default device, the CPU);
* **results off the expected device**: any torch call from package code whose tensor result is not on
  ``expected`` — unless every tensor it was computed from was made on purpose on the host (a factory
  with an explicit ``device="cpu"``, or a ``.to("cpu")``/``.cpu()`` copy): deliberate host work such as
  scalar schedules and CPU state dicts stays allowed, everything else is reported.

With ``expected="cpu"`` the second check cannot fire, so CPU tests rely on the first; on a GPU
(``expected="cuda"``) both apply. Use it as a context manager (violations raise ``AssertionError`` on
exit, each with file, line and function) or through the ``device_check`` pytest fixture of the tests that
import it::

    with DeviceCheck("cpu"):
        rollout.push(rot, trans)
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

PACKAGE = Path(__file__).resolve().parents[1] / "openmm_starmd"
TORCH = Path(torch.__file__).resolve().parent

FACTORIES = {
    torch.tensor, torch.as_tensor, torch.asarray, torch.zeros, torch.ones, torch.full, torch.empty, torch.eye,
    torch.arange, torch.linspace, torch.logspace, torch.rand, torch.randn, torch.randint, torch.randperm,
    torch.scalar_tensor,
}
# data-carrying factories keep the device of a tensor argument
_FROM_DATA = {torch.as_tensor, torch.asarray}
TRANSFERS = {"to", "cpu", "cuda", "numpy", "tolist", "item", "__bool__", "__float__", "__int__", "__index__",
             "__len__", "__repr__", "__format__", "dim", "size", "numel", "device", "dtype", "shape",
             "is_floating_point", "data_ptr", "__get__"}
# Precomputed host tables, moved to the device once and cached there (IGSO3 builds its tables at import).
DEFAULT_ALLOW = ("IGSO3.__init__",)


def _name(func: Any) -> str:
    return getattr(func, "__name__", "") or str(func)


class DeviceCheck(TorchFunctionMode):
    """Record device violations of torch calls made from ``roots`` (default: the package's source tree).

    Parameters
    ----------
    expected
        The model's device; results of package computations must land there.
    roots
        Folders or files whose calls are checked.
    allow
        Function qualnames (``Class.method``) whose implicit factories are deliberate host work.
    """

    def __init__(self, expected: torch.device | str = "cpu", roots: Iterable[Path | str] = (PACKAGE,),
                 allow: Iterable[str] = DEFAULT_ALLOW) -> None:
        super().__init__()
        self.expected = torch.device(expected)
        self.roots = tuple(str(Path(r).resolve()) for r in roots)
        self.allow = set(allow)
        self.violations: list[str] = []
        self.checked = 0  # calls from package code seen (a check that saw nothing proves nothing)
        self._host: dict[int, weakref.ref] = {}  # tensors made on the host on purpose, by id

    def _mark_host(self, tensors: Iterable[torch.Tensor]) -> None:
        for x in tensors:
            self._host[id(x)] = weakref.ref(x)

    def _is_host(self, x: torch.Tensor) -> bool:
        ref = self._host.get(id(x))
        return ref is not None and ref() is x

    def _caller(self) -> Any:
        """The first frame outside torch and this file, and whether it called the function directly."""
        frame = sys._getframe(2)
        direct = True
        here = str(Path(__file__).resolve())
        while frame is not None:
            file = frame.f_code.co_filename
            if file != here and not file.startswith(str(TORCH)):
                return frame, direct
            if file.startswith(str(TORCH)) and not file.endswith(("overrides.py", "_device.py")):
                direct = False
            frame = frame.f_back
        return None, False

    def _ours(self, frame: Any) -> bool:
        return frame is not None and frame.f_code.co_filename.startswith(self.roots)

    def _matches(self, device: torch.device) -> bool:
        if device.type != self.expected.type:
            return False
        return self.expected.index is None or device.index is None or device.index == self.expected.index

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        frame, direct = self._caller()
        if not self._ours(frame):
            return result
        self.checked += 1
        where = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_qualname}"
        name = _name(func)
        flat_in = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
        flat_out = [x for x in tree_flatten(result)[0] if isinstance(x, torch.Tensor)]
        if func in FACTORIES:
            explicit = kwargs.get("device") is not None or (func in _FROM_DATA and bool(flat_in))
            if not explicit and direct and frame.f_code.co_qualname not in self.allow:
                self.violations.append(f"torch.{name} without device= at {where}")
            elif explicit and torch.device(kwargs.get("device", flat_in[0].device if flat_in else "cpu")).type == "cpu":
                self._mark_host(flat_out)
            return result
        if name in TRANSFERS:
            if name in ("to", "cpu"):
                self._mark_host(x for x in flat_out if x.device.type == "cpu")
            return result
        from_host = bool(flat_in) and all(self._is_host(x) for x in flat_in)
        for x in flat_out:
            if from_host and x.device.type == "cpu":
                self._mark_host([x])
            elif not self._matches(x.device):
                self.violations.append(f"{name} result on {x.device}, expected {self.expected}, at {where}")
        return result

    def __exit__(self, exc_type, exc, tb):
        out = super().__exit__(exc_type, exc, tb)
        if exc_type is None and self.violations:
            unique = list(dict.fromkeys(self.violations))
            raise AssertionError(f"{len(unique)} device violation(s):\n  " + "\n  ".join(unique))
        return out
