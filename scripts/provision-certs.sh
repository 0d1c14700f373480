#!/usr/bin/env bash
# provision-certs.sh - Outpost PKI: CA, broker, bridge, operator and one certificate per device.
# Idempotent: never overwrites a key; reissues a certificate only when it is missing, no longer
# chains to the CA, does not match its key, or (broker) lacks a requested name. The broker
# certificate keeps every name it already has. One run at a time per directory (a lock in
# DIR/.ca). With ca.key kept offline it signs nothing: it checks, and fails (3) if something
# needs signing. It never makes a new CA over a PKI whose CA files are gone, unless told to
# (--new-ca). See certs/README.md.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: scripts/provision-certs.sh --out DIR [--devices ID,ID,...] [--count N]
                                  [--broker-host NAME[,NAME...]] [--revoke ID[,ID...]]
                                  [--new-ca]

Creates or completes an Outpost PKI in DIR:
  DIR/ca.crt DIR/ca.key DIR/crl.pem           CA (ECDSA P-256) and its revocation list
  DIR/broker.crt DIR/broker.key               broker TLS server (ECDSA P-256),
                                              SAN: localhost, 127.0.0.1, ::1 and --broker-host
  DIR/bridge.crt DIR/bridge.key               CN=outpost-bridge (Ed25519; signs acks and tasks)
  DIR/operator.crt DIR/operator.key           CN=outpost-operator (Ed25519; read-only debugging)
  DIR/devices/ID.crt DIR/devices/ID.key       one Ed25519 identity per device, CN=ID

Options:
  --out DIR            output directory (required)
  --devices LIST       comma-separated device ids, each [A-Za-z0-9_-]{1,64}, not "outpost-*"
  --count N            also provision device-0001 .. device-N (zero-padded to 4 digits)
  --broker-host NAMES  extra DNS names or IP addresses for the broker certificate (repeatable;
                       IPv4 as four numbers 0-255 without leading zeros)
  --revoke IDS         revoke these devices (comma-separated, repeatable) and refresh
                       DIR/crl.pem once (copied to the broker, its plugin applies it within a
                       second; the bridge within its crl_reload)
  --new-ca             make a new CA although DIR/ca.key and DIR/ca.crt are both gone while
                       DIR still holds what the old CA issued (refused without it): every
                       certificate is then issued again, and every device, the broker and
                       the bridge need the new ca.crt and their new certificate
  -h, --help           this text

Keys are created 0600 and never overwritten. Running again with the same arguments changes
nothing. A key that cannot be read, a CA (DIR/ca.crt, DIR/ca.key) without its CA database
DIR/.ca, or certificates of a CA whose ca.key and ca.crt are both gone (see --new-ca) stop the
run before anything is changed. Runs on the same DIR wait for each other (a lock on
DIR/.ca/lock), at most OUTPOST_PKI_LOCK_WAIT seconds [300].

With DIR/ca.key absent (kept offline) and DIR/ca.crt present, nothing is signed or written (DIR
may be read-only, or lack .ca): a run that needs nothing signed exits 0, warning of the date
from which crl.pem needs renewing (30 days before its next update); one that needs the key (a
new device, key or broker name, a revocation, a CRL due for renewal) lists what and exits 3.
Exit status: 0 ok, 1 failure, 2 usage error, 3 ca.key is absent and needed.
EOF
}

die() { echo "provision-certs: $*" >&2; exit 1; }
usage_error() { echo "provision-certs: $*" >&2; echo "Try --help." >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cnf="$here/../certs/openssl.cnf"
[ -r "$cnf" ] || die "missing $cnf"
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"

out="" devices=() count=0 hosts=() revokes=() new_ca=0
while [ $# -gt 0 ]; do
	case "$1" in
	--out) [ $# -ge 2 ] || usage_error "--out needs a directory"; out=$2; shift 2 ;;
	--out=*) out=${1#*=}; shift ;;
	--devices) [ $# -ge 2 ] || usage_error "--devices needs a list"; IFS=, read -ra d <<<"$2"; devices+=("${d[@]}"); shift 2 ;;
	--devices=*) IFS=, read -ra d <<<"${1#*=}"; devices+=("${d[@]}"); shift ;;
	--count) [ $# -ge 2 ] || usage_error "--count needs a number"; count=$2; shift 2 ;;
	--count=*) count=${1#*=}; shift ;;
	--broker-host) [ $# -ge 2 ] || usage_error "--broker-host needs a name"; IFS=, read -ra h <<<"$2"; hosts+=("${h[@]}"); shift 2 ;;
	--broker-host=*) IFS=, read -ra h <<<"${1#*=}"; hosts+=("${h[@]}"); shift ;;
	--revoke) [ $# -ge 2 ] && [ -n "$2" ] || usage_error "--revoke needs an id"; IFS=, read -ra r <<<"$2"; revokes+=("${r[@]}"); shift 2 ;;
	--revoke=*) [ -n "${1#*=}" ] || usage_error "--revoke needs an id"; IFS=, read -ra r <<<"${1#*=}"; revokes+=("${r[@]}"); shift ;;
	--new-ca) new_ca=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage_error "unknown argument: $1" ;;
	esac
