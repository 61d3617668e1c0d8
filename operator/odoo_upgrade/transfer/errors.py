"""Transfer failures. `transient` tells whether trying the same transfer again can help."""

from __future__ import annotations


class TransferError(Exception):
    """Base of every transfer failure that is not a platform API failure."""

    transient: bool = False
    # Short machine-readable cause, for the mover's termination message.
    reason: str = "TRANSFER:FAILED"


class TransferUnavailable(TransferError):
    """The connection kept dropping or timing out until the attempts ran out."""

    transient = True
    reason = "TRANSFER:UNAVAILABLE"


class DestinationExists(TransferError):
    """The destination file exists already; downloads never overwrite a final file."""

    reason = "DESTINATION:EXISTS"


class SizeMismatch(TransferError):
    """The bytes received or stored differ from the size the other side announced."""

    reason = "TRANSFER:SIZE_MISMATCH"


class HostKeyMismatch(TransferError):
    """The SFTP server presented a host key other than the pinned one."""

    reason = "SFTP:HOST_KEY_MISMATCH"

    def __init__(self, host: str, port: int, expected: str, got: str) -> None:
        self.host, self.port, self.expected, self.got = host, port, expected, got
        super().__init__(
            f"SFTP host key of {host}:{port} does not match the pinned key: "
            f"expected {expected}, got {got}; refusing to connect"
        )


class RemoteRefused(TransferError):
    """The server refused the transfer itself (authentication, permission, missing file)."""

    reason = "TRANSFER:REFUSED"
