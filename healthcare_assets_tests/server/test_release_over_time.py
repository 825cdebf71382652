"""The analysts' copy over time, attacked as an analyst who keeps every snapshot: each test reads
the copy only with analyst_readonly's privileges, compares snapshots by content (ids and order
aside), and fails when a change isolates fewer than 11 people or makes a sensitive value more
than half certain. The source is read only to say who the released stays are."""

from __future__ import annotations

import csv
import secrets
from collections import Counter, defaultdict
from urllib.parse import quote, urlsplit, urlunsplit

import pymongo
import pytest
from bson import json_util

from healthcare_assets.domain import access, generalization, privacy
from healthcare_assets.domain.release.publishing import Release
from healthcare_assets.plumbing import settings
from healthcare_assets.plumbing.mongo import connect
from healthcare_assets_tests.fixtures.environment import keys_now
from healthcare_assets_tests.fixtures.runs import materialize

K = privacy.K_ANONYMITY
AGE_ONLY = {**{q.field: len(q.levels) - 1 for q in privacy.QUASI_IDENTIFIERS}, "age_range": 0}
RARE = {"Age": "95", "Gender": "Female", "Blood Type": "AB-", "Medical Condition": "Asthma",
        "Date of Admission": "2030-01-05", "Discharge Date": "2030-01-08", "Insurance Provider": "Aetna",
        "Admission Type": "Elective"}  # 90+: no generated stay is in its group
SENSITIVE_TURNS = ({"Test Results": "Normal", "Medication": "Aspirin"},
                   {"Test Results": "Abnormal", "Medication": "Lipitor"},
                   {"Test Results": "Inconclusive", "Medication": "Ibuprofen"})


@pytest.fixture
def analyst(mongo, mongo_uri):
    """A client with ANALYST_READONLY's privileges on this test's deployment (a role and user of
    the test's own, on the shared server)."""
    admin = connect(mongo_uri).admin
    role, user, password = access.role("ANALYST_READONLY", mongo.database), f"analyst_{mongo.database}", secrets.token_hex(16)
    privileges = [{"resource": {"db": d, "collection": c}, "actions": list(a)} for d, c, a in role.privileges]
    admin.command("createRole", user, privileges=privileges, roles=[])
    admin.command("createUser", user, pwd=password, roles=[{"role": user, "db": "admin"}])
    parts = urlsplit(mongo_uri)
    netloc = f"{quote(user)}:{quote(password)}@{parts.netloc.rsplit('@', 1)[-1]}"
    client = pymongo.MongoClient(urlunsplit(parts._replace(netloc=netloc)), serverSelectionTimeoutMS=5000)
    yield client[access.databases(mongo.database)["analytics"]][privacy.COPY_COLLECTION]
    client.close()
    admin.command("dropUser", user)
    admin.command("dropRole", user)


def snapshot(copy) -> list[dict]:
    return list(copy.find({}))


def changes(before: list[dict], after: list[dict]) -> dict[str, dict[tuple, Counter]]:
    """What entered and what left the copy, by content, per quasi-identifier group."""
    def contents(docs):
        return Counter(json_util.dumps({k: v for k, v in d.items() if k != "_id"}, sort_keys=True) for d in docs)

    old, new = contents(before), contents(after)
    out = {"entered": defaultdict(Counter), "left": defaultdict(Counter)}
    for side, diff in (("entered", new - old), ("left", old - new)):
        for text, n in diff.items():
            doc = json_util.loads(text)
            out[side][tuple(doc[f] for f in privacy.QI_FIELDS)][text] += n
    return out


def isolating(diff: dict[str, dict[tuple, Counter]]) -> list[str]:
    """Group changes an attacker can exploit: fewer than K stays (so fewer than K people), or a
    sensitive value in more than half of them (the attacker's confidence about anyone in it)."""
    found = []
    for side, groups in diff.items():
        for group, texts in groups.items():
            stays = sum(texts.values())
            docs = [json_util.loads(t) for t in texts for _ in range(texts[t])]
            worst = max(Counter(d[f] for d in docs).most_common(1)[0][1] / stays for f in privacy.SENSITIVE)
            if stays < K or worst > privacy.MAX_SHARE:
                found.append(f"{stays} stays {side} group {group}, a sensitive value {worst:.0%} certain")
    return found


