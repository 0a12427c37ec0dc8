"""The SSE splitter: pieces cut anywhere give the events of the whole body, any line ends."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from lorafleet.sse import SSESplitter, event_data, split_events

# Field values never hold a line end; anything else goes (JSON, colons, spaces, non-ASCII).
_text = st.text(st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)))
_value = _text.map(str.encode)


@dataclass(frozen=True)
class Event:
    lines: tuple[bytes, ...]  # as written, without line ends
    data: bytes | None  # what a client reads from it


@st.composite
def events(draw: st.DrawFn) -> Event:
    lines: list[bytes] = []
    data: list[bytes] = []
    for kind in draw(st.lists(st.sampled_from(["data", "bare", "comment", "field"]), min_size=1)):
        value = draw(_value)
        if kind == "data":  # `data: x`: one space after the colon is not part of the value
            lines.append(b"data: " + value)
            data.append(value)
        elif kind == "bare":  # `data:x`: the same rule, so `data:  x` keeps one space
            lines.append(b"data:" + value)
            data.append(value[1:] if value.startswith(b" ") else value)
        elif kind == "comment":
            lines.append(b":" + value)
        else:
            lines.append(draw(st.sampled_from([b"event: ", b"id: ", b"retry: "])) + value)
    return Event(tuple(lines), b"\n".join(data) if data else None)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, list[Event]]:
    """A whole body in one line-end style (LF, CRLF or CR), with stray blank lines between
    events, and its events."""
    written = draw(st.lists(events(), max_size=8))
    end = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    body = draw(st.integers(0, 2)) * end
    for event in written:
        body += b"".join(line + end for line in event.lines) + end
        body += draw(st.integers(0, 2)) * end
    return body, written


def cut(body: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted({p % (len(body) + 1) for p in points}), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


def fed(pieces: list[bytes]) -> list[bytes]:
    splitter = SSESplitter()
    out = [event for piece in pieces for event in splitter.feed(piece)]
    tail = splitter.flush()
    return [*out, tail] if tail is not None else out


@settings(deadline=None)  # a shared CI machine can stall any one example; none is slow
@given(bodies(), st.lists(st.integers(0, 10_000), max_size=20))
def test_pieces_cut_anywhere_give_the_events_of_the_whole_body(
    drawn: tuple[bytes, list[Event]], points: list[int]
) -> None:
    body, written = drawn
    whole = split_events(body)
    assert fed(cut(body, points)) == whole
    assert fed([body[i : i + 1] for i in range(len(body))]) == whole  # byte by byte
    assert [event_data(e) for e in whole] == [e.data for e in written]
    assert whole == [b"".join(line + b"\n" for line in e.lines) + b"\n" for e in written]


@settings(deadline=None)
@given(st.lists(st.binary(), max_size=6), st.lists(st.integers(0, 10_000), max_size=20))
def test_any_bytes_split_the_same_however_they_arrive(
    parts: list[bytes], points: list[int]
) -> None:
    body = b"".join(parts)  # not SSE at all: still no crash and no dependence on the cuts
    assert fed(cut(body, points)) == split_events(body)


def test_an_lf_body_comes_back_byte_for_byte() -> None:
    body = b'data: {"a":1}\n\n: keep-alive\n\ndata: [DONE]\n\n'
    assert b"".join(split_events(body)) == body


def test_a_crlf_split_between_pieces_is_one_line_end() -> None:
    splitter = SSESplitter()
    assert list(splitter.feed(b"data: a\r")) == []
    assert list(splitter.feed(b"\n\r")) == []
    assert list(splitter.feed(b"\ndata: b\r\n\r\n")) == [b"data: a\n\n", b"data: b\n\n"]


def test_an_unterminated_tail_is_flushed_terminated() -> None:
    splitter = SSESplitter()
    assert list(splitter.feed(b"data: a\n\ndata: b\n")) == [b"data: a\n\n"]
    assert splitter.flush() == b"data: b\n\n"
    assert splitter.flush() is None


def test_event_data_joins_data_lines_and_ignores_the_rest() -> None:
    assert event_data(b"data: x\n\n") == b"x"
    assert event_data(b": ping\n\n") is None
    assert event_data(b"event: e\ndata:  two\ndata:\n\n") == b" two\n"
    assert event_data(b"data\n\n") == b""  # a line without a colon is a field with no value


def test_what_the_load_generator_reads_crlf_comments_and_multiline() -> None:
    splitter = SSESplitter()
    out = list(splitter.feed(b': ping\r\n\r\ndata: {"a":\r\n'))
    out += list(splitter.feed(b"data: 1}\r\n\r\nevent: x\ndata: [DONE]\n\n"))
    assert [event_data(event) for event in out] == [None, b'{"a":\n1}', b"[DONE]"]
