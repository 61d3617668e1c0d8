"""Step 1 of the flow: what must exist before anything is asked of the platform (the platform
URL allowed, the contract Secret and its key, the PVCs), each missing piece a `Ready=False`
reason naming the field, waited for."""

from __future__ import annotations

import time

from odoo_upgrade.controller import conditions as cond
from odoo_upgrade.controller import settings
from odoo_upgrade.controller.kube import NotFound, decode_secret
from odoo_upgrade.controller.reporting import wait_for
from odoo_upgrade.controller.resource import Upgrade
from odoo_upgrade.controller.spec import UpgradeSpec
from odoo_upgrade.redact import register_secret
from odoo_upgrade.request.allowlist import url_is_allowed

# Ready=False reasons of validate_prerequisites, cleared once the object appears.
PREREQUISITE_REASONS = frozenset(
    {
        "PlatformUrlNotAllowed",
        "ContractSecretNotFound",
        "ContractKeyMissing",
        "SourceClaimNotFound",
        "DestinationClaimNotFound",
        "InvalidSpec",
    }
)
# Prerequisites found this recently (by `create` just before the upload) are not read again.
RECHECK_AFTER_SECONDS = 60.0


async def validate_prerequisites(upgrade: Upgrade, spec: UpgradeSpec) -> str | None:
    """The platform URL is allowed, the contract Secret and the PVCs exist; the contract.

    Before the request exists the contract is needed; after, only the volumes are. Nothing is
    asked of the platform (and no contract read) while something is missing.
    """
    phase = upgrade.phase or cond.PENDING
    if not url_is_allowed(spec.platform_url, settings.current().allowed_platform_urls):
        await wait_for(upgrade, "PlatformUrlNotAllowed", not_allowed_message(spec), phase=phase)
    contract: str | None = None
    if upgrade.request_id is None:
        ref = spec.contract
        try:
            secret = decode_secret(await upgrade.kube.get_secret(upgrade.namespace, ref.name))
        except NotFound:
            await wait_for(
                upgrade,
                "ContractSecretNotFound",
                f'Secret "{ref.name}" (spec.contractSecretRef) not found in namespace '
                f'"{upgrade.namespace}"',
                phase=phase,
            )
        contract = secret.get(ref.key, "").strip()
        if not contract:
            await wait_for(
                upgrade,
                "ContractKeyMissing",
                f'Secret "{ref.name}" has no key "{ref.key}" (spec.contractSecretRef.key)',
                phase=phase,
            )
        register_secret(contract)
    claims = {spec.source.claim_name: "Source"}
    claims.setdefault(spec.destination.claim_name, "Destination")  # often the same claim
    for claim, role in claims.items():
        try:
            await upgrade.kube.get_pvc(upgrade.namespace, claim)
        except NotFound:
            await wait_for(
                upgrade,
                f"{role}ClaimNotFound",
                f'PersistentVolumeClaim "{claim}" (spec.{role.lower()}.claimName) not found in '
                f'namespace "{upgrade.namespace}"',
                phase=phase,
            )
    upgrade.prerequisites_found_at = time.monotonic()
    ready = cond.find_condition(upgrade.conditions, cond.READY)
    if ready is None or ready.get("reason") in PREREQUISITE_REASONS:
        await upgrade.patch_status(
            phase=phase,
            conditions=[(cond.READY, cond.UNKNOWN, "Progressing", "prerequisites found")],
            message="prerequisites found",
        )
    return contract


def not_allowed_message(spec: UpgradeSpec) -> str:
    allowed = ", ".join(settings.current().allowed_platform_urls)
    return (
        f'spec.platform.url "{spec.platform_url}" is not allowed by this operator (allowed: '
        f"{allowed}); its administrator allows it with --allowed-platform-url"
    )


async def revalidate_unless_fresh(upgrade: Upgrade, spec: UpgradeSpec) -> None:
    """Look at the prerequisites again unless a step just found them."""
    if time.monotonic() - upgrade.prerequisites_found_at > RECHECK_AFTER_SECONDS:
        await validate_prerequisites(upgrade, spec)
