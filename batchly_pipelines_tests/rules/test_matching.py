from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchly_pipelines.rules.matching import (
    MatchDecision,
    match_customer,
    normalize_email,
    normalize_name,
    normalize_phone,
    phones_match,
    same_customer,
)
from batchly_pipelines_tests.support.strategies import SETTINGS


def person(name: str = "José García", email: str | None = None, phone: str | None = None) -> dict[str, Any]:
    return {"display_name": name, "email": email, "phone": phone}


def test_names_compare_case_and_whitespace_insensitively_with_accents_kept() -> None:
    decomposed = unicodedata.normalize("NFD", "José García")
    assert normalize_name(f"  {decomposed.upper()}\t ") == normalize_name("josé  garcía")
    assert normalize_name("Jose Garcia") != normalize_name("José García")
    assert normalize_name(None) == ""


def test_email_and_phone_normalisation() -> None:
    assert normalize_email("  Ops@Acme.TEST ") == "ops@acme.test"
    assert normalize_phone("+1 (555) 123-4567") == "15551234567"
    assert normalize_phone("0044 20 7946 0000") == "442079460000"


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("(555) 123-4567", "555.123.4567", True),
        ("+1 555 123 4567", "555-123-4567", True),
        ("0044 20 7946 0000", "+44 20 7946 0000", True),
        ("555-123-4567", "555-123-4568", False),
        ("12345", "9912345", False),  # too short to ignore a prefix
        ("555-123-4567", "99995551234567", False),  # more than a country code in front
        (None, None, False),
        ("", "", False),
    ],
)
def test_phones_match(a: str | None, b: str | None, expected: bool) -> None:
    assert phones_match(a, b) is expected
    assert phones_match(b, a) is expected


def test_same_email_links() -> None:
    match = match_customer(
        person(email="Jose@Example.com "), {7: person(email="jose@example.com"), 8: person("X")}
    )
    assert match is not None
    assert (match.decision, match.candidate_id, match.candidate_ids) == (MatchDecision.LINK, 7, (7,))


def test_same_name_and_phone_links_even_without_email() -> None:
    match = match_customer(person(phone="+1 555 123 4567"), {3: person("JOSÉ  GARCÍA", phone="555-123-4567")})
    assert match is not None and match.decision is MatchDecision.LINK and match.candidate_id == 3


def test_same_name_but_different_contact_goes_to_review() -> None:
    match = match_customer(
        person(email="a@x.test", phone="555-000-0000"), {3: person(email="b@x.test", phone="555-999-9999")}
    )
    assert match is not None
    assert (match.decision, match.candidate_id, match.candidate_ids) == (MatchDecision.REVIEW, None, (3,))


def test_same_name_without_any_contact_goes_to_review() -> None:
    match = match_customer(person(), {3: person()})
    assert match is not None and match.decision is MatchDecision.REVIEW


def test_several_identical_candidates_go_to_review() -> None:
    match = match_customer(
        person(email="a@x.test"), {1: person(email="a@x.test"), 2: person(email="A@x.test")}
    )
    assert match is not None
    assert (match.decision, match.candidate_ids) == (MatchDecision.REVIEW, (1, 2))


def test_no_candidate_with_the_name_means_no_match() -> None:
    assert match_customer(person(email="a@x.test"), {1: person("Someone Else", email="a@x.test")}) is None
    assert match_customer(person(""), {1: person("")}) is None


contacts = st.fixed_dictionaries(
    {
        "display_name": st.sampled_from(["Acme", " acme ", "ACME", "Ácme"]),
        "email": st.sampled_from([None, "", "a@x.test", " A@X.test", "b@x.test"]),
        "phone": st.sampled_from([None, "", "555 123 4567", "+1-555-123-4567", "555 765 4321"]),
    }
)


@SETTINGS
@given(contacts, contacts)
def test_same_customer_is_symmetric_and_requires_the_same_name(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert same_customer(a, b) == same_customer(b, a)
    if normalize_name(a["display_name"]) != normalize_name(b["display_name"]):
        assert not same_customer(a, b)


@SETTINGS
@given(st.text(max_size=30))
def test_name_normalisation_is_idempotent(name: str) -> None:
    assert normalize_name(normalize_name(name)) == normalize_name(name)
