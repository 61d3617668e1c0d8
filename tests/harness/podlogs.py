"""Container output as the pod runner keeps it, read back the way a kubelet serves ``pods/log``.

A container's output (stdout and stderr together) is appended unchanged to
``<logs>/pods/<ns>_<pod>.log`` (the pod's first container) or ``<ns>_<pod>_<container>.log``
(any other, init containers included). Beside it, ``<logs>/pods/.timestamps/<same name>`` holds
one fixed-width RFC 3339 timestamp (nanoseconds, UTC) per line, taken when the line's first byte
arrived, so ``timestamps`` and ``sinceSeconds``/``sinceTime`` parse nothing out of the output.

Reading follows the kubelet's (pkg/kubelet/kuberuntime/logs): ``tailLines`` counts lines from the
end, ``sinceSeconds``/``sinceTime`` leave out older lines, ``limitBytes`` cuts the output
(timestamps included) at that many bytes, and ``follow`` streams until the container has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

STAMP_WIDTH = len("2006-01-02T15:04:05.000000000Z")
STAMP_RECORD = STAMP_WIDTH + 1
STAMPS_DIR = ".timestamps"
# The kubelet's logForceCheckPeriod: a follow looks again at least this often.
FOLLOW_RECHECK_SECONDS = 1.0
PUMP_CHUNK = 65536

Entry = tuple[bytes, bytes]  # (timestamp, line with its newline)


def log_file_names(pod: Mapping[str, Any]) -> dict[str, str]:
    """Each container's output file name by container name, init containers included."""
    prefix = f"{pod['metadata']['namespace']}_{pod['metadata']['name']}"
    spec = pod["spec"]
    first = spec["containers"][0]["name"]
    return {
        c["name"]: f"{prefix}.log" if c["name"] == first else f"{prefix}_{c['name']}.log"
        for c in (spec.get("initContainers") or []) + spec["containers"]
    }


def stamp(nanoseconds: int) -> bytes:
    """A UTC time as the kubelet prints it (RFC3339NanoFixed), fixed width: sortable as bytes."""
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode()
    return whole + b".%09dZ" % fraction


class ContainerState(enum.Enum):
    """Where a container is in its one run (every restartPolicy acts as Never)."""

    WAITING = "waiting"
    RUNNING = "running"
    TERMINATED = "terminated"


