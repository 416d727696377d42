"""Methods from outside the library: plugins.

A plugin is a Python object, a :class:`Plugin`, or a callable taking no argument that returns
one, named in either of two ways:

* an entry point of group ``facefill.methods`` in the plugin's own package (its name is the
  method's name), so ``python -m bench.run --methods mean,blurfill`` finds it once the package
  is installed (``pip install -e path/to/package``); or
* ``--method-module package.module:object`` on the harness's command line (the package only has
  to be importable).

The harness then runs it like a built-in method: in Ray workers and shards, resumable, into
the same records, tables and figures, its weights file (if it declares one) recorded by sha256.

The interface (the same contract as the built-in inpainters, :mod:`facefill_core.inpainters`):

* ``Plugin(name, description, build, family="plugin", weights=None)``: ``name`` is the
  method's label in records and tables (letters, digits, ``-``, ``_``, ``+``, ``.``; not a
  built-in name); ``description`` one line; ``family`` a free word for the reader (``diffusion``,
  ``gan``, ...), recorded in the manifest; ``weights`` a file whose sha256 the run records.
* ``build(context: PluginContext) -> inpainter`` is called once per worker.
  ``context.device`` is ``"cpu"`` or ``"cuda:0"`` (the worker's one GPU; move your
  networks there), ``context.seed`` the run's seed, ``context.box`` the dataset's face box
  ``(left, top, right, bottom)`` in 64x64 pixels, ``context.num_threads`` torch's CPU thread
  count in the worker.
* ``inpainter.inpaint(images, holes, image_indices) -> Tensor``: ``images`` float32
  ``(N, 3, 64, 64)`` in **[-1, 1]** on the CPU, ``holes`` float32 ``(N, 1, 64, 64)`` of 0 and 1,
  **1 = hole** (missing), ``image_indices`` the images' stable indices in the test set (a list
  of N ints). Return float32 ``(N, 3, 64, 64)`` in [-1, 1] (any device; it is moved to the CPU).
  The harness scores the image as returned (it does not paste the known pixels back; every
  record states ``known_changed_mean_abs``, how far the known pixels moved).
* Batch independence: the completion of an image must not depend on which other images share
  the batch (the harness cuts the test set into shards of ``--shard-size`` images); seed any
  randomness from ``(context.seed, image_index)``, never from a global generator.
* Optional attribute ``weights_sha256`` on the inpainter: the digest of the weights it really
  loaded (default: the sha256 of ``Plugin.weights``), written into every record.

Example (``examples/facefill_plugin_example``):

    >>> import torch
    >>> p = Plugin("zero", "fills holes with mid grey", lambda ctx: _ZeroFill())
    >>> out = p.build(PluginContext()).inpaint(torch.ones(1, 3, 64, 64), torch.ones(1, 1, 64, 64), [0])
    >>> float(out.mean())
    0.0
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md
import re
from typing import Callable, Optional, Sequence

import torch

from facefill_core.methods import METHODS, PLUGIN, PLUGIN_METHODS, MethodInfo

GROUP = "facefill.methods"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_DECLARED: dict[str, "Plugin"] = {}  # method name -> its declaration, beside methods.PLUGIN_METHODS

__all__ = ["GROUP", "Plugin", "PluginContext", "declaration", "entry_point_names", "load", "resolve"]


@dataclasses.dataclass(frozen=True)
class PluginContext:
    """What a plugin's ``build`` gets (see the module docstring)."""

    device: str = "cpu"
    seed: int = 0
    box: Optional[tuple] = None
    num_threads: int = 1


@dataclasses.dataclass(frozen=True)
class Plugin:
    """The declaration of a method outside the library (see the module docstring)."""

    name: str
    description: str
    build: Callable[[PluginContext], object]
    family: str = "plugin"
    weights: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name) or "__" in self.name:
            raise ValueError(f"plugin name must be letters, digits, '-', '_', '+', '.' (no '__'), got {self.name!r}")
        if self.name in METHODS:
            raise ValueError(f"plugin name {self.name!r} is a built-in method's name")
        if not callable(self.build):
            raise ValueError(f"plugin {self.name}: build must be callable, got {type(self.build).__name__}")


class _ZeroFill:  # the docstring's example
    def inpaint(self, images, holes, image_indices=None):
        return torch.where(holes > 0.5, torch.zeros_like(images), images)


def entry_point_names() -> list[str]:
    """Names of the methods installed packages declare under :data:`GROUP` (nothing imported)."""
    return sorted(ep.name for ep in md.entry_points(group=GROUP))


def _import(ref: str):
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{ref!r} must be package.module:object")
    try:
        obj = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure of the user's code
        raise ValueError(
            f"{ref}: cannot import {module} ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{ref}: {module} has no attribute {attr}")
        obj = getattr(obj, part)
    return obj


