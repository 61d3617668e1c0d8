"""Typed views of what the Upgrade Platform sends back (`request` dictionaries)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from odoo_upgrade.request.states import V1_STATES, StateClass


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class UpgradeRequest:
    """The `request` dictionary of `create` and `status` answers.

    `key` and every `*_url` embed the request's private key: they are secrets and must only be
    stored in the request Secret, never in status, Events or logs.
    """

    id: int
    key: str
    state: str = "draft"
    email: str | None = None
    target: str | None = None
    aim: str | None = None
    filename: str | None = None
    timezone: str | None = None
    issue_stage: str | None = None
    issue: int | None = None
    status_url: str | None = None
    notes_url: str | None = None
    original_sql_url: str | None = None
    original_dump_url: str | None = None
    upgraded_sql_url: str | None = None
    upgraded_dump_url: str | None = None
    modules_url: str | None = None
    filesize: str | None = None
    database_uuid: str | None = None
    created_at: str | None = None
    estimated_time: str | None = None
    processed_at: str | None = None
    elapsed: str | None = None
    filestore: bool = False
    customer_message: str | None = None
    database_version: str | None = None
    postgresql: str | None = None
    compressions: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UpgradeRequest:
        issue = data.get("issue")
        return cls(
            id=int(data["id"]),
            key=str(data["key"]),
            state=str(data.get("state") or "draft"),
            email=_opt_str(data.get("email")),
            target=_opt_str(data.get("target")),
            aim=_opt_str(data.get("aim")),
            filename=_opt_str(data.get("filename")),
            timezone=_opt_str(data.get("timezone")),
            issue_stage=_opt_str(data.get("issue_stage")),
            issue=int(issue) if isinstance(issue, int | str) and str(issue).isdigit() else None,
            status_url=_opt_str(data.get("status_url")),
            notes_url=_opt_str(data.get("notes_url")),
            original_sql_url=_opt_str(data.get("original_sql_url")),
            original_dump_url=_opt_str(data.get("original_dump_url")),
            upgraded_sql_url=_opt_str(data.get("upgraded_sql_url")),
            upgraded_dump_url=_opt_str(data.get("upgraded_dump_url")),
            modules_url=_opt_str(data.get("modules_url")),
            filesize=_opt_str(data.get("filesize")),
            database_uuid=_opt_str(data.get("database_uuid")),
            created_at=_opt_str(data.get("created_at")),
            estimated_time=_opt_str(data.get("estimated_time")),
            processed_at=_opt_str(data.get("processed_at")),
            elapsed=_opt_str(data.get("elapsed")),
            filestore=bool(data.get("filestore")),
            customer_message=_opt_str(data.get("customer_message")),
            database_version=_opt_str(data.get("database_version")),
            postgresql=_opt_str(data.get("postgresql")),
            compressions=[str(c) for c in data.get("compressions") or []],
        )

    @property
    def in_progress(self) -> bool:
        """Unknown states count as still in progress (DESIGN.md §1)."""
        return not V1_STATES.is_final(self.state)

    @property
    def succeeded(self) -> bool:
        return V1_STATES.classify(self.state) is StateClass.SUCCEEDED

    def public_view(self) -> dict[str, Any]:
        """What may be shown in `.status.platform`: no key, no URL (they embed the key)."""
        view: dict[str, Any] = {
            "state": self.state,
            "issueStage": self.issue_stage,
            "estimatedTime": self.estimated_time,
            "processedAt": self.processed_at,
            "elapsed": self.elapsed,
            "databaseVersion": self.database_version,
            "postgresql": self.postgresql,
            "compressions": list(self.compressions),
            "filesize": self.filesize,
            "customerMessage": self.customer_message,
        }
        return {k: v for k, v in view.items() if v is not None}


@dataclass(frozen=True)
class SftpAccess:
    """Answer of `request_sftp_access`: where and as whom to connect."""

    hostname: str
    port: int
    user: str
    shared_file: str
    request_id: int
    sample_command: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SftpAccess:
        return cls(
            hostname=str(data["hostname"]),
            port=int(data["sftp_port"]),
            user=str(data["sftp_user"]),
            shared_file=str(data["shared_file"]),
            request_id=int(data["request_id"]),
            sample_command=_opt_str(data.get("sample_command")),
        )

    def to_json(self) -> dict[str, Any]:
        """The answer's fields as the platform names them (what the request Secret keeps)."""
        return {
            "hostname": self.hostname,
            "sftp_port": self.port,
            "sftp_user": self.user,
            "shared_file": self.shared_file,
            "request_id": self.request_id,
        }
