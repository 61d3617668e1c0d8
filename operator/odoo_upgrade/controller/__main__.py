"""`python -m odoo_upgrade.controller`: the same as `odoo-upgrade operator`."""

from odoo_upgrade.controller.entry import operator_command

if __name__ == "__main__":
    operator_command(prog_name="odoo-upgrade operator")
