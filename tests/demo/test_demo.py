"""The README's demo command does its job: two devices join one SMA over real IMAP and see each other."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_runs_and_both_devices_see_each_other() -> None:
    cli = Path(sys.executable).with_name("autocrypt-sma")
    done = subprocess.run([str(cli), "demo"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Done: two devices, one Autocrypt identity." in done.stdout
    code = done.stdout.split("shows a one-time code:")[1].split()[0]
    assert re.fullmatch(r"[0-9]{3}-[0-9]{3}-[0-9]{4}", code)
    assert "paired = [True, True]" in done.stdout
    assert "subscribed, so shown in mail clients: none" in done.stdout
    assert "was told by push" in done.stdout
    assert done.stdout.count("(this device)") == 2  # each of the two lists marks its own
    assert "the desktop knows Bob's key" in done.stdout
    assert "Autocrypt recommends: encrypt" not in done.stdout  # own preference is nopreference
    assert "Autocrypt recommends: available" in done.stdout
