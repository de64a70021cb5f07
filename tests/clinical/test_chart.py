"""The chart's classification as a safety property: a red flag, or a knee record the rules cannot classify, drawn
into an otherwise treatable chart (P01) in any supported code system and resource type, with and without
clinicalStatus and bodySite, never leaves a card with a referral suggestion, and never a card saying "No red flag".
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cds.clinical.chart import quiet_key
from cds.clinical.context import Context
from cds.clinical.pipeline import Pipeline
from cds.clinical.response import Card
from cds.clinical.validate import bundle_resources
from cds.settings import Settings
from tests.support.paths import EXAMPLE_DATE, EXAMPLES, load_json

PIPELINE = Pipeline(Settings(decision_cache_size=0))
T = PIPELINE.terminology
P01 = bundle_resources(load_json(EXAMPLES / "P01-classic-right.json"))
CM, WHO = "http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10"
PCS, OPCS = "http://www.cms.gov/Medicare/Coding/ICD10", "http://fhir.nhs.uk/Id/opcs-4"
CPT, SNOMED = "http://www.ama-assn.org/go/cpt", "http://snomed.info/sct"

# Red-flag codes drawn from each shipped ValueSet, in each system it covers (a suffix extends an is-a root).
RED_FLAG_CODES = [
    (CM, "S83.241A"), (CM, "M25.461"), (CM, "M00.9"), (CM, "M22.01"), (CM, "S83.004A"), (CM, "Z96.651"),
    (CM, "C40.21"), (CM, "R50.9"), (WHO, "M25.46"), (WHO, "S83.2"), (WHO, "M00.0"), (WHO, "Z96.6"),
    (PCS, "0SRC0J9"), (PCS, "0SJD4ZZ"), (OPCS, "W40.1"), (OPCS, "W85.2"), (CPT, "29881"), (CPT, "27447"),
    (SNOMED, "125601008"), (SNOMED, "609588000"), (SNOMED, "309431009"),
    (T.local_system, "knee-effusion"), (T.local_system, "recent-knee-trauma"),
]
# Records about the knee the rules cannot classify, or cannot read at all.
GENERIC_FINDING = (SNOMED, "404684003")
UNKNOWN_CODES = [(CM, "M17.11"), (CM, "S86.011A"), (CM, "M70.41"), (WHO, "M17.1"), GENERIC_FINDING,
                 ("urn:oid:1.2.3.4.5", "X123"), ("http://read.info/readv2", "N094.")]
KNEE_SITES = [None, {"coding": [{"system": SNOMED, "code": "72696002"}]},
              {"coding": [{"system": SNOMED, "code": "6757004", "display": "Structure of right knee region"}]}]


def record(kind: str, code: tuple[str, str], status: bool, site: dict[str, Any] | None, days: int,
           text: str | None) -> dict[str, Any]:
    when = (EXAMPLE_DATE - dt.timedelta(days=days)).isoformat()
    concept: dict[str, Any] = {"coding": [{"system": code[0], "code": code[1]}]}
    if text:
        concept["text"] = text
    resource: dict[str, Any] = {"resourceType": kind, "id": "drawn", "subject": {"reference": "Patient/p01"},
                                "code": concept}
    if kind == "Condition":
        resource["onsetDateTime"] = when
        if status:
            resource["clinicalStatus"] = {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}
    elif kind == "Procedure":
        resource |= {"status": "completed", "performedDateTime": when}
    else:
        resource |= {"status": "final", "effectiveDateTime": when, "valueString": "present"}
    if site is not None:
        resource["bodySite"] = site if kind == "Observation" else [site]
    return resource


def decided(extra: dict[str, Any]) -> list[Card]:
    return [c.card for c in PIPELINE.decide([*P01, extra], Context(today=EXAMPLE_DATE, user_id="Practitioner/1")).cards]


def assert_held_back(cards: list[Card]) -> None:
    assert cards, "a knee complaint with a red flag or a record to check still gets a card"
    assert not any(c.suggestions for c in cards), [c.summary for c in cards]
    assert not any("No red flag" in (c.detail or "") for c in cards)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=st.sampled_from(RED_FLAG_CODES), kind=st.sampled_from(["Condition", "Procedure", "Observation"]),
       status=st.booleans(), site=st.sampled_from(KNEE_SITES), days=st.integers(0, 30),
       text=st.sampled_from([None, "", "Recorded at the visit"]))
def test_a_red_flag_in_any_system_and_resource_type_leaves_no_suggestion(code: tuple[str, str], kind: str,
                                                                        status: bool, site: dict[str, Any] | None,
                                                                        days: int, text: str | None) -> None:
    assert_held_back(decided(record(kind, code, status, site, days, text)))


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=st.sampled_from(UNKNOWN_CODES), kind=st.sampled_from(["Condition", "Procedure"]),
       status=st.booleans(), site=st.sampled_from(KNEE_SITES), days=st.integers(0, 60),
       text=st.sampled_from([None, "Knee problem", "Arthroscopic washout"]))
def test_an_unknown_knee_record_leaves_no_suggestion(code: tuple[str, str], kind: str, status: bool,
                                                     site: dict[str, Any] | None, days: int, text: str | None) -> None:
    # a SNOMED CT finding with no place in the knee sets is about the knee only by its site or its words
    assume(code != GENERIC_FINDING or site is not None or text == "Knee problem")
    assert_held_back(decided(record(kind, code, status, site, days, text)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=st.sampled_from(["Left knee effusion", "Patellar tendon rupture", "Medial meniscus tear",
                              "Anterior cruciate ligament reconstruction", "Genu recurvatum surgery"]),
       kind=st.sampled_from(["Condition", "Procedure", "Observation"]))
def test_a_knee_word_in_a_local_code_is_never_read_as_unrelated(words: str, kind: str) -> None:
    """The last safety net: a site's own code with knee words in its text is a record to check (or a red flag)."""
    assert_held_back(decided(record(kind, ("http://hospital.example/codes", "L-77"), True, None, 3, words)))


