"""The selection's options: the choices of each option and their one validation (defaults: :mod:`.presets`).

``select_patches`` and the command line resolve and check their options here, before any video is
opened. Only the standard library is imported, so that listing the choices (``--help``) is cheap.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from .presets import SELECTION_PRESETS

FIT_MODES = ("short_side_crop", "long_side_pad")
MV_COMPENSATIONS = ("none", "median", "mean", "similarity", "affine")
MV_PRECISIONS = ("pel", "qpel")
ANCHOR_POLICIES = ("gop", "first", "none")
MOTION_MODES = ("auto", "codec", "estimate")
FUSIONS = ("weighted", "max", "sum", "geomean")
RESIDUAL_MODES = ("abs", "gradient")
MOTION_WITHOUT_VECTORS = ("estimate", "zero")
RESIDUAL_WITHOUT_VECTORS = ("difference", "zero")


UNSET: Any = object()  # "take the preset's value" where None is itself a value (static_threshold)


class OptionError(ValueError):
    """An option value that cannot be used; ``option`` is its keyword in ``select_patches``."""

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        self.problem = problem
        super().__init__(f"{option} {problem}")


def check_choice(option: str, value: object, choices: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise OptionError(option, f"must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_integer(option: str, value: object, minimum: int) -> int:
    """An integer (Python or numpy; not a bool, not a float such as 2048.7 or 2048.0) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionError(option, f"must be an integer, got {value!r}")
    if value < minimum:
        raise OptionError(option, f"must be >= {minimum}, got {value}")
    return int(value)


