"""`autocrypt-sma prefer-encrypt`: the arguments it takes (the host call itself is covered by the
service tests of account.set_prefer_encrypt)."""

from __future__ import annotations

import pytest

from native_host.cli.main import build_parser


def test_value_is_optional_and_limited_to_the_level_1_values() -> None:
    shown = build_parser().parse_args(["prefer-encrypt", "--account", "a@example.org"])
    assert shown.value is None
    assert shown.instance == "cli"
    chosen = build_parser().parse_args(["prefer-encrypt", "mutual", "--account", "a@example.org"])
    assert chosen.value == "mutual"
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(["prefer-encrypt", "always", "--account", "a@example.org"])
    assert refused.value.code == 2
