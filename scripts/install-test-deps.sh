#!/usr/bin/env bash
# The system packages the browser and PostgreSQL tests need (tests/deploy/test_ui.py, test_postgres.py):
# Debian's chromium + chromium-driver and postgresql. Run by `make test` before pytest.
#
# Idempotent and quick: the binaries are checked first, and apt is used only for what is missing. Installing needs
# root and apt-get; without them (or if apt fails) this prints what is missing and exits 0: those tests then skip,
# naming the packages, and `make test` still runs everything else.
set -u

missing=()
[ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(postgresql)

[ ${#missing[@]} -eq 0 ] && exit 0

say() { echo "install-test-deps: $*" >&2; }
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  say "missing ${missing[*]}; installing needs root and apt-get (sudo apt-get install ${missing[*]})."
  say "until then the browser/PostgreSQL tests are skipped."
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
say "apt-get install ${missing[*]} (log: $log)"
# The package lists may be missing or stale on a fresh machine: update once, only when the install needs it.
if apt-get install -y -q "${missing[@]}" >"$log" 2>&1 \
   || { apt-get update -q >>"$log" 2>&1 && apt-get install -y -q "${missing[@]}" >>"$log" 2>&1; }; then
  rm -f "$log"
  say "installed ${missing[*]}"
else
  tail -n 20 "$log" >&2
  say "could not install ${missing[*]}: the browser/PostgreSQL tests will be skipped."
fi
exit 0
