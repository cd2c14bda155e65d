"""The HTTPS listener's certificates on disk and in the running HAProxy, changed with no reload.

    <state-dir>/tls/            mode 0700
        default.pem             the default certificate (first crt-list line): --default-cert, or self-signed
        kv-<name>.pem           one per accepted certificate, mode 0600 (they hold private keys)
        file-<name>.pem
        crt-list                `<pem> <sni>...` per line, rewritten atomically (tmp + rename); the default
                                certificate's line is `default.pem !*`: without the filter HAProxy would also
                                serve it for the names in its SAN, ahead of a KV or file certificate for them

HAProxy 2.6's runtime API changes certificates in memory only (management guide 9.3):

    add      new ssl cert P; set ssl cert P <<PEM; commit ssl cert P; add ssl crt-list L <<"P sni..."
    update   set ssl cert P <<PEM; commit ssl cert P   (+ del/add of the crt-list line when the SNI names change)
    remove   del ssl crt-list L P; del ssl cert P

so the files are rewritten after each change: a later reload or restart loads the same set. A
certificate HAProxy refuses is aborted (`abort ssl cert`), reported, and the one it had keeps serving.

Faults: the controller dying between a commit and the file write leaves HAProxy's memory ahead of
the files; the next controller restarts HAProxy from the files and re-applies the difference. A
HAProxy that dies restarts from the files, which hold exactly what it served.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from gateway.haproxy import HAProxyError, MasterCLI
from gateway.haproxy_syntax import check_token
from gateway.model import CertChange
from gateway.tls import CertEntry, crt_list_line
from shopgate.certs import issue, write_secret

log = logging.getLogger("shopgate.gateway.tls")

DEFAULT_PEM = "default.pem"


class CertificateStore:
    """Keeps the tls/ directory and a running HAProxy's certificates in step with a list of CertEntry."""

    def __init__(self, tls_dir: Path):
        self.dir = tls_dir
        self.crt_list = tls_dir / "crt-list"

    def prepare(self, default_cert: Path | None = None) -> None:
        """Create the directory, the default certificate (copied, or self-signed once and kept) and a
        crt-list of the default alone: HAProxy starts with it, and the first catalog view adds the rest
        through the runtime API (a crt-list left by an earlier run would clash with those adds)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        check_token(str(self.dir))
        default = self.dir / DEFAULT_PEM
        if default_cert is not None:
            write_secret(default, default_cert.read_bytes())
        elif not default.exists():
            write_secret(default, issue(None, ("shopgate.invalid",)))
        self.write(())

    def path(self, entry: CertEntry) -> str:
        return check_token(str(self.dir / entry.file_name))

    def write(self, entries: tuple[CertEntry, ...]) -> None:
        """The PEM files of `entries` (rewritten only when changed), stale ones removed, then the crt-list."""
        keep = {entry.file_name for entry in entries} | {DEFAULT_PEM}
        for entry in entries:
            target = self.dir / entry.file_name
            if not target.exists() or target.read_bytes() != entry.pem:
                write_secret(target, entry.pem)
        lines = [f"{check_token(str(self.dir / DEFAULT_PEM))} !*"]   # "!*": served when no name matches, never for its own SAN names
        lines += [crt_list_line(str(self.dir), entry) for entry in entries]
        temporary = self.crt_list.with_suffix(".tmp")
        temporary.write_text("\n".join(lines) + "\n")
        os.replace(temporary, self.crt_list)
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
        if change.action == "add":
            cli.run([f"new ssl cert {path}"])
        try:
            cli.run_with_payload(f"set ssl cert {path}", change.entry.pem.decode("ascii"))
            cli.run([f"commit ssl cert {path}"])
        except HAProxyError:
            _quietly(cli, [f"abort ssl cert {path}"] + ([f"del ssl cert {path}"] if change.action == "add" else []))
            raise
        if change.action == "update" and change.sni_changed:
            cli.run([f"del ssl crt-list {crt_list} {path}"])
        if change.action == "add" or change.sni_changed:
            cli.run_with_payload(f"add ssl crt-list {crt_list}", line)


def _quietly(cli: MasterCLI, commands: list[str]) -> None:
    for command in commands:
        try:
            cli.run([command])
        except HAProxyError as error:
            log.debug("undoing: %s", error)

