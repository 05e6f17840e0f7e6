"""The host manifest template agrees with the add-on's id and the rules Gecko applies to it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from native_host.cli.client import ADDON_ID, HOST_NAME

ROOT = Path(__file__).resolve().parents[2]


def test_template_matches_the_addon_and_gecko_rules() -> None:
    path = ROOT / "manifests" / f"{HOST_NAME}.json.template"
    manifest = json.loads(path.read_text())
    assert manifest["name"] == HOST_NAME == path.name.removesuffix(".json.template")
    assert re.fullmatch(r"\w+(\.\w+)*", manifest["name"])
    assert manifest["type"] == "stdio"
    assert manifest["allowed_extensions"] == [ADDON_ID]
    addon = json.loads((ROOT / "extension" / "manifest.json").read_text())
    assert addon["browser_specific_settings"]["gecko"]["id"] == ADDON_ID


def test_the_addon_connects_to_the_host_name_of_the_manifest() -> None:
    client = (ROOT / "extension" / "lib" / "native_client.js").read_text()
    assert f'NATIVE_HOST_NAME = "{HOST_NAME}"' in client
