#!/bin/sh
# System tools the test suite needs beyond pip, installed when missing and possible:
# - Debian's chromium, for the dashboard tests (Playwright drives it; never `playwright
#   install`);
# - promtool, for the alert rule tests: only its static binary, taken out of Debian's
#   prometheus package into /opt/bsky-backfill-tools and linked into /usr/local/bin (the
#   installed package is ~330 MB and, on a systemd host, starts daemons).
# Without root or apt-get it only says what to install: those tests then skip locally and
# fail under CI=true.
set -eu
TOOLS=/opt/bsky-backfill-tools

say() {
    echo "tests/system-deps.sh: $*" >&2
}

can_install() {
    command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]
}

# Package lists may be stale or absent (fresh containers): refresh them once on failure.
apt_get() {
    apt-get -q "$@" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null && apt-get -q "$@" >/dev/null
    }
}

provide_chromium() {
    command -v chromium >/dev/null 2>&1 && return
    if can_install; then
        say "installing Debian's chromium (dashboard tests)"
        apt_get install -y chromium
    else
        say "install Debian's chromium (apt-get install chromium) for the dashboard tests"
    fi
}

provide_promtool() {
    command -v promtool >/dev/null 2>&1 && return
    if ! can_install; then
        say "install promtool (usr/bin/promtool of Debian's prometheus package, on PATH)" \
            "for the alert rule tests"
        return
    fi
    if [ ! -x "$TOOLS/promtool" ]; then
        say "installing promtool from Debian's prometheus package (alert rule tests)"
        work=$(mktemp -d)
        # apt fetches as its unprivileged _apt user, which must be able to write here.
        chmod 755 "$work"
        (cd "$work" && apt_get download prometheus)
        dpkg-deb -x "$work"/prometheus_*.deb "$work/package"
        mkdir -p "$TOOLS"
        cp "$work/package/usr/bin/promtool" "$TOOLS/promtool"
        rm -rf "$work"
    fi
    ln -sf "$TOOLS/promtool" /usr/local/bin/promtool
}

provide_chromium
provide_promtool
