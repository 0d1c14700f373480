#!/usr/bin/env bash
# provision/entrypoint.sh - the compose stack's one-shot PKI service: runs
# scripts/provision-certs.sh on the CA volume, then copies to each role's volume only the files
# that role needs, so that no long-running container ever sees the CA key or another role's key.
# Also generates the PostgreSQL password (profile "postgres"). See docs/DOCKER.md.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: docker/provision/entrypoint.sh [provision-certs.sh options ...]

Creates or completes the PKI in OUTPOST_PKI_DIR with scripts/provision-certs.sh
(--count OUTPOST_DEVICES --broker-host broker,broker-internal,OUTPOST_BROKER_HOSTS, plus any
option given here, e.g. --revoke device-0003 or --devices pump-7), then exports:
  EXPORT/broker/   ca.crt crl.pem broker.crt broker.key           (mounted by the broker)
  EXPORT/bridge/   ca.crt crl.pem bridge.crt bridge.key pgpass    (mounted by the bridge)
  EXPORT/devices/  ca.crt bridge.crt devices/ID.crt devices/ID.key
                   for every device whose certificate is valid and not revoked
  EXPORT/postgres/ password                                       (profile "postgres")
Files are replaced atomically and only when their content changed; keys are 0600. A device
that is revoked (or whose files were deleted) disappears from EXPORT/devices.
With ca.crt present but ca.key removed (kept offline), provision-certs.sh signs nothing: it
warns of the date from which crl.pem needs renewing, or says what needs the key (more devices,
a broker name, a CRL due for renewal) and exits 3. Without options the existing PKI is then
exported all the same, so the stack starts; with options (--revoke ID, --devices ID) the run
fails until the key is put back. With ca.key and ca.crt both gone, provision-certs.sh makes no
new CA over the certificates of the old one unless given --new-ca. Runs at the same time
(an `up` beside a `run --rm provision --revoke ID`) take turns, on provision-certs.sh's lock
OUTPOST_PKI_DIR/.ca/lock, for the PKI and then for the export.

Environment (defaults in brackets):
  OUTPOST_PKI_DIR        the CA and every key: mount it in this service only [/var/lib/outpost/pki]
  OUTPOST_EXPORT_DIR     where the role directories are [/export]
  OUTPOST_DEVICES        device identities device-0001..device-N to have [10]
  OUTPOST_BROKER_HOSTS   extra broker certificate names, comma-separated (the public DNS name
                         field devices use) []
  OUTPOST_PG_USER, OUTPOST_PG_DB, OUTPOST_PG_HOST   for the bridge's pgpass [outpost, outpost, postgres]
  OUTPOST_PKI_LOCK_WAIT  seconds to wait for another run's lock before failing [300]
Exit status: that of provision-certs.sh (0 ok, 1 failure, 2 usage error, 3 ca.key offline and
needed by an option given here), or 1 if an export fails.
USAGE
}

die() { echo "provision: $*" >&2; exit 1; }

case "${1:-}" in
-h | --help) usage; exit 0 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The image mirrors the repository under /usr/share/outpost, so this path holds in both.
provision=$here/../../scripts/provision-certs.sh
[ -x "$provision" ] || die "missing $provision"
command -v openssl >/dev/null || die "openssl not found"

