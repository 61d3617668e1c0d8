#!/usr/bin/env bash
# Installs the Debian tools that tests and benchmarks call as real peers: curl, jq, rsync, the
# OpenSSH client (ssh, sftp, ssh-keygen) and server (sshd, for bench/transfer.py), openssl (its
# s_server is bench/transfer.py's TLS peer), PostgreSQL
# (server for the test harness, client tools pg_dump/pg_restore/psql for the dump and restore
# movers). Only runs apt-get when something is missing.
set -euo pipefail
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
command -v sftp >/dev/null || missing+=(openssh-client)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
# Debian puts the server binaries in /usr/lib/postgresql/<major>/bin, not on PATH.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v pg_dump >/dev/null || missing+=(postgresql-client)
command -v pg_restore >/dev/null || missing+=(postgresql-client)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v ssh >/dev/null || missing+=(openssh-client)
command -v rsync >/dev/null || missing+=(rsync)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
install() { $SUDO apt-get install -y -qq --no-install-recommends "$@" </dev/null; }
if [[ " ${missing[*]} " == *" postgresql "* ]]; then
  # Debian's postgresql creates and starts a `main` cluster of its own; the tests start
  # theirs (tests/harness/postgres.py). As the official postgres image does: say no first.
  install postgresql-common
  $SUDO sed -ri 's/^#?\s*create_main_cluster\s*=.*$/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
fi
install "${missing[@]}"
