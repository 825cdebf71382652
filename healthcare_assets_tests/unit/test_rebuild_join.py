"""Judging a rebuild with the release it replaces, on hand-made tallies: cells of the join that do
not qualify are withheld, a live group that would lose some stays loses them all, and a rebuild
that would hold back too much is refused."""

from healthcare_assets.domain import generalization, privacy
from healthcare_assets.domain.release.bookkeeping import Rebuilt, StayTally
from healthcare_assets.domain.release.rebuilding import judge

VALUES = [{"test_results": r, "medication": m} for r, m in (("Normal", "Aspirin"), ("Abnormal", "Lipitor"),
                                                          ("Inconclusive", "Ibuprofen"))]


def people(first: int, n: int) -> StayTally:
    tally = StayTally()
    for i in range(first, first + n):
        tally.add(f"p{i}", VALUES[i % 3])
    return tally


def rebuilt() -> Rebuilt:
    evaluation = generalization.Evaluation(privacy.FINEST, 0, 0, 0, 0, 0.0)
    return Rebuilt(evaluation, [], generation=1, epoch="e")


def test_a_small_cell_takes_its_whole_live_group_out():
    """New groups h1, h2 refine the live group g (40 stays) and an unrelated live group f (30):
    the cell (g, h2) has 5 people, so g's stays all leave, and h2 keeps only f's and new stays."""
    cells = {("0:g", "h1"): people(0, 35), ("0:g", "h2"): people(35, 5), ("0:f", "h2"): people(100, 30)}
    groups = {"h1": people(0, 35), "h2": people(35, 5)}
    groups["h1"].merge(people(200, 20))  # stays never released before
    groups["h2"].merge(people(100, 30))
    out = rebuilt()
    judge(out, groups, cells, live=set(cells), generation=1)
    assert out.withheld_cells == {("0:g", "h1"), ("0:g", "h2")}  # g leaves whole: from h1 and from h2
    assert out.released["h1"].stays == 20 and out.released["h2"].stays == 30
    assert out.refused  # 50 of 90 released: far more than 5% held back


def test_cells_that_qualify_change_nothing():
    cells = {("0:g", "h1"): people(0, 20), ("0:g", "h2"): people(20, 20)}
    groups = {"h1": people(0, 20), "h2": people(20, 20)}
    out = rebuilt()
    judge(out, groups, cells, live=set(cells), generation=1)
    assert out.withheld_cells == set() and out.refused is None
    assert {k: t.stays for k, t in out.released.items()} == {"h1": 20, "h2": 20}


def test_eleven_stays_of_one_person_are_not_a_group():
    tally = StayTally()
    for i in range(11):
        tally.add("same", VALUES[i % 3])
    out = rebuilt()
    judge(out, {"h": tally}, {}, live=set(), generation=0)
    assert out.released == {} and out.refused is None  # a first release is never refused
