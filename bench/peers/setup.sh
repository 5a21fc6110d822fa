#!/usr/bin/env bash
# Installs the benchmark's peer systems: beanstalkd and redis-server from
# Debian's packages, BullMQ (pinned in bench/peers/bullmq/package.json and
# package-lock.json) from npm, and the PostgreSQL peers of `bench pg`
# (graphile-worker and BullMQ with its PostgreSQL backend, pinned in
# bench/peers/pg/) from npm. Nothing is fetched from anywhere else.
# PostgreSQL itself comes from scripts/postgres.sh.
#
# Idempotent: packages already present are left alone, and `npm ci` only runs
# when node_modules is missing or was installed from a different lock file.
# Runs as root as it is, or through sudo otherwise.
#
# The distro packages start their own daemons (redis on 6379, beanstalkd on
# 11300) when installed; the benchmark starts its own servers on its own
# ports, so this script keeps those from starting and stops any that did.
#
# Usage: bash bench/peers/setup.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bullmq_dir="$here/bullmq"

log() { printf 'peers/setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=()
fi
as_root() {
  if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
    die "need root (or sudo) to run: $*"
  fi
  "${SUDO[@]}" "$@"
}

# --- Debian packages -------------------------------------------------------

missing=()
command -v beanstalkd >/dev/null 2>&1 || missing+=(beanstalkd)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! command -v redis-cli >/dev/null 2>&1 && [[ " ${missing[*]-} " != *" redis-server "* ]]; then
  missing+=(redis-tools)
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

# Stops the daemons a package's maintainer scripts may have started: only
# processes running as that package's own system user (redis, beanstalkd),
# never ones the benchmark or a person started.
stop_distro_daemons() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl disable --now redis-server.service >/dev/null 2>&1 || true
    as_root systemctl disable --now beanstalkd.service beanstalkd.socket >/dev/null 2>&1 || true
  elif command -v service >/dev/null 2>&1; then
    as_root service redis-server stop >/dev/null 2>&1 || true
    as_root service beanstalkd stop >/dev/null 2>&1 || true
  fi
  local name user pids pid
  for pair in redis-server:redis beanstalkd:beanstalkd; do
    name="${pair%%:*}"
    user="${pair##*:}"
    id -u "$user" >/dev/null 2>&1 || continue
    pids="$(pgrep -x -u "$user" "$name" || true)"
    for pid in $pids; do
      log "stopping the package's own $name (pid $pid, user $user)"
      as_root kill "$pid" 2>/dev/null || true
    done
  done
}

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing from apt: ${missing[*]}"
  # Debian's standard switch to keep maintainer scripts from starting
  # daemons (as in container images); only if no policy is in place yet.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    made_policy=1
  fi
  cleanup_policy() { if [ "$made_policy" -eq 1 ]; then as_root rm -f "$policy"; made_policy=0; fi; }
  trap cleanup_policy EXIT
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
  cleanup_policy
  trap - EXIT
  stop_distro_daemons
else
  log "beanstalkd, redis-server, redis-cli, node and npm already installed"
fi

command -v beanstalkd >/dev/null 2>&1 || die "beanstalkd still missing after install"
command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after install"
command -v redis-cli >/dev/null 2>&1 || die "redis-cli still missing after install"
command -v node >/dev/null 2>&1 || die "node still missing after install"
command -v npm >/dev/null 2>&1 || die "npm still missing after install"

# --- BullMQ from npm -------------------------------------------------------

cd "$bullmq_dir"
stamp=node_modules/.bench-peers-lock.sha256
if [ ! -f package-lock.json ]; then
  # First time only: resolve the pinned versions and write the lock file
  # (which is then committed).
  log "no package-lock.json: creating it with npm install"
  npm install --no-audit --no-fund --ignore-scripts >&2
  sha256sum package-lock.json >"$stamp"
elif [ ! -d node_modules/bullmq ] || [ ! -f "$stamp" ] || ! sha256sum --status -c "$stamp" 2>/dev/null; then
  # --ignore-scripts: the only install script (msgpackr-extract's) just
  # looks for the prebuilt binary that npm already installs as an optional
  # package, and would try a native build otherwise.
  log "installing BullMQ from package-lock.json (npm ci)"
  npm ci --no-audit --no-fund --ignore-scripts >&2
  sha256sum package-lock.json >"$stamp"
else
  log "node_modules matches package-lock.json"
fi

# --- graphile-worker and BullMQ's PostgreSQL backend from npm (bench pg) ---

npm_ci_pinned() {
  local dir="$1" what="$2" stamp
  (
    cd "$dir"
    stamp=node_modules/.bench-peers-lock.sha256
    if [ ! -d node_modules ] || [ ! -f "$stamp" ] || ! sha256sum --status -c "$stamp" 2>/dev/null; then
      log "installing $what from $dir/package-lock.json (npm ci)"
      npm ci --no-audit --no-fund --ignore-scripts >&2
      sha256sum package-lock.json >"$stamp"
    else
      log "$dir/node_modules matches package-lock.json"
    fi
  )
}
npm_ci_pinned "$here/pg" "graphile-worker and BullMQ (PostgreSQL peers)"

bullmq_version="$(node -p "require('./node_modules/bullmq/package.json').version")"
ioredis_version="$(node -p "require('./node_modules/ioredis/package.json').version")"

printf 'beanstalkd:   %s\n' "$(beanstalkd -v 2>&1 | head -n1)"
printf 'redis-server: %s\n' "$(redis-server --version | head -n1)"
printf 'node:         %s\n' "$(node --version)"
printf 'bullmq:       %s (ioredis %s)\n' "$bullmq_version" "$ioredis_version"
printf 'pg peers:     graphile-worker %s, bullmq %s, pg %s\n' \
  "$(node -p "require('$here/pg/node_modules/graphile-worker/package.json').version")" \
  "$(node -p "require('$here/pg/node_modules/bullmq/package.json').version")" \
  "$(node -p "require('$here/pg/node_modules/pg/package.json').version")"
