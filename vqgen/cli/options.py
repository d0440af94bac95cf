"""Command-line options made from the config dataclasses, so that every default is written once.

``@options_from(VQVAEConfig, VQVAETrainOptions, ...)`` gives a Typer command one ``--flag`` for each
field that has help text (``vqgen.config.option``), with the field's default and help, and hands
the command one instance of each dataclass, built from the parsed values, as keyword arguments
named after the classes' ``cli_name`` (or the snake-case class name). ``OneOf(...)`` gives it the
options of one of several dataclasses, picked by another option (``train-prior --arch``).
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

from vqgen.config import PANELS, TRAINING, field_help
from vqgen.errors import VQGenError


def parameter_name(cls: type) -> str:
    """VQVAETrainOptions -> vqvae_train_options (the command's keyword for this group)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", cls.__name__).lower()


def option_fields(cls: type, skip: tuple[str, ...] = ()) -> list[tuple[dataclasses.Field, dict[str, Any], Any]]:
    """(field, option metadata, resolved type) of every field of ``cls`` that is a command-line option.

    The metadata's ``panel`` is the ``--help`` group: the class's ``field_panels`` entry, else its ``help_panel``.
    """
    hints = typing.get_type_hints(cls)
    panels = getattr(cls, "field_panels", {})
    found = []
    for f in dataclasses.fields(cls):
        meta = field_help(cls, f.name)
        if meta and f.name not in skip:
            meta["panel"] = panels.get(f.name, getattr(cls, "help_panel", None))
            found.append((f, meta, hints[f.name]))
    return found


# shorter than Typer's own, so that the help text keeps a readable column at 80 characters; a flag takes no value
METAVARS = {bool: "", float: "<num>"}


def flag_of(f: dataclasses.Field, meta: dict[str, Any]) -> str:
    return meta.get("flag") or "--" + f.name.replace("_", "-")


def typer_parameter(f: dataclasses.Field, meta: dict[str, Any], kind: Any, default: Any = dataclasses.MISSING,
                    shown_default: str | None = None) -> inspect.Parameter:
    """One keyword parameter with a ``typer.Option`` annotation for field ``f`` (default: the field's)."""
    flag = flag_of(f, meta)
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType)
    base = next(a for a in typing.get_args(kind) if a is not type(None)) if optional else kind
    if base is bool and not meta.get("flag"):
        flag = f"{flag}/--no-{flag[2:]}"
    names = [flag] + ([meta["short"]] if meta.get("short") else [])
    shown = {} if shown_default is None else {"show_default": shown_default}
    metavar = {"metavar": METAVARS[base]} if base in METAVARS else {}
    option = typer.Option(*names, help=meta["help"], rich_help_panel=meta.get("panel"), **shown, **metavar)
    annotation = Annotated[Optional[base] if optional else base, option]
    default = f.default if default is dataclasses.MISSING else default
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