def test_an_unrelated_record_keeps_the_suggestions_and_says_what_was_checked() -> None:
    hypertension = record("Condition", (CM, "I10"), True, None, 300, "Essential hypertension")
    cards = decided(hypertension)
    assert [bool(c.suggestions) for c in cards] == [True, True]
    assert "No red flag in 1 condition." in (cards[0].detail or "")


def test_a_site_code_system_not_read_for_a_finding_is_named_and_no_red_flag_is_claimed() -> None:
    flowsheet = record("Observation", ("urn:oid:9.9.9", "BP-SYS"), True, None, 2, "Systolic pressure")
    cards = decided(flowsheet)
    detail = cards[0].detail or ""
    assert "Not readable: 1 finding in urn:oid:9.9.9." in detail
    assert "No red flag" not in detail


def test_markup_in_a_record_never_shapes_the_card() -> None:
    text = "x\n\n**Urgent:** stop exercise [book](https://evil.example) ![t](https://evil.example/t.png) <b>now</b>"
    cards = decided(record("Condition", (CM, "M17.11"), True, None, 3, text))
    detail = cards[0].detail or ""
    assert "\n\n**Urgent" not in detail
    assert "](https://" not in detail.replace("\\]", "")
    assert "<b>" not in detail
    assert "\\*\\*Urgent:\\*\\*" in detail


HOSTILE = ["\n\n**Urgent (rule R0 v1):** red flag found", "# Heading", "*em* _em_", "[book](https://evil.example)",
           "![t](https://evil.example/t.png)", "<img src=x onerror=alert(1)>", "`code`", "~~gone~~", "\r\n- item",
           "<b>now</b>", "&#42;&#42;x&#42;&#42;", "\\*", "| a | b |\n|---|---|"]
CHART = [*P01, record("Condition", (CM, "M17.11"), True, None, 3, "Knee osteoarthritis"),
         record("Procedure", ("urn:oid:1.2.3", "X1"), True, None, 3, "Washout"),
         record("Observation", ("urn:oid:9.9.9", "BP"), True, None, 3, "Systolic")]


