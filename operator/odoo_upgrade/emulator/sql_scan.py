"""What the emulator reads in pg_dump's SQL: Odoo's `ir_module_module` and `ir_attachment`.

Fed the SQL in chunks (as it streams into the upgraded archive), it notes the column lists of
both tables' `COPY ... FROM stdin;` headers and keeps the rows of `ir_module_module` (a few
hundred short lines), so that the emulator can tell the database's version from the `base`
row, as the platform does, and append an upgrade that fits the dump's own columns. Only
header-shaped lines are looked at (one regex over each chunk), and a partial line is kept
only up to `MAX_LINE` bytes: memory stays flat whatever the dump's size.
"""

from __future__ import annotations

import re

MODULES = "ir_module_module"
ATTACHMENTS = "ir_attachment"
MAX_LINE = 1 << 20
_HEADER = re.compile(
    rb"^COPY (?:public\.)?(ir_module_module|ir_attachment) \(([^)\n]*)\) FROM stdin;$", re.M
)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_ESCAPE = re.compile(r"\\(.)")


def _copy_field(raw: str) -> str | None:
    """A field of COPY's text format: `\\N` is NULL, backslash escapes undone."""
    if raw == "\\N":
        return None
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), raw)


class OdooSqlScanner:
    """Feed it SQL chunks; then read `columns`, `modules` and `base_version`."""

    def __init__(self) -> None:
        self.columns: dict[str, list[str]] = {}
        self.modules: list[dict[str, str | None]] = []
        self._carry = b""
        self._reading_modules = False

    @property
    def is_odoo(self) -> bool:
        """The dump holds Odoo's module table (so it can be 'upgraded')."""
        return MODULES in self.columns

    @property
    def base_version(self) -> str | None:
        """`latest_version` of the `base` module, if its row was seen."""
        for row in self.modules:
            if row.get("name") == "base":
                return row.get("latest_version")
        return None

    @property
    def modules_read(self) -> bool:
        """The module rows are complete: reading further would find nothing more."""
        return self.is_odoo and not self._reading_modules

    def feed(self, chunk: bytes) -> None:
        data = self._carry + chunk
        end = data.rfind(b"\n")
        if end < 0:
            self._carry = data if len(data) <= MAX_LINE else b""
            return
        self._carry = data[end + 1 :]
        if len(self._carry) > MAX_LINE:
            self._carry = b""  # a huge row of some table: nothing we look for is that long
        self._scan(data[: end + 1])

    def finish(self) -> None:
        """End of input: a last line without newline is scanned too."""
        if self._carry:
            self._scan(self._carry + b"\n")
            self._carry = b""

    def _scan(self, lines: bytes) -> None:
        position = 0
        while position < len(lines):
            if self._reading_modules:
                position = self._read_module_rows(lines, position)
                continue
            match = _HEADER.search(lines, position)
            if match is None:
                return
            table = match.group(1).decode()
            self.columns[table] = [c.strip().strip('"') for c in match.group(2).decode().split(",")]
            position = match.end() + 1
            if table == MODULES:
                self.modules = []
                self._reading_modules = True

    def _read_module_rows(self, lines: bytes, position: int) -> int:
        names = self.columns[MODULES]
        while position < len(lines):
            newline = lines.find(b"\n", position)
            line = lines[position:newline].decode("utf-8", "replace")
            position = newline + 1
            if line == "\\.":
                self._reading_modules = False
                break
            values = [_copy_field(v) for v in line.split("\t")]
            self.modules.append(dict(zip(names, values, strict=False)))
        return position
