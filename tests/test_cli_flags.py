"""The CLI's shared flags: each declared once, and present on every command that shares it."""

import argparse

from highmodal import cli


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                out[name] = sp
                out |= subcommands(sp)
    return out


def test_shared_flags_reach_every_command_that_shares_them():
    commands = subcommands(cli.build_parser())
    for flag, users in (("--data-root", cli.DATA_COMMANDS), ("--overwrite", cli.OVERWRITE_COMMANDS),
                        ("--no-progress", cli.PROGRESS_COMMANDS)):
        assert users <= set(commands), users - set(commands)
        for name, sp in commands.items():
            assert (flag in sp._option_string_actions) == (name in users), (name, flag)
