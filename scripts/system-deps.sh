#!/usr/bin/env bash
# Install the system programs the tests and the demo need when they are missing:
# redis-server, a real kubectl (Debian's kubernetes-client) and jq. Idempotent.
set -euo pipefail
want=()
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
command -v kubectl >/dev/null 2>&1 || want+=(kubernetes-client)
command -v jq >/dev/null 2>&1 || want+=(jq)
for extra in "$@"; do
  case "$extra" in
    chromium) command -v chromium >/dev/null 2>&1 || want+=(chromium) ;;
    *) want+=("$extra") ;;
  esac
done
[ ${#want[@]} -eq 0 ] && exit 0
echo "installing system packages: ${want[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
