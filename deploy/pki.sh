#!/usr/bin/env bash
# pki.sh makes the certificates of the cluster port (mutual TLS between the server and
# the host daemons) with openssl: a CA, a server certificate for the names and IPs the
# hosts dial, and a client certificate per host whose Common Name is its host.id.
#
#   deploy/pki.sh DIR SERVER_NAMES HOST_ID...
#   deploy/pki.sh /etc/paddock/pki paddock.example.com,10.0.0.5 host-a host-b
#
# Writes into DIR (created 0700): ca.pem, ca-key.pem (keep it offline once done),
# server.pem, server-key.pem, and host-<id>.pem, host-<id>-key.pem for each host. An
# existing CA and existing certificates are kept, so running it again with a new host id
# adds that host; PKI_RENEW=1 reissues the leaf certificates (renewal: they are valid for
# 365 days; the CA for 10 years). Keys are EC P-256.
#
# Server (paddock.yaml):  server.cluster_tls_cert: DIR/server.pem
#                         server.cluster_tls_key:  DIR/server-key.pem
#                         server.cluster_tls_ca:   DIR/ca.pem
# Host <id>:              host.id: <id>
#                         host.tls_cert: host-<id>.pem, host.tls_key: host-<id>-key.pem,
#                         host.tls_ca: ca.pem
set -euo pipefail

die() { printf 'pki.sh: error: %s\n' "$*" >&2; exit 1; }
[ "$#" -ge 3 ] || die "usage: $0 DIR SERVER_NAMES(comma-separated DNS names and IPs) HOST_ID..."
command -v openssl >/dev/null || die "openssl is missing: apt-get install openssl"
dir="$1" names="$2"
shift 2
umask 077
mkdir -p "$dir"

if [ ! -s "$dir/ca-key.pem" ]; then
	openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca-key.pem"
	openssl req -x509 -new -key "$dir/ca-key.pem" -sha256 -days 3650 -subj "/O=paddock/CN=paddock cluster CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
		-out "$dir/ca.pem"
	echo "pki.sh: new CA $dir/ca.pem"
fi

san=""
IFS=, read -r -a list <<<"$names"
for n in "${list[@]}"; do
	[ -n "$n" ] || continue
	if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
[ -n "$san" ] || die "SERVER_NAMES is empty: give the DNS names and IPs hosts use to reach the cluster port"

# leaf NAME CN EXTS: a key and a certificate signed by the CA. An existing one is kept
# unless PKI_RENEW=1 (renewal, or a changed SERVER_NAMES).
leaf() {
	local name="$1" cn="$2" exts="$3" ext
	if [ -s "$dir/$name.pem" ] && [ "${PKI_RENEW:-0}" != 1 ]; then
		echo "pki.sh: keeping $dir/$name.pem (PKI_RENEW=1 reissues it)"
		return
	fi
	ext="$(mktemp)"
	printf '%s\n' "$exts" >"$ext"
	openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$name-key.pem"
	openssl req -new -key "$dir/$name-key.pem" -subj "/O=paddock/CN=$cn" -out "$dir/$name.csr"
	openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
		-days 365 -sha256 -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
	rm -f "$dir/$name.csr" "$ext"
	echo "pki.sh: $dir/$name.pem (CN=$cn)"
}

leaf server paddock-server "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=${san%,}"

for id in "$@"; do
	[[ "$id" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "host id \"$id\": use letters, digits, '.', '_' and '-'"
	leaf "host-$id" "$id" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
done