def export_rows(path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, list(map(list, dict.fromkeys(map(tuple, rows))))


def write(path, header, rows, changes_per_row=()):
    """The rows, the i-th updated with changes_per_row[i] where given."""
    out = [list(r) for r in rows]
    for row, update in zip(out, changes_per_row, strict=False):
        for column, value in update.items():
            row[header.index(column)] = value
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *out])
    return path


def rare(i: int, name: str | None = None) -> dict:
    return {**RARE, **SENSITIVE_TURNS[i % 3], **({"Name": name} if name else {})}


def test_a_small_drop_changes_nothing_an_analyst_can_isolate(mongo, analyst, small_csv, tmp_path):
    header, rows = export_rows(small_csv)
    assert materialize(write(tmp_path / "base.csv", header, rows[:1500]), mongo).success
    before = snapshot(analyst)
    assert before
    for n, start in ((3, 1500), (5, 1503), (20, 1508)):
        assert materialize(write(tmp_path / f"drop{n}.csv", header, rows[start:start + n]), mongo).success
        after = snapshot(analyst)
        assert isolating(changes(before, after)) == []
        before = after


def test_an_erasure_removes_no_set_smaller_than_k(mongo, analyst, small_csv, tmp_path):
    header, rows = export_rows(small_csv)
    assert materialize(write(tmp_path / "base.csv", header, rows[:1500]), mongo).success
    before = snapshot(analyst)
    collection = mongo.hospitalizations()
    released = [d["_id"] for d in collection.database["release_stays"].find({"live": True}, {"_id": 1}).limit(1)]
    patient = collection.find_one({"_id": released[0]})["patient_id"]
    plan, removed = Release(collection, keys_now().pseudonym_key()).erase([patient], owner="test")
    assert plan.erased_stays and removed > 0
    diff = changes(before, snapshot(analyst))
    assert not diff["entered"]
    assert isolating(diff) == []
    assert sum(sum(t.values()) for t in diff["left"].values()) == removed >= K


def test_eleven_stays_of_one_patient_are_not_eleven_people(mongo, analyst, small_csv, tmp_path, monkeypatch):
    monkeypatch.setattr(generalization, "lattice", lambda: [AGE_ONLY])
    header, rows = export_rows(small_csv)
    assert materialize(write(tmp_path / "base.csv", header, rows[:600]), mongo).success
    before = snapshot(analyst)
    one = write(tmp_path / "one.csv", header, rows[600:611], [rare(i, "Ada Lovelace") for i in range(K)])
    assert materialize(one, mongo).success
    assert changes(before, snapshot(analyst)) == {"entered": {}, "left": {}}  # 11 stays, 1 person: nothing
    others = write(tmp_path / "others.csv", header, rows[611:621], [rare(i + 1) for i in range(K - 1)])
    assert materialize(others, mongo).success  # 10 more people: 11 with her
    diff = changes(before, snapshot(analyst))
    entered = {group: sum(texts.values()) for group, texts in diff["entered"].items()}
    assert entered == {tuple("90+" if f == "age_range" else "*" for f in privacy.QI_FIELDS): 2 * K - 1}
    assert isolating(diff) == []


def test_a_withdrawn_group_does_not_come_back_minus_the_erased(mongo, analyst, small_csv, tmp_path, monkeypatch):
    """A group at exactly 11 people loses one to erasure: it leaves whole, and one new stay does
    not bring the other ten back (which would show exactly who left)."""
    monkeypatch.setattr(generalization, "lattice", lambda: [AGE_ONLY])
    header, rows = export_rows(small_csv)
    base = write(tmp_path / "base.csv", header, rows[:600], [rare(i) for i in range(K)])
    assert materialize(base, mongo).success
    first = snapshot(analyst)
    rare_docs = [d for d in first if d["age_range"] == "90+"]
    assert len(rare_docs) == K
    collection = mongo.hospitalizations()
    erased = collection.find_one({"personal_info.age": 95})["patient_id"]
    Release(collection, keys_now().pseudonym_key()).erase([erased], owner="test")
    second = snapshot(analyst)
    assert [d for d in second if d["age_range"] == "90+"] == []
    assert isolating(changes(first, second)) == []
    one_more = write(tmp_path / "one.csv", header, rows[600:601], [rare(0)])
    assert materialize(one_more, mongo).success
    third = snapshot(analyst)
    assert [d for d in third if d["age_range"] == "90+"] == []
    assert isolating(changes(first, third)) == [] and isolating(changes(second, third)) == []


