"""Regenerates the interoperability corpus (tests/interop/corpus/) with the real tools.

    python -m tests.interop.make_corpus [--only gpg,sq,pysequoia,deltachat,thunderbird]

Every item is made by the tool it is named after; its expected verdict and reason come from the
policy (tests/interop/corpus/README.md), its fingerprint from the tool that made it (never from
our adapter). `--only` regenerates some tools' items and keeps the others in the manifest.

Deterministic where the tools allow: GnuPG and `sq` run at a fixed creation time (gpg
`--faked-system-time`, `sq --creation-time`), so every time in those keys is fixed; their key
material (and so their fingerprints) is new on each run, since none of the tools takes a seed.
pysequoia, Delta Chat and Thunderbird take the real clock; their items carry a `checked_at`
a day after they were made. Network-free: Delta Chat runs on a loopback Dovecot and relay.
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "corpus"
MANIFEST = CORPUS / "manifest.json"

# GnuPG and sq keys are made at CREATED and checked at CHECKED: after Sequoia's cutoff for SHA-1
# in self-signatures (its standard policy rejects SHA-1 signatures made after 2023-02-01 for
# collision resistance and, in newer releases, after 2026-02-01 for second-preimage resistance),
# so a SHA-1 binding made at CREATED is refused by every Sequoia release.
CREATED = datetime(2026, 3, 1, tzinfo=UTC)
CHECKED = datetime(2026, 9, 1, tzinfo=UTC)
SHORT_LIFE_DAYS = 30  # expired items: long gone at CHECKED
DAY = 86400

TOOLS = ("gpg", "sq", "pysequoia", "deltachat", "thunderbird")


def iso(ts: float | datetime) -> str:
    when = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(argv: list[str], *, env: dict[str, str] | None = None, stdin: bytes = b"") -> bytes:
    done = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr.decode(errors='replace')}"
        )
    return done.stdout


def need(command: str, hint: str) -> str:
    found = shutil.which(command)
    if found is None:
        raise SystemExit(f"make_corpus: {command} is missing: {hint}")
    return found


def item(
    id: str,
    file: str,
    *,
    tool: str,
    version: str,
    addr: str,
    expected: str,
    reason: str,
    fingerprint: str | None,
    checked_at: float | datetime,
    key_version: int = 4,
    note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    assert expected in ("accepted", "refused")
    entry: dict[str, Any] = {
        "id": id,
        "file": file,
        "kind": "message" if file.endswith(".eml") else "key",
        "tool": tool,
        "tool_version": version,
        "addr": addr,
        "expected": expected,
        "reason": reason,
        "fingerprint": fingerprint.upper() if expected == "accepted" and fingerprint else None,
        "key_version": key_version,
        "checked_at": iso(checked_at),
    }
    if note:
        entry["note"] = note
    entry.update(extra)
    return entry


def key_item(out: Path, id: str, armored: str, **fields: Any) -> dict[str, Any]:
    """Write an armored certificate as `<id>.asc` and describe it (see `item`)."""
    path = out / f"{id}.asc"
    path.write_text(armored)
    return item(id, path.name, **fields)


# ---------------------------------------------------------------------------------------------
# GnuPG


class Gpg:
    def __init__(self, home: Path, when: datetime) -> None:
        self.gpg = need("gpg", "apt-get install gnupg (scripts/bootstrap test does this)")
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.faked = when.strftime("%Y%m%dT%H%M%S") + "!"
        self.version = run([self.gpg, "--version"]).decode().splitlines()[0]

    def __call__(self, *args: str, extra: tuple[str, ...] = ()) -> bytes:
        return run(
            [
                self.gpg,
                "--homedir",
                str(self.home),
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--faked-system-time",
                self.faked,
                *extra,
                *args,
            ]
        )

    def gen(
        self, uid: str, algo: str, expire: str = "never", *, extra: tuple[str, ...] = ()
    ) -> str:
        self("--quick-gen-key", uid, algo, "cert,sign", expire, extra=extra)
        return self.fingerprint(uid)

    def add_subkey(
        self, fpr: str, algo: str, expire: str = "never", *, extra: tuple[str, ...] = ()
    ) -> None:
        self("--quick-add-key", fpr, algo, "encr", expire, extra=extra)

    def fingerprint(self, uid: str) -> str:
        out = self("--with-colons", "--list-keys", f"={uid}").decode()
        fprs = [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]
        return fprs[0]

    def export(self, fpr: str) -> str:
        return self("--armor", "--export", fpr).decode()


def make_gpg(out: Path, work: Path) -> list[dict[str, Any]]:
    gpg = Gpg(work / "gnupg", CREATED)
    version = gpg.version
    items: list[dict[str, Any]] = []
    short = f"{SHORT_LIFE_DAYS}d"

    def key(name: str, fpr: str, addr: str, expected: str, reason: str, note: str = "") -> None:
        items.append(
            key_item(
                out,
                f"gpg-{name}",
                gpg.export(fpr),
                tool="gnupg",
                version=version,
                addr=addr,
                expected=expected,
                reason=reason,
                fingerprint=fpr,
                checked_at=CHECKED,
                note=note,
            )
        )

    fpr = gpg.gen("Alice <alice@example.org>", "ed25519")
    gpg.add_subkey(fpr, "cv25519")
    key("ed25519", fpr, "alice@example.org", "accepted", "usable", "Ed25519 + Cv25519")

    fpr = gpg.gen("<rsa3072@example.org>", "rsa3072")
    gpg.add_subkey(fpr, "rsa3072")
    key("rsa3072", fpr, "rsa3072@example.org", "accepted", "usable", "RSA 3072 + RSA 3072")

    fpr = gpg.gen("<rsa2048@example.org>", "rsa2048")
    gpg.add_subkey(fpr, "rsa2048")
    key("rsa2048", fpr, "rsa2048@example.org", "accepted", "usable", "the smallest RSA allowed")

    fpr = gpg.gen("<rsa1024@example.org>", "rsa1024")
    gpg.add_subkey(fpr, "rsa1024")
    key("rsa1024", fpr, "rsa1024@example.org", "refused", "weak-rsa", "RSA 1024 + RSA 1024")

    fpr = gpg.gen("<expired@example.org>", "ed25519", short)
    gpg.add_subkey(fpr, "cv25519", short)
    key("expired", fpr, "expired@example.org", "refused", "expired", f"key expires after {short}")

    fpr = gpg.gen("<expired-subkey@example.org>", "ed25519")
    gpg.add_subkey(fpr, "cv25519", short)
    key(
        "expired-subkey",
        fpr,
        "expired-subkey@example.org",
        "refused",
        "expired-subkey",
        f"the only encryption subkey expires after {short}; the primary does not expire",
    )

    fpr = gpg.gen("<sign-only@example.org>", "ed25519")
    key(
        "sign-only",
        fpr,
        "sign-only@example.org",
        "refused",
        "no-encryption-subkey",
        "Ed25519 primary (certify, sign) and no subkey",
    )

    fpr = gpg.gen("<revoked@example.org>", "ed25519")
    gpg.add_subkey(fpr, "cv25519")
    rev = (gpg.home / "openpgp-revocs.d" / f"{fpr}.rev").read_text()
    rev = rev.replace(
        ":-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----BEGIN PGP PUBLIC KEY BLOCK-----"
    )
    (work / "revoke.asc").write_text(rev)
    gpg("--import", str(work / "revoke.asc"))
    key(
        "revoked",
        fpr,
        "revoked@example.org",
        "refused",
        "revoked",
        "the revocation certificate gpg made at generation, imported",
    )

    fpr = gpg.gen("<carol.old@example.org>", "ed25519")
    gpg.add_subkey(fpr, "cv25519")
    gpg("--quick-add-uid", fpr, "<carol@example.org>")
    gpg("--quick-revoke-uid", fpr, "<carol@example.org>")
    key(
        "revoked-uid",
        fpr,
        "carol@example.org",
        "refused",
        "revoked-uid",
        "two user ids; the one with the Autocrypt addr is revoked, the other is valid",
    )

    fpr = gpg.gen("<dave@example.net>", "ed25519")
    gpg.add_subkey(fpr, "cv25519")
    key(
        "other-uid",
        fpr,
        "dave@example.org",
        "refused",
        "uid-mismatch",
        "a good key whose only user id is another address",
    )

    fpr = gpg.gen("Erin <erin@example.org>", "ed25519")
    gpg.add_subkey(fpr, "cv25519")
    gpg("--quick-add-uid", fpr, "Erin <Erin@Work.Example>")
    key(
        "two-uids",
        fpr,
        "erin@work.example",
        "accepted",
        "usable",
        "two user ids; the addr matches the second (not primary) one, in another case",
    )

    sha1 = ("--cert-digest-algo", "SHA1", "--digest-algo", "SHA1")
    fpr = gpg.gen("<sha1@example.org>", "ed25519", extra=sha1)
    gpg.add_subkey(fpr, "cv25519", extra=sha1)
    packets = gpg("--list-packets", input_file(work, gpg.export(fpr))).decode()
    if "digest algo 2," not in packets or "digest algo 8," in packets:
        raise RuntimeError(f"gpg made no SHA-1 self-signature:\n{packets}")
    key(
        "sha1",
        fpr,
        "sha1@example.org",
        "refused",
        "sha1-binding",
        "self-signature and subkey binding made with SHA-1",
    )
    return items


def input_file(work: Path, text: str) -> str:
    path = work / "packets.asc"
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------------------------
# sq (Sequoia's command line)


def make_sq(out: Path, work: Path) -> list[dict[str, Any]]:
    sq = need("sq", "apt-get install sq (scripts/bootstrap test does this)")
    version = run([sq, "--version"]).decode().strip()
    gpg = Gpg(work / "sq-gnupg", CREATED)  # only to read fingerprints back
    items: list[dict[str, Any]] = []

    def key(name: str, addr: str, args: list[str], expected: str, reason: str, note: str) -> None:
        secret = work / f"sq-{name}.key"
        run(
            [
                sq,
                "key",
                "generate",
                "--userid",
                f"<{addr}>",
                "--creation-time",
                CREATED.strftime("%Y%m%dT%H%M%S"),
                "--export",
                str(secret),
                *args,
            ]
        )
        cert = run([sq, "key", "extract-cert", str(secret)]).decode()
        items.append(
            key_item(
                out,
                f"sq-{name}",
                cert,
                tool="sq",
                version=version,
                addr=addr,
                expected=expected,
                reason=reason,
                fingerprint=fingerprint_of(gpg, cert),
                checked_at=CHECKED,
                note=note,
            )
        )

    key(
        "cv25519",
        "sq-cv25519@example.org",
        ["--cipher-suite", "cv25519", "--expires", "never"],
        "accepted",
        "usable",
        "sq's default profile: Ed25519 primary, signing, authentication and Cv25519 subkeys",
    )
    key(
        "rsa3k",
        "sq-rsa3k@example.org",
        ["--cipher-suite", "rsa3k", "--expires", "never"],
        "accepted",
        "usable",
        "RSA 3072",
    )
    key(
        "transport-only",
        "sq-transport@example.org",
        ["--can-encrypt", "transport", "--expires", "never"],
        "accepted",
        "usable",
        "the encryption subkey is for transport (communications) only",
    )
    key(
        "cannot-encrypt",
        "sq-noenc@example.org",
        ["--cannot-encrypt", "--expires", "never"],
        "refused",
        "no-encryption-subkey",
        "sq key generate --cannot-encrypt",
    )
    key(
        "expired",
        "sq-expired@example.org",
        ["--expires-in", f"{SHORT_LIFE_DAYS}d"],
        "refused",
        "expired",
        f"expires {SHORT_LIFE_DAYS} days after creation",
    )
    return items


def fingerprint_of(gpg: Gpg, armored: str) -> str:
    """The primary fingerprint of a v4 certificate, read back by GnuPG."""
    path = gpg.home / "show.asc"
    path.write_text(armored)
    out = gpg("--with-colons", "--show-keys", str(path)).decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


# ---------------------------------------------------------------------------------------------
# pysequoia (v6 keys: Debian 12's sq 0.27 has no RFC 9580 profile)


def make_pysequoia(out: Path, work: Path) -> list[dict[str, Any]]:
    del work
    try:
        from importlib.metadata import version as dist_version

        import pysequoia
    except ImportError as exc:
        raise SystemExit("make_corpus: pysequoia is missing: pip install -e '.[test]'") from exc
    version = f"pysequoia {dist_version('pysequoia')}"
    now = time.time()
    items: list[dict[str, Any]] = []

    def key(
        name: str,
        addr: str,
        profile: Any,
        validity: int | None,
        expected: str,
        reason: str,
        note: str,
        key_version: int,
    ) -> None:
        tsk = pysequoia.Tsk.generate(f"<{addr}>", profile=profile, validity_seconds=validity)
        cert = tsk.extract_certificate()
        items.append(
            key_item(
                out,
                f"pysequoia-{name}",
                str(cert),
                tool="pysequoia",
                version=version,
                addr=addr,
                expected=expected,
                reason=reason,
                fingerprint=cert.fingerprint,
                checked_at=now + (2 * DAY if validity else DAY),
                key_version=key_version,
                note=note,
            )
        )

    rfc9580 = pysequoia.Profile.RFC9580
    key(
        "v6",
        "v6@example.org",
        rfc9580,
        None,
        "accepted",
        "usable",
        "RFC 9580 profile: v6 Ed25519 primary, v6 X25519 encryption subkey",
        6,
    )
    key(
        "v6-expired",
        "v6-expired@example.org",
        rfc9580,
        DAY,
        "refused",
        "expired",
        "v6, valid for one day, checked two days after creation",
        6,
    )
    key(
        "v4",
        "v4-sequoia@example.org",
        pysequoia.Profile.RFC4880,
        None,
        "accepted",
        "usable",
        "RFC 4880 profile: v4 Ed25519 + Cv25519",
        4,
    )
    return items


# ---------------------------------------------------------------------------------------------
# Delta Chat core


def make_deltachat(out: Path, work: Path) -> list[dict[str, Any]]:
    from tests.interop.deltachat import DeltaChatCore, MailSystem, rpc_server_version

    version = f"deltachat-rpc-server {rpc_server_version()}"
    items: list[dict[str, Any]] = []
    gpg = Gpg(work / "dc-gnupg", CREATED)
    with MailSystem() as mail, DeltaChatCore(work / "deltachat") as core:
        ours = mail.new_mailbox("me")
        alice = core.new_account(mail.new_mailbox("dcalice"), name="Alice")
        bob = core.new_account(mail.new_mailbox("dcbob"), name="Bob")

        # 1. a first contact: Delta Chat writes to a plain address, in the clear
        alice.send_text(ours.addr, "Hello from Delta Chat")
        plain = mail.wait_for_inbox(ours, lambda raw: b"Autocrypt:" in raw)
        made = time.time()
        # 2. Bob knows Alice's key (her vCard, which carries it) and writes to her: encrypted
        vcard = alice.account.make_vcard([alice.account.self_contact])
        contacts = bob.account.import_vcard(vcard)
        chat = contacts[0].create_chat()
        chat.send_text("Encrypted hello from Delta Chat")
        encrypted = mail.wait_for_inbox(
            alice.mailbox, lambda raw: b"-----BEGIN PGP MESSAGE-----" in raw
        )
        secret_files = alice.export_secret_keys(work / "dc-alice-keys")
        bob_keys = bob.export_secret_keys(work / "dc-bob-keys")

    plain_path = out / "deltachat-first-contact.eml"
    plain_path.write_bytes(plain)
    alice_key = autocrypt_keydata(plain)
    alice_fpr = fingerprint_of(gpg, armor_public(alice_key))
    items.append(
        item(
            "deltachat-first-contact",
            plain_path.name,
            tool="deltachat",
            version=version,
            addr=alice.addr,
            expected="accepted",
            reason="usable",
            fingerprint=alice_fpr,
            checked_at=made + DAY,
            note="a plaintext first-contact mail; its Autocrypt header carries the account key "
            "(v4, Features 0x09: SEIPDv1 and SEIPDv2)",
        )
    )

    secret = next(p for p in secret_files if p.name.startswith("private-key"))
    secret_path = out / "deltachat-recipient-secret.asc"
    shutil.copyfile(secret, secret_path)
    enc_path = out / "deltachat-encrypted.eml"
    enc_path.write_bytes(encrypted)
    bob_public = next(p for p in bob_keys if p.name.startswith("public-key")).read_text()
    items.append(
        item(
            "deltachat-encrypted",
            enc_path.name,
            tool="deltachat",
            version=version,
            addr=bob.addr,
            expected="accepted",
            reason="usable",
            fingerprint=fingerprint_of(gpg, bob_public),
            checked_at=made + DAY,
            note="an encrypted, signed mail: its Autocrypt header is only inside the encrypted "
            "part; the throwaway recipient key to decrypt it is in decrypt_with",
            decrypt_with=secret_path.name,
        )
    )
    return items


def autocrypt_keydata(raw: bytes) -> bytes:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    value = re.sub(r"\s+", "", str(message["Autocrypt"]))
    keydata = value.split("keydata=", 1)[1]
    return base64.b64decode(keydata)


def armor_public(data: bytes) -> str:
    body = base64.b64encode(data).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        "\n".join(
            [
                "-----BEGIN PGP PUBLIC KEY BLOCK-----",
                "",
                *lines,
                "-----END PGP PUBLIC KEY BLOCK-----",
            ]
        )
        + "\n"
    )


# ---------------------------------------------------------------------------------------------
# Thunderbird (RNP), generated in a headless profile


_TB_GENERATE = """
const [userId, keyType, keyBits, resolve] = arguments;
(async () => {
  const { RNP } = ChromeUtils.importESModule("chrome://openpgp/content/modules/RNP.sys.mjs");
  const { OpenPGPMasterpass } = ChromeUtils.importESModule(
    "chrome://openpgp/content/modules/masterpass.sys.mjs");
  if (!RNP.libLoaded) await RNP.init();
  const password = await OpenPGPMasterpass.retrieveOpenPGPPassword();
  const id = await RNP.genKey(userId, keyType, keyBits, 0, password);
  const armored = await RNP.getPublicKey("0x" + id);
  return { id, armored, version: Services.appinfo.version };
})().then(resolve, e => resolve({ error: String(e) + "\\n" + (e.stack || "") }));
"""


def make_thunderbird(out: Path, work: Path) -> list[dict[str, Any]]:
    from tests.e2e.thunderbird import Thunderbird

    home = work / "tb-home"
    home.mkdir()
    gpg = Gpg(work / "tb-gnupg", CREATED)
    tb = Thunderbird(home)
    items: list[dict[str, Any]] = []
    try:
        tb.client.timeout.script = 120
        for name, addr, key_type, bits, note in (
            ("ecc", "tb-ecc@example.org", "ECC", 0, "Thunderbird's default: Ed25519 + Cv25519"),
            ("rsa3072", "tb-rsa@example.org", "RSA", 3072, "RSA 3072 + RSA 3072"),
        ):
            made = time.time()
            result = tb.client.execute_async_script(
                _TB_GENERATE, script_args=[f"TB User <{addr}>", key_type, bits]
            )
            if "error" in result:
                raise RuntimeError(f"Thunderbird key generation failed: {result['error']}")
            items.append(
                key_item(
                    out,
                    f"thunderbird-{name}",
                    result["armored"],
                    tool="thunderbird",
                    version=f"Thunderbird {result['version']} (RNP)",
                    addr=addr,
                    expected="accepted",
                    reason="usable",
                    fingerprint=fingerprint_of(gpg, result["armored"]),
                    checked_at=made + DAY,
                    note=note + ", made by RNP.genKey as the key wizard does, no expiry",
                )
            )
    finally:
        tb.quit()
    return items


MAKERS: dict[str, Callable[[Path, Path], list[dict[str, Any]]]] = {
    "gpg": make_gpg,
    "sq": make_sq,
    "pysequoia": make_pysequoia,
    "deltachat": make_deltachat,
    "thunderbird": make_thunderbird,
}
TOOL_OF = {
    "gpg": "gnupg",
    "sq": "sq",
    "pysequoia": "pysequoia",
    "deltachat": "deltachat",
    "thunderbird": "thunderbird",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(TOOLS), help="comma-separated: " + ", ".join(TOOLS)
    )
    args = parser.parse_args(argv)
    only = [t for t in args.only.split(",") if t]
    unknown = [t for t in only if t not in MAKERS]
    if unknown:
        parser.error(f"unknown tools: {unknown}")
    CORPUS.mkdir(exist_ok=True)
    old: list[dict[str, Any]] = []
    if MANIFEST.exists():
        old = json.loads(MANIFEST.read_text())["items"]
    remade = {TOOL_OF[t] for t in only}
    items = [entry for entry in old if entry["tool"] not in remade]
    for entry in old:
        if entry["tool"] in remade:
            for name in (entry["file"], entry.get("decrypt_with")):
                if name:
                    (CORPUS / name).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="sma-corpus-") as tmp:
        for tool in only:
            work = Path(tmp) / tool
            work.mkdir()
            print(f"make_corpus: {tool}", file=sys.stderr)
            items.extend(MAKERS[tool](CORPUS, work))
    order = {t: i for i, t in enumerate(TOOL_OF[t] for t in TOOLS)}
    items.sort(key=lambda e: (order[e["tool"]], e["id"]))
    MANIFEST.write_text(
        json.dumps({"format": 1, "items": items}, indent=2, ensure_ascii=False) + "\n"
    )
    print(f"make_corpus: {len(items)} items in {MANIFEST}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    raise SystemExit(main())
