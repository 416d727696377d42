"""The one registry of inpainting methods: each method is declared here once, with its family,
the trained weights it needs, its configuration defaults and how it is built. Every other list
of methods (latent methods, weights per method, the harness's flags, help text and defaults)
is derived from :data:`METHODS`.

This module is plain data and imports nothing from the library, so every layer can read it.
To add a method: add one :class:`MethodInfo` below, and its implementation where its family
says (a :class:`LatentSearch` behaviour is implemented in :mod:`facefill_core.inpaint`, a
feed-forward network in :mod:`facefill_core.models` with its loader in
:mod:`facefill_core.pretrained`, a classical fill in :data:`facefill_core.baselines.FILLS`, or
one that reads the dataset's train split, like ``nn``, in its own module).
"""

from __future__ import annotations

import dataclasses
import types
from typing import Mapping, Optional

LATENT, FEEDFORWARD, CLASSICAL, PLUGIN = "latent", "feedforward", "classical", "plugin"
FAMILIES = (LATENT, FEEDFORWARD, CLASSICAL, PLUGIN)
STEERS = (None, "antithetic", "soft")


@dataclasses.dataclass(frozen=True)
class LatentSearch:
    """What a latent-search method adds to Yeh et al.'s ``Lc + Lp``.

    Attributes:
        landmark_count: the thesis's Ld (a count of landmark coordinates off by more than the
            margin), evaluated during the search and added for the final choice.
        steer: ``None``; ``"antithetic"``: ``mu * E``, dE/dz by antithetic differences of the
            C++ cascade; ``"soft"``: ``mu * E_soft``, exact autograd through the torch cascade.
    """

    landmark_count: bool = False
    steer: Optional[str] = None

    def __post_init__(self) -> None:
        if self.steer not in STEERS:
            raise ValueError(f"steer must be one of {STEERS}, got {self.steer!r}")

    @property
    def uses_landmarks(self) -> bool:
        return self.landmark_count or self.steer is not None


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """One method.

    Attributes:
        name: the command-line name.
        family: ``latent`` | ``feedforward`` | ``classical``.
        description: one line for help text and tables.
        weights: the kind of trained weights it loads (``dcgan``, ``ce``, ``gfc``, and
            ``ce-centre``/``gfc-square``: the same networks trained on one protocol's holes,
            :data:`facefill_core.pretrained.ARCHITECTURE`) or ``None``; given on the command line
            as ``--weights-<kind>``.
        defaults: :class:`~facefill_core.config.InpaintConfig` fields this method sets.
        search: the latent search's behaviour (latent family only).
        fill: the key of its function in ``baselines.FILLS`` (classical family only).
        train_split: it reads the dataset's train split (resolved once by the harness's driver);
            a classical method declares either this or a fill.
        plugin: ``"package.module:object"``, the declaration of a method outside the library
            (plugin family only; :mod:`facefill_core.plugins`).
    """

    name: str
    family: str
    description: str
    weights: Optional[str] = None
    defaults: Mapping = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    search: Optional[LatentSearch] = None
    fill: Optional[str] = None
    train_split: bool = False
    plugin: Optional[str] = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family must be one of {FAMILIES}, got {self.family!r}")
        if (self.family == PLUGIN) != (self.plugin is not None):
            raise ValueError(f"{self.name}: a plugin method (and only one) names its plugin object")
        if self.family == PLUGIN:
            return
        if (self.family == LATENT) != (self.search is not None):
            raise ValueError(f"{self.name}: a latent method (and only one) declares its search")
        if (self.family == CLASSICAL) != (self.fill is not None or self.train_split):
            raise ValueError(f"{self.name}: a classical method (and only one) declares its fill or its train split")
        if self.family != CLASSICAL and self.weights is None:
            raise ValueError(f"{self.name}: a {self.family} method needs trained weights")

    @property
    def weights_flag(self) -> Optional[str]:
        """``--weights-<kind>``, or None for a method without trained weights."""
        return f"--weights-{self.weights}" if self.weights else None


def weights_field(kind: str) -> str:
    """The config field (and argparse dest) of ``--weights-<kind>``: ``ce-centre`` -> ``weights_ce_centre``."""
    return "weights_" + kind.replace("-", "_")


_M = MethodInfo
METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        _M("si", LATENT, "Yeh et al. latent search: Lc + Lp", "dcgan", search=LatentSearch()),
        _M(
            "si-ld",
            LATENT,
            "the thesis: Lc + Lp + Ld (count; selects, never steers)",
            "dcgan",
            search=LatentSearch(landmark_count=True),
        ),
        _M(
            "si-ld+",
            LATENT,
            "Lc + Lp + Ld + mu*E, E's gradient estimated by antithetic differences",
            "dcgan",
            search=LatentSearch(landmark_count=True, steer="antithetic"),
        ),
        _M(
            "si-ldsoft",
            LATENT,
            "Lc + Lp + Ld + mu*E_soft, gradient through a smooth torch cascade",
            "dcgan",
            search=LatentSearch(landmark_count=True, steer="soft"),
        ),
        _M("ce", FEEDFORWARD, "Context Encoder (Pathak et al. 2016)", "ce"),
        _M("ce-centre", FEEDFORWARD, "Context Encoder trained on the centre hole only (Pathak et al.)", "ce-centre"),
        _M("gfc", FEEDFORWARD, "Generative Face Completion (Li et al. 2017), no parsing loss", "gfc"),
        _M("gfc-square", FEEDFORWARD, "GFC trained on random squares, side 16-32 px (Li et al.)", "gfc-square"),
        _M("telea", CLASSICAL, "OpenCV cv2.inpaint, Telea", fill="telea"),
        _M("ns", CLASSICAL, "OpenCV cv2.inpaint, Navier-Stokes", fill="ns"),
        _M("biharmonic", CLASSICAL, "scikit-image inpaint_biharmonic", fill="biharmonic"),
        _M("mean", CLASSICAL, "mean colour of the known pixels", fill="mean"),
        _M("nn", CLASSICAL, "nearest neighbour: the training image closest on the known pixels", train_split=True),
    )
}
ALL_METHODS = tuple(METHODS)
LATENT_METHODS = tuple(n for n, m in METHODS.items() if m.family == LATENT)
# the kinds of trained weights, in first-use order: one --weights-<kind> flag each
WEIGHTS_KINDS = tuple(dict.fromkeys(m.weights for m in METHODS.values() if m.weights))
# methods declared outside the library, registered by facefill_core.plugins (never a built-in name)
PLUGIN_METHODS: dict[str, MethodInfo] = {}


def method_info(name: str) -> MethodInfo:
    """The declaration of ``name`` (a built-in, or a registered plugin). Raises ValueError
    listing the known methods."""
    if name in METHODS:
        return METHODS[name]
    if name in PLUGIN_METHODS:
        return PLUGIN_METHODS[name]
    raise ValueError(f"unknown method {name!r}; known: {', '.join([*METHODS, *PLUGIN_METHODS])}")


def parse_methods(spec: str) -> tuple[str, ...]:
    """``"all"`` or a comma list -> method names. Raises ValueError naming an unknown one."""
    if spec == "all":
        return ALL_METHODS
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    if not names:
        raise ValueError("--methods is empty")
    for n in names:
        method_info(n)
    return names
