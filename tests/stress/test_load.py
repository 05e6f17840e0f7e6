"""Five devices on one account over a real Dovecot, each ingesting mail and syncing at once, one
joining and one removed midway (native_host/bench/load.py runs the scenario): all converge on the
documented merge, agree on members and key, the SMA folders stay bounded, and the figures are
printed. SMA_LOAD_SECONDS sets the length of the load (default 15; the dedicated run uses 60),
SMA_LOAD_RATE the ingests per second per device (default 4)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from native_host.bench.load import run
from tests.host.harness import CheckedHost
from tests.host.test_accounts_imap import dovecot, mail

__all__ = ["dovecot", "mail"]
SECONDS = float(os.environ.get("SMA_LOAD_SECONDS", "15"))
RATE = float(os.environ.get("SMA_LOAD_RATE", "4"))  # ingests per second per device
DEVICES = 5
# A draining device's inbox holds at most a batch or two from each other member (a batch joins
# the one in flight, acks ride on batches): a bound in devices, not in run time.
INBOX_BOUND = 3 * (DEVICES - 1)
ANNOUNCE_SLACK = 2  # a replaced announcement between its append and the old one's delete


def test_five_devices_under_load_converge_with_bounded_folders(
    spawn: Callable[..., CheckedHost], mail: dict[str, Any]
) -> None:
    hosts: list[CheckedHost] = []

    def start() -> CheckedHost:
        hosts.append(spawn())
        return hosts[-1]

    result = run(start, mail, seconds=SECONDS, devices=DEVICES, rate=RATE)
    f = result.figures
    print(
        f"\nload: {DEVICES} devices, {f['load_seconds']:.1f} s, {f['load_ingests']:.0f} ingests "
        f"({f['load_ingests_per_second']:.1f}/s), converged {f['load_converge_s']:.2f} s after the "
        f"load, inboxes drained {f['load_drain_s']:.2f} s later, at most "
        f"{f['load_max_sma_messages']:.0f} SMA messages ({f['load_max_sma_bytes'] / 1024:.0f} KiB; "
        f"announcements {f['load_max_announce_messages']:.0f}, one inbox "
        f"{f['load_max_inbox_messages']:.0f}) in {f['load_samples']:.0f} samples, peak RSS per "
        f"host {f['load_peak_rss_mb_max']:.1f} MB (mean {f['load_peak_rss_mb_mean']:.1f}); "
        f"late join {f['load_join_pair_s']:.2f} s (pairing {f['load_pair_s']:.2f} s), removal {f['load_remove_s']:.2f} s"
    )
    assert result.failures == []

    # Convergence: every remaining device holds exactly the merge of all that was ingested.
    assert len(result.expected) > 50
    for device_id, table in result.tables.items():
        wrong = {
            a: (table.get(a), row) for a, row in result.expected.items() if table.get(a) != row
        }
        assert not wrong, (device_id, list(wrong.items())[:3])
        assert set(table) == set(result.expected), device_id
    # Members and key: the same on every remaining device; the removed device is out and forgot.
    assert len(result.remaining) == DEVICES - 1
    assert all(members == result.remaining for members in result.members.values())
    assert result.removed not in result.remaining
    assert set(result.account_keys.values()) == {result.rolled_key}
    assert result.rolled_key != result.first_key
    assert result.removed_event["device_id"] == result.removed
    assert result.removed_key_error == "not_joined"

    # Bounded folders, at every sample: announcements and log entries only, small inboxes.
    announce_bound = DEVICES + result.log_entries + ANNOUNCE_SLACK
    for sample in result.samples:
        assert sample["announce"] <= announce_bound, sample
        assert max(sample["inboxes"].values(), default=0) <= INBOX_BOUND, sample
    final = result.final
    assert final["announce"] == len(result.remaining) + result.log_entries, final
    assert len(final["inboxes"]) == len(result.remaining), final  # the removed one's is gone
    assert not any(final["inboxes"].values()), final

    for host in hosts:
        assert "Traceback" not in host.stderr_text(), host.stderr_text()[-3000:]
