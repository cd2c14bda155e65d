"""catalog.shapes.Fragments: a list answer made from the last one is the answer rendered afresh."""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from catalog.shapes import Fragments


@dataclass(eq=False)
class Record:
    """Mutable like the catalog's records: changed in place, with a new modify index."""

    name: str
    value: str
    modify_index: int


def render(record: Record) -> dict:
    return {"Name": record.name, "Value": record.value, "ModifyIndex": record.modify_index}


#: Edits of a list between two answers: change a record in place, insert a new one, remove one, or
#: replace one by a new object that looks the same (same name, value and index).
EDITS = st.lists(st.tuples(st.sampled_from(["change", "insert", "remove", "replace"]), st.integers(0, 30),
                           st.sampled_from(["", "x", '"],[{', "\u00e9"])), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 12), st.lists(EDITS, min_size=1, max_size=8))
def test_an_array_made_from_the_last_one_equals_the_array_rendered_afresh(size, rounds):
    records = [Record(f"r{n}", "", n) for n in range(size)]
    fragments, index = Fragments(), 100
    for edits in rounds:
        for action, at, value in edits:
            index += 1
            if action == "insert" or not records:
                records.insert(at % (len(records) + 1), Record(f"new{index}", value, index))
            elif action == "remove":
                records.pop(at % len(records))
            elif action == "change":
                record = records[at % len(records)]
                record.value, record.modify_index = value, index
            else:
                old = records[at % len(records)]
                records[at % len(records)] = Record(old.name, value, old.modify_index)
        answer = fragments.ordered("list", list(records), lambda r: r.modify_index, render)
        assert json.loads(answer) == [render(r) for r in records]
