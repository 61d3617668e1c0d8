"""A local Upgrade Platform: the v1 HTTP API (aiohttp) and the SFTP server (paramiko).

Run it with `odoo-upgrade-emulator` or `python -m odoo_upgrade.emulator`; see `config.py` for the
flags. It stands in for https://upgrade.odoo.com in tests, demos and benchmarks, including the
faults a real network and platform produce (5xx answers, cut connections, slow answers).
"""
