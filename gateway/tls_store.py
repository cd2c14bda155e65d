"""The HTTPS listener's certificates on disk and in the running HAProxy, changed with no reload.

    <state-dir>/tls/            mode 0700
        default.pem             the default certificate (first crt-list line): --default-cert, or self-signed
        kv-<name>.pem           one per accepted certificate, mode 0600 (they hold private keys)
        file-<name>.pem
        crt-list                `<pem> <sni>...` per line, rewritten atomically (tmp + rename); the default
                                certificate's line is `default.pem !*`: without the filter HAProxy would also
                                serve it for the names in its SAN, ahead of a KV or file certificate for them
        held.json               each line's certificate id, source (KV key or file) and SNI names, written
                                just before the crt-list: how a restarted controller knows what the files hold

HAProxy 2.6's runtime API changes certificates in memory only (management guide 9.3):

    add      new ssl cert P; set ssl cert P <<PEM; commit ssl cert P; add ssl crt-list L <<"P sni..."
    update   set ssl cert P <<PEM; commit ssl cert P   (+ del/add of the crt-list line when the SNI names change)
    remove   del ssl crt-list L P; del ssl cert P

so the files are rewritten after each change: a later reload or restart loads the same set. A
certificate HAProxy refuses is aborted (`abort ssl cert`), reported, and the one it had keeps serving.

A controller that starts reads the files back (`prepare`): they are what a running HAProxy it adopts
serves, and what a HAProxy it starts will load, so the first catalog view changes only the difference
(no window where only the default certificate is served, and /status lists them from the start).

Faults: the controller dying between a commit and the file write leaves HAProxy's memory ahead of
the files; the next controller applies the difference again (an add of a certificate HAProxy already
holds becomes a replacement). A HAProxy that dies restarts from the files, which hold what it served.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from gateway.haproxy import HAProxyError, MasterCLI
from gateway.haproxy_syntax import check_token
from gateway.model import CertChange
from gateway.tls import CERT_NAME, CertEntry, crt_list_line, stored_entry
from shopgate.certs import issue, write_secret

log = logging.getLogger("shopgate.gateway.tls")

DEFAULT_PEM = "default.pem"
HELD = "held.json"
_HELD_ID = re.compile(f"(?:kv|file)-{CERT_NAME.pattern}")


class CertificateStore:
    """Keeps the tls/ directory and a running HAProxy's certificates in step with a list of CertEntry."""

    def __init__(self, tls_dir: Path):
        self.dir = tls_dir
        self.crt_list = tls_dir / "crt-list"

    def prepare(self, default_cert: Path | None = None) -> tuple[CertEntry, ...]:
        """Create the directory and the default certificate (copied, or self-signed once and kept); return
        the certificates the files hold (an adopted HAProxy serves them, a started one loads them), with
        the crt-list rewritten to exactly those."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        check_token(str(self.dir))
        default = self.dir / DEFAULT_PEM
        if default_cert is not None:
            write_secret(default, default_cert.read_bytes())
        elif not default.exists():
            write_secret(default, issue(None, ("shopgate.invalid",)))
        held = self.held()
        self.write(held)
        return held

    def held(self) -> tuple[CertEntry, ...]:
        """The certificates held.json lists whose PEM file still parses; () without a readable held.json."""
        try:
            records = json.loads((self.dir / HELD).read_text())
        except (OSError, ValueError) as error:
            log.info("no certificates held in %s (%s): starting from the default certificate", self.dir, error.__class__.__name__)
            return ()
        entries = []
        for record in records if isinstance(records, list) else ():
            try:
                cert_id, source, sni = str(record["id"]), str(record["source"]), tuple(str(name) for name in record["sni"])
                if not _HELD_ID.fullmatch(cert_id):
                    raise ValueError(f"bad id {cert_id!r}")
                entry = stored_entry(cert_id, source, (self.dir / f"{cert_id}.pem").read_bytes(), sni)
            except (OSError, ValueError, TypeError, KeyError) as error:
                log.warning("a certificate listed in %s is not taken back: %s", self.dir / HELD, error)
                continue
            if entry is not None:
                entries.append(entry)
        return tuple(entries)

    def path(self, entry: CertEntry) -> str:
        return check_token(str(self.dir / entry.file_name))

    def write(self, entries: tuple[CertEntry, ...]) -> None:
        """The PEM files of `entries` (rewritten only when changed), held.json, the crt-list, then stale PEMs removed."""
        keep = {entry.file_name for entry in entries} | {DEFAULT_PEM}
        for entry in entries:
            target = self.dir / entry.file_name
            if not target.exists() or target.read_bytes() != entry.pem:
                write_secret(target, entry.pem)
        manifest = [{"id": entry.id, "source": entry.source, "sni": list(entry.sni)} for entry in entries]
        write_secret(self.dir / HELD, (json.dumps(manifest, indent=1) + "\n").encode())
        lines = [f"{check_token(str(self.dir / DEFAULT_PEM))} !*"]   # "!*": served when no name matches, never for its own SAN names
        lines += [crt_list_line(str(self.dir), entry) for entry in entries]
        write_secret(self.crt_list, ("\n".join(lines) + "\n").encode())   # atomically: a reload reads it whole
        for stale in self.dir.glob("*.pem"):
            if stale.name not in keep:
                stale.unlink(missing_ok=True)

    def runtime(self, cli: MasterCLI, change: CertChange) -> None:
        """Carry out one change in the running HAProxy; HAProxyError (after undoing a half-made
        transaction) when HAProxy refuses it."""
        path, crt_list = self.path(change.entry), check_token(str(self.crt_list))
        line = crt_list_line(str(self.dir), change.entry)
        if change.action == "remove":
            cli.run([f"del ssl crt-list {crt_list} {path}", f"del ssl cert {path}"])
            return
        created = change.action == "add"
        if created:   # HAProxy answers "Certificate '<path>' already exists!" (not an error to MasterCLI) when its
            # memory is ahead of the files (a controller died in between): replace it, and its crt-list line
            created = not any("already exists" in line for line in cli.run([f"new ssl cert {path}"]))
        try:
            cli.run_with_payload(f"set ssl cert {path}", change.entry.pem.decode("ascii"))
            cli.run([f"commit ssl cert {path}"])
        except HAProxyError:
            _quietly(cli, [f"abort ssl cert {path}"] + ([f"del ssl cert {path}"] if created else []))
            raise
        if change.action == "add" and not created:
            _quietly(cli, [f"del ssl crt-list {crt_list} {path}"])   # its line, if HAProxy has it, may name other SNI
        elif change.action == "update" and change.sni_changed:
            cli.run([f"del ssl crt-list {crt_list} {path}"])
        if change.action == "add" or change.sni_changed:
            cli.run_with_payload(f"add ssl crt-list {crt_list}", line)


def _quietly(cli: MasterCLI, commands: list[str]) -> None:
    for command in commands:
        try:
            cli.run([command])
        except HAProxyError as error:
            log.debug("undoing: %s", error)

