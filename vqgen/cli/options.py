"""Command-line options made from the config dataclasses, so that every default is written once.

``@options_from(VQVAEConfig, VQVAETrainOptions, ...)`` gives a Typer command one ``--flag`` for each
field that has help text (``vqgen.config.option``), with the field's default and help, and hands
the command one instance of each dataclass, built from the parsed values, as keyword arguments
named after the classes' ``cli_name`` (or the snake-case class name).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from typing import Annotated, Any, Callable, Optional

import typer

from vqgen.config import field_help


def parameter_name(cls: type) -> str:
    """VQVAETrainOptions -> vqvae_train_options (the command's keyword for this group)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", cls.__name__).lower()


def option_fields(cls: type, skip: tuple[str, ...] = ()) -> list[tuple[dataclasses.Field, dict[str, Any], Any]]:
    """(field, option metadata, resolved type) of every field of ``cls`` that is a command-line option."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        meta = field_help(cls, f.name)
        if meta and f.name not in skip:
            found.append((f, meta, hints[f.name]))
    return found


def typer_parameter(f: dataclasses.Field, meta: dict[str, Any], kind: Any) -> inspect.Parameter:
    """One keyword parameter with a ``typer.Option`` annotation for field ``f``."""
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType)
    base = next(a for a in typing.get_args(kind) if a is not type(None)) if optional else kind
    if base is bool and not meta.get("flag"):
        flag = f"{flag}/--no-{flag[2:]}"
    names = [flag] + ([meta["short"]] if meta.get("short") else [])
    annotation = Annotated[Optional[base] if optional else base, typer.Option(*names, help=meta["help"])]
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=annotation)


def options_from(*groups: type, skip: tuple[str, ...] = (), presets: dict[str, dict[str, Any]] | None = None) -> Callable:
    """Decorate a command whose own parameters come first; ``skip`` names fields left off the command line.

    Field names must be unique across the groups of one command. ``presets`` (name -> field values) adds
    ``--preset NAME``: its values replace the defaults of the options the user did not give.
    """

    def decorate(command: Callable) -> Callable:
        hints = typing.get_type_hints(command, include_extras=True)  # the command's module may defer annotations
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in inspect.signature(command).parameters.values()
               if p.name not in {parameter_name(g) for g in groups}]
        fields_of = {g: option_fields(g, skip) for g in groups}
        generated = [typer_parameter(f, meta, kind) for g in groups for f, meta, kind in fields_of[g]]
        names = [p.name for p in own + generated]
        duplicated = {n for n in names if names.count(n) > 1}
        assert not duplicated, f"options defined twice for {command.__name__}: {duplicated}"

        if presets:  # the context tells which options were given on the command line
            generated.append(preset_parameter(presets))
            generated.append(inspect.Parameter("context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            if presets:
                apply_preset(values, presets, values.pop("preset"), values.pop("context"))
            built = {parameter_name(g): g(**{f.name: values.pop(f.name) for f, _, _ in fields_of[g]}) for g in groups}
            return command(**values, **built)

        wrapper.__signature__ = inspect.Signature(own + generated)
        wrapper.__annotations__ = {p.name: p.annotation for p in own + generated}
        del wrapper.__wrapped__  # Typer must read the new signature, not the command's own
        return wrapper

    return decorate


def preset_parameter(presets: dict[str, dict[str, Any]]) -> inspect.Parameter:
    shown = "; ".join(f"{name}: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())
                      for name, values in presets.items())
    annotation = Annotated[Optional[str], typer.Option("--preset", help=f"Named settings for the options not given ({shown}).")]
    return inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def apply_preset(values: dict[str, Any], presets: dict[str, dict[str, Any]], name: str | None,
                 context: typer.Context) -> None:
    """Set the preset's values for every option left at its default on the command line (given ones win)."""
    if name is None:
        return
    if name not in presets:
        raise typer.BadParameter(f"{name!r} is not a preset (choose from {', '.join(presets)})", param_hint="--preset")
    for key, value in presets[name].items():
        source = context.get_parameter_source(key)
        if source is None or source.name == "DEFAULT":
            values[key] = value
