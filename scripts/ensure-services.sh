#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis are installed, for the tests that start their own on loopback (`make test`,
# `make cluster`): Debian's `postgresql` and `redis-server` when missing, if we are root with apt-get. Never
# starts them: each test run starts its own clusters in temporary folders. Fails (the tests would) otherwise.
set -uo pipefail

have_postgres() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }
have_redis() { command -v redis-server >/dev/null 2>&1; }

missing=()
have_postgres || missing+=(postgresql)
have_redis || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then echo "services: PostgreSQL and Redis are installed"; exit 0; fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "services: installing Debian's ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # the packages' own services are not wanted: the tests start their own (a policy of the machine's own stays)
  ours=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && ours=1
  fi
  if ! { apt-get install -y -q "${missing[@]}" >/tmp/sop-apt.log 2>&1 \
      || { apt-get update -q >>/tmp/sop-apt.log 2>&1 && apt-get install -y -q "${missing[@]}" >>/tmp/sop-apt.log 2>&1; }; }; then
    [ -n "$ours" ] && rm -f /usr/sbin/policy-rc.d
    echo "services: apt-get could not install ${missing[*]} (see /tmp/sop-apt.log)" >&2; exit 1
  fi
  [ -n "$ours" ] && rm -f /usr/sbin/policy-rc.d
  have_postgres && have_redis && { echo "services: installed ${missing[*]}"; exit 0; }
fi
echo "services: ${missing[*]} missing: install them (Debian: apt-get install ${missing[*]})" >&2
exit 1