def load(ref: str) -> MethodInfo:
    """Import ``"package.module:object"`` (a :class:`Plugin`, or a callable returning one) and
    register it: :func:`facefill_core.methods.method_info` knows it from then on (in this
    process; each worker loads the run's plugins itself).

    Raises:
        ValueError: one line naming ``ref`` and what is wrong (import error, not a Plugin, a
            name taken by another plugin).
    """
    obj = _import(ref)
    if not isinstance(obj, Plugin):
        if not callable(obj):
            raise ValueError(f"{ref}: expected a facefill_core.plugins.Plugin or a callable returning one")
        try:
            obj = obj()
        except Exception as e:  # noqa: BLE001
            raise ValueError(
                f"{ref}: calling it failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
            ) from None
        if not isinstance(obj, Plugin):
            raise ValueError(f"{ref}: returned {type(obj).__name__}, expected a facefill_core.plugins.Plugin")
    old = PLUGIN_METHODS.get(obj.name)
    if old is not None and old.plugin != ref:
        raise ValueError(f"{ref}: method name {obj.name!r} is already declared by {old.plugin}")
    info = MethodInfo(obj.name, PLUGIN, obj.description, plugin=ref)
    PLUGIN_METHODS[obj.name] = info
    _DECLARED[obj.name] = obj
    return info


def resolve(names: Sequence[str], refs: Sequence[str] = ()) -> tuple[str, ...]:
    """The plugin references a run needs: each of ``refs`` (``--method-module``) and, for every
    name of ``names`` that is neither a built-in nor declared by ``refs``, the entry point of
    that name. Registers them all (:func:`load`); unknown names are left to the caller.

    Returns:
        ``"package.module:object"`` of each plugin, in order, for the workers to :func:`load`.

    Raises:
        ValueError: see :func:`load`.
    """
    out = []
    for ref in refs:
        load(ref)
        out.append(ref)
    eps = {ep.name: ep for ep in md.entry_points(group=GROUP)}
    for n in names:
        if n in METHODS or (n in PLUGIN_METHODS and PLUGIN_METHODS[n].plugin in out) or n not in eps:
            continue
        info = load(eps[n].value)
        if info.name != n:
            raise ValueError(f"entry point {n} = {eps[n].value} declares a method named {info.name!r}")
        out.append(eps[n].value)
    return tuple(out)


def declaration(name: str) -> Plugin:
    """The :class:`Plugin` registered under ``name``. Raises ValueError when there is none."""
    if name not in _DECLARED:
        raise ValueError(f"no plugin method {name!r} is loaded")
    return _DECLARED[name]


def weights_sha256(plugin: Plugin) -> Optional[str]:
    """sha256 of the plugin's declared weights file (None: it declares none)."""
    if plugin.weights is None:
        return None
    from facefill_core.fileio import sha256_file

    return sha256_file(plugin.weights)


class PluginInpainter:
    """A plugin's inpainter behind the library's interface: checks what goes in and what comes
    out (shape, range, finite), moves the result to the CPU, and names its weights.

    Args:
        info: the plugin's registered :class:`MethodInfo`.
        context: device, seed, box and threads for the plugin's ``build``.
    """

    record_trajectory = False

    def __init__(self, info: MethodInfo, context: PluginContext) -> None:
        p = declaration(info.name)
        self.name = info.name
        self.impl = p.build(context)
        if not hasattr(self.impl, "inpaint"):
            raise TypeError(f"plugin {info.name}: build returned {type(self.impl).__name__}, which has no inpaint()")
        self.weights_sha256 = getattr(self.impl, "weights_sha256", None) or weights_sha256(p)

    def inpaint(self, images, holes, image_indices=None):
        from facefill_core.imaging import check_inputs

        check_inputs(images, holes)
        indices = list(image_indices) if image_indices is not None else list(range(len(images)))
        out = self.impl.inpaint(images, holes, indices)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"plugin {self.name}: inpaint returned {type(out).__name__}, expected a torch.Tensor")
        out = out.detach().to("cpu", torch.float32)
        if tuple(out.shape) != tuple(images.shape):
            raise ValueError(f"plugin {self.name}: inpaint returned {tuple(out.shape)}, expected {tuple(images.shape)}")
        if not torch.isfinite(out).all() or out.min() < -1.0 - 1e-4 or out.max() > 1.0 + 1e-4:
            raise ValueError(f"plugin {self.name}: inpaint returned values outside [-1, 1] (or not finite)")
        return out.clamp(-1.0, 1.0)

    def extra(self) -> dict:
        return {}

    @property
    def landmark_backend(self) -> Optional[str]:
        return None
