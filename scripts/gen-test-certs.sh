#!/usr/bin/env bash
# Generate a throwaway test PKI in OUTDIR: a CA and a LEAF server certificate
# signed by it. Never commit the output; tests generate it at run time.
#
# Usage: scripts/gen-test-certs.sh OUTDIR
# Env:   FERRY_CERT_DAYS     validity in days (default 30)
#        FERRY_CERT_FORCE=1  regenerate even if the files exist
#
# Files written:
#   ca.pem              CA certificate (the trust anchor clients load)
#   ca.key              CA private key
#   server.pem          leaf certificate (CA:FALSE, serverAuth,
#                       SAN DNS:localhost, IP:127.0.0.1)
#   server.key          leaf private key (PKCS#8 PEM, unencrypted)
#   server-chain.pem    leaf + CA certificate
#   server-combined.pem leaf private key + leaf certificate (one-file servers)
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUT=$1
DAYS=${FERRY_CERT_DAYS:-30}

mkdir -p "$OUT"
# Keep an existing set, so several servers started in one DIR share one CA.
if [[ ${FERRY_CERT_FORCE:-0} != 1 && -s $OUT/ca.pem && -s $OUT/server.pem && -s $OUT/server.key ]]; then
    exit 0
fi

# Keys must not be readable by others, even throwaway ones.
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One openssl config: the CA is CA:TRUE; the leaf is explicitly CA:FALSE
# (rustls/webpki refuse a CA certificate used as an end-entity certificate).
cat >"$work/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no

[dn]

[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[leaf_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF

# RSA 2048: vsftpd's Debian default TLS 1.2 cipher list is ECDHE-RSA only.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/ca.key" 2>/dev/null
# A unique CA name per run, so certificates from different runs never look alike.
openssl req -x509 -new -key "$work/ca.key" -sha256 -days "$DAYS" \
    -subj "/CN=ferry test CA $(date +%s)-$$" \
    -config "$work/openssl.cnf" -extensions ca_ext -out "$work/ca.pem"

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/server.key" 2>/dev/null
openssl req -new -key "$work/server.key" -subj "/CN=localhost" \
    -config "$work/openssl.cnf" -out "$work/server.csr"
# Random positive 120-bit serial: a fresh certificate never reuses an old serial.
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -set_serial "0x$(openssl rand -hex 15)" -sha256 -days "$DAYS" \
    -extfile "$work/openssl.cnf" -extensions leaf_ext -out "$work/server.pem" 2>/dev/null

cat "$work/server.pem" "$work/ca.pem" >"$work/server-chain.pem"
cat "$work/server.key" "$work/server.pem" >"$work/server-combined.pem"

# Certificates are public; keys stay 0600.
chmod 644 "$work/ca.pem" "$work/server.pem" "$work/server-chain.pem"
chmod 600 "$work/ca.key" "$work/server.key" "$work/server-combined.pem"
for f in ca.pem ca.key server.pem server.key server-chain.pem server-combined.pem; do
    mv -f "$work/$f" "$OUT/$f"
done

# Fail loudly if the chain does not verify for the names tests connect to.
openssl verify -CAfile "$OUT/ca.pem" -verify_hostname localhost "$OUT/server.pem" >/dev/null
openssl verify -CAfile "$OUT/ca.pem" -verify_ip 127.0.0.1 "$OUT/server.pem" >/dev/null
