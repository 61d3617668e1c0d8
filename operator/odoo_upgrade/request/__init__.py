"""The rules of an upgrade request, written once for the operator, the mover and the CLI.

Nothing here knows kopf, Kubernetes or click: the platform states and their classes, the step
order both drivers follow, the request Secret's key names, the mover's result and progress
lines, the SFTP grant with its host-key policy, the transport and the upgraded-file choices,
and the `Platform` protocol each platform API implements.
"""
