"""verify: every way to hide a record from the keyed, anchored chain is named, with its records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from flm_gateway.state.anchor import Anchor
from flm_gateway.state.chain import AuditKey, link
from flm_gateway.state.store import AuditEvent, AuditRecord
from flm_gateway.state.verify import verify

KEY = AuditKey.derive("the real key, 32 characters or more")
GUESS = AuditKey.derive("an attacker's guess at the key....")


def events(n: int, start: int = 1) -> list[AuditEvent]:
    return [
        AuditEvent("auth.failed", ts=1000.0 + i, ip=f"192.0.2.{i}", details={"n": i})
        for i in range(start, start + n)
    ]


def log(n: int = 10, key: AuditKey | None = KEY) -> list[AuditRecord]:
    return link(events(n), None, key)


def anchor_of(records: list[AuditRecord], seq: int) -> Anchor:
    return Anchor(seq, records[seq - 1].hash, f"audit.anchor line {seq}")


def rechain(records: list[AuditRecord], key: AuditKey | None) -> list[AuditRecord]:
    """What an attacker does after an edit or a deletion: renumber and rehash everything."""
    return link([r.event for r in records], None, key)


def texts(records: list[AuditRecord], anchors: list[Anchor] | None = None) -> list[str]:
    report = verify(records, KEY, anchors or [])
    assert not report.ok
    return [p.text for p in report.problems]


def test_an_intact_log_verifies_and_says_what_is_not_covered() -> None:
    records = log()
    report = verify(records, KEY, [anchor_of(records, 8)])
    assert report.ok and report.records == 10 and report.head == records[-1].head
    assert report.keyed_from == 1 and report.anchored_to == 8
    assert report.notes == [
        "records 9-10 are newer than the newest anchor: a log cut back to within them would "
        "not be detected"
    ]
    assert verify(records, KEY).notes == [
        "no anchor: a log cut short or swapped for an older copy cannot be detected"
    ]
    assert verify([], KEY).ok


@pytest.mark.parametrize("cut", [1, 3, 9])
def test_the_last_records_deleted(cut: int) -> None:
    records = log()
    anchors = [anchor_of(records, 10)]
    (problem,) = texts(records[:-cut], anchors)
    first = 11 - cut
    span = "record 10" if cut == 1 else f"records {first}-10"
    assert problem.startswith(
        f"{span} missing at the tail: audit.anchor line 10 says the log held 10 record(s), "
        f"the last with hash {records[9].hash[:16]}...; the log ends at record {10 - cut}"
    )


def test_every_record_deleted() -> None:
    records = log()
    (problem,) = texts([], [anchor_of(records, 10)])
    assert problem.startswith("records 1-10 missing at the tail") and "the log is empty" in problem


def test_the_metric_alone_catches_a_cut() -> None:
    records = log()
    (problem,) = texts(records[:6], [Anchor(8, None, "--anchor 8")])
    assert problem == (
        "records 7-8 missing at the tail: --anchor 8 says the log held 8 record(s); the log "
        "ends at record 6"
    )


def test_deleted_in_the_middle_without_rechaining() -> None:
    records = log()
    assert texts(records[:4] + records[6:]) == ["records 5-6: missing (deleted)"]


@pytest.mark.parametrize("key", [None, GUESS], ids=["no-mac", "guessed-key"])
def test_deleted_in_the_middle_and_rechained(key: AuditKey | None) -> None:
    records = log()
    forged = rechain(records[:4] + records[6:], key)
    problems = texts(forged, [anchor_of(records, 10)])
    if key is None:
        assert problems[0].startswith("records 1-8: no record carries a MAC")
    else:
        assert problems[0].startswith("records 1-8: keyed with another key")
    assert problems[1].startswith("records 9-10 missing at the tail")


def test_deleted_in_the_middle_rechained_keeping_the_old_macs() -> None:
    records = log()
    kept = records[:4] + records[6:]
    forged = [replace(new, mac=old.mac) for new, old in zip(rechain(kept, KEY), kept, strict=True)]
    forged = [replace(r, mac=kept[i].mac) for i, r in enumerate(rechain(kept, None))]
    (problem, tail) = texts(forged, [anchor_of(records, 10)])
    assert problem.startswith("records 5-8: the MAC does not match: the record was edited")
    assert tail.startswith("records 9-10 missing at the tail")


def test_edited_without_rechaining() -> None:
    records = log()
    records[3] = replace(records[3], event=replace(records[3].event, ip="10.0.0.1"))
    assert texts(records) == [
        "record 4: the hash does not match the content: the record was edited",
    ]


def test_edited_and_rechained_with_the_old_macs_kept() -> None:
    records = log()
    edited = [
        replace(r, event=replace(r.event, ip="10.0.0.1")) if r.seq == 4 else r for r in records
    ]
    forged = [replace(r, mac=records[i].mac) for i, r in enumerate(rechain(edited, None))]
    (problem,) = texts(forged)
    assert problem.startswith("records 4-10: the MAC does not match")


def test_a_record_inserted_and_rechained() -> None:
    records = log()
    inserted = [r.event for r in records[:5]] + events(1, 99) + [r.event for r in records[5:]]
    forged = link(inserted, None, GUESS)
    problems = texts(forged, [anchor_of(records, 10)])
    assert problems[0].startswith("records 1-11: keyed with another key (fingerprint ")
    assert problems[1].startswith("record 10 is not the one audit.anchor line 10 recorded")


@pytest.mark.parametrize("key", [None, GUESS], ids=["no-mac", "guessed-key"])
def test_a_whole_forged_log(key: AuditKey | None) -> None:
    forged = link(events(12, 50), None, key)
    problems = texts(forged)
    if key is None:
        assert problems == [
            "records 1-12: no record carries a MAC: the log was written without the audit key "
            "(replaced?), or this is an older log and no gateway of this version has written "
            "to it yet"
        ]
    else:
        assert problems == [
            f"records 1-12: keyed with another key (fingerprint {GUESS.fingerprint}, this key "
            f"is {KEY.fingerprint})"
        ]


def test_an_older_copy_swapped_in() -> None:
    records = log()
    (problem,) = texts(records[:7], [anchor_of(records, 4), anchor_of(records, 10)])
    assert problem.startswith("records 8-10 missing at the tail")


def test_an_older_copy_swapped_in_and_written_to_again() -> None:
    records = log()
    replayed = link(events(5, 70), records[6].head, KEY)  # the gateway appends 8-12 again
    problems = texts(records[:7] + replayed, [anchor_of(records, 10)])
    assert problems == [
        f"record 10 is not the one audit.anchor line 10 recorded (hash "
        f"{replayed[2].hash[:16]}... instead of {records[9].hash[:16]}...): the log was "
        "rewritten or replaced after that anchor"
    ]


def test_records_swapped_or_duplicated() -> None:
    records = log(5)
    swapped = [records[0], records[2], records[1], records[3], records[4]]
    assert texts(swapped)[0] == "record 2: missing (deleted)"
    duplicated = [*records[:3], records[2], *records[3:]]
    assert "record 3: out of order after record 3" in texts(duplicated)


def test_an_unkeyed_record_after_keyed_ones() -> None:
    keyed = log(4)
    unkeyed = link(events(2, 40), keyed[-1].head, None)
    assert texts(keyed + unkeyed) == [
        "records 5-6: no MAC, after keyed records: written without the audit key"
    ]


def test_an_older_unkeyed_prefix_is_a_note() -> None:
    older = link(events(3), None, None)
    records = older + link(events(2, 40), older[-1].head, KEY)
    report = verify(records, KEY)
    assert report.ok and report.keyed_from == 4
    assert report.notes[0] == (
        "records 1-3 predate the audit key: their chain is checked, their origin is not"
    )


def test_several_independent_problems_are_each_reported() -> None:
    records = log(12)
    records[1] = replace(records[1], event=replace(records[1].event, type="nothing.here"))
    damaged = records[:6] + records[7:]
    damaged[-1] = replace(damaged[-1], mac=None)
    problems = texts(damaged, [anchor_of(log(12), 12)])
    assert problems[0] == "record 2: the hash does not match the content: the record was edited"
    assert problems[1] == "record 7: missing (deleted)"
    assert problems[2].startswith("record 12: no MAC")


FORGERIES: list[Callable[[list[AuditRecord]], list[AuditRecord]]] = [
    lambda r: r[:-1],
    lambda r: [],
    lambda r: rechain(r[:3] + r[4:], GUESS),
    lambda r: rechain(r[:3] + r[4:], None),
    lambda r: link(events(len(r), 500), None, GUESS),
    lambda r: r[:5] + link(events(5, 80), r[4].head, GUESS),
]


@pytest.mark.parametrize("forge", FORGERIES)
def test_no_forgery_without_the_key_passes_an_anchored_verify(
    forge: Callable[[list[AuditRecord]], list[AuditRecord]],
) -> None:
    records = log()
    assert not verify(forge(records), KEY, [anchor_of(records, 10)]).ok
