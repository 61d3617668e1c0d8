"""How a dump travels to the platform: one default for the CLI, the operator and the mover."""

from __future__ import annotations

# Above this size `auto` picks SFTP: a broken HTTPS upload restarts from zero, SFTP resumes.
DEFAULT_SFTP_THRESHOLD_BYTES = 1024**3
