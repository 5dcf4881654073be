"""Certificates for TLS and keys for SuperNode authentication, made with the same openssl and
ssh-keygen commands docs/deployment.md shows for real machines.

TLS: a private CA signs the SuperLink's certificate, whose subjectAltName must hold every
address the SuperLink is reached at (SuperNodes and `flwr` use its public address; its own
helpers connect to 127.0.0.1). SuperNodes and `flwr` trust the CA certificate.
Authentication: each SuperNode holds an ECDSA P-384 key in OpenSSH format (Flower 1.42 reads
the private key with `load_ssh_private_key`), and its public key is registered with
`flwr supernode register` before the SuperNode connects.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flayer.util.errors import DamagedFile, reading


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path  # trusted by SuperNodes (--root-certificates) and flwr (root-certificates)
    server_cert: Path  # the SuperLink's (--ssl-certfile)
    server_key: Path  # the SuperLink's (--ssl-keyfile)


@dataclass(frozen=True)
class NodeKey:
    private: Path  # the SuperNode's (--auth-supernode-private-key)
    public: Path  # registered with `flwr supernode register`


def _run(argv: Sequence[str], cwd: Path) -> None:
    out = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr.strip()[-2000:]}")


def subject_alt_names(hosts: Sequence[str]) -> str:
    """`IP:...` for addresses and `DNS:...` for names, 127.0.0.1 and localhost always."""
    names: list[str] = []
    for host in ["127.0.0.1", "localhost", *hosts]:
        try:
            entry = f"IP:{ipaddress.ip_address(host)}"
        except ValueError:
            entry = f"DNS:{host}"
        if entry not in names:
            names.append(entry)
    return ",".join(names)


def make_tls(folder: Path, hosts: Sequence[str] = ()) -> TlsFiles:
    """A CA and a SuperLink certificate for `hosts` in `folder` (EC P-256 keys, one year)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("TLS certificates need openssl (apt-get install openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(["openssl", "req", "-x509", *ec, "-days", "365", "-keyout", "ca.key", "-out", "ca.crt",
          "-subj", "/CN=flayer CA", "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"], folder)
    _run(["openssl", "req", *ec, "-keyout", "server.key", "-out", "server.csr",
          "-subj", "/CN=flayer SuperLink"], folder)
    (folder / "server.ext").write_text(
        f"subjectAltName={subject_alt_names(hosts)}\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _run(["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
          "-CAcreateserial", "-days", "365", "-out", "server.crt", "-extfile", "server.ext"],
         folder)
    for key in ("ca.key", "server.key"):
        (folder / key).chmod(0o600)
    return TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")


TLS_FIX = ("make new ones with the openssl commands of docs/deployment.md, "
           "or leave --tls-dir out to have them made")


def check_tls(files: TlsFiles) -> None:
    """Given certificates must be what the SuperLink and its nodes can use: PEM files, the
    key the server certificate's, the server certificate signed by the CA and valid today.
    A damaged one is named here, rather than as a SuperLink that never answers."""
    import datetime

    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    def read(file: Path, what: str, load: Callable[[bytes], Any]) -> Any:
        with reading(file, what, TLS_FIX, also=(UnsupportedAlgorithm,)):
            return load(file.read_bytes())

    ca = read(files.ca_cert, "a PEM certificate", x509.load_pem_x509_certificate)
    server = read(files.server_cert, "a PEM certificate", x509.load_pem_x509_certificate)
    key = read(files.server_key, "a PEM private key",
               lambda data: serialization.load_pem_private_key(data, password=None))
    if key.public_key().public_numbers() != server.public_key().public_numbers():
        raise DamagedFile(files.server_key, f"is not the key of {files.server_cert.name}",
                          TLS_FIX)
    signer = ca.public_key()
    try:
        if isinstance(signer, ec.EllipticCurvePublicKey):
            signer.verify(server.signature, server.tbs_certificate_bytes,
                          ec.ECDSA(server.signature_hash_algorithm))
        elif isinstance(signer, rsa.RSAPublicKey):
            signer.verify(server.signature, server.tbs_certificate_bytes, padding.PKCS1v15(),
                          server.signature_hash_algorithm)
    except InvalidSignature:
        raise DamagedFile(files.server_cert, f"is not signed by {files.ca_cert.name}",
                          TLS_FIX) from None
    now = datetime.datetime.now(datetime.timezone.utc)
    for file, cert in ((files.ca_cert, ca), (files.server_cert, server)):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise DamagedFile(file, f"is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
                              f"{cert.not_valid_after_utc:%Y-%m-%d}, not today", TLS_FIX)


def make_node_key(folder: Path, name: str) -> NodeKey:
    """An ECDSA P-384 key pair in OpenSSH format: `ssh-keygen -t ecdsa -b 384`, or the same
    key format written by `cryptography` where ssh-keygen is not installed."""
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / name, folder / f"{name}.pub"
    for f in (private, public):
        f.unlink(missing_ok=True)
    if shutil.which("ssh-keygen") is not None:
        _run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-C", name,
              "-f", name], folder)
    else:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP384R1())
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.OpenSSH,
                                              serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                         serialization.PublicFormat.OpenSSH)
                           + f" {name}\n".encode())
        private.chmod(0o600)
    return NodeKey(private=private, public=public)