done
[ -n "$out" ] || usage_error "--out DIR is required"
[[ "$count" =~ ^[0-9]+$ ]] && [ "$((10#$count))" -le 100000 ] || usage_error "--count: not a number in 0..100000: $count"
count=$((10#$count)) # "010" is ten, not octal eight

valid_id() { [[ "$1" =~ ^[A-Za-z0-9_-]{1,64}$ ]] && [[ "$1" != outpost-* ]]; }
for id in "${devices[@]+"${devices[@]}"}"; do
	valid_id "$id" || usage_error "--devices: invalid device id '$id' (want [A-Za-z0-9_-]{1,64}, not outpost-*)"
done
for id in "${revokes[@]+"${revokes[@]}"}"; do
	valid_id "$id" || usage_error "--revoke: invalid device id '$id'"
done
lock_wait=${OUTPOST_PKI_LOCK_WAIT:-300}
[[ "$lock_wait" =~ ^[0-9]{1,6}$ ]] ||
	usage_error "OUTPOST_PKI_LOCK_WAIT: not a number of seconds: $lock_wait"
# ipv6_print ADDR: ADDR the way OpenSSL prints it in a certificate (8 groups, uppercase hex,
# no leading zeros, no "::"), so that requested and present names compare equal.
ipv6_print() {
	local a=$1 left right l=() r=() all=() g res="" i
	if [[ "$a" == *::* ]]; then left=${a%%::*} right=${a#*::}; else left=$a right=""; fi
	[[ "$right" != *::* ]] || return 1
	IFS=: read -ra l <<<"$left"
	IFS=: read -ra r <<<"$right"
	all=("${l[@]+"${l[@]}"}")
	if [[ "$a" == *::* ]]; then
		for ((i = ${#l[@]} + ${#r[@]}; i < 8; i++)); do all+=(0); done
	fi
	all+=("${r[@]+"${r[@]}"}")
	[ ${#all[@]} -eq 8 ] || return 1
	for g in "${all[@]}"; do
		[[ "$g" =~ ^[0-9A-Fa-f]{1,4}$ ]] || return 1
		printf -v g '%X' "$((16#$g))"
		res+="$g:"
	done
	echo "${res%:}"
}
# ipv4_ok ADDR: four decimal numbers 0-255 without leading zeros. OpenSSL would certify
# 010.0.0.1 as 10.0.0.1 (never matching the requested name, so reissued on every run) and
# refuses 300.1.1.1 only when signing.
ipv4_ok() {
	local n
	[[ "$1" =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] || return 1
	for n in "${BASH_REMATCH[@]:1}"; do
		[[ "$n" =~ ^(0|[1-9][0-9]{0,2})$ ]] && [ "$n" -le 255 ] || return 1
	done
}
for h in "${hosts[@]+"${hosts[@]}"}"; do
	[[ "$h" =~ ^[A-Za-z0-9.:-]{1,253}$ ]] || usage_error "--broker-host: invalid name '$h'"
	[[ "$h" != *:* ]] || ipv6_print "$h" >/dev/null || usage_error "--broker-host: invalid IPv6 address '$h'"
	# digits and dots only: an IPv4 address or nothing (no DNS top-level domain is numeric)
	[[ "$h" =~ [^0-9.] ]] || ipv4_ok "$h" ||
		usage_error "--broker-host: invalid IPv4 address '$h' (four numbers 0-255, no leading zeros)"
done
for ((i = 1; i <= count; i++)); do devices+=("$(printf 'device-%04d' "$i")"); done

command -v flock >/dev/null || die "flock not found (apt-get install util-linux)"
mkdir -p "$out" # parents with the caller's umask: the broker's user must reach the files
out=$(cd "$out" && pwd)
# ca.key kept offline (ca.crt there, ca.key not): nothing can be signed. The run goes through
# everything writing nothing, noting what would need the key (need), and fails if anything
# does. It reads the CA database if there is one, but needs none (it starts none), nor a
# writable directory: a copy without .ca/, or a read-only volume, is checked as it is.
offline=0 needs=()
[ -f "$out/ca.key" ] || [ ! -f "$out/ca.crt" ] || offline=1
need() { needs+=("$*"); }
# A CA without its database would start an empty one: the next CRL would forget every
# revocation and restart its numbering. (`cp DIR/* NEW/` leaves the hidden .ca/ behind.)
if [ -f "$out/ca.crt" ] && [ "$offline" = 0 ]; then
	for f in index.txt serial crlnumber; do
		[ -f "$out/.ca/$f" ] || die "$out/ca.crt exists but its CA database file $out/.ca/$f" \
			"does not; nothing was changed. Restore $out/.ca/ (copy a PKI with its hidden" \
			"files: cp -a OLD/. NEW/)"
	done
fi
umask 077
if [ "$offline" = 0 ]; then
	mkdir -p "$out/devices" "$out/.ca/issued"
	chmod 755 "$out" "$out/devices"
	chmod 700 "$out/.ca"
fi
# One run at a time: `openssl ca` does no locking (two runs could issue the same serial or lose
# each other's index lines). Held until the script exits, by every openssl it runs.
if [ "$offline" = 0 ] || [ -w "$out/.ca" ]; then
	exec 9>>"$out/.ca/lock"
	if ! flock -n 9; then
		echo "provision-certs: another run is using $out; waiting up to ${lock_wait}s" >&2
		flock -w "$lock_wait" 9 || die "another run still holds $out/.ca/lock after" \
			"${lock_wait}s (OUTPOST_PKI_LOCK_WAIT); nothing was changed"
	fi
fi
# A new CA where ca.key and ca.crt are both gone but what the old one issued is still here
# (they were lost, or not restored with the rest) would issue every certificate again: every
# deployed device would be refused by the broker, and refuse it, until it got the new ca.crt
# and certificate. Only on request. (Checked under the lock: a first run beside this one makes
# the CA before anything else, so what it issued is never seen without it.)
if [ ! -f "$out/ca.key" ] && [ ! -f "$out/ca.crt" ]; then
	found=()
	n=0
	[ ! -f "$out/.ca/index.txt" ] || n=$(grep -c . "$out/.ca/index.txt" || true)
	[ "$n" = 0 ] || found+=(".ca/index.txt ($n certificates issued)")
	for f in broker.crt bridge.crt operator.crt; do
		[ ! -f "$out/$f" ] || found+=("$f")
	done
	n=$(find "$out/devices" -maxdepth 1 -name '*.crt' | wc -l)
	[ "$n" = 0 ] || found+=("$n device certificates in devices/")
	if [ ${#found[@]} -gt 0 ] && [ "$new_ca" = 0 ]; then
		die "$out has neither ca.key nor ca.crt, but holds what its CA issued:" \
			"$(IFS=,; echo "${found[*]}" | sed 's/,/, /g'). A new CA would issue all of it" \
			"again, and every device, the broker and the bridge would need the new ca.crt" \
			"and their new certificate to connect. Restore ca.key and ca.crt from the backup" \
			"(or the offline copy); to make a new CA all the same, run again with --new-ca." \
			"Nothing was changed"
	fi
	[ ${#found[@]} -eq 0 ] ||
		echo "provision-certs: --new-ca: a new CA for $out; every certificate is issued again" >&2
elif [ "$new_ca" = 1 ]; then
	die "--new-ca: $out still has ca.key or ca.crt: --new-ca only makes a new CA where both" \
		"are gone (delete them first to replace the CA). Nothing was changed"
fi
export OUTPOST_PKI="$out" OUTPOST_SAN="DNS:localhost"
if [ "$offline" = 0 ]; then
	[ -f "$out/.ca/index.txt" ] || : >"$out/.ca/index.txt"
	[ -f "$out/.ca/serial" ] || openssl rand -hex 16 >"$out/.ca/serial"
	[ -f "$out/.ca/crlnumber" ] || echo 1000 >"$out/.ca/crlnumber"
fi
# The CA database's records (none in a PKI kept offline without it).
index() { [ ! -f "$out/.ca/index.txt" ] || cat "$out/.ca/index.txt"; }

ossl() {
	local log
	if ! log=$(openssl "$@" 2>&1); then
		echo "$log" >&2
		die "openssl $1 failed"
	fi
}

# new_key PATH ed25519|p256: create a private key unless one exists (never overwrite; nor with
# ca.key offline: issue then notes the missing key).
new_key() {
	[ -f "$1" ] && return 0
	[ "$offline" = 0 ] || return 0
	if [ "$2" = ed25519 ]; then
		ossl genpkey -algorithm ed25519 -out "$1.tmp"
	else
		ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve -out "$1.tmp"
	fi
	chmod 600 "$1.tmp"
	mv "$1.tmp" "$1"
	created=$((created + 1))
}

serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }
status_of() { index | awk -F'\t' -v s="$1" 'toupper($4) == toupper(s) { print $1 }' | tail -n1; }
cert_ok() { [ -f "$1" ] && openssl verify -CAfile "$out/ca.crt" "$1" >/dev/null 2>&1; }
# key_unreadable KEY: say why KEY is no usable private key and stop.
key_unreadable() {
	die "$1: openssl cannot read this private key (unreadable or corrupt); nothing was" \
		"changed. Fix its permissions or restore it; delete it (and its certificate) to" \
		"re-provision with a new key"
}
# pub_of KEY: its public key; a key that cannot be read stops the run (it is never taken for
# a lost key: its still valid certificate would be revoked as superseded).
pub_of() {
	local p
	p=$(openssl pkey -in "$1" -pubout 2>/dev/null) && [ -n "$p" ] || key_unreadable "$1"
	echo "$p"
}
# key_matches KEY CRT: the certificate is for this key (a lost key is replaced by a new one);
# false only when both public keys were read and differ.
key_matches() {
	local a b
	a=$(pub_of "$1") || exit 1
	b=$(openssl x509 -in "$2" -noout -pubkey 2>/dev/null) && [ -n "$b" ] ||
		die "$2: cannot read its public key"
	[ "$a" = "$b" ]
}

# key_revoked KEY: the CA once revoked a certificate for this key (looked up by the revoked
# serials of its index in .ca/issued, where `openssl ca` keeps a copy of everything it signed),
# even if that certificate no longer chains (a re-created CA) or has expired.
key_revoked() {
	local pub s f
	pub=$(pub_of "$1") || exit 1
	while IFS= read -r s; do
		f="$out/.ca/issued/${s^^}.pem"
		[ -f "$f" ] && [ "$(openssl x509 -in "$f" -noout -pubkey 2>/dev/null)" = "$pub" ] && return 0
	done < <(index | awk -F'\t' '$1 == "R" { print $4 }')
	return 1
}

# issue NAME KEY CRT CN client|server: sign a certificate for KEY unless CRT is valid already.
# A certificate replaced because its key changed (the old key lost, or deleted to rotate) is
# revoked as superseded: whoever still holds the old key must not keep a valid identity.
issue() {
	local name=$1 key=$2 crt=$3 cn=$4 ext=$5
	if [ ! -f "$key" ]; then # (only with ca.key offline: new_key made none)
		need "a new key and certificate for $name (it has no key)"
		return 0
	fi
	if cert_ok "$crt"; then
		case "$(status_of "$(serial_of "$crt")")" in
		R) echo "provision-certs: $name is revoked; not reissued (delete its files to re-provision)" >&2; return 0 ;;
		esac
		if key_matches "$key" "$crt"; then
			[ "$ext" != server_cert ] || san_covers "$crt" && return 0
			[ "$offline" = 0 ] || { need "a new certificate for $name, with a name it lacks"; return 0; }
		else
			if [ "$offline" = 1 ]; then
				need "a certificate for $name's new key, and its old certificate revoked"
				return 0
			fi
			ossl ca -config "$cnf" -revoke "$crt" -crl_reason superseded
			echo "provision-certs: $name has a new key; its old certificate is revoked (superseded)" >&2
			crl_dirty=1
		fi
	fi
	if key_revoked "$key"; then
		echo "provision-certs: $name: a certificate for its key was revoked; not reissued (delete its files to re-provision with a new key)" >&2
		return 0
	fi
	if [ "$offline" = 1 ]; then
		if [ -f "$crt" ]; then
			need "a new certificate for $name (its certificate does not verify against ca.crt: expired, or another CA's)"
		else
			need "a certificate for $name (it has none)"
		fi
		return 0
	fi
	ossl req -new -config "$cnf" -key "$key" -subj "/CN=$cn" -out "$crt.csr"
	ossl ca -batch -config "$cnf" -extensions "$ext" -notext -in "$crt.csr" -out "$crt.tmp"
	rm -f "$crt.csr"
	chmod 644 "$crt.tmp"
	mv "$crt.tmp" "$crt"
	issued=$((issued + 1))
}

is_ip() { [[ "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || "$1" == *:* ]]; }
san_names=(localhost 127.0.0.1 ::1 "${hosts[@]+"${hosts[@]}"}")
# cert_sans CRT: its subjectAltName entries, one per line, as OpenSSL prints them.
cert_sans() { openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr ',' '\n' | sed 's/^ *//'; }
# Broker names in printed form (for comparison) and config form (for openssl.cnf): first the
# requested ones, then those the current certificate carries, so that a reissue (for a new
# name) never drops a name given to an earlier run.
san_printed=() san_cfg=()
add_san() { # PRINTED CFG
	local p
	for p in "${san_printed[@]+"${san_printed[@]}"}"; do [ "${p^^}" != "${1^^}" ] || return 0; done
	san_printed+=("$1")
	san_cfg+=("$2")
}
for n in "${san_names[@]}"; do
	if [[ "$n" == *:* ]]; then
		p=$(ipv6_print "$n")
		add_san "IP Address:$p" "IP:$p"
	elif is_ip "$n"; then
		add_san "IP Address:$n" "IP:$n"
	else
		add_san "DNS:$n" "DNS:$n"
	fi
done
san_requested=${#san_printed[@]}
san_covers() {
	local have i
	have=$(cert_sans "$1")
	for ((i = 0; i < san_requested; i++)); do
		grep -qixF "${san_printed[$i]}" <<<"$have" || return 1
	done
}

created=0 issued=0 crl_dirty=0

# Every existing key this run reads, checked before anything is changed.
keys=("$out/broker.key" "$out/bridge.key" "$out/operator.key")
for id in "${devices[@]+"${devices[@]}"}"; do keys+=("$out/devices/$id.key"); done
for k in "${keys[@]}"; do
	[ ! -e "$k" ] || openssl pkey -in "$k" -noout 2>/dev/null || key_unreadable "$k"
done
# Every device to revoke has a certificate (or is provisioned by this run), before any is revoked.
for id in "${revokes[@]+"${revokes[@]}"}"; do
	[ -f "$out/devices/$id.crt" ] || [[ " ${devices[*]+"${devices[*]}"} " == *" $id "* ]] ||
		die "--revoke: no certificate for device '$id' in $out/devices; nothing was revoked"
done

# CA (unless its key is offline)
new_key "$out/ca.key" p256
if [ ! -f "$out/ca.crt" ]; then
	ossl req -new -x509 -config "$cnf" -extensions v3_ca -key "$out/ca.key" -days 7300 -subj "/CN=Outpost CA" -out "$out/ca.crt.tmp"
	chmod 644 "$out/ca.crt.tmp"
	mv "$out/ca.crt.tmp" "$out/ca.crt"
	issued=$((issued + 1))
	crl_dirty=1
fi

# Broker, bridge, operator
if cert_ok "$out/broker.crt"; then
	while IFS= read -r e; do
		case "$e" in
		DNS:*) add_san "$e" "$e" ;;
		"IP Address:"*) add_san "$e" "IP:${e#IP Address:}" ;;
		esac
	done < <(cert_sans "$out/broker.crt")
fi
san=$(IFS=,; echo "${san_cfg[*]}")
export OUTPOST_SAN=$san
new_key "$out/broker.key" p256
issue broker "$out/broker.key" "$out/broker.crt" outpost-broker server_cert
new_key "$out/bridge.key" ed25519
issue bridge "$out/bridge.key" "$out/bridge.crt" outpost-bridge client_cert
new_key "$out/operator.key" ed25519
issue operator "$out/operator.key" "$out/operator.crt" outpost-operator client_cert

# Devices
for id in "${devices[@]+"${devices[@]}"}"; do
	new_key "$out/devices/$id.key" ed25519
	issue "device $id" "$out/devices/$id.key" "$out/devices/$id.crt" "$id" client_cert
done

# Revocation: every device asked for, then one CRL.
for id in "${revokes[@]+"${revokes[@]}"}"; do
	[ -f "$out/devices/$id.crt" ] || [ "$offline" = 1 ] || die "--revoke: device '$id' has no certificate" \
		"(its issue was refused above); nothing was revoked"
done
for id in "${revokes[@]+"${revokes[@]}"}"; do
	crt="$out/devices/$id.crt"
	if [ ! -f "$crt" ]; then # (only with ca.key offline: its issue was noted above)
		need "revoke device $id"
	elif [ "$(status_of "$(serial_of "$crt")")" != R ]; then
		if [ "$offline" = 1 ]; then
			need "revoke device $id"
			continue
		fi
		ossl ca -config "$cnf" -revoke "$crt" -crl_reason keyCompromise
		echo "provision-certs: revoked device $id"
		crl_dirty=1
	else
		echo "provision-certs: device $id was already revoked"
		# (a new CRL all the same, unless the key is offline: then the one there must list it)
		[ "$offline" = 1 ] || crl_dirty=1
	fi
done

# The CRL is refreshed when missing, after a revocation, within 30 days of its nextUpdate, or
# when it does not list exactly the database's revocations (a run stopped between the two).
revoked_serials() {
	index | awk -F'\t' '$1 == "R" { print toupper($4) }' | LC_ALL=C sort
}
listed_serials() {
	openssl crl -in "$out/crl.pem" -noout -text | awk '/Serial Number:/ { print toupper($3) }' |
		LC_ALL=C sort
}
utc() { date -u -d "@$1" '+%Y-%m-%d %H:%M UTC'; }
crl_why="" next_s=""
if [ ! -f "$out/crl.pem" ] || ! openssl crl -in "$out/crl.pem" -noout -CAfile "$out/ca.crt" >/dev/null 2>&1 ||
	! openssl x509 -in "$out/ca.crt" -noout >/dev/null 2>&1; then
	crl_dirty=1 crl_why="it is missing, or not signed by ca.crt"
else
	next=$(openssl crl -in "$out/crl.pem" -noout -nextupdate | cut -d= -f2)
	next_s=$(date -d "$next" +%s)
	if [ "$next_s" -le "$(date +%s)" ]; then
		crl_dirty=1 crl_why="it expired $(utc "$next_s")"
	elif [ "$next_s" -le "$(($(date +%s) + 30 * 86400))" ]; then
		crl_dirty=1 crl_why="it expires $(utc "$next_s"), within 30 days"
	fi
	# (offline without the CA database, the CRL is the only record there is)
	[ ! -f "$out/.ca/index.txt" ] || [ "$(revoked_serials)" = "$(listed_serials)" ] ||
		crl_dirty=1 crl_why="it does not list every revocation of .ca/index.txt"
fi
if [ "$crl_dirty" = 1 ] && [ "$offline" = 1 ]; then
	need "renew crl.pem: $crl_why"
elif [ "$crl_dirty" = 1 ]; then
	ossl ca -config "$cnf" -gencrl -crlexts crl_ext -out "$out/crl.pem.tmp"
	chmod 644 "$out/crl.pem.tmp"
	mv "$out/crl.pem.tmp" "$out/crl.pem"
fi

if [ ${#needs[@]} -gt 0 ]; then
	{
		echo "provision-certs: $out/ca.key is absent (kept offline?), and this run needs it for:"
		printf '  %s\n' "${needs[@]:0:10}"
		[ ${#needs[@]} -le 10 ] || echo "  ... and $((${#needs[@]} - 10)) more"
		echo "Put ca.key back in $out and run again. Nothing was changed."
	} >&2
	exit 3
fi
if [ "$offline" = 1 ]; then
	echo "provision-certs: WARNING: $out/ca.key is absent (kept offline?): nothing needed" \
		"signing, nothing was changed. crl.pem's next update is $(utc "$next_s"); from" \
		"$(utc $((next_s - 30 * 86400))) on, put ca.key back and run this again to renew it" \
		"(past its next update the bridge refuses every Birth and will not start)" >&2
else
	rm -f "$out"/.ca/*.old
fi
echo "provision-certs: $out: $created new keys, $issued new certificates, ${#devices[@]} devices requested"
