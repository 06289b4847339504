"""The README documents every command option and parameter: checked here so docs cannot drift."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import build_parser
from engine.info import params_markdown
from engine.params import SPECS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_parameter_table_is_generated_and_current():
    block = README.split("<!-- params:begin -->\n", 1)[1].split("\n<!-- params:end -->", 1)[0]
    assert block == params_markdown(), "run `engine info --params --markdown` and paste it into README.md"


def test_every_parameter_address_is_documented():
    for s in SPECS:
        assert s.address in README, s.address


def test_every_option_of_every_command_is_documented():
    missing = []
    for name, sub in _subparsers(build_parser()).items():
        assert f"engine {name}" in README, f"command {name}"
        for action in sub._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help" and f"`{opt}" not in README:
                    missing.append(f"engine {name} {opt}")
    assert not missing, f"undocumented options: {missing}"
