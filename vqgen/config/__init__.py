"""Every option's default, once: the dataclasses behind the command line, the checkpoints and resume files.

They are frozen: a stage checks them once, where it starts, and a value derived from the data (the image
size, the code map's shape) makes a new one with ``dataclasses.replace``.

The dataclasses live in ``config.models`` (the VQ-VAE), ``config.priors`` and ``config.options`` (the stages); this
package holds the helpers and re-exports them all. A field made with ``option(default, help)`` is a command-line option: ``vqgen.cli.options`` builds its
``--flag`` from the field name (or ``flag=``), and ``--help`` shows the help and this default. A field
without help is set by the program (image size, number of classes, ...), never by a flag. A class's
``help_panel`` names the group of ``--help`` its options are listed in, and ``field_panels`` moves some of them
to other groups. The model
configurations (``VQVAEConfig``, the priors' ``PixelCNNConfig`` and ``TransformerConfig``) live here too,
as do the training, data and loss options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, fields
from typing import Any, TypeVar

from vqgen.errors import VQGenError

T = TypeVar("T")

# the groups of `--help` (a dataclass's help_panel and field_panels)
DATA, MODEL, QUANTIZER, CLASSES, TRAINING, DEVICE = "Data", "Model", "Quantizer", "Classes", "Training", "Device"
CODEBOOK, DEAD_CODES = "Codebook (vq, rvq)", "Dead-code restarts (vq, rvq)"
GAN, SAMPLING, COPIES, OUTPUT = "GAN and losses", "Sampling", "Copies", "Output"
INPUTS, FEATURES, METRICS = "What to evaluate", "Feature network", "Metrics"
STACKS = "Residual VQ stacks"
PANELS = (INPUTS, DATA, MODEL, QUANTIZER, CODEBOOK, DEAD_CODES, STACKS, CLASSES, COPIES, FEATURES, SAMPLING, METRICS,
          TRAINING, GAN, DEVICE, OUTPUT)  # the order --help lists them in


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, short: str | None = None,
           factory: Any = None) -> Any:
    """A dataclass field that is also a command-line option (``help`` empty: not an option)."""
    metadata = {"help": help, "flag": flag, "short": short}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_help(cls: type, name: str) -> dict[str, Any]:
    """The option metadata of ``cls.name``, looked up through the base classes too.

    A subclass that only changes a default (``epochs: int = 12``) keeps its base class's help and flag.
    """
    for klass in cls.__mro__:
        own = klass.__dict__.get("__dataclass_fields__", {})
        if name in own and own[name].metadata.get("help"):
            return dict(own[name].metadata)
    return {}


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain JSON (nested configs become nested objects)."""
    return asdict(cfg)


def from_dict(cls: type[T], values: dict[str, Any], legacy: dict[str, Any] | None = None) -> T:
    """Rebuild ``cls`` from ``to_dict`` output: unknown keys are ignored, lists become tuples where the
    field is a tuple, nested configs are rebuilt, and a missing key takes its ``legacy`` value (what a
    file written before the field existed meant) or else the default."""
    known = {f.name: f for f in fields(cls) if f.init}  # not arch: the class sets it
    given = {**(legacy or {}), **{k: v for k, v in values.items() if k in known}}
    for name, value in given.items():
        f = known[name]
        if isinstance(value, list) and str(f.type).startswith("tuple"):
            given[name] = tuple(value)
        elif isinstance(value, dict) and dataclasses.is_dataclass(f.default_factory):
            given[name] = from_dict(f.default_factory, value)
    return cls(**given)


def check(condition: bool, message: str) -> None:
    """Raise the one-line error ``message`` unless ``condition`` holds (option validation)."""
    if not condition:
        raise VQGenError(message)


def is_photo(channels: int, image_size: tuple[int, int] | list[int]) -> bool:
    """The image-kind rule of the defaults that differ between photos and digits: colour images of 16 px or
    more are photos; grey ones are digits, text or drawings (tiny colour images keep the grey defaults)."""
    return channels == 3 and min(image_size) >= 16


# the configurations themselves, by kind (imported last: they use the helpers above)
from vqgen.config.models import *  # noqa: E402,F401,F403
from vqgen.config.priors import *  # noqa: E402,F401,F403
from vqgen.config.options import *  # noqa: E402,F401,F403
