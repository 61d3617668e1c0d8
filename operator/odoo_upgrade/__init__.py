"""odoo-upgrade-operator: upgrade Odoo databases through the Odoo Upgrade Platform."""

__version__ = "0.1.0"
