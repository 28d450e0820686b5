#!/bin/bash
# The baseline of bench/run: the six default scenarios done by hand with ssh, tcpdump and curl.
#
#   bench/baseline_run.sh [INSTANCE] [OUTDIR]
#
# What a student with a shell would do, with no analysis and no report: one SSH connection
# (ControlMaster) to the sandbox's "ECS" target; for each scenario, on the target, tcpdump
# on the servers' address and the scenario's ports, the same SMTP / POP3 / IMAP / HTTPS
# exchanges with curl (the telnet scenario with bash's /dev/tcp), stop tcpdump, and the pcap
# copied back over the same SSH connection into OUTDIR/<scenario>.pcap; TLS key logs
# (SSLKEYLOGFILE) come back too and are embedded with editcap, as labrunner's pcapng has them.
# Nothing stays on the target: its temporary folder is removed on exit.
#
# The password never reaches a command line or a file: it travels inside the script on the
# SSH channel's stdin and reaches curl as a config on a process-substitution pipe (-K <(...)).
set -euo pipefail

instance=${1:-spd}
out=${2:-$(mktemp -d /tmp/lr-baseline.XXXXXX)}
state=/run/labrunner/sandbox-$instance/state.json
[ -r "$state" ] || { echo "baseline_run.sh: no sandbox $instance ($state): labrunner sandbox up --instance $instance" >&2; exit 2; }
mkdir -p "$out"
umask 077

# host, user, key, known_hosts, mail address, account, password, CA file: shell-quoted
eval "$(python3 - "$state" <<'EOF'
import json, shlex, sys
s = json.load(open(sys.argv[1]))
for k, v in {"host": s["ecs"]["host"], "login": s["ecs"]["user"], "key": s["ecs"]["key"],
             "known": s["ecs"]["known_hosts"], "mailhost": s["mail"]["host"], "iface": s["ecs"]["interface"],
             "user": s["account"]["user"], "addr": s["account"]["address"],
             "pass": s["account"]["password"], "ca": s["ca_file"]}.items():
    print(f"{k}={shlex.quote(v)}")
EOF
)"

cm=$(mktemp -u /tmp/lr-baseline-cm.XXXXXX)
ssh_opts=(-i "$key" -o UserKnownHostsFile="$known" -o StrictHostKeyChecking=yes -o BatchMode=yes
          -o ControlPath="$cm")
ssh "${ssh_opts[@]}" -o ControlMaster=yes -o ControlPersist=120 -fN "$login@$host"
trap 'ssh "${ssh_opts[@]}" -O exit "$login@$host" 2>/dev/null || true' EXIT

