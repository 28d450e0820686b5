#!/usr/bin/env bash
# Set up everything labrunner needs on a Debian machine: system packages (when root and
# missing), then a virtual environment in .venv with labrunner and its development tools.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
  # the sandbox lab: target host and mail provider
  openssh-server openssh-client postfix dovecot-core dovecot-pop3d dovecot-imapd nginx-light
  # the provider's web mail: Roundcube with SQLite through PHP-FPM
  php-fpm roundcube-core roundcube-sqlite3
  iproute2 ethtool iptables sudo openssl ca-certificates
  # setcap: the capture group (tcpdump with cap_net_raw,cap_net_admin for labrunner-cap)
  libcap2-bin
  # capture and analysis (Wireshark's dissectors)
  tcpdump tshark wireshark-common
  # the PDF: WeasyPrint's libraries and CJK fonts; poppler for the tests that read the PDF
  libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fontconfig fonts-noto-cjk poppler-utils
  # emoji are common in real mailboxes' subjects (IMAP FETCH of the inbox): WeasyPrint draws this font
  fonts-noto-color-emoji
  python3 python3-venv
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "setup: these Debian packages are missing; install them as root:" >&2
    echo "  sudo apt-get install ${missing[*]}" >&2
    exit 3
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# dependency groups (PEP 735) need pip >= 25.1
.venv/bin/python -m pip install -q --upgrade "pip>=25.1"
.venv/bin/python -m pip install -q -e . --group dev
# Byte-code now, as pip does for a regular install: an editable one writes it on first use,
# or never where PYTHONDONTWRITEBYTECODE is set (then every command compiled its modules again:
# ~15 ms of each `labrunner analyze`). A source edited later is still checked by its mtime.
.venv/bin/python -m compileall -q labrunner >/dev/null || true
touch .venv/.setup-done
