"""The command reference, docs/cli.md, written from the command line itself.

    python -m vqgen.cli.reference > docs/cli.md

Every command with its usage, its help, its arguments and its options in their ``--help`` groups,
each option with its default. A test regenerates the page and compares it with the file, so run the
command above after changing an option, its help or its default.
"""

from __future__ import annotations

from typing import Any

import typer

from vqgen.cli import app

REGENERATE = "python -m vqgen.cli.reference > docs/cli.md"
DEFAULT_PANEL = "Options"


def cell(text: str) -> str:
    """Text for one Markdown table cell: rich's escapes undone, pipes escaped, on one line."""
    return " ".join(text.replace("\\[", "[").replace("|", "\\|").split())


def value_name(param: Any, ctx: typer.Context) -> str:
    """What ``--help`` shows for the option's value: its metavar, else its type."""
    if param.metavar:
        return param.metavar
    display = getattr(param, "display_type", None)  # Typer's own; older Typers build on click's types
    return display(ctx) if display else param.type.name.upper()


def option_names(param: Any, ctx: typer.Context) -> str:
    names = " / ".join(f"`{name}`" for name in param.opts + param.secondary_opts)
    return names if param.is_flag else f"{names} `{value_name(param, ctx)}`"


def shown_default(param: Any) -> str:
    """The default as ``--help`` gives it: a flag by its name, nothing for None."""
    if isinstance(param.show_default, str):
        return param.show_default
    if param.default is None:
        return ""
    if param.is_flag:
        if param.secondary_opts:
            return (param.opts if param.default else param.secondary_opts)[0]
        return "on" if param.default else "off"
    if isinstance(param.default, (list, tuple)):
        return ", ".join(map(str, param.default))
    return str(param.default)


def panels(command: Any) -> dict[str, list[Any]]:
    """The command's options by help panel, in the order ``--help`` shows them (--help itself left out)."""
    grouped: dict[str, list[Any]] = {}
    for param in command.params:
        if param.param_type_name == "option" and not param.hidden and "--help" not in param.opts:
            grouped.setdefault(getattr(param, "rich_help_panel", None) or DEFAULT_PANEL, []).append(param)
    return grouped


def command_section(name: str, command: Any, parent: typer.Context) -> list[str]:
    ctx = typer.Context(command, info_name=name, parent=parent)
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [f"## vqgen {name}", "", "```", f"vqgen {name} {usage}", "```", "", (command.help or "").strip(), ""]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    if arguments:
        lines += ["| argument | description |", "|---|---|"]
        lines += [f"| `{p.name.upper()}` | {cell(getattr(p, 'help', '') or '')} |" for p in arguments]
        lines.append("")
    for panel, options in panels(command).items():
        lines += [f"**{panel}**", "", "| option | default | description |", "|---|---|---|"]
        lines += [f"| {option_names(p, ctx)} | {cell(shown_default(p))} | {cell(p.help or '')} |" for p in options]
        lines.append("")
    return lines


def reference() -> str:
    """docs/cli.md as text."""
    group = typer.main.get_command(app)
    root = typer.Context(group, info_name="vqgen")
    names = group.list_commands(root)
    lines = [
        "# Command reference",
        "",
        f"Generated from the command line by `{REGENERATE}`; do not edit by hand.",
        "`vqgen COMMAND --help` shows the same in a terminal.",
        "",
        (group.help or "").strip(),
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for name in names:
        summary = (group.get_command(root, name).help or "").strip().split("\n\n")[0]
        lines.append(f"| [`{name}`](#vqgen-{name}) | {cell(summary)} |")
    lines.append("")
    for name in names:
        lines += command_section(name, group.get_command(root, name), root)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(reference(), end="")