# Runs on the target (bash -s); the first line, written below, sets U, P, A, CA, SC, MAILHOST, IFACE.
read -r -d '' REMOTE <<'EOF' || true
set -euo pipefail
R=$(mktemp -d /tmp/lr-bl.XXXXXX)
dump=
trap '[ -z "$dump" ] || kill -INT "$dump" 2>/dev/null; rm -rf "$R"' EXIT
export SSLKEYLOGFILE=$R/keys CURL_CA_BUNDLE=$CA  # the env, because --next resets options
cfg() { printf 'user = "%s:%s"\n' "$U" "$P"; }
c() { curl -sS "$@"; }
tok=$SC-$(date +%s%N)
msg() {  # a small message with a subject that the find steps look for
  printf 'From: <%s>\r\nTo: <%s>\r\nSubject: lab 5 %s %s\r\nDate: %s\r\nMessage-ID: <%s.%s@baseline>\r\n' \
    "$A" "$A" "$SC" "$1" "$(date -R)" "$1" "$tok"
  printf 'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello from the baseline.\r\n'
}
send() {  # URL [curl options]: submit one message
  local url=$1; shift
  msg "$url" | c -K <(cfg) "$url" --mail-from "$A" --mail-rcpt "$A" -T - "$@"
}
pop_find() {  # URL [curl options]: poll LIST until the newest message has this run's token; print its number
  local url=$1 n; shift
  for _ in $(seq 200); do
    n=$(c -K <(cfg) "$@" "$url/" | tail -n1 | cut -d' ' -f1)
    if [ -n "$n" ] && c -K <(cfg) "$@" "$url/" -X "TOP $n 0" | grep -q "$tok"; then echo "$n"; return; fi
    sleep 0.05
  done
  echo "baseline: mail $tok not delivered" >&2; exit 1
}
imap_find() {  # URL [curl options]: poll SEARCH until this run's mail is there; print its number
  local url=$1 n; shift
  for _ in $(seq 200); do
    n=$(c -K <(cfg) "$@" "$url/INBOX" -X "SEARCH HEADER Message-ID $tok" | tr -dc '0-9 ' | awk '{print $NF}')
    if [ -n "$n" ]; then echo "$n"; return; fi
    sleep 0.05
  done
  echo "baseline: mail $tok not delivered" >&2; exit 1
}
telnet_smtp() {  # section 4.4: the SMTP dialogue typed line by line
  exec 3<>/dev/tcp/smtp.lab.test/25
  rd() { local l; while IFS= read -r -u 3 l; do l=${l%$'\r'}; [[ $l == [0-9][0-9][0-9]-* ]] || break; done
         [ "${l:0:3}" = "$1" ] || { echo "baseline: expected $1, got: ${l:0:3}" >&2; exit 1; }; }
  say() { printf '%s\r\n' "$1" >&3; }
  rd 220; say "HELO lab-client"; rd 250; say "AUTH LOGIN"; rd 334
  say "$(printf %s "$U" | base64 -w0)"; rd 334; say "$(printf %s "$P" | base64 -w0)"; rd 235
  say "MAIL FROM:<$A>"; rd 250; say "RCPT TO:<$A>"; rd 250; say DATA; rd 354
  msg telnet >&3; say "."; rd 250; say QUIT; rd 221
  exec 3<&-
}
webmail() {  # section 4.3: Roundcube as labrunner's webmail step uses it, one connection a request
  local w=https://mail.lab.test j=$R/jar tk id rt uid
  tk=$(c -c "$j" "$w/" | grep -o 'name="_token" value="[^"]*"' | cut -d'"' -f4)
  exec 4< <(printf %s "$P")
  c -b "$j" -c "$j" -o /dev/null "$w/?_task=login" -d "_token=$tk&_task=login&_action=login&_timezone=UTC&_url=" \
    --data-urlencode "_user=$U" --data-urlencode "_pass@/dev/fd/4"
  exec 4<&-
  rt=$(c -b "$j" -c "$j" "$w/?_task=mail" | grep -o '"request_token":"[^"]*"' | cut -d'"' -f4)
  id=$(c -b "$j" -c "$j" -L "$w/?_task=mail&_action=compose" | grep -o '"compose_id":"[^"]*"' | cut -d'"' -f4)
  c -b "$j" -c "$j" "$w/?_task=mail" -d "_token=$rt&_task=mail&_action=send&_id=$id&_from=1&_is_html=0" \
    -d "_framed=1&editorSelector=plain" --data-urlencode "_to=$A" --data-urlencode "_subject=lab 5 $tok" \
    --data-urlencode "_message=Hello from the baseline." | grep -q sent_successfully
  uid=$(c -b "$j" -c "$j" -H "X-Roundcube-Request: $rt" "$w/?_task=mail&_action=list&_mbox=Sent&_remote=1" |
        grep -o 'add_message_row([0-9]*' | tail -n1 | tr -dc 0-9)
  c -b "$j" -c "$j" "$w/?_task=mail&_action=viewsource&_uid=$uid&_mbox=Sent"
  c -b "$j" -c "$j" "$w/?_task=logout&_token=$rt"
  n=$(pop_find pop3s://pop.lab.test:995)
  c -K <(cfg) pop3s://pop.lab.test:995/ -I -X STAT -: -K <(cfg) "pop3s://pop.lab.test:995/$n"
}

case $SC in
  mail-client) ports="port 587 or port 465 or port 995" ;;
  plain-smtp|telnet-smtp) ports="port 25" ;;
  webmail-tls) ports="port 443 or port 995" ;;
  pop3) ports="port 587 or port 110 or port 995" ;;
  imap) ports="port 587 or port 143 or port 993" ;;