pki=${OUTPOST_PKI_DIR:-/var/lib/outpost/pki}
export_dir=${OUTPOST_EXPORT_DIR:-/export}
count=${OUTPOST_DEVICES:-10}
hosts=broker,broker-internal${OUTPOST_BROKER_HOSTS:+,$OUTPOST_BROKER_HOSTS}
pg_user=${OUTPOST_PG_USER:-outpost} pg_db=${OUTPOST_PG_DB:-outpost} pg_host=${OUTPOST_PG_HOST:-postgres}
[[ "$count" =~ ^[0-9]+$ ]] || { echo "provision: OUTPOST_DEVICES: not a number: $count" >&2; exit 2; }
count=$((10#$count)) # "08" is eight
wait_s=${OUTPOST_PKI_LOCK_WAIT:-300}
[[ "$wait_s" =~ ^[0-9]{1,6}$ ]] ||
	{ echo "provision: OUTPOST_PKI_LOCK_WAIT: not a number: $wait_s" >&2; exit 2; }
for v in pg_user pg_db pg_host; do
	[[ "${!v}" =~ ^[A-Za-z0-9_.-]{1,63}$ ]] || { echo "provision: $v: invalid: ${!v}" >&2; exit 2; }
done

rc=0
"$provision" --out "$pki" --count "$count" --broker-host "$hosts" "$@" || rc=$?
# 3: the CA key is taken offline (docs/DOCKER.md, "For production") and the PKI needs it (more
# devices, a CRL due for renewal: provision-certs.sh said what). Nothing could be issued,
# revoked or renewed, but what exists is still exported, so the stack starts; an option given
# here asked for what cannot be done, and fails.
if [ "$rc" -eq 3 ] && [ $# -eq 0 ]; then
	echo "provision: WARNING: exporting the existing PKI as it is (ca.key is offline)" >&2
elif [ "$rc" -ne 0 ]; then
	exit "$rc"
fi

umask 077
# One export at a time: two would share put's temporary files. The lock provision-certs.sh
# held (and released when it ended).
if [ -d "$pki/.ca" ] && [ -w "$pki/.ca" ]; then
	exec 9>>"$pki/.ca/lock"
	flock -w "$wait_s" 9 || die "another run still holds $pki/.ca/lock after ${wait_s}s"
fi
# put SRC DEST MODE: copy SRC to DEST (same directory tmp + rename, so readers never see half
# a file) unless DEST already has that content and mode.
put() {
	local src=$1 dest=$2 mode=$3
	if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
		return 0
	fi
	local tmp
	tmp="$(dirname "$dest")/.$(basename "$dest").tmp"
	cp "$src" "$tmp"
	chmod "$mode" "$tmp"
	mv -f "$tmp" "$dest"
	changed=$((changed + 1))
}
# put_text TEXT DEST MODE
put_text() {
	local t
	t=$(mktemp "$(dirname "$2")/.text.XXXXXX")
	printf '%s\n' "$1" >"$t"
	put "$t" "$2" "$3"
	rm -f "$t"
}
# role DIR: an export directory, readable by the role's (same) uid only from its own mount.
role() {
	mkdir -p "$export_dir/$1"
	chmod 755 "$export_dir/$1"
}

changed=0
role broker
for f in ca.crt crl.pem broker.crt; do put "$pki/$f" "$export_dir/broker/$f" 644; done
put "$pki/broker.key" "$export_dir/broker/broker.key" 600

role bridge
for f in ca.crt crl.pem bridge.crt; do put "$pki/$f" "$export_dir/bridge/$f" 644; done
put "$pki/bridge.key" "$export_dir/bridge/bridge.key" 600

# Devices: only identities the broker and the bridge would accept (chains to the CA, within its
# validity, not in the CRL). Everything else is removed from the device volume.
role devices
mkdir -p "$export_dir/devices/devices"
chmod 755 "$export_dir/devices/devices"
for f in ca.crt bridge.crt; do put "$pki/$f" "$export_dir/devices/$f" 644; done
declare -A keep=() revoked=()
# Revoked serials from the CRL itself, not `openssl verify -crl_check`: that fails every
# certificate once the CRL is past its next update (possible with ca.key offline), and the
# device volume would be emptied.
while read -r serial; do
	revoked[${serial^^}]=1
done < <(openssl crl -in "$pki/crl.pem" -noout -text | awk '/Serial Number:/ { print $3 }')
exported=0
for crt in "$pki"/devices/*.crt; do
	[ -e "$crt" ] || continue
	id=$(basename "$crt" .crt)
	[ -f "$pki/devices/$id.key" ] || continue
	serial=$(openssl x509 -in "$crt" -noout -serial 2>/dev/null | cut -d= -f2)
	if [ -z "$serial" ] || [ -n "${revoked[${serial^^}]:-}" ] ||
		! openssl verify -CAfile "$pki/ca.crt" "$crt" >/dev/null 2>&1; then
		echo "provision: $id: not exported (revoked or invalid certificate)"
		continue
	fi
	put "$crt" "$export_dir/devices/devices/$id.crt" 644
	put "$pki/devices/$id.key" "$export_dir/devices/devices/$id.key" 600
	keep[$id]=1
	exported=$((exported + 1))
done
removed=0
for f in "$export_dir"/devices/devices/*; do
	[ -e "$f" ] || continue
	id=$(basename "$f")
	id=${id%.crt}
	id=${id%.key}
	if [ -z "${keep[$id]:-}" ]; then
		rm -f "$f"
		removed=$((removed + 1))
	fi
done

# PostgreSQL: a random password made here, never a default one. The server reads it with
# POSTGRES_PASSWORD_FILE when its data directory is first initialised; the bridge and outpostctl
# read it through libpq's PGPASSFILE.
role postgres
if [ ! -s "$pki/postgres.password" ]; then
	openssl rand -hex 24 >"$pki/postgres.password.tmp"
	chmod 600 "$pki/postgres.password.tmp"
	mv "$pki/postgres.password.tmp" "$pki/postgres.password"
fi
password=$(cat "$pki/postgres.password")
[[ "$password" =~ ^[0-9a-f]{48}$ ]] || die "$pki/postgres.password: not 48 hex digits"
put "$pki/postgres.password" "$export_dir/postgres/password" 600
put_text "$pg_host:5432:$pg_db:$pg_user:$password" "$export_dir/bridge/pgpass" 600

echo "provision: exported $exported device identities, $changed files updated, $removed removed"