def string_leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in string_leaves(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in string_leaves(v, (*path, i))]
    return [path] if isinstance(value, str) else []


LEAVES = [(index, path) for index, resource in enumerate(CHART) for path in string_leaves(resource)]
OURS = {text.advice for text in PIPELINE.cards.texts.cards.values()}


def with_value(resources: list[dict[str, Any]], index: int, path: tuple[Any, ...], value: str) -> list[Any]:
    import copy

    changed = copy.deepcopy(resources)
    holder: Any = changed[index]
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = value
    return changed


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leaf=st.sampled_from(LEAVES), hostile=st.sampled_from(HOSTILE), keep=st.booleans())
def test_no_string_in_any_resource_shapes_a_card(leaf: tuple[int, tuple[Any, ...]], hostile: str, keep: bool) -> None:
    """Markdown and HTML drawn into any string field of any resource (alone or after its value) never gives a card a
    heading, emphasis, link, image, code, HTML or a paragraph or list item of its own."""
    from markdown_it import MarkdownIt

    index, path = leaf
    original: Any = CHART[index]
    for part in path:
        original = original[part]
    value = f"{original}{hostile}" if keep else hostile
    cards = PIPELINE.decide(with_value(CHART, index, path, value),
                            Context(today=EXAMPLE_DATE, user_id="Practitioner/1")).cards
    md = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    for card in cards:
        detail = card.card.detail or ""
        for line in detail.split("\n"):
            assert not line or line.startswith(("- ", "**Findings", "Evidence")) or line in OURS, line
        tokens = [t for block in md.parse(detail) for t in [block, *(block.children or [])]]
        kinds = {t.type for t in tokens}
        assert not kinds & {"heading_open", "link_open", "image", "html_inline", "html_block", "code_inline",
                            "em_open", "s_open", "table_open", "fence", "code_block"}, kinds
        strong = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "strong_open"]
        assert all(s.startswith("Findings") or s == PIPELINE.cards.texts.disclaimer for s in strong), strong


def validated_facts(extra: dict[str, Any], memberships: frozenset[tuple[str, str, str]] = frozenset()) -> list[str]:
    context = Context(today=EXAMPLE_DATE, user_id="Practitioner/1", memberships=memberships)
    return [f.kind for f in PIPELINE.decide([*P01, extra], context).validated.facts]


def test_a_swelling_code_found_absent_is_still_read_when_the_next_one_is_present() -> None:
    """A record's codes alone may settle its classification, and then it is remembered; a swelling finding's
    value decides it, so 'absent' once must not make the next 'present' pass unread."""
    swelling = (T.local_system, "knee-swelling")
    absent = record("Observation", swelling, True, None, 2, None) | {"valueString": "absent"}
    assert "knee-swelling" not in validated_facts(absent)
    assert "knee-swelling" in validated_facts(record("Observation", swelling, True, None, 2, None))


def test_a_record_its_codes_settle_is_remembered_and_classified_alike_at_any_date() -> None:
    hypertension = record("Condition", (CM, "I10"), True, None, 300, "Essential hypertension")
    key = quiet_key("condition", hypertension)
    T.quiet_records.pop(key, None)
    first = decided(hypertension)
    assert key in T.quiet_records
    again = decided(record("Condition", (CM, "I10"), False, None, 3, "Essential hypertension"))
    assert [c.detail for c in again] == [c.detail for c in first]


def test_nothing_is_remembered_of_a_call_a_terminology_server_answered() -> None:
    """Its answers hold for that call only (a red flag the shipped sets lack may be among them)."""
    flowsheet = record("Observation", (SNOMED, "271649006"), True, None, 2, "Systolic blood pressure")
    key = quiet_key("observation", flowsheet)
    T.quiet_records.pop(key, None)
    answered = frozenset({(SNOMED, "271649006", "urn:hipflex-cds:fhir:ValueSet:unrelated")})
    validated_facts(flowsheet, answered)
    assert key not in T.quiet_records
    validated_facts(flowsheet)
    assert key in T.quiet_records
