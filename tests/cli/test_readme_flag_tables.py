"""The README's flag tables against the commands' real options, both ways, so that neither drifts.

The README has one table per command (flag, default, meaning) under "## Commands". For every command
`planner --help` lists, every option must have a row with the default `--help` shows ("–" when it
shows none), and every row must name a real option. The options come from the click command typer
builds (the object that prints `--help`); each default is read from the option's own help record, so
it is the text `--help` prints.
"""

from __future__ import annotations

import re

import pytest
import typer.main
from planner_process import REPO

from planner.cli import app

NO_DEFAULT = "–"
FLAG = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")
HELP_DEFAULT = re.compile(r"\\?\[default: (.*)\]\s*$")
RANGE_SUFFIX = re.compile(r"; (?:[\d.]+<=?)?x(?:[<>]=?[\d.]+)?$")

CLI = typer.main.get_command(app)


def readme_tables() -> dict[str, dict[frozenset[str], str]]:
    """Per command, the README's rows under "## Commands": the row's flag names -> its default cell."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = re.search(r"^## Commands\n(.*?)(?=^## )", readme, re.S | re.M)
    assert commands, 'README.md has no "## Commands" section'
    tables: dict[str, dict[frozenset[str], str]] = {}
    for section in re.split(r"^### ", commands.group(1), flags=re.M)[1:]:
        name = re.match(r"`planner ([\w-]+)`", section)
        assert name, f"README.md: a command heading is not `planner NAME`: {section.splitlines()[0]!r}"
        rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # after header and rule
        tables[name.group(1)] = {}
        for row in rows:
            flag_cell, default_cell = (cell.strip() for cell in row.strip("|").split(" | ")[:2])
            tables[name.group(1)][frozenset(FLAG.findall(flag_cell))] = default_cell.replace("`", "") or NO_DEFAULT
    return tables


def help_default(option, command) -> str:
    """The default `planner COMMAND --help` prints for the option, without its range; "–" when none."""
    _, help_text = option.get_help_record(command.context_class(command, info_name=command.name))
    shown = HELP_DEFAULT.search(help_text)
    return RANGE_SUFFIX.sub("", shown.group(1)) if shown else NO_DEFAULT


def test_the_readme_has_one_flag_table_per_command():
    documented, real = set(readme_tables()), set(CLI.commands)
    assert documented == real, (f"`planner --help` commands without a README table: {sorted(real - documented)}; "
                                f"README tables for no command: {sorted(documented - real)}")


@pytest.mark.parametrize("name", sorted(CLI.commands))
def test_the_readme_table_matches_the_commands_options(name):
    command = CLI.commands[name]
    table = readme_tables().get(name, {})
    options = [param for param in command.params if param.param_type_name == "option" and not param.hidden]
    problems = []
    for option in options:
        flags = frozenset(option.opts + option.secondary_opts)
        default = help_default(option, command)
        label = " / ".join(", ".join(sorted(names, key=len)) for names in (option.opts, option.secondary_opts) if names)
        if flags not in table:
            problems.append(f"no row for {label} (its --help default: {default}); "
                            f"add `| `{label}` | {default} | ... |`")
        elif table[flags] != default:
            problems.append(f"{label}: default {table[flags]!r} in the README, {default!r} in --help")
    real = {frozenset(option.opts + option.secondary_opts) for option in options}
    problems += [f"row {' / '.join(sorted(flags)) or '(no flag)'} is not an option of `planner {name}`"
                 for flags in table if flags not in real]
    assert not problems, f"README.md's `planner {name}` table:\n  " + "\n  ".join(problems)
