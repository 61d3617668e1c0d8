"""The Kubernetes side: kopf handlers, the typed spec, mover Job specs, conditions, metrics.

`handlers` registers kopf handlers on import; `entry.operator_command` runs them.
"""