def test_a_rebuild_shares_no_id_or_order_and_its_join_has_no_cell_under_k(mongo, analyst, small_csv, tmp_path,
                                                                          monkeypatch):
    coarse = {**{q.field: len(q.levels) - 1 for q in privacy.QUASI_IDENTIFIERS}, "age_range": 2}
    finer = {**coarse, "age_range": 0, "gender": 0}
    monkeypatch.setattr(generalization, "lattice", lambda: [coarse])
    header, rows = export_rows(small_csv)
    assert materialize(write(tmp_path / "a.csv", header, rows[:700]), mongo).success
    old = snapshot(analyst)
    monkeypatch.setattr(generalization, "lattice", lambda: [finer])
    assert materialize(write(tmp_path / "b.csv", header, rows[700:1500]), mongo).success  # doubles: a rebuild
    new = snapshot(analyst)
    collection = mongo.hospitalizations()
    assert collection.database["release_scheme"].find_one({"_id": "current"})["scheme"] == finer
    assert not {d["_id"] for d in old} & {d["_id"] for d in new}
    for docs in (old, new):  # natural order: the ids' own order, which says nothing of patients or files
        assert [d["_id"] for d in docs] == sorted(d["_id"] for d in docs)
    spilled = settings.data_dir() / "release_spill"  # the copy went through files: none is left
    assert spilled.is_dir() and not any(spilled.iterdir())
    # the join an analyst could make, from who the stays are: every cell of stays released both
    # times holds at least k patients
    cells = defaultdict(set)
    both = {d["_id"] for d in collection.database["release_stays"].find({"seen": {"$all": [0, 1]}}, {"_id": 1})}
    for doc in collection.aggregate([{"$project": {**privacy.exact_values(), "_id": 1}}]):
        if doc["_id"] in both:
            cell = (privacy.group_key(privacy.generalize(doc["_values"], coarse)),
                    privacy.group_key(privacy.generalize(doc["_values"], finer)))
            cells[cell].add(doc[privacy.PERSON])
    assert both and min(len(p) for p in cells.values()) >= K


def test_analysts_see_no_release_while_it_is_written(mongo, mongo_uri, analyst, small_csv, tmp_path, monkeypatch):
    """Mid-write, every collection of the analysts' database, read with analyst_readonly's privileges, holds what
    it held before: nothing for a first release, the old copy while a rebuild writes the new one."""
    coarse = {**{q.field: len(q.levels) - 1 for q in privacy.QUASI_IDENTIFIERS}, "age_range": 2}
    monkeypatch.setattr(generalization, "lattice", lambda: [coarse])
    analytics = connect(mongo_uri)[analyst.database.name]
    seen_mid_write = []
    write_copy = Release._write_copy

    def write_and_look(self, copy, documents, lease):
        written = write_copy(self, copy, documents, lease)
        seen_mid_write.append({name: snapshot(analyst.database[name]) for name in analytics.list_collection_names()})
        return written

    monkeypatch.setattr(Release, "_write_copy", write_and_look)
    header, rows = export_rows(small_csv)
    assert materialize(write(tmp_path / "a.csv", header, rows[:700]), mongo).success
    old = snapshot(analyst)
    monkeypatch.setattr(generalization, "lattice", lambda: [{**coarse, "age_range": 0}])
    assert materialize(write(tmp_path / "b.csv", header, rows[700:1500]), mongo).success  # doubles: a rebuild
    first, rebuild = seen_mid_write
    assert old and all(docs == [] for docs in first.values())
    assert {name: docs for name, docs in rebuild.items() if docs} == {privacy.COPY_COLLECTION: old}
    assert snapshot(analyst) != old  # the rebuild was published after all
