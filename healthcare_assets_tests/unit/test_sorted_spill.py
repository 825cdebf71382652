"""The spill that lets a rebuild write the analysts' copy in _id order without holding it in memory."""

import random
import stat

from healthcare_assets.plumbing.sorted_spill import SortedSpill


def test_documents_come_back_in_id_order_whatever_their_ids_and_batches(tmp_path):
    rng = random.Random(3)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(3_000)]
    ids += ["", "#", "..", "../x", "/etc", "a/b", "é", "ÿz", "\x00", "Z" * 10_000]  # not what a keyed id is, still kept
    spill = SortedSpill(tmp_path / "spill")
    shuffled = ids[:]
    rng.shuffle(shuffled)
    for start in range(0, len(shuffled), 700):
        spill.add([{"_id": i, "n": len(i)} for i in shuffled[start:start + 700]])
    assert spill.count == len(ids)
    assert [d["_id"] for d in spill.in_order()] == sorted(ids)
    assert all(p.parent == tmp_path / "spill" for p in (tmp_path / "spill").iterdir())  # no name left the folder
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "spill").iterdir()} == {0o600}
    assert stat.S_IMODE((tmp_path / "spill").stat().st_mode) == 0o700
    spill.close()
    assert not (tmp_path / "spill").exists()


def test_what_a_killed_process_left_is_not_read_back(tmp_path):
    first = SortedSpill(tmp_path / "spill")
    first.add([{"_id": "ab01", "left": True}])  # never closed: the process died
    second = SortedSpill(tmp_path / "spill")
    second.add([{"_id": "ab02"}])
    assert [d["_id"] for d in second.in_order()] == ["ab02"]
