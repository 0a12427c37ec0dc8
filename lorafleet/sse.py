"""Server-sent events: the one splitter for every reader of a `text/event-stream` body.

The gateway's stream relay (`server/engine/vllm_http.py`) and the load generator
(`benchmarks/loadgen.py`) both read SSE bodies that arrive in pieces cut anywhere. This module
sits beside the price table (`prices.py`), outside both, for the same reason: the product never
imports `benchmarks/` (the gateway image can leave it out) and the benchmarks talk to the system
over HTTP only, importing neither `server/` nor `adapters/` (docs/architecture.md).

    splitter = SSESplitter()
    for piece in body_pieces:
        for event in splitter.feed(piece):  # b'data: {...}\\n\\n', whole and in order
            payload = event_data(event)      # b'{...}', or None for a comment-only event
    tail = splitter.flush()                  # what an unterminated body left, or None

The rules are the WHATWG ones a relay and a client need: a line ends in LF, CRLF or a lone CR;
a blank line ends an event and blank lines between events are nothing; a line starting with `:`
is a comment; an event's `data` lines are joined with LF, one space after the colon dropped.
"""

from __future__ import annotations

_LF = 0x0A


class SSESplitter:
    """Feed body pieces, get whole events back: an event's lines joined by LF and ending in one
    blank line (`...\\n\\n`). A body written with LF comes back byte for byte, so a relay can
    pass events through; CRLF and CR line ends come back as LF."""

    def __init__(self) -> None:
        self._buffer = b""  # the start of the next event; line ends already LF except a last CR

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events this piece completes, in order (often none, usually one)."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = _to_lf(buffer)
        events = []
        start = _skip_blank_lines(buffer, 0) if buffer.startswith(b"\n") else 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            events.append(buffer[start : end + 2])
            start = end + 2
            if buffer.startswith(b"\n", start):
                start = _skip_blank_lines(buffer, start)
        self._buffer = buffer[start:] if start else buffer
        return events

    def flush(self) -> bytes | None:
        """The body ended: what is left as a last event (terminated), or None when nothing is.
        A strict client drops such an unterminated event; a relay may forward it."""
        tail = self._buffer.replace(b"\r", b"\n").rstrip(b"\n")
        self._buffer = b""
        return tail + b"\n\n" if tail else None


def split_events(body: bytes) -> list[bytes]:
    """Every event of a whole body, the unterminated tail included (what `feed` + `flush` give)."""
    splitter = SSESplitter()
    events = splitter.feed(body)
    tail = splitter.flush()
    return [*events, tail] if tail is not None else events


def event_data(event: bytes) -> bytes | None:
    """The event's data (its `data` lines joined by LF), or None when it has no `data` line."""
    if event.startswith(b"data: ") and event.find(b"\n") == len(event) - 2:
        return event[6:-2]  # the usual one-line event
    data: bytes | None = None
    for line in event.split(b"\n"):
        name, _, value = line.partition(b":")
        if name != b"data":
            continue  # a comment (empty name), another field, or a blank line
        value = value[1:] if value.startswith(b" ") else value
        data = value if data is None else data + b"\n" + value
    return data


def _to_lf(buffer: bytes) -> bytes:
    """CRLF and lone CR to LF; a CR at the very end waits, since an LF may follow in the next
    piece (the two are one line end)."""
    held = buffer.endswith(b"\r")
    if held:
        buffer = buffer[:-1]
    buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return buffer + b"\r" if held else buffer


def _skip_blank_lines(buffer: bytes, start: int) -> int:
    while start < len(buffer) and buffer[start] == _LF:
        start += 1
    return start
