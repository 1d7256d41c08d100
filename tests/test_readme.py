"""The README stays true: it documents every flag of the daemons and the two commands."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kiam.cli import build_parser

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    raise AssertionError("no subcommands")


@pytest.mark.parametrize(
    "command", ["agent", "server", "health", "certs", "webhook", "demo", "explain"]
)
def test_every_flag_is_documented(command: str) -> None:
    missing = [
        option
        for action in _subparser(command)._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
        if option.startswith("--") and not option.startswith("--no-") and option != "--help"
        and f"`{option}" not in README and f"{option} " not in README
        and f"{option}`" not in README and f"[{option}" not in README
    ]
    assert not missing, f"README does not document {command} flags {missing}"


def test_the_two_commands_are_shown() -> None:
    assert "make demo" in README
    assert "make test" in README
