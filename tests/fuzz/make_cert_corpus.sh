#!/usr/bin/env bash
# make_cert_corpus.sh - writes the seed corpus of fuzz_cert: DER certificates shaped like the
# ones wire_cert_parse meets (a device certificate, and the ones it must refuse: two CNs, no
# CN, a CN that is not an id, an ECDSA key, a CN in a multi-valued RDN). Keys are throwaway.
# Run by hand from the repository root: tests/fuzz/make_cert_corpus.sh
set -euo pipefail
out=tests/fuzz/corpus/fuzz_cert
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
openssl genpkey -algorithm ed25519 -out "$tmp/ed.key"
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ec.key"
cert() { # name key subject [extra openssl req options...]
	local name=$1 key=$2 subj=$3
	shift 3
	openssl req -new -x509 -key "$tmp/$key" -subj "$subj" -days 3650 -outform DER \
		-out "$out/$name" "$@"
}
cert device ed.key "/O=Outpost/CN=dev-a"
cert two_cn ed.key "/CN=dev-a/CN=dev-b"
cert no_cn ed.key "/O=Outpost/OU=fleet"
cert bad_cn ed.key "/CN=dev a!"
cert ecdsa ec.key "/CN=dev-a"
cert multi_rdn ed.key "/O=Outpost+CN=dev-a" -multivalue-rdn
cert ca ed.key "/CN=Outpost CA" -addext basicConstraints=critical,CA:TRUE
