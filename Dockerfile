# syntax=docker/dockerfile:1
# One image for the operator (`odoo-upgrade operator`) and its mover Jobs (`odoo-upgrade mover`).
#   docker build -t ghcr.io/odoo-upgrade-operator/odoo-upgrade-operator:0.1.0 .
# tests/integration/test_image_install.py performs the same install steps in a clean venv.

ARG PYTHON_IMAGE=python:3.11-slim

# -- stage 1: wheels of the package and of every dependency ------------------------------------
FROM ${PYTHON_IMAGE} AS wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# A compiler only for a dependency that ships no wheel for the target platform; it stays here.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --wheel-dir /wheels .

# -- stage 2: the runtime, installed from those wheels only -------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="odoo-upgrade-operator" \
      org.opencontainers.image.description="Kubernetes operator that upgrades Odoo databases through the Odoo Upgrade Platform" \
      org.opencontainers.image.source="https://github.com/odoo-upgrade-operator/odoo-upgrade-operator" \
      org.opencontainers.image.url="https://github.com/odoo-upgrade-operator/odoo-upgrade-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# pg_dump, pg_restore and psql for the dump and restore movers (the distribution's newest
# client reads every older server; a newer server needs another image: --database-image), and
# rsync over OpenSSH ssh for the transfers of the `upgrade/request` API (transfer/rsync.py).
# ssh refuses to run for a uid without a passwd entry ("No user exists for uid"): give 65532 one.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client rsync openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && echo 'odoo-upgrade:x:65532:65532:odoo-upgrade:/tmp:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'odoo-upgrade:x:65532:' >> /etc/group
# --no-index: nothing but the wheels of stage 1 gets in; the bind mount keeps them out of layers.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels odoo-upgrade-operator
# Numeric, so the kubelet can check runAsNonRoot without resolving a name. Its passwd entry
# (above) is for ssh only; the root filesystem is read-only: HOME is /tmp (an emptyDir in the pods).
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["odoo-upgrade"]
CMD ["operator", "--all-namespaces"]
