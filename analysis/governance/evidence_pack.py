"""The pack itself: a zip of the report (HTML, PDF), ``evidence.json``, ``manifest.json`` and
``SHA256SUMS`` (``sha256sum`` format, so ``sha256sum -c SHA256SUMS`` checks an unzipped pack too),
optionally ``SHA256SUMS.sig``: an Ed25519 signature of ``SHA256SUMS`` by an operator's key (raw 64
bytes, so ``openssl pkeyutl -verify -rawin`` checks it as well as ``saescope evidence verify``).

Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public) made by ``evidence keygen``; the
private key is written readable by its owner only and without a passphrase.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import time
import zipfile
from pathlib import Path

from analysis.governance.evidence_data import EvidenceError

SUMS, SIGNATURE = "SHA256SUMS", "SHA256SUMS.sig"
LIBRARIES = (
    "saescope",
    "duckdb",
    "numpy",
    "pandas",
    "streamlit",
    "cryptography",
    "torch",
    "transformer-lens",
    "sae-lens",
    "circuit-tracer",
    "scikit-learn",
)
PRIVATE_NAME, PUBLIC_NAME = "evidence-signing-key.pem", "evidence-signing-key.pub.pem"


def default_author() -> str:
    """Who the CLI records as the pack's author when none is named: the operating-system user, as ``users`` does."""
    return f"cli:{getpass.getuser()}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sums_text(files: dict[str, bytes]) -> bytes:
    """``SHA256SUMS`` of ``files``, sorted by name, in ``sha256sum``'s format."""
    return "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in sorted(files)).encode()


def parse_sums(content: bytes) -> dict[str, str] | None:
    """Name -> sha256 from ``SHA256SUMS``; None when it is not in that format."""
    sums = {}
    try:
        lines = content.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None
    for line in lines:
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name:
            return None
        sums[name] = digest
    return sums


def load_private_key(path: Path):
    """An Ed25519 private key from a PEM file; EvidenceError for anything else."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as error:
        raise EvidenceError(f"cannot read the signing key {path}: {error.strerror or error}") from None
    except (TypeError, ValueError) as error:
        raise EvidenceError(f"{path} is not an unencrypted PEM private key: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError(f"{path} is a {type(key).__name__}; evidence packs are signed with Ed25519 keys")
    return key


def load_public_key(path: Path):
    """An Ed25519 public key from a PEM file; EvidenceError for anything else."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as error:
        raise EvidenceError(f"cannot read the public key {path}: {error.strerror or error}") from None
    except (TypeError, ValueError) as error:
        raise EvidenceError(f"{path} is not a PEM public key: {error}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EvidenceError(f"{path} is a {type(key).__name__}; evidence packs are signed with Ed25519 keys")
    return key


def fingerprint(public_key) -> str:
    """sha256 of the raw 32-byte public key: names the key in the manifest and in verify's output."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def keygen(folder: Path) -> tuple[Path, Path]:
    """A new Ed25519 key pair in ``folder``: the private key (mode 600) and its public key. Never overwrites."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = Path(folder).expanduser()
    private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise EvidenceError(f"{path} exists; keygen never replaces a key (move it away first)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        with os.fdopen(os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
            file.write(private)
        public_path.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    except OSError as error:
        raise EvidenceError(f"cannot write the key pair in {folder}: {error.strerror or error}") from None
    return private_path, public_path


def write_pack(out: Path, files: dict[str, bytes], signing_key=None) -> None:
    """Zip ``files`` with their ``SHA256SUMS`` (and its signature) to ``out``, atomically: written
    beside it and renamed, so an interrupted run leaves no half pack."""
    sums = sums_text(files)
    members = {**files, SUMS: sums}
    if signing_key is not None:
        members[SIGNATURE] = signing_key.sign(sums)
    partial = out.with_name(f".{out.name}.partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, content in members.items():
                info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
                info.external_attr = 0o644 << 16  # readable by all once unzipped, like any report
                archive.writestr(info, content, compress_type=zipfile.ZIP_DEFLATED)
        partial.replace(out)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise EvidenceError(f"cannot write {out}: {error.strerror or error}") from None