class LogQueryError(Exception):
    """A ``containerLogs`` request the kubelet would refuse: HTTP ``status`` and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _flag(query: Mapping[str, str], name: str) -> bool:
    # apimachinery's string-to-bool conversion: absent, "0" and "false" are false.
    value = query.get(name)
    return value is not None and value != "0" and value.lower() != "false"


def _integer(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise LogQueryError(400, f"{name}: {value!r} is not an integer") from None


def _since_time(value: str) -> int:
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise LogQueryError(400, f"sinceTime: {value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise LogQueryError(400, f"sinceTime: {value!r} has no time zone")
    return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000


@dataclass(frozen=True)
class LogOptions:
    """The query of a ``containerLogs`` request (what kube-apiserver's LogLocation sends)."""

    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since: bytes | None = None  # a stamp; lines stamped earlier are left out

    @classmethod
    def from_query(cls, query: Mapping[str, str], now_ns: int | None = None) -> LogOptions:
        """Parse and validate as the kubelet does; raise :class:`LogQueryError` otherwise."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        tail = query.get("tail")  # the kubelet still takes the old name; "all" means no limit
        if tail is not None:
            query = {k: v for k, v in query.items() if k not in ("tail", "tailLines")}
            if tail != "all":
                query["tailLines"] = tail
        stream = query.get("stream", "All")
        if stream != "All":
            raise LogQueryError(
                400,
                f"unable to return the given log stream: {stream!r}: "
                "the pod runner keeps stdout and stderr as one stream",
            )
        tail_lines = _integer(query, "tailLines")
        limit_bytes = _integer(query, "limitBytes")
        since_seconds = _integer(query, "sinceSeconds")
        since_time = query.get("sinceTime")
        if tail_lines is not None and tail_lines < 0:
            raise LogQueryError(422, f"tailLines: {tail_lines} must be 0 or more")
        if limit_bytes is not None and limit_bytes < 1:
            raise LogQueryError(422, f"limitBytes: {limit_bytes} must be 1 or more")
        if since_seconds is not None and since_seconds < 1:
            raise LogQueryError(422, f"sinceSeconds: {since_seconds} must be 1 or more")
        if since_seconds is not None and since_time is not None:
            raise LogQueryError(422, "at most one of sinceSeconds or sinceTime may be specified")
        since: int | None = None
        if since_seconds is not None:
            since = now_ns - since_seconds * 1_000_000_000
        if since_time is not None:
            since = _since_time(since_time)
        return cls(
            follow=_flag(query, "follow"),
            previous=_flag(query, "previous"),
            timestamps=_flag(query, "timestamps"),
            tail_lines=tail_lines,
            limit_bytes=limit_bytes,
            since=None if since is None else stamp(since),
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class ContainerLog:
    """One container run's output file, its line timestamps and the container's state.

    A run starts reading at ``base``: a pod re-created under the same name appends to the same
    file, and its log shows only its own output.
    """

    def __init__(self, directory: Path, name: str, state: ContainerState) -> None:
        self.path = directory / name
        self.stamps_path = directory / STAMPS_DIR / name
        self.state = state
        self.base_offset = 0
        self.base_line = 0
        self._changed = asyncio.Event()
        self._output: BinaryIO | None = None
        self._stamps: BinaryIO | None = None
        # Runs start at a line start (new_run closes an earlier run's last line).
        self._ends_line = True

    @classmethod
    def new_run(cls, directory: Path, name: str) -> ContainerLog:
        """The log of a container about to run (waiting), after what the file already holds."""
        log = cls(directory, name, ContainerState.WAITING)
        log.stamps_path.parent.mkdir(parents=True, exist_ok=True)
        size = _size(log.path)
        if size:
            with log.path.open("rb+") as output:
                output.seek(size - 1)
                if output.read(1) != b"\n":
                    # The earlier run's last line is closed: this run's output starts a line.
                    output.write(b"\n")
                    size += 1
        log.base_offset = size
        log.base_line = _size(log.stamps_path) // STAMP_RECORD
        return log

    @classmethod
    def finished(cls, directory: Path, name: str) -> ContainerLog:
        """The whole file of a container that ran before this runner started."""
        return cls(directory, name, ContainerState.TERMINATED)

    def next_change(self) -> asyncio.Event:
        """Set at the next output or state change (take it before reading, then wait)."""
        return self._changed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def start(self) -> None:
        """The container is starting: its log may be read and followed from now on."""
        if self.state is ContainerState.WAITING:
            self.state = ContainerState.RUNNING
            self._notify()

    def end(self) -> None:
        """The container has ended (or will never run): follows drain and finish."""
        for file in (self._output, self._stamps):
            if file is not None:
                file.close()
        self._output = self._stamps = None
        self.state = ContainerState.TERMINATED
        self._notify()

    def open(self) -> None:
        """Open the output and timestamp files for appending."""
        self._output = self.path.open("ab", buffering=0)
        self._stamps = self.stamps_path.open("ab", buffering=0)

    def append(self, data: bytes, now_ns: int | None = None) -> None:
        """Append output; every line that starts in ``data`` is stamped ``now_ns``."""
        if self._output is None or self._stamps is None or not data:
            return
        starts = int(self._ends_line) + data.count(b"\n", 0, len(data) - 1)
        self._output.write(data)
        self._ends_line = data.endswith(b"\n")
        record = stamp(time.time_ns() if now_ns is None else now_ns) + b"\n"
        self._stamps.write(record * starts)
        self._notify()

    async def pump(self, stream: asyncio.StreamReader) -> None:
        """Append everything ``stream`` yields until its end."""
        while chunk := await stream.read(PUMP_CHUNK):
            self.append(chunk)

    def entries(self, offset: int, line: int, *, with_partial: bool) -> tuple[list[Entry], int]:
        """The lines from byte ``offset`` (line number ``line``, both from ``base``) with their
        timestamps, an unfinished last line only ``with_partial``; and the bytes they span."""
        try:
            with self.path.open("rb") as output:
                output.seek(self.base_offset + offset)
                data = output.read()
        except FileNotFoundError:
            return [], 0
        pieces = data.split(b"\n")
        texts = [piece + b"\n" for piece in pieces[:-1]]
        if with_partial and pieces[-1]:
            texts.append(pieces[-1])
        return list(zip(self._stamps_of(line, len(texts)), texts, strict=True)), sum(
            map(len, texts)
        )

    def _stamps_of(self, line: int, count: int) -> list[bytes]:
        try:
            with self.stamps_path.open("rb") as stamps:
                stamps.seek((self.base_line + line) * STAMP_RECORD)
                raw = stamps.read(count * STAMP_RECORD)
        except FileNotFoundError:
            raw = b""
        found = [raw[i : i + STAMP_WIDTH] for i in range(0, len(raw) - STAMP_WIDTH, STAMP_RECORD)]
        if len(found) < count:
            # Output without timestamps (written by an older runner): the file's time stands in.
            try:
                fallback = stamp(self.path.stat().st_mtime_ns)
            except FileNotFoundError:
                fallback = stamp(time.time_ns())
            found += [found[-1] if found else fallback] * (count - len(found))
        return found[:count]


class _Rendering:
    """Turns entries into response bytes: since, timestamps, then the byte limit."""

    def __init__(self, options: LogOptions) -> None:
        self.options = options
        self.remain = options.limit_bytes

    @property
    def done(self) -> bool:
        return self.remain is not None and self.remain <= 0

    def render(self, entries: list[Entry]) -> bytes:
        parts: list[bytes] = []
        for when, text in entries:
            if self.done:
                break
            if self.options.since is not None and when < self.options.since:
                continue
            line = when + b" " + text if self.options.timestamps else text
            if self.remain is not None:
                line = line[: self.remain]
                self.remain -= len(line)
            parts.append(line)
        return b"".join(parts)


async def read_log(log: ContainerLog, options: LogOptions) -> AsyncIterator[bytes]:
    """The container's output as a kubelet returns it for ``options``, in chunks; a follow
    yields an empty chunk each time it wakes up, so that the caller notices a client gone."""
    rendering = _Rendering(options)
    change = log.next_change()
    ended = log.state is ContainerState.TERMINATED
    # A follow sends a line once it is complete, or once the container has ended.
    entries, offset = log.entries(0, 0, with_partial=ended or not options.follow)
    line = len(entries)
    if options.tail_lines is not None:
        entries = entries[max(0, len(entries) - options.tail_lines) :]
    yield rendering.render(entries)
    while options.follow and not ended and not rendering.done:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(change.wait(), FOLLOW_RECHECK_SECONDS)
        change = log.next_change()
        # State first, then the file: whatever the container wrote before it ended is read.
        ended = log.state is ContainerState.TERMINATED
        entries, spanned = log.entries(offset, line, with_partial=ended)
        offset += spanned
        line += len(entries)
        yield rendering.render(entries)
