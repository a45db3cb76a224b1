#!/usr/bin/env bash
# Set up cyberrange on a fresh Debian 12 / Ubuntu machine (as root), then optionally act.
#
#   scripts/setup.sh            install what is missing (Debian packages + .venv)
#   scripts/setup.sh drill      ... then run the default drill (FOB topology, recon playbook)
#   scripts/setup.sh test       ... then run the whole test suite
#
# Only Debian's archive and PyPI are used. The virtual environment is made from Debian's
# /usr/bin/python3 with --system-site-packages because Mininet's Python module comes from
# Debian's `mininet` package (matched to its `mnexec` binary) and is installed for that
# interpreter only; every other dependency comes from PyPI into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (the twin needs network namespaces, veths and nftables)" >&2
  exit 2
fi

DEB_PACKAGES="mininet tcpdump nftables iproute2 iputils-ping dnsmasq-base bridge-utils net-tools
              python3 python3-venv python3-dev procps iperf3 tcpreplay frr"
missing=""
for p in $DEB_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup.sh: installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# the tests also open the HTML after-action report in a real headless browser; Debian's
# chromium (Ubuntu ships it as a snap only: there the browser tests skip, with the reason)
if [ "${1:-}" = "test" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "setup.sh: installing chromium for the browser tests"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } ||
    echo "setup.sh: chromium could not be installed; the browser tests will be skipped" >&2
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import mininet.net" 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi

case "${1:-install}" in
  install) echo "setup.sh: ready. Try: .venv/bin/cyberrange drill run fob recon_bruteforce" ;;
  drill)   shift; exec .venv/bin/cyberrange drill run topologies/fob.yaml attack_playbooks/recon_bruteforce.yaml "$@" ;;
  test)    shift; exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" ;;
  *) echo "setup.sh: unknown action '$1' (install, drill, test)" >&2; exit 2 ;;
esac
