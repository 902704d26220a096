"""Deciding whether a customer on one side is the same as an unlinked customer with the same display name (and an
item the same as an unlinked item of the same name).

Works in both directions on normalised Batchly-keyed fields (``sync.mapping``): a pulled QuickBooks customer
against unlinked Batchly customers, or a pushed Batchly customer against the QuickBooks customer that a
duplicate-name error (6240) points to.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

_WHITESPACE = re.compile(r"\s+")
_NON_DIGITS = re.compile(r"\D")
MIN_PHONE_DIGITS = 7
MAX_COUNTRY_CODE_DIGITS = 3


class MatchDecision(StrEnum):
    """What to do with a display-name match."""

    LINK = "link"
    REVIEW = "review"


@dataclass(frozen=True)
class Match:
    """Link to ``candidate_id``, or review the ``candidate_ids`` that share the name."""

    decision: MatchDecision
    candidate_id: Hashable | None
    candidate_ids: tuple[Hashable, ...]
    reason: str


def normalize_name(name: str | None) -> str:
    """A display name for comparison: NFC, case-folded, whitespace trimmed and collapsed; accents kept."""
    if not name:
        return ""
    folded = unicodedata.normalize("NFC", name).casefold()
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", folded)).strip()


def normalize_email(email: str | None) -> str:
    """An e-mail address for comparison: trimmed and case-folded."""
    return (email or "").strip().casefold()


def normalize_phone(phone: str | None) -> str:
    """The digits of a phone number, without an international ``00`` prefix."""
    digits = _NON_DIGITS.sub("", phone or "")
    return digits.removeprefix("00")


def phones_match(a: str | None, b: str | None) -> bool:
    """Same digits, or the same number of ≥ 7 digits with a country code (≤ 3 digits) on one side only."""
    short, long = sorted((normalize_phone(a), normalize_phone(b)), key=len)
    if not short:
        return False
    if short == long:
        return True
    return (
        len(short) >= MIN_PHONE_DIGITS
        and len(long) - len(short) <= MAX_COUNTRY_CODE_DIGITS
        and long.endswith(short)
    )


def same_customer(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same display name and either the same e-mail or the same phone number."""
    if normalize_name(a.get("display_name")) != normalize_name(b.get("display_name")):
        return False
    email = normalize_email(a.get("email"))
    if email and email == normalize_email(b.get("email")):
        return True
    return phones_match(a.get("phone"), b.get("phone"))


def match_customer(
    subject: Mapping[str, Any], candidates: Mapping[Hashable, Mapping[str, Any]]
) -> Match | None:
    """Match ``subject`` against unlinked ``candidates`` (id → fields) by display name.

    ``None`` when no candidate has the same display name (create a new record); ``link`` when exactly one of
    them is the same customer; ``review`` when none is, or when several are.
    """
    name = normalize_name(subject.get("display_name"))
    if not name:
        return None
    named = tuple(
        cid for cid, fields in candidates.items() if normalize_name(fields.get("display_name")) == name
    )
    if not named:
        return None
    same = [cid for cid in named if same_customer(subject, candidates[cid])]
    if len(same) == 1:
        return Match(MatchDecision.LINK, same[0], named, "same display name and same e-mail or phone")
    if same:
        return Match(MatchDecision.REVIEW, None, tuple(same), "several customers with this name match")
    return Match(MatchDecision.REVIEW, None, named, "same display name but neither e-mail nor phone match")


def match_item(subject: Mapping[str, Any], candidates: Mapping[Hashable, Mapping[str, Any]]) -> Match | None:
    """Item names are unique in QuickBooks: one unlinked Batchly item of that name is the same item."""
    named = tuple(
        cid
        for cid, fields in candidates.items()
        if normalize_name(fields["name"]) == normalize_name(subject["name"])
    )
    if not named:
        return None
    if len(named) == 1:
        return Match(MatchDecision.LINK, named[0], named, "same name")
    return Match(MatchDecision.REVIEW, None, named, "several items with this name")
