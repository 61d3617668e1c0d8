"""The request Secret `<name>-request`: the only place a request's key or token lives.

It belongs to its `OdooUpgrade` (ownerReference); a namesake left by another object is never
read or written. Values are registered with the redaction registry as soon as they are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from odoo_upgrade.controller.jobs import Owner, labels, request_secret_name
from odoo_upgrade.controller.kube import AlreadyExists, ClusterApi, NotFound, decode_secret
from odoo_upgrade.redact import register_secret
from odoo_upgrade.request import secret_keys
from odoo_upgrade.request.stored import StoredRequest, StoredRequestUnreadable


class SecretConflict(Exception):
    """The Secret's name is taken by an object this resource does not own."""


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("uid") == uid for o in owners)


class RequestSecretStore:
    """Reads and writes one resource's request Secret."""

    def __init__(self, kube: ClusterApi, owner: Owner) -> None:
        self.kube = kube
        self.owner = owner
        self.name = request_secret_name(owner.name)

    async def values(self) -> dict[str, str] | None:
        """The Secret's data if it exists and is ours; `SecretConflict` if it is not ours."""
        try:
            secret = await self.kube.get_secret(self.owner.namespace, self.name)
        except NotFound:
            return None
        if not owned_by(secret, self.owner.uid):
            raise SecretConflict(
                f'Secret "{self.name}" exists but belongs to another object; delete it or '
                "rename the OdooUpgrade"
            )
        data = decode_secret(secret)
        # Not the assigned host: masking it would garble every message that names it.
        register_secret(*(v for k, v in data.items() if k not in secret_keys.NOT_SECRET))
        return data

    async def stored_request(self) -> StoredRequest | None:
        """The stored request, or None when no request was stored (yet)."""
        data = await self.values()
        if not data:
            return None
        try:
            return StoredRequest.from_values(data)
        except StoredRequestUnreadable:
            return None

    async def write(self, values: Mapping[str, str]) -> None:
        """Create the Secret with `values`, or merge them into it."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.name,
                "namespace": self.owner.namespace,
                "labels": labels(self.owner, component="request"),
                "ownerReferences": [self.owner.reference()],
            },
            "stringData": dict(values),
        }
        try:
            await self.kube.create_secret(self.owner.namespace, body)
        except AlreadyExists:
            await self.values()  # refuses a foreign namesake before writing into it
            await self.kube.patch_secret_data(self.owner.namespace, self.name, values)

    async def delete(self) -> None:
        """Delete the Secret if it is ours (with the resource: the request is final)."""
        try:
            if owned_by(
                await self.kube.get_secret(self.owner.namespace, self.name), self.owner.uid
            ):
                await self.kube.delete_secret(self.owner.namespace, self.name)
        except NotFound:
            pass
