"""``rtxrt --help`` and each command's help: every command, argument and positional says what
it is for."""
from __future__ import annotations

import argparse
from collections.abc import Iterator

from rtxrt.cli.main import build_parser


def arguments(parser: argparse.ArgumentParser, path: str = "rtxrt") -> Iterator[tuple[str, str, str | None]]:
    """(command path, argument, help) for every argument and subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield path, name, helps.get(name)
                yield from arguments(sub, f"{path} {name}")
            continue
        yield path, "/".join(action.option_strings) or action.dest, action.help


def test_every_argument_and_command_has_help():
    missing = [f"{path} {name}" for path, name, text in arguments(build_parser())
               if not text or text == argparse.SUPPRESS]
    assert missing == []


def test_the_walk_sees_positionals_and_nested_commands():
    seen = {(path, name) for path, name, _ in arguments(build_parser())}
    assert {("rtxrt inspect", "model"), ("rtxrt run", "model"), ("rtxrt demo", "--batch"),
            ("rtxrt bench", "--device"), ("rtxrt bench", "--iterations"), ("rtxrt bench", "--warmup"),
            ("rtxrt cache", "prune"), ("rtxrt cache prune", "--max-size")} <= seen
