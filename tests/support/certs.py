"""A throwaway certificate authority for tests, made with the machine's `openssl`.

The gRPC TLS tests and the SASL_SSL broker test need a CA, certificates for
127.0.0.1/localhost signed by it and, for mutual TLS, a client certificate. Keys are
P-256 (quick to make; Java, OpenSSL and gRPC all accept them), unencrypted PKCS#8 PEM,
valid for a day: nothing outlives the test's temporary folder.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


class TestCA:
    """A CA in `folder` (ca.pem, ca.key) that issues leaf certificates next to it."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, folder: Path) -> None:
        if shutil.which("openssl") is None:
            raise RuntimeError("the TLS tests need the openssl command")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.cert = folder / "ca.pem"
        self.key = folder / "ca.key"
        _openssl(
            "req", "-x509", *_new_key(self.key), "-out", str(self.cert), "-days", "1",
            "-subj", "/CN=mysocial test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def issue(self, name: str, hosts: tuple[str, ...] = HOSTS) -> Issued:
        """A certificate for `hosts` (IP addresses or DNS names), good for servers and
        clients alike."""
        key, csr, cert = (self.folder / f"{name}{ext}" for ext in (".key", ".csr", ".pem"))
        _openssl("req", *_new_key(key), "-out", str(csr), "-subj", f"/CN={name}")
        names = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
        ext = self.folder / f"{name}.ext"
        ext.write_text(
            f"subjectAltName={names}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
        )
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext),
        )  # fmt: skip
        return Issued(cert, key)

    def keystore(self, issued: Issued) -> Path:
        """Key and certificate chain in one PEM file: a Java `ssl.keystore.type=PEM`
        keystore, as a Kafka broker reads it."""
        path = issued.cert.with_suffix(".keystore.pem")
        path.write_text(issued.key.read_text() + issued.cert.read_text() + self.cert.read_text())
        return path


def _new_key(key: Path) -> list[str]:
    return [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
    ]


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr}")
