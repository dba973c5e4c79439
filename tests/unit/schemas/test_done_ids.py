"""The ``done`` channel's message format: one batch's scoped ids, read by every waiter."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from schemas.messages import NAME_PATTERN, REQUEST_ID_PATTERN
from schemas.naming import DONE_MAX_IDS, DONE_SEP, SCOPE_SEP, done_ids, scoped_id


def test_a_batch_message_gives_each_id_and_an_old_single_id_message_reads_the_same():
    sids = [scoped_id("acme", "a" * 16), scoped_id(None, "b" * 20), scoped_id("x.y:z/1", "c-_" * 6)]
    assert done_ids(DONE_SEP.join(sids).encode()) == sids
    assert done_ids(sids[0].encode()) == [sids[0]]  # a writer from before batching
    assert done_ids(sids[0]) == [sids[0]]  # a str (decode_responses) as well as bytes


def test_the_separator_is_in_no_id_so_the_split_is_unambiguous():
    for pattern in (NAME_PATTERN, REQUEST_ID_PATTERN):
        assert not re.search(re.escape(DONE_SEP), pattern.strip("^$"))
    assert DONE_SEP != SCOPE_SEP


def test_a_malformed_message_costs_a_bounded_parse_and_never_raises():
    assert done_ids(b"") == []
    assert done_ids(b"   ") == []  # empty parts dropped
    assert done_ids(b"\xff\xfe id") == ["\ufffd\ufffd", "id"]  # not UTF-8: replaced, no error
    flood = (b"x " * (DONE_MAX_IDS + 5000)).rstrip()
    assert len(done_ids(flood)) == DONE_MAX_IDS


@given(st.binary(max_size=512))
def test_any_bytes_parse_to_a_list_of_nonempty_strings(data: bytes):
    ids = done_ids(data)
    assert all(isinstance(i, str) and i and DONE_SEP not in i for i in ids)
