"""The trigger path: S3-shaped events to runs (decoding, skipping, idempotence) and the
watcher's settle/debounce decisions, with a fake clock."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import Harness
from purchases import bronze, commit_log, history
from purchases.config import Settings
from purchases.storage import Lake
from purchases.triggers import (
    FolderWatcher,
    SettleTracker,
    WatchOptions,
    delivery_id,
    event_for,
    handle_event,
    is_inbox_candidate,
    lake_bucket,
    parse_event,
    parse_notifications,
)

HEADER = "customer_id,first_name,last_name,email,purchase_id,purchase_date,amount,currency\n"
DAY = "bronze/year=2024/month=01/day=15"


def record(bucket: str, key: str, **extra: object) -> dict:
    return {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, **extra}}}


def csv_file(path: Path, first_id: int, rows: int = 3) -> Path:
    lines = [f"{i + 1},Ann,Lee,ann{i}@x.io,{first_id + i},2024-01-10,10.00,AUD\n"
             for i in range(rows)]
    path.write_text(HEADER + "".join(lines))
    return path


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- parsing -----------------------------------------------------------------------------------


def test_parse_decodes_keys_and_skips_with_reasons(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    bucket, _ = lake_bucket(lake)
    event = {"Records": [
        record(bucket, "bronze/year%3D2024/month%3D01/day%3D15/my+daily+file.csv"),
        record(bucket, "bronze%2Fyear%3D2024%2Fmonth%3D01%2Fday%3D15%2Fb.csv.gz"),
        record(bucket, "bronze/2024/01/16/plain%2Blayout.CSV"),
        record(bucket, "bronze/year=2024/month=01/day=15/readme.txt"),
        record(bucket, "bronze/year=2024/month=01/day=15/.hidden.csv"),
        record(bucket, "bronze/year=2024/month=01/day=15/x.csv.part"),
        record(bucket, "landing/2024/a.csv"),
        record(bucket, "silver/year=2024/month=01/day=15/a.csv"),
        record("someone-elses-bucket", "bronze/year=2024/month=01/day=15/a.csv"),
        {**record(bucket, "bronze/year=2024/month=01/day=15/gone.csv"),
         "eventName": "ObjectRemoved:Delete"},
        record(bucket, "bronze/year=2024/month=01/day=15/my%20daily%20file.csv"),
        {"s3": {"bucket": {"name": bucket}}},
    ]}
    wanted, skipped = parse_event(event, lake)
    assert wanted == [
        f"{DAY}/my daily file.csv",
        f"{DAY}/b.csv.gz",
        "bronze/2024/01/16/plain+layout.CSV",
    ]
    reasons = {s.key: s.reason for s in skipped}
    assert reasons[f"{DAY}/readme.txt"].startswith("not a CSV file")
    assert reasons[f"{DAY}/.hidden.csv"].startswith("not a CSV file")
    assert reasons[f"{DAY}/x.csv.part"].startswith("not a CSV file")
    assert reasons["landing/2024/a.csv"].startswith("outside bronze")
    assert reasons["silver/year=2024/month=01/day=15/a.csv"].startswith("outside bronze")
    assert "not the lake's" in reasons[f"{DAY}/a.csv"]
    assert reasons[f"{DAY}/gone.csv"].startswith("not an object creation")
    assert "named twice" in [s.reason for s in skipped if s.key == f"{DAY}/my daily file.csv"][0]
    assert any(s.reason.startswith("malformed record") for s in skipped)
    assert len(wanted) + len(skipped) == len(event["Records"])


def test_parse_s3_lake_with_prefix() -> None:
    # The lake s3://acme-lake/prod/purchases (lake_bucket of an S3 lake: tests/integration).
    event = {"Records": [
        record("acme-lake", "prod/purchases/bronze/year%3D2024/month%3D01/day%3D15/a+b.csv"),
        record("acme-lake", "staging/bronze/year=2024/month=01/day=15/a.csv"),
    ]}
    found, skipped = parse_notifications(event, "acme-lake", "prod/purchases")
    assert [f.path for f in found] == [f"{DAY}/a b.csv"]
    assert found[0].key == f"prod/purchases/{DAY}/a b.csv"
    assert skipped[0].reason.startswith("outside the lake")


def test_not_an_event_at_all(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    for event in ({"Event": "s3:Other"}, [], None, {"detail": "x"}):
        wanted, skipped = parse_event(event, lake)
        assert wanted == [] and "not an S3 event" in skipped[0].reason
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": lake_bucket(lake)[0]}
    wanted, skipped = parse_event(test_event, lake)
    assert wanted == [] and skipped[0].reason.startswith("s3:TestEvent")


def eventbridge(bucket: str, key: str, kind: str = "Object Created", **obj: object) -> dict:
    return {"version": "0", "detail-type": kind, "source": "aws.s3",
            "detail": {"bucket": {"name": bucket}, "object": {"key": key, **obj}}}


def test_eventbridge_keys_are_taken_as_written() -> None:
    obj = {"etag": "e1", "version-id": "v1", "sequencer": "0055"}
    (found,), skipped = parse_notifications(
        eventbridge("acme", "lake/bronze/year=2024/month=01/day=15/a+b%2Fc.csv", **obj),
        "acme", "lake")
    assert skipped == []
    # Not URL-decoded: EventBridge gives the key itself.
    assert found.path == f"{DAY}/a+b%2Fc.csv"
    assert (found.etag, found.version_id, found.sequencer) == ("e1", "v1", "0055")
    # The same creation told by an S3 notification gets the same delivery id.
    (same,), _ = parse_notifications({"Records": [record(
        "acme", "lake/bronze/year%3D2024/month%3D01/day%3D15/a%2Bb%252Fc.csv",
        eTag='"e1"', versionId="v1", sequencer="0055")]}, "acme", "lake")
    assert same.path == found.path and same.delivery_id == found.delivery_id
    for event, reason in (
        (eventbridge("acme", f"lake/{DAY}/a.csv", "Object Deleted"), "not an object creation"),
        (eventbridge("acme", f"lake/{DAY}/"), "a folder marker"),
        (eventbridge("other", f"lake/{DAY}/a.csv"), "bucket 'other' is not the lake's"),
        (eventbridge("acme", f"{DAY}/a.csv"), "outside the lake"),
        (eventbridge("acme", f"lake/{DAY}/a.json"), "not a CSV file"),
        ({**eventbridge("acme", f"lake/{DAY}/a.csv"), "source": "aws.ec2"}, "not an S3 event"),
    ):
        found_none, (skip,) = parse_notifications(event, "acme", "lake")
        assert found_none == [] and skip.reason.startswith(reason), (event, skip)


def test_folder_marker_in_an_s3_notification() -> None:
    found, (skip,) = parse_notifications(
        {"Records": [record("acme", "bronze/year%3D2024/month%3D01/day%3D15/")]}, "acme")
    assert found == [] and skip.reason == "a folder marker, not a file"


def test_event_for_round_trips(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    paths = [f"{DAY}/a b+c%.csv", f"{DAY}/d.csv"]
    event = event_for(lake, paths, {paths[0]: "abc"})
    assert " " not in event["Records"][0]["s3"]["object"]["key"]
    assert event["Records"][0]["s3"]["object"]["eTag"] == "abc"
    assert parse_event(event, lake) == (paths, [])


def test_delivery_id_is_stable_per_delivery() -> None:
    a = record("b", "bronze/year%3D2024/month%3D01/day%3D15/a+b.csv", eTag="e1", sequencer="01")
    same_key_decoded_otherwise = record("b", "bronze/year=2024/month=01/day=15/a%20b.csv",
                                        eTag="e1", sequencer="01")
    assert delivery_id(a) == delivery_id(dict(a)) == delivery_id(same_key_decoded_otherwise)
    rewritten = record("b", "bronze/year=2024/month=01/day=15/a b.csv", eTag="e2",
                       sequencer="02")
    assert delivery_id(rewritten) != delivery_id(a)
    assert len(delivery_id(a)) == 64


# --- handle_event: runs, idempotence --------------------------------------------------------------


def _land(settings: Settings, tmp_path: Path, name: str, first_id: int) -> str:
    src = csv_file(tmp_path / name, first_id)
    (landed,) = bronze.land(Lake(settings.lake_uri), [src], commit_log.as_date("2024-01-15"))
    return landed.path


def test_handle_event_runs_new_files_once(settings: Settings, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="purchases.triggers")
    lake = Lake(settings.lake_uri)
    a = _land(settings, tmp_path, "my daily file.csv", 100)
    b = _land(settings, tmp_path, "other.csv", 200)
    bucket, _ = lake_bucket(lake)
    event = {"Records": [
        record(bucket, "bronze/year%3D2024/month%3D01/day%3D15/my+daily+file.csv"),
        record(bucket, "bronze%2Fyear%3D2024%2Fmonth%3D01%2Fday%3D15%2Fother.csv"),
        record(bucket, "bronze/year=2024/month=01/day=15/notes.json"),
        record(bucket, "inbox/x.csv"),
    ]}
    first = handle_event(event, settings)
    assert first.run is not None and first.run.status == "succeeded"
    assert first.files == [a, b]
    assert first.run.trigger == "s3" and first.run.requested_files == [a, b]
    assert first.run.counts()["accepted"] == 6
    assert {s.key for s in first.skipped} == {f"{DAY}/notes.json", "inbox/x.csv"}
    assert "skipped inbox/x.csv: outside bronze" in caplog.text

    again = handle_event(event, settings)  # the same delivery, redelivered
    assert again.run is None and again.files == []
    assert {s.reason for s in again.skipped if s.key in (a, b)} == {
        "already processed (same path and content)"
    }
    assert len(history.load_all(lake)) == 1
    assert [f.path for c in commit_log.load_commits(lake) for f in c.files] == [a, b]


def test_same_delivery_at_once_starts_one_run(settings: Settings, tmp_path: Path) -> None:
    lake = Lake(settings.lake_uri)
    a = _land(settings, tmp_path, "a.csv", 100)
    event = event_for(lake, [a])
    results = []
    barrier = threading.Barrier(3)

    def deliver() -> None:
        barrier.wait()
        results.append(handle_event(event, settings))

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 3
    assert sum(r.run is not None for r in results) == 1
    assert len(history.load_all(lake)) == 1
    assert [f.path for c in commit_log.load_commits(lake) for f in c.files] == [a]


def test_changed_bytes_under_same_key_is_a_new_delivery(settings: Settings,
                                                        tmp_path: Path) -> None:
    lake = Lake(settings.lake_uri)
    a = _land(settings, tmp_path, "a.csv", 100)
    assert handle_event(event_for(lake, [a]), settings).run is not None
    # S3 replaces an object written again under its key: a new version, a new delivery.
    lake.put_file(str(csv_file(tmp_path / "a.csv", 500, rows=4)), a)
    second = handle_event(event_for(lake, [a]), settings)
    assert second.run is not None and second.run.counts()["accepted"] == 4


def test_missing_object_is_skipped(settings: Settings) -> None:
    lake = Lake(settings.lake_uri)
    result = handle_event(event_for(lake, [f"{DAY}/never-landed.csv"]), settings)
    assert result.run is None
    assert result.skipped[0].reason == "no longer in the lake"


# --- watcher decisions ---------------------------------------------------------------------------


def test_inbox_candidates() -> None:
    assert is_inbox_candidate(Path("a.csv")) and is_inbox_candidate(Path("A.CSV.GZ"))
    for name in (".a.csv", "_a.csv", "a.csv.part", "a.csv.tmp", "a.txt", "a.csv~"):
        assert not is_inbox_candidate(Path(name))


def test_settle_waits_for_size_and_mtime_to_hold(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = SettleTracker(2.0, clock)
    f = tmp_path / "a.csv"
    f.write_text("header\n")
    tracker.touch(f)
    assert tracker.ready() == []  # first look: nothing known yet
    clock.now += 1.5
    assert tracker.ready() == []
    with f.open("a") as fh:  # still being written
        fh.write("more,rows\n")
    clock.now += 1.5
    assert tracker.ready() == []  # changed: the settle period starts again
    clock.now += 1.9
    assert tracker.ready() == []
    clock.now += 0.2
    assert tracker.ready() == [f]
    assert len(tracker) == 0
    gone = tmp_path / "b.csv"
    gone.write_text("x")
    tracker.touch(gone)
    gone.unlink()
    assert tracker.ready() == [] and len(tracker) == 0


def test_watcher_coalesces_a_burst_into_one_run(settings: Settings, tmp_path: Path) -> None:
    clock = FakeClock()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = FolderWatcher(settings, inbox, WatchOptions(settle=1.0, debounce=2.0), clock=clock)
    watcher.catch_up_at = None
    for i, name in enumerate(("a.csv", "b.csv", "c.csv")):
        csv_file(inbox / name, 100 * (i + 1))
        watcher.events.put(inbox / name)
    (inbox / "d.csv.part").write_text(HEADER)
    watcher.events.put(inbox / "d.csv.part")
    watcher.tick()
    clock.now += 1.1
    watcher.tick()  # settled: landed, but the debounce period has not passed
    assert sorted(p.rsplit("/", 1)[-1] for p in watcher.landed) == ["a.csv", "b.csv", "c.csv"]
    assert watcher.runs == []
    csv_file(inbox / "e.csv", 900)  # one more arrives within the debounce period
    watcher.events.put(inbox / "e.csv")
    clock.now += 1.5
    watcher.tick()
    clock.now += 1.1
    watcher.tick()
    assert watcher.runs == [] and len(watcher.landed) == 4
    clock.now += 2.1
    watcher.tick()
    (run,) = watcher.runs
    assert run.trigger == "watch" and len(run.files) == 4
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["d.csv.part"]
    assert len(list((inbox / ".landed").rglob("*.csv"))) == 4


def test_a_file_written_on_after_it_was_landed_is_landed_again_whole(
    settings: Settings, tmp_path: Path
) -> None:
    """A writer pausing longer than --settle had its file landed half-written and moved to
    .landed/, where its later rows went (its open file moved with it): never in bronze."""
    clock = FakeClock()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = FolderWatcher(settings, inbox, WatchOptions(settle=1.0, debounce=0.5), clock=clock)
    watcher.catch_up_at = None
    # A file of the same name moved aside earlier today: this one is archived as slow~1.csv,
    # still a data file's name when it is landed again from there (slow.csv.1 was not).
    from datetime import UTC, datetime

    earlier = inbox / ".landed" / datetime.now(UTC).date().isoformat() / "slow.csv"
    earlier.parent.mkdir(parents=True)
    earlier.write_text(HEADER)
    writer = (inbox / "slow.csv").open("w", encoding="utf-8", newline="")
    writer.write(HEADER + "1,A,B,a@x.io,101,2024-01-10,4.00,AUD\n")
    writer.flush()
    watcher.events.put(inbox / "slow.csv")
    for _ in range(4):  # the writer pauses: the half-written file settles, lands, runs
        watcher.tick()
        clock.now += 0.6
    (first,) = watcher.runs
    assert [(f["rows_in"], f["accepted"]) for f in first.files] == [(1, 1)]
    writer.write("2,C,D,c@x.io,102,2024-01-10,6.00,AUD\n")  # into .landed/<day>/slow.csv
    writer.close()
    for _ in range(6):
        watcher.tick()
        clock.now += 0.6
    (_, second) = watcher.runs
    [f] = second.files
    assert f["path"].rsplit("/", 1)[1] == "slow~1.csv"  # a new bronze file, the whole file
    assert (f["rows_in"], f["accepted"], f["duplicates"]) == (2, 1, 1)
    summary = Harness(settings, tmp_path).summary()
    assert {c: r["total_spent_aud"] for c, r in summary.items()} == {
        1: Decimal("4.00"), 2: Decimal("6.00")}
    for _ in range(6):  # settled and unchanged: not landed a third time
        watcher.tick()
        clock.now += 0.6
    assert len(watcher.runs) == 2


def test_a_failed_landing_from_landed_is_tried_again(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Landing a changed file again from .landed/ (which no scan looks at) that failed was
    never retried: the rows written after the first landing were lost."""
    clock = FakeClock()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = FolderWatcher(settings, inbox, WatchOptions(settle=1.0, debounce=0.5), clock=clock)
    watcher.catch_up_at = None
    writer = (inbox / "slow.csv").open("w", encoding="utf-8", newline="")
    writer.write(HEADER + "1,A,B,a@x.io,101,2024-01-10,4.00,AUD\n")
    writer.flush()
    watcher.events.put(inbox / "slow.csv")
    for _ in range(4):
        watcher.tick()
        clock.now += 0.6
    assert len(watcher.runs) == 1
    writer.write("2,C,D,c@x.io,102,2024-01-10,6.00,AUD\n")
    writer.close()
    monkeypatch.setenv("PURCHASES_IO_FAULT", "enospc:bronze/")  # the lake's disk is full
    for _ in range(6):
        watcher.tick()
        clock.now += 0.6
    assert len(watcher.runs) == 1  # it could not land
    monkeypatch.delenv("PURCHASES_IO_FAULT")
    for _ in range(8):
        watcher.tick()
        clock.now += 0.6
    (_, second) = watcher.runs
    assert [(f["rows_in"], f["accepted"], f["duplicates"]) for f in second.files] == [(2, 1, 1)]
    summary = Harness(settings, tmp_path).summary()
    assert {c: r["total_spent_aud"] for c, r in summary.items()} == {
        1: Decimal("4.00"), 2: Decimal("6.00")}
