#!/usr/bin/env bash
# retry: run a fetch (go mod download, go get, pip install) again with backoff when it fails, then
# stop with a message that names what was fetched and what to do about it.
#
#   e2e/retry.sh [--what DESC] [--remedy TEXT|go|pip] -- COMMAND [ARGS...]   (as a program)
#   . e2e/retry.sh; retry [--what DESC] [--remedy TEXT] -- COMMAND ...  (sourced, as build.sh does)
#
# Settings: GREENJOBS_RETRIES (tries in all, default 5), GREENJOBS_RETRY_DELAY (first wait in
# seconds, default 5; it doubles: 5, 10, 20, 40). Exit status: the command's last one.
# Only fetches belong here: a compile error is not retried.

retry() {
  local what="" remedy="" tries=${GREENJOBS_RETRIES:-5} delay=${GREENJOBS_RETRY_DELAY:-5} n=1 rc
  while [ $# -gt 0 ]; do
    case "$1" in
      --what) what=$2; shift 2 ;;
      --remedy) remedy=$2; shift 2 ;;
      --) shift; break ;;
      *) break ;;
    esac
  done
  [ -n "$what" ] || what="$*"
  case "$remedy" in go) remedy=$GO_REMEDY ;; pip) remedy=$PIP_REMEDY ;; esac
  while :; do
    rc=0
    "$@" || rc=$?
    [ "$rc" -eq 0 ] && return 0
    if [ "$n" -ge "$tries" ]; then
      {
        printf '\nERROR: could not fetch %s: %d tries failed (last exit status %d).\n' "$what" "$n" "$rc"
        printf '  command: %s\n' "$*"
        [ -z "$remedy" ] || printf '  remedy:  %s\n' "$remedy"
        printf '  Everything fetched so far is cached: running the same command again goes on from there.\n'
      } >&2
      return "$rc"
    fi
    printf '[retry] %s failed (exit status %d, try %d of %d); trying again in %ss\n' \
      "$what" "$rc" "$n" "$tries" "$delay" >&2
    sleep "$delay"
    n=$((n + 1))
    delay=$((delay * 2))
  done
}

# Remedies shared by build.sh and the Makefile.
GO_REMEDY='a registry refused or dropped the request (403/404/5xx/timeout). Check that this machine reaches the Go module proxy (GOPROXY now: '"$(go env GOPROXY 2>/dev/null || echo unset)"'); try another proxy (GOPROXY=https://proxy.golang.org,direct or your mirror) or GOPROXY=direct with git; raise GREENJOBS_RETRIES/GREENJOBS_RETRY_DELAY for a flaky link; then run the same make target again.'
PIP_REMEDY='PyPI (or the index in PIP_INDEX_URL) refused or dropped the request. Check the network or proxy, PIP_INDEX_URL/PIP_CERT for a mirror; raise GREENJOBS_RETRIES/GREENJOBS_RETRY_DELAY for a flaky link; then run the same make target again.'

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  retry "$@"
fi
