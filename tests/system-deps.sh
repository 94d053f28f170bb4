#!/bin/sh
# System packages the test suite needs beyond pip, installed when missing and possible:
# Debian's chromium, for the dashboard tests (Playwright drives it; never `playwright
# install`). Without root or apt-get it only says what to install: those tests then skip
# locally and fail under CI=true.
set -eu
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "tests/system-deps.sh: installing Debian's chromium (dashboard tests)" >&2
    apt-get install -y -q chromium >/dev/null || {
        apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null
    }
else
    echo "tests/system-deps.sh: install Debian's chromium (apt-get install chromium)" \
        "for the dashboard tests" >&2
fi
