"""The token/regex baseline a PII detector is reported beside: emails, phone numbers, card numbers
(Luhn-checked) and IBANs (mod-97-checked), as a data-loss-prevention rule set would match them.

Written here rather than taken from a library because the baseline has to be the plain, readable
rule set a reviewer would write first (a few regexes and two checksums); a PII library would add a
model of its own and stop being the "no model at all" baseline. Names and postal addresses have no
regex: that this baseline cannot see them is part of what it measures. Torch-free.
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")
# An optional +country code, then 7 to 15 digits in groups split by spaces, dots, dashes or brackets.
PHONE = re.compile(r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)[\s.-]?)?\d{2,5}(?:[\s.-]?\d{2,5}){1,4}(?:x\d+)?\b")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
KINDS = ("email", "phone", "card", "iban")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616's mod-97 check: the country code and check digits moved to the end, letters as numbers."""
    compact = text.replace(" ", "")
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in moved)) % 97 == 1


def _phone_ok(match: str) -> bool:
    digits = re.sub(r"\D", "", match.split("x")[0])
    return 7 <= len(digits) <= 15 and (
        match.startswith("+") or any(sep in match for sep in " .-()") or len(digits) >= 9
    )


def find_pii(text: str) -> list[tuple[str, int, int]]:
    """Every (kind, start, end) the rules match in ``text``; a span claimed by a card or IBAN is not
    counted again as a phone number."""
    found: list[tuple[str, int, int]] = [("email", m.start(), m.end()) for m in EMAIL.finditer(text)]
    found += [("iban", m.start(), m.end()) for m in IBAN.finditer(text) if iban_ok(m.group())]
    found += [("card", m.start(), m.end()) for m in CARD.finditer(text) if luhn_ok(re.sub(r"\D", "", m.group()))]
    taken = [(start, end) for _, start, end in found]
    for m in PHONE.finditer(text):
        inside = any(start <= m.start() < end for start, end in taken)
        if not inside and _phone_ok(m.group()):
            found.append(("phone", m.start(), m.end()))
    return sorted(found, key=lambda hit: hit[1])


def regex_score(text: str) -> float:
    """1.0 when any rule matches, else 0.0: the baseline's score (its AUROC is that of a hard rule)."""
    return 1.0 if find_pii(text) else 0.0
