"""``evidence verify``: is a pack what was written? Every file listed in ``SHA256SUMS`` is present,
unchanged and listed once, nothing else is in the zip, and (given the operator's public key) the
signature of ``SHA256SUMS`` holds. Each problem is one line naming the file."""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from analysis.governance.evidence_data import EvidenceError
from analysis.governance.evidence_pack import SIGNATURE, SUMS, fingerprint, load_public_key, parse_sums


@dataclass
class Verdict:
    """What ``verify`` found: ``problems`` (each naming a file) make exit code 1; ``notes`` are information."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _read(archive: zipfile.ZipFile, name: str) -> bytes | None:
    """A member's bytes, or None when the zip's own checks (CRC, header, deflate stream) fail on it."""
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError):
        return None


def verify_pack(path: Path, public_key_path: Path | None = None) -> Verdict:
    """Check the pack at ``path``; EvidenceError (exit 2) only for input that is not a pack at all."""
    public_key = load_public_key(public_key_path) if public_key_path is not None else None
    path = Path(path)
    if not path.is_file():
        raise EvidenceError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise EvidenceError(f"{path} is not a zip archive: {error}") from None
    verdict = Verdict()
    with archive:
        names = archive.namelist()
        verdict.problems += [f"listed twice in the zip: {name}" for name, n in Counter(names).items() if n > 1]
        sums_bytes = _read(archive, SUMS) if SUMS in names else None
        if sums_bytes is None:
            verdict.problems.append(f"{'missing' if SUMS not in names else 'changed'}: {SUMS} (nothing can be checked)")
            return verdict
        sums = parse_sums(sums_bytes)
        if sums is None:
            verdict.problems.append(f"changed: {SUMS} (not in sha256sum's format)")
            return verdict
        for name, digest in sums.items():
            if name not in names:
                verdict.problems.append(f"missing: {name}")
                continue
            content = _read(archive, name)
            if content is None or hashlib.sha256(content).hexdigest() != digest:
                verdict.problems.append(f"changed: {name}")
        verdict.problems += [
            f"extra: {name}" for name in dict.fromkeys(names) if name not in sums and name not in (SUMS, SIGNATURE)
        ]
        _check_signature(archive, names, sums_bytes, public_key, verdict)
    if verdict.ok:
        verdict.notes.insert(0, f"intact: {len(sums)} files match {SUMS}")
    return verdict


def _check_signature(archive: zipfile.ZipFile, names: list[str], sums: bytes, public_key, verdict: Verdict) -> None:
    from cryptography.exceptions import InvalidSignature

    signature = _read(archive, SIGNATURE) if SIGNATURE in names else None
    if public_key is None:
        if SIGNATURE in names:
            verdict.notes.append(f"signed ({SIGNATURE}); pass --public-key to check the signature")
        return
    if signature is None:
        verdict.problems.append(
            f"{'missing' if SIGNATURE not in names else 'changed'}: {SIGNATURE} (a public key was given)"
        )
        return
    try:
        public_key.verify(signature, sums)
    except InvalidSignature:
        verdict.problems.append(
            f"changed: {SIGNATURE} does not match {SUMS} under the key {fingerprint(public_key)[:16]} "
            "(another key signed it, or a file was changed)"
        )
        return
    verdict.notes.append(f"signature good: signed by the key {fingerprint(public_key)[:16]}")
