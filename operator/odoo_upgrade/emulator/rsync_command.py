"""Which SSH exec commands the transfer endpoint runs: `rsync --server ...`, checked and mapped.

The command an rsync client sends (`rsync --server [--sender] -tre.iLsfxCIvu ... . /data/x`)
is split like a shell would split it, but no shell ever runs: the checked words become the argv
of the local rsync binary, run in the request's directory. Only the options below are accepted;
paths must lie under `/data/` (mapped to `./...`), without `..`, globs or shell operators.
Symlinks are munged and devices refused whatever the client asked (`FORCED_OPTIONS`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

REMOTE_ROOT = "/data"
# Short options an rsync client may send to a server (rrsync's list, minus what reaches
# outside the directory: -s protect-args hides the paths from this check, -L/-k/-K follow
# symlinks, -R sends full paths; and minus the ones taking an argument, -B and -@).
SHORT_OPTIONS = frozenset("ACDEHIJNOSUWXbcdglmnoprtuvxyz")
# Long options: False takes no argument, True one argument checked by `_ARG`.
LONG_OPTIONS: dict[str, bool] = {
    "append": False,
    "append-verify": False,
    "bwlimit": True,
    "checksum-choice": True,
    "checksum-seed": True,
    "compress-choice": True,
    "compress-level": True,
    "delay-updates": False,
    "delete": False,
    "delete-after": False,
    "delete-before": False,
    "delete-delay": False,
    "delete-during": False,
    "delete-excluded": False,
    "delete-missing-args": False,
    "existing": False,
    "force": False,
    "fsync": False,
    "ignore-errors": False,
    "ignore-existing": False,
    "ignore-missing-args": False,
    "ignore-times": False,
    "inplace": False,
    "max-size": True,
    "min-size": True,
    "mkpath": False,
    "modify-window": True,
    "msgs2stderr": False,
    "munge-links": False,
    "new-compress": False,
    "no-implied-dirs": False,
    "no-msgs2stderr": False,
    "no-W": False,
    "numeric-ids": False,
    "old-compress": False,
    "open-noatime": False,
    "partial": False,
    "partial-dir": True,
    "preallocate": False,
    "safe-links": False,
    "size-only": False,
    "stats": False,
    "timeout": True,
    "use-qsort": False,
    "zc": True,
    "cc": True,
}
FORCED_OPTIONS = ("--munge-links", "--no-devices", "--no-specials")
_ARG = re.compile(r"^[A-Za-z0-9,._+:-]{0,64}$")
_PARTIAL_DIR = re.compile(r"^[A-Za-z0-9._+~][A-Za-z0-9._+~-]{0,63}$")
_CAPABILITIES = re.compile(r"^[.A-Za-z]*$")
_SHELL_OPERATORS = frozenset(";&|<>()")
_GLOB = frozenset("*?[]{}")


class RsyncCommandRefused(ValueError):
    """The exec command is not an acceptable `rsync --server` invocation; says why."""


@dataclass(frozen=True)
class RsyncServerCommand:
    """A checked `rsync --server` command: sender or receiver, its options, mapped paths."""

    sender: bool
    options: tuple[str, ...]
    paths: tuple[str, ...]  # relative to the request's directory, each starting with "."

    def argv(self, rsync_binary: str) -> list[str]:
        """The argv to exec (no shell), with `FORCED_OPTIONS` before the `.` argument."""
        role = ("--server", "--sender") if self.sender else ("--server",)
        return [rsync_binary, *role, *self.options, *FORCED_OPTIONS, ".", *self.paths]


def split_command(command: str) -> list[str]:
    """The words of `command` as a POSIX shell splits them; shell operators refused."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError as exc:
        raise RsyncCommandRefused(f"unparsable command ({exc})") from None
    for word in words:
        if word and set(word) <= _SHELL_OPERATORS:
            raise RsyncCommandRefused(f"shell operators are not allowed ({word!r})")
    return words


def map_remote_path(path: str) -> str:
    """`/data/x/y` -> `./x/y` (trailing slash kept); anything outside `/data/` refused."""
    if "\x00" in path or "\\" in path or set(path) & _GLOB:
        raise RsyncCommandRefused(f"path {path!r}: wildcards and backslashes are not allowed")
    if path != REMOTE_ROOT and not path.startswith(REMOTE_ROOT + "/"):
        raise RsyncCommandRefused(f"path {path!r} is outside {REMOTE_ROOT}/")
    rest = path[len(REMOTE_ROOT) :]
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise RsyncCommandRefused(f"path {path!r}: '..' is not allowed")
    trailing = "/" if rest.endswith("/") else ""
    return "/".join([".", *parts]) + trailing


def _short_cluster(word: str) -> None:
    """Check one `-tre.iLsfxCIvu` word: option letters, then `e` and capability letters."""
    letters = word[1:]
    for index, letter in enumerate(letters):
        if letter == "e":
            if not _CAPABILITIES.match(letters[index + 1 :]):
                raise RsyncCommandRefused(f"option {word!r}: bad capability string")
            return
        if letter not in SHORT_OPTIONS:
            raise RsyncCommandRefused(f"option -{letter} is not allowed")


def parse_server_command(command: str, *, sender: bool) -> RsyncServerCommand:
    """Check `command` for a transfer window: a receiver for uploads, `sender` for downloads.

    Raises `RsyncCommandRefused` naming the first word that is not acceptable.
    """
    words = split_command(command)
    if words[:1] != ["rsync"]:
        raise RsyncCommandRefused("only rsync may run here")
    if words[1:2] != ["--server"]:
        raise RsyncCommandRefused("only `rsync --server` may run here")
    rest = words[2:]
    is_sender = rest[:1] == ["--sender"]
    if is_sender != sender:
        window = "download" if sender else "upload"
        wanted = "rsync --server --sender" if sender else "rsync --server (no --sender)"
        raise RsyncCommandRefused(f"this {window} window accepts only {wanted}")
    if is_sender:
        rest = rest[1:]
    options: list[str] = []
    while rest and rest[0] != ".":
        word = rest.pop(0)
        if word.startswith("--"):
            name, has_value, value = word[2:].partition("=")
            takes_value = LONG_OPTIONS.get(name)
            if takes_value is None:
                raise RsyncCommandRefused(f"option --{name} is not allowed")
            if takes_value and not has_value:
                if not rest:
                    raise RsyncCommandRefused(f"option --{name} needs a value")
                value = rest.pop(0)
            if not takes_value and has_value:
                raise RsyncCommandRefused(f"option --{name} takes no value")
            pattern = _PARTIAL_DIR if name == "partial-dir" else _ARG
            if takes_value and (not pattern.match(value) or value in (".", "..")):
                raise RsyncCommandRefused(f"option --{name}: value {value!r} is not allowed")
            options.append(f"--{name}={value}" if takes_value else f"--{name}")
        elif word.startswith("-") and len(word) > 1:
            _short_cluster(word)
            options.append(word)
        else:
            raise RsyncCommandRefused(f"unexpected argument {word!r} before '.'")
    if not rest:
        raise RsyncCommandRefused("no '.' argument: not an rsync server command")
    paths = rest[1:]
    if not paths:
        raise RsyncCommandRefused("no path given")
    if not sender and len(paths) != 1:
        raise RsyncCommandRefused("an upload takes exactly one destination path")
    return RsyncServerCommand(
        sender=sender, options=tuple(options), paths=tuple(map_remote_path(p) for p in paths)
    )