def check_real(option: str, value: object, minimum: float = 0.0) -> float:
    """A finite real number (int, float or numpy scalar; not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise OptionError(option, f"must be a finite number, got {value!r}")
    if value < minimum:
        raise OptionError(option, f"must be >= {minimum:g}, got {value:g}")
    return float(value)


def check_flag(option: str, value: object) -> bool:
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if not isinstance(value, bool) and not numpy_bool:
        raise OptionError(option, f"must be True or False, got {value!r}")
    return bool(value)


def check_saliency(
    mv_compensate: object,
    mv_precision: object,
    fusion: object,
    fusion_weights: object,
    residual: object,
    centre_prior: object,
) -> tuple[str, str, str, tuple[float, float], str, float]:
    """The saliency options (:class:`~onevision_encoder.codec.saliency.SaliencyConfig`), checked and normalised."""
    try:
        weights = () if isinstance(fusion_weights, str) else tuple(fusion_weights)  # type: ignore[arg-type]
    except TypeError:
        weights = ()
    if len(weights) != 2:
        raise OptionError("fusion_weights", f"must be two numbers (motion, residual), got {fusion_weights!r}")
    w_mv, w_res = (check_real("fusion_weights", w) for w in weights)
    if w_mv + w_res <= 0:
        raise OptionError("fusion_weights", f"must not both be 0, got {fusion_weights!r}")
    return (
        check_choice("mv_compensate", mv_compensate, MV_COMPENSATIONS),
        check_choice("mv_precision", mv_precision, MV_PRECISIONS),
        check_choice("fusion", fusion, FUSIONS),
        (w_mv, w_res),
        check_choice("residual", residual, RESIDUAL_MODES),
        check_real("centre_prior", centre_prior),
    )


def anchor_frames(policy: str, num_frames: int, gop_size: int) -> list[int]:
    """Sampled frames kept whole: every ``gop_size``-th (``gop``), the first (``first``) or none (options
    checked by :class:`SelectionOptions`)."""
    return {"gop": list(range(0, num_frames, gop_size)), "first": [0], "none": []}[policy]


@dataclass(frozen=True)
class SelectionOptions:
    """Every option of a selection, checked on construction (:class:`OptionError` naming the option);
    :meth:`resolve` fills in the preset's values. Numbers are stored as Python ``int``/``float``."""

    preset: str
    num_patches: int
    num_frames: int
    patch_size: int
    size: int
    mv_compensate: str
    anchors: str
    gop_size: int
    mv_precision: str = "pel"
    motion: str = "auto"
    fusion: str = "weighted"
    fusion_weights: tuple[float, float] = (1.0, 1.0)
    inconsistency: bool = False
    residual: str = "abs"
    centre_prior: float = 0.0
    static_threshold: float | None = None
    keep_frames: bool = False
    frame_range: tuple[int, int] | None = None
    allow_truncated: bool = False
    # Not keywords of select_patches: how a preset treats the coded vectors (see presets.py).
    check_vectors: bool = True
    motion_without_vectors: str = "estimate"
    residual_without_vectors: str = "difference"
    mv_norm_floor: float = 1.0
    residual_norm_floor: float = 1.0
    estimate_baseline: int = 1

    def __post_init__(self) -> None:
        checked: dict[str, Any] = {"preset": check_choice("preset", self.preset, sorted(SELECTION_PRESETS))}
        (
            checked["mv_compensate"],
            checked["mv_precision"],
            checked["fusion"],
            checked["fusion_weights"],
            checked["residual"],
            checked["centre_prior"],
        ) = check_saliency(
            self.mv_compensate, self.mv_precision, self.fusion, self.fusion_weights, self.residual, self.centre_prior
        )
        num_frames = checked["num_frames"] = check_integer("num_frames", self.num_frames, 1)
        patch_size = checked["patch_size"] = check_integer("patch_size", self.patch_size, 1)
        size = checked["size"] = check_integer("size", self.size, 1)
        if size % patch_size:
            raise OptionError("size", f"must be a multiple of patch_size={patch_size}, got {size}")
        anchors = checked["anchors"] = check_choice("anchors", self.anchors, ANCHOR_POLICIES)
        gop_size = checked["gop_size"] = check_integer("gop_size", self.gop_size, 1)
        k = checked["num_patches"] = check_integer("num_patches", self.num_patches, 1)
        side = size // patch_size
        if k > num_frames * side * side:
            raise OptionError(
                "num_patches",
                f"must be at most the {num_frames * side * side} patches of {num_frames} frames of {side}x{side}, "
                f"got {k}",
            )
        whole = len(anchor_frames(anchors, num_frames, gop_size)) * side * side
        if whole > k:
            raise OptionError(
                "num_patches", f"must hold the whole frames that anchors={anchors!r} keeps ({whole} patches), got {k}"
            )
        checked["motion"] = check_choice("motion", self.motion, MOTION_MODES)
        if self.static_threshold is not None:
            checked["static_threshold"] = check_real("static_threshold", self.static_threshold)
        checked["frame_range"] = _frame_range(self.frame_range)
        checked["motion_without_vectors"] = check_choice(
            "motion_without_vectors", self.motion_without_vectors, MOTION_WITHOUT_VECTORS
        )
        checked["residual_without_vectors"] = check_choice(
            "residual_without_vectors", self.residual_without_vectors, RESIDUAL_WITHOUT_VECTORS
        )
        checked["mv_norm_floor"] = check_real("mv_norm_floor", self.mv_norm_floor)
        checked["residual_norm_floor"] = check_real("residual_norm_floor", self.residual_norm_floor)
        checked["estimate_baseline"] = check_integer("estimate_baseline", self.estimate_baseline, 1)
        for flag in ("inconsistency", "keep_frames", "allow_truncated", "check_vectors"):
            checked[flag] = check_flag(flag, getattr(self, flag))
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def resolve(
        cls,
        preset: str = "encoder",
        num_patches: int | None = None,
        num_frames: int = 64,
        patch_size: int | None = None,
        size: int | None = None,
        mv_compensate: str | None = None,
        anchors: str | None = None,
        gop_size: int = 16,
        mv_precision: str | None = None,
        motion: str = "auto",
        fusion: str = "weighted",
        fusion_weights: tuple[float, float] = (1.0, 1.0),
        inconsistency: bool = False,
        residual: str = "abs",
        centre_prior: float | None = None,
        static_threshold: float | None = UNSET,
        keep_frames: bool = False,
        frame_range: tuple[int, int] | None = None,
        allow_truncated: bool = False,
    ) -> SelectionOptions:
        """``select_patches``'s keywords, ``None`` (``static_threshold``: left out) taking the preset's value."""
        defaults = SELECTION_PRESETS[check_choice("preset", preset, sorted(SELECTION_PRESETS))]

        def given(value: Any, default: Any) -> Any:
            return default if value is None else value

        return cls(
            preset=preset,
            num_patches=given(num_patches, defaults.num_patches),
            num_frames=num_frames,
            patch_size=given(patch_size, defaults.patch_size),
            size=given(size, defaults.size),
            mv_compensate=given(mv_compensate, defaults.mv_compensate),
            anchors=given(anchors, defaults.anchors),
            gop_size=gop_size,
            mv_precision=given(mv_precision, defaults.mv_precision),
            motion=motion,
            fusion=fusion,
            fusion_weights=fusion_weights,
            inconsistency=inconsistency,
            residual=residual,
            centre_prior=given(centre_prior, defaults.centre_prior),
            static_threshold=defaults.static_threshold if static_threshold is UNSET else static_threshold,
            keep_frames=keep_frames,
            frame_range=frame_range,
            allow_truncated=allow_truncated,
            check_vectors=defaults.check_vectors,
            motion_without_vectors=defaults.motion_without_vectors,
            residual_without_vectors=defaults.residual_without_vectors,
            mv_norm_floor=defaults.mv_norm_floor,
            residual_norm_floor=defaults.residual_norm_floor,
            estimate_baseline=defaults.estimate_baseline,
        )

    @property
    def fit(self) -> str:
        """How frames are fitted to the model's input: the preset's (see :data:`FIT_MODES`)."""
        return SELECTION_PRESETS[self.preset].fit

    @property
    def whole_frames(self) -> list[int]:
        """The anchor frames (sampled-frame slots) kept whole."""
        return anchor_frames(self.anchors, self.num_frames, self.gop_size)


def _frame_range(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:
        raise OptionError("frame_range", f"must be (start, end) frame indices, got {value!r}")
    start, end = (check_integer("frame_range", v, 0) for v in value)
    if end <= start:
        raise OptionError("frame_range", f"must end after it starts, got {start}:{end}")
    return start, end