esac
sudo -n tcpdump -i "$IFACE" -n -s 0 --immediate-mode -U -w - "host $MAILHOST and ($ports)" >"$R/cap.pcap" 2>"$R/err" &
dump=$!
until grep -q "listening on" "$R/err"; do sleep 0.01; done

{
case $SC in
  mail-client)
    send smtp://smtp.lab.test:587 --ssl-reqd --login-options AUTH=LOGIN
    send smtps://smtp.lab.test:465 --login-options AUTH=PLAIN
    n=$(pop_find pop3s://pop.lab.test:995)
    c -K <(cfg) pop3s://pop.lab.test:995/ -I -X STAT -: -K <(cfg) pop3s://pop.lab.test:995/ \
      -: -K <(cfg) pop3s://pop.lab.test:995/ -X UIDL -: -K <(cfg) "pop3s://pop.lab.test:995/$n" ;;
  plain-smtp)
    send smtp://smtp.lab.test:25 --login-options AUTH=LOGIN ;;
  webmail-tls)
    c --tlsv1.2 --tls-max 1.2 https://mail.lab.test/
    c --tlsv1.3 https://mail.lab.test/
    webmail ;;
  telnet-smtp)
    telnet_smtp ;;
  pop3)
    send smtp://smtp.lab.test:587 --ssl-reqd
    n=$(pop_find pop3://pop.lab.test:110 --ssl-reqd)
    c -K <(cfg) --ssl-reqd pop3://pop.lab.test:110/ -I -X STAT -: -K <(cfg) --ssl-reqd pop3://pop.lab.test:110/ \
      -: -K <(cfg) --ssl-reqd pop3://pop.lab.test:110/ -X UIDL -: -K <(cfg) --ssl-reqd "pop3://pop.lab.test:110/$n"
    n=$(pop_find pop3s://pop.lab.test:995)
    c -K <(cfg) pop3s://pop.lab.test:995/ -I -X STAT -: -K <(cfg) pop3s://pop.lab.test:995/ -X "TOP $n 5" ;;
  imap)
    send smtp://smtp.lab.test:587 --ssl-reqd
    n=$(imap_find imap://imap.lab.test:143 --ssl-reqd)
    c -K <(cfg) --ssl-reqd "imap://imap.lab.test:143/INBOX" -X "SEARCH ALL" \
      -: -K <(cfg) --ssl-reqd "imap://imap.lab.test:143/INBOX;MAILINDEX=$n"
    n=$(imap_find imaps://imap.lab.test:993)
    c -K <(cfg) "imaps://imap.lab.test:993/INBOX;MAILINDEX=$n" ;;
esac
} >/dev/null

# tcpdump flushes each packet (-U); SIGINT makes it write its counters and leave
kill -INT "$dump"; wait "$dump" || true; dump=
cat "$R/cap.pcap"
[ -s "$R/keys" ] && cat "$R/keys" >&2 || true
EOF

for sc in mail-client plain-smtp webmail-tls telnet-smtp pop3 imap; do
  # stdout: the pcap; stderr: the TLS key log (SSLKEYLOGFILE lines) or an error message
  { printf 'U=%q P=%q A=%q CA=%q SC=%q MAILHOST=%q IFACE=%q\n' "$user" "$pass" "$addr" "$ca" "$sc" "$mailhost" "$iface"
    printf '%s\n' "$REMOTE"; } | ssh "${ssh_opts[@]}" "$login@$host" bash -s >"$out/$sc.pcap" 2>"$out/$sc.keys"
  if [ -s "$out/$sc.keys" ] && grep -q '^CLIENT_\|^SERVER_\|^EXPORTER_\|^CLIENT_RANDOM' "$out/$sc.keys"; then
    editcap -F pcapng --inject-secrets "tls,$out/$sc.keys" "$out/$sc.pcap" "$out/$sc.pcapng"
  else
    editcap -F pcapng "$out/$sc.pcap" "$out/$sc.pcapng"
  fi
  rm -f "$out/$sc.pcap"
done
echo "$out"
