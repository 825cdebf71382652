#!/usr/bin/env bash
# Debian packages the test suite needs: docker-compose (validates docker-compose.yml; no engine
# needed), postgresql (a throwaway cluster for Dagster's Postgres storage test), chromium
# with fonts-liberation (the browser test, driven by Playwright without downloading a browser) and
# nodejs (runs mongo-init's mongosh script with mongosh's globals stubbed).
# Idempotent: apt-get runs only when one of them is missing, and `apt-get update` only then.
set -euo pipefail

packages=(docker-compose postgresql chromium fonts-liberation nodejs)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "system-deps: ${packages[*]} already installed"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)  # a developer's machine; CI runs as root
fi
echo "system-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "system-deps: done"
