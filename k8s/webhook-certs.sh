#!/usr/bin/env bash
# The injector's TLS without cert-manager: a CA and a serving certificate made with openssl, put
# into the Secret the injector mounts (quiver/quiver-injector-tls), and the CA into the webhook
# configuration's caBundle. Run it after `kubectl apply -k k8s/base`, and again before the
# certificate expires (it keeps the CA found in --out, so the caBundle stays valid while the
# injector picks up the new certificate: the kubelet updates the Secret's files within a
# minute or so, and the injector serves them from the next connection on).
#
#   k8s/webhook-certs.sh [--out DIR] [--days N] [--namespace NS] [--no-apply]
#
#   --out DIR     where ca.crt, ca.key, tls.crt, tls.key are written (default: a new temp dir);
#                 keep ca.key somewhere safe, it signs certificates the API server trusts
#   --days N      validity of the serving certificate (default 365; the CA gets 10 years)
#   --namespace   the injector's namespace (default quiver)
#   --no-apply    only make the files; print what would be applied
set -euo pipefail

namespace=quiver
service=quiver-injector
secret=quiver-injector-tls
webhook=quiver-sidecar-injector
days=365
out=""
apply=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    --no-apply) apply=0; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v openssl >/dev/null || { echo "openssl is needed (Debian: apt-get install openssl)" >&2; exit 1; }
if [ "$apply" = 1 ]; then
  command -v kubectl >/dev/null || { echo "kubectl is needed (or pass --no-apply)" >&2; exit 1; }
fi
dir="${out:-$(mktemp -d)}"
mkdir -p "$dir"
cd "$dir"
umask 077

if [ -s ca.crt ] && [ -s ca.key ]; then
  echo "==> reusing the CA in $dir"
else
  echo "==> making a CA in $dir"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
    -subj "/CN=quiver-injector-ca" 2>/dev/null
fi

host="$service.$namespace.svc"
echo "==> making a certificate for $host"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out tls.key 2>/dev/null
openssl req -new -key tls.key -out tls.csr -subj "/CN=$host" 2>/dev/null
cat > tls.ext <<EXT
subjectAltName=DNS:$service,DNS:$service.$namespace,DNS:$host,DNS:$host.cluster.local
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature
EXT
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt \
  -days "$days" -extfile tls.ext 2>/dev/null
openssl verify -CAfile ca.crt tls.crt >/dev/null

ca_bundle="$(base64 < ca.crt | tr -d '\n')"
patch="[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$ca_bundle\"}]"
if [ "$apply" = 0 ]; then
  echo "==> files in $dir; to apply:"
  echo "kubectl -n $namespace create secret tls $secret --cert=$dir/tls.crt --key=$dir/tls.key"
  echo "kubectl patch mutatingwebhookconfiguration $webhook --type=json -p '<caBundle = base64 of $dir/ca.crt>'"
  exit 0
fi
echo "==> Secret $namespace/$secret"
kubectl -n "$namespace" create secret tls "$secret" --cert=tls.crt --key=tls.key \
  --dry-run=client -o yaml | kubectl apply -f -
echo "==> caBundle of MutatingWebhookConfiguration $webhook"
kubectl patch mutatingwebhookconfiguration "$webhook" --type=json -p "$patch"
echo "==> done; the CA is $dir/ca.crt (its key $dir/ca.key)"
