"""Database and filestore failures: a reason code, the spec field to fix, `transient`.

`reason` is CamelCase, as Kubernetes condition reasons are; `field` names what the user must
change (`source.database.name`, `restore.database.connectionSecretRef`, ...); `transient` is
True only when trying again unchanged can help (the server was unreachable). Messages never
hold a password: libpq's text is redacted before it gets here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odoo_upgrade.redact import redact


@dataclass(frozen=True)
class DatabaseFields:
    """The names of the settings a check reports against (spec fields or CLI flags)."""

    name: str
    secret: str


@dataclass(frozen=True)
class FilestoreFields:
    source_path: str
    path: str


SOURCE_FIELDS = DatabaseFields("source.database.name", "source.database.connectionSecretRef")
RESTORE_FIELDS = DatabaseFields("restore.database.name", "restore.database.connectionSecretRef")
FILESTORE_FIELDS = FilestoreFields("restore.filestore.sourcePath", "restore.filestore.path")
# Where the client tools come from, for ClientTooOld / ClientToolsMissing messages.
CLIENT_IMAGE_HINT = "the mover image (the operator's --database-image setting)"


class DatabaseError(Exception):
    """Base of every failure of this package."""

    reason: str = "DatabaseError"
    transient: bool = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        # Every password of a ConnectionSettings is registered: none survives in a message,
        # even one that came back as a name (a database called like the password).
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.field = field

    def as_result(self) -> dict[str, Any]:
        """The failure as the mover's result JSON carries it."""
        result: dict[str, Any] = {
            "error": self.message,
            "reason": self.reason,
            "transient": self.transient,
        }
        if self.field:
            result["field"] = self.field
        return result


class DatabaseUnreachable(DatabaseError):
    """No connection to the server (refused, timeout, unknown host, starting up)."""

    reason = "DatabaseUnreachable"
    transient = True


class DatabaseAuthenticationFailed(DatabaseError):
    """The server refused the Secret's credentials (wrong password, unknown role, pg_hba)."""

    reason = "DatabaseAuthenticationFailed"


class DatabasePermissionDenied(DatabaseError):
    """The role may connect but not do what is needed (CONNECT, CREATEDB)."""

    reason = "DatabasePermissionDenied"


class DatabaseConnectionFailed(DatabaseError):
    """A connection failure of another kind (SSL mode refused, protocol error)."""

    reason = "DatabaseConnectionFailed"


class DatabaseNotFound(DatabaseError):
    reason = "DatabaseNotFound"


class DatabaseNameInvalid(DatabaseError):
    reason = "DatabaseNameInvalid"


class DatabaseSecretKeyMissing(DatabaseError):
    """The connection Secret lacks a key (host, username, password) or a value is unusable."""

    reason = "DatabaseSecretKeyMissing"


class ClientToolsMissing(DatabaseError):
    """pg_dump, pg_restore or psql is not installed where we look."""

    reason = "ClientToolsMissing"


class ClientTooOld(DatabaseError):
    """The client tools are older than the server's major version."""

    reason = "ClientTooOld"


class DatabaseCommandFailed(DatabaseError):
    """A query or command failed on a connected server (SQL error, server gone)."""

    reason = "DatabaseCommandFailed"


class DumpFailed(DatabaseError):
    reason = "DumpFailed"


class DumpDestinationExists(DatabaseError):
    """The dump file exists already: a dump never overwrites a file."""

    reason = "DumpDestinationExists"


class DumpNotFound(DatabaseError):
    """The dump to restore is missing."""

    reason = "DumpNotFound"


class DumpFormatUnknown(DatabaseError):
    """The file is none of custom, directory, tar, plain SQL, gzip SQL, Odoo zip."""

    reason = "DumpFormatUnknown"


class RestoreTargetExists(DatabaseError):
    """The restore target database exists: it is never dropped or overwritten."""

    reason = "RestoreTargetExists"


class RestoreFailed(DatabaseError):
    """pg_restore or psql failed; the temporary database was dropped."""

    reason = "RestoreFailed"


class RestoreVerificationFailed(DatabaseError):
    """The restored database's `base` module is not at the target series."""

    reason = "RestoreVerificationFailed"


class FilestoreSourceNotFound(DatabaseError):
    reason = "FilestoreSourceNotFound"


class FilestoreDestinationExists(DatabaseError):
    reason = "FilestoreDestinationExists"


class FilestorePathsOverlap(DatabaseError):
    """`path` lies inside `sourcePath` or the reverse: the copy would contain itself."""

    reason = "FilestorePathsOverlap"


class RestoreTemporaryNameTaken(DatabaseError):
    """A database we did not create holds the temporary name of this restore."""

    reason = "RestoreTemporaryNameTaken"


class FilestoreSymlinkedDirectory(DatabaseError):
    """A directory of `sourcePath` the upgrade writes into is a symbolic link: the copy keeps
    links, so merging through it would write into the source's own storage."""

    reason = "FilestoreSymlinkedDirectory"


class FilestoreArchiveInvalid(DatabaseError):
    """The upgraded archive's `filestore/` cannot be merged (unsafe member path, bad zip)."""

    reason = "FilestoreArchiveInvalid"


# Failures fixed outside the request, by the user or an administrator (a name, a password, a
# database or a path in the way, a client image): the operator waits for them, the CLI calls
# them bad input. The rest (a failed pg_dump or pg_restore, a failed verification) are not.
FIXED_OUTSIDE = frozenset(
    error.reason
    for error in (
        DatabaseAuthenticationFailed,
        DatabasePermissionDenied,
        DatabaseNotFound,
        DatabaseNameInvalid,
        DatabaseSecretKeyMissing,
        ClientToolsMissing,
        ClientTooOld,
        DumpDestinationExists,
        DumpNotFound,
        RestoreTargetExists,
        RestoreTemporaryNameTaken,
        FilestoreSourceNotFound,
        FilestoreDestinationExists,
        FilestorePathsOverlap,
        FilestoreSymlinkedDirectory,
    )
)
