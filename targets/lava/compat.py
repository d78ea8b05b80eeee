"""Makes lava-nc 0.10.0 and lava-dl 0.6.0 usable on Python 3.11+ and numpy 2, at import time.

Lava declares Python < 3.11 and numpy < 2. Three things break (../shared/notes/lava-fixed-point.md §5):

1. `lava/magma/compiler/var_model.py` uses dataclass instances as class-level defaults, which Python
   3.11 rejects at class creation. We load that one module through a finder that rewrites those
   defaults to `field(default_factory=...)` in memory; the file in site-packages is never touched.
2. `ReshapePort` (ports.py) builds `functools.partial(np.reshape, newshape=...)`, a keyword numpy 2.4
   removed. We replace the two methods with ones that call `np.reshape` positionally.
3. Errors inside process models are swallowed (the runtime only says "1 Exception(s) occurred. See
   output above" with nothing above). We wrap the process model's run loop to print the traceback.

4. netx's `Network.create_input` calls `int()` on one-element arrays (the input layer's weight and bias),
   which numpy 2 refuses. We hand it a view of the layer config in which those are scalars.

lava-dl's netx imports `slayer/__init__.py`, which imports `object_detection`, which needs torchvision
and cv2 (unavailable here). netx never uses it, so we register an empty stub module first.

Call `lava_ready()` before importing anything from `lava`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import traceback
import types
from functools import partial

import numpy as np

from spikedeploy.errors import BackendError

_VAR_MODEL = "lava.magma.compiler.var_model"
_OBJECT_DETECTION = "lava.lib.dl.slayer.object_detection"
_done = False


class _VarModelLoader(importlib.machinery.SourceFileLoader):
    def get_data(self, path):  # noqa: D401 - loader protocol
        data = super().get_data(path)
        if not str(path).endswith(".py"):
            return data
        src = data.decode("utf-8")
        src = re.sub(r"^(\s+\w+: ByteEncoder) = ByteEncoder\(\)", r"\1 = field(default_factory=ByteEncoder)", src,
                     flags=re.M)
        src = src.replace("from dataclasses import dataclass, InitVar",
                          "from dataclasses import dataclass, InitVar, field", 1)
        return src.encode("utf-8")

    def path_stats(self, path):
        # Force recompilation from the rewritten source instead of a cached .pyc of the original.
        raise OSError("no bytecode cache for rewritten module")


class _VarModelFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _VAR_MODEL:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        loader = _VarModelLoader(fullname, spec.origin)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


def _reshape_to(shape, data):
    return np.reshape(data, shape)


def _patch_ports() -> None:
    from lava.magma.core.process.ports import ports

    def fwd(self):
        return partial(_reshape_to, self.shape)

    def bwd(self):
        return partial(_reshape_to, self.old_shape)

    ports.ReshapePort.get_transform_func_fwd = fwd
    ports.ReshapePort.get_transform_func_bwd = bwd


def _patch_error_reporting() -> None:
    from lava.magma.core.model.py import model

    original = model.AbstractPyProcessModel.run
    if getattr(original, "_spikedeploy_wrapped", False):
        return

    def run(self):
        try:
            return original(self)
        except Exception:
            sys.stderr.write(f"[spikedeploy] error inside Lava process model {type(self).__name__}:\n")
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            raise

    run._spikedeploy_wrapped = True
    model.AbstractPyProcessModel.run = run


def _stub_object_detection() -> None:
    if _OBJECT_DETECTION not in sys.modules:
        stub = types.ModuleType(_OBJECT_DETECTION)
        stub.__doc__ = "spikedeploy stub: object_detection needs torchvision/cv2 and is never used by netx."
        sys.modules[_OBJECT_DETECTION] = stub


class _ScalarInputConfig:
    """Layer config whose one-element 'weight'/'bias' read as Python scalars (numpy 2 refuses int(array))."""

    def __init__(self, cfg):
        self._cfg = cfg

    def __getitem__(self, key):
        v = self._cfg[key]
        if key in ("weight", "bias") and np.size(v) == 1:
            return np.asarray(v).reshape(()).item()
        return v

    def keys(self):
        return self._cfg.keys()

    def __contains__(self, key):
        return key in self._cfg.keys()


def _patch_netx_input(netx_module) -> None:
    network = netx_module.hdf5.Network
    original = network.create_input
    if getattr(original, "_spikedeploy_wrapped", False):
        return

    def create_input(layer_config, *args, **kwargs):
        return original(_ScalarInputConfig(layer_config), *args, **kwargs)

    create_input._spikedeploy_wrapped = True
    network.create_input = staticmethod(create_input)


def lava_ready() -> None:
    """Apply every fix once. Raises BackendError if lava-nc is not installed."""
    global _done
    if _done:
        return
    if importlib.util.find_spec("lava") is None or importlib.util.find_spec("lava.magma") is None:
        raise BackendError(
            "lava-nc is not installed. Install it with `pip install --no-deps --ignore-requires-python "
            "lava-nc==0.10.0 lava-dl==0.6.0` (see README, 'Adding Lava'), or use --backend emulator."
        )
    if not any(isinstance(f, _VarModelFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _VarModelFinder())
    if _VAR_MODEL in sys.modules and not isinstance(getattr(sys.modules[_VAR_MODEL], "__loader__", None),
                                                   _VarModelLoader):
        del sys.modules[_VAR_MODEL]
    _stub_object_detection()
    _patch_ports()
    _patch_error_reporting()
    _import_runtime_multiprocessing()
    _done = True


def _import_runtime_multiprocessing() -> None:
    """Lava's runtime calls `multiprocessing.set_start_method('fork')` at import, which raises "context has
    already been set" once anything in the process has asked for the start method (torch does during an
    export). It is imported here, at once; where the method already is 'fork', that call is skipped."""
    import multiprocessing as mp

    name = "lava.magma.runtime.message_infrastructure.multiprocessing"
    cur = mp.get_start_method(allow_none=True)
    if name in sys.modules:
        return
    if cur is None:  # import it now, while the call is still allowed (it sets 'fork' for the process)
        importlib.import_module(name)
        return
    if cur != "fork":
        raise BackendError(f"Lava needs the 'fork' multiprocessing start method, this process uses '{cur}'; "
                           "run Lava in a fresh process (or call lava_ready() before anything sets it)")
    orig = mp.set_start_method
    mp.set_start_method = lambda method, force=False: None if method == cur else orig(method, force)
    try:
        importlib.import_module(name)
    finally:
        mp.set_start_method = orig


def netx():
    """lava.lib.dl.netx, imported with the fixes applied."""
    lava_ready()
    try:
        from lava.lib.dl import netx as _netx
    except ImportError as e:
        raise BackendError(f"lava-dl's netx cannot be imported: {e}. Install lava-dl==0.6.0 (README, 'Adding Lava').") from e
    _patch_netx_input(_netx)
    return _netx