@dataclasses.dataclass(frozen=True)
class OneOf:
    """The options of one of several dataclasses, the one named by a choosing option (``--arch transformer``).

    A field that several choices have (same name) is one flag; its help says what it means for each,
    its default is each choice's own (None on the command line: left out, the choice's default), and
    a flag of only some choices is refused for the others. The command gets the chosen dataclass,
    built from the flags given, as keyword ``parameter``.
    """

    option: str  # the choosing option's name, e.g. "arch" (--arch)
    choices: dict[str, type]
    default: str
    help: str
    parameter: str  # e.g. "prior_config"

    def merged(self) -> dict[str, tuple[dataclasses.Field, dict[str, Any], Any, dict[str, Any]]]:
        """name -> (field, option metadata, type, {choice: default}) over all choices' option fields."""
        found: dict[str, tuple[dataclasses.Field, dict[str, Any], Any, dict[str, Any]]] = {}
        helps: dict[str, dict[str, str]] = {}
        for choice, cls in self.choices.items():
            for f, meta, kind in option_fields(cls):
                if f.name in found:
                    assert flag_of(f, meta) == flag_of(*found[f.name][:2]), f"{f.name}: one flag for every choice"
                found.setdefault(f.name, (f, meta, kind, {}))[3][choice] = f.default
                helps.setdefault(f.name, {})[choice] = meta["help"]
        for name, (f, meta, kind, defaults) in found.items():
            texts = set(helps[name].values())
            if len(texts) == 1:
                text = texts.pop()
                if len(defaults) < len(self.choices):
                    text = f"({' and '.join(defaults)} only) {text}"
            else:  # choices that share a help text share its entry
                sharing: dict[str, list[str]] = {}
                for choice, help in helps[name].items():
                    sharing.setdefault(help, []).append(choice)
                text = " ".join(f"{', '.join(choices)}: {help}" for help, choices in sharing.items())
            found[name] = (f, {**meta, "help": text}, kind, defaults)
        shared = [name for name, entry in found.items() if len(entry[3]) == len(self.choices)]  # listed first
        return {name: found[name] for name in shared + [name for name in found if name not in shared]}

    def parameters(self) -> list[inspect.Parameter]:
        flag = "--" + self.option.replace("_", "-")
        panel = getattr(next(iter(self.choices.values())), "help_panel", None)
        help = f"{self.help} ({', '.join(self.choices)})"
        chooser = Annotated[str, typer.Option(flag, help=help, rich_help_panel=panel)]
        params = [inspect.Parameter(self.option, inspect.Parameter.KEYWORD_ONLY, default=self.default, annotation=chooser)]
        for f, meta, kind, defaults in self.merged().values():
            values = set(map(repr, defaults.values()))
            shown = str(next(iter(defaults.values()))) if len(values) == 1 else ", ".join(
                f"{choice} {'auto' if value is None else value}" for choice, value in defaults.items()
            )
            if values == {"None"}:  # chosen later (the help says how): no default to show
                shown = None
            params.append(typer_parameter(f, meta, Optional[kind], default=None, shown_default=shown))
        return params

    def build(self, values: dict[str, Any]) -> Any:
        """The chosen dataclass from the parsed ``values`` (its entries are taken out)."""
        choice = values.pop(self.option)
        if choice not in self.choices:
            raise VQGenError(f"--{self.option.replace('_', '-')} must be one of {', '.join(self.choices)}, not {choice!r}")
        given = {}
        for name, (f, meta, _, defaults) in self.merged().items():
            value = values.pop(name)
            if value is None:
                continue
            if choice not in defaults:
                owners = " or ".join(defaults)
                raise VQGenError(f"{flag_of(f, meta)} is an option of --{self.option} {owners}, not of --{self.option} {choice}")
            given[name] = value
        return self.choices[choice](**given)


def options_from(*groups: type | OneOf, skip: tuple[str, ...] = (),
                 presets: dict[str, dict[str, Any]] | None = None) -> Callable:
    """Decorate a command whose own parameters come first; ``skip`` names fields left off the command line.

    A group is a dataclass or a ``OneOf`` of dataclasses. Field names must be unique across the
    groups of one command. ``presets`` (name -> field values) adds ``--preset NAME``: its values
    replace the defaults of the options the user did not give.
    """
    plain = [g for g in groups if not isinstance(g, OneOf)]
    chosen = [g for g in groups if isinstance(g, OneOf)]
    fields_of = {g: option_fields(g, skip) for g in plain}

    def decorate(command: Callable) -> Callable:
        hints = typing.get_type_hints(command, include_extras=True)  # the command's module may defer annotations
        keywords = {parameter_name(g) for g in plain} | {g.parameter for g in chosen}
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in inspect.signature(command).parameters.values()
               if p.name not in keywords]
        generated = [
            p for g in groups
            for p in (g.parameters() if isinstance(g, OneOf) else [typer_parameter(*field) for field in fields_of[g]])
        ]
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
            built = {parameter_name(g): g(**{f.name: values.pop(f.name) for f, _, _ in fields_of[g]}) for g in plain}
            built.update({g.parameter: g.build(values) for g in chosen})
            return command(**values, **built)

        # --help lists the panels in the order their first option comes: sorted, the data and the model come
        # first and the output last
        arguments = [p for p in own if is_argument(p)]
        options = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if not is_argument(p)] + generated
        parameters = arguments + sorted(options, key=panel_rank)
        wrapper.__signature__ = inspect.Signature(parameters)
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # Typer must read the new signature, not the command's own
        return wrapper

    return decorate


def is_argument(parameter: inspect.Parameter) -> bool:
    """Whether a command parameter is a positional ``typer.Argument`` (not an option)."""
    return any(isinstance(extra, typer.models.ArgumentInfo) for extra in typing.get_args(parameter.annotation)[1:])


def panel_rank(parameter: inspect.Parameter) -> int:
    """Where an option's ``--help`` panel comes in ``PANELS`` (options without a known panel first)."""
    for extra in typing.get_args(parameter.annotation)[1:]:
        if isinstance(extra, typer.models.OptionInfo) and extra.rich_help_panel in PANELS:
            return 1 + PANELS.index(extra.rich_help_panel)
    return 0


def preset_parameter(presets: dict[str, dict[str, Any]]) -> inspect.Parameter:
    shown = "; ".join(f"{name}: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())
                      for name, values in presets.items())
    help = f"Named settings for the options not given ({shown})."
    annotation = Annotated[Optional[str], typer.Option("--preset", help=help, rich_help_panel=TRAINING)]
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
