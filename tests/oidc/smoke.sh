#!/usr/bin/env bash
# Smoke test for the oidc-provider test fixture.
#   bash tests/oidc/smoke.sh        (needs `npm ci --prefix tests/oidc` first)
# Starts the provider with fresh RSA + EC keys, fetches discovery + JWKS,
# obtains RS256 and ES256 access tokens (client_secret_basic and _post),
# decodes and verifies them, then restarts on the same port with rotated keys.
# Always stops the provider process it started.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TMP="$(mktemp -d)"
PID=""

cleanup() {
  if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() { echo "SMOKE FAIL: $*" >&2; [[ -f "$TMP/stderr" ]] && sed 's/^/  provider: /' "$TMP/stderr" >&2; exit 1; }

# Write a config with freshly generated keys. $1 = key id suffix.
write_config() {
  node --input-type=module - "$TMP/config.json" "$1" <<'EOF'
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
const [, , out, gen] = process.argv;
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
const cfg = {
  keys: { keys: [
    { ...rsa, kid: `rsa-${gen}`, alg: 'RS256', use: 'sig' },
    { ...ec, kid: `ec-${gen}`, alg: 'ES256', use: 'sig' },
  ] },
  audience: 'nats-callout',
  ttl: 300,
  clients: [
    { client_id: 'dev-rsa', client_secret: 's3cret-rsa', alg: 'RS256', claims: { device_id: 'device-rsa-001' } },
    { client_id: 'dev-ec', client_secret: 's3cret-ec', alg: 'ES256', scope: 'nats', claims: { device_id: 'device-ec-002', tenant: 'acme' } },
  ],
};
writeFileSync(out, JSON.stringify(cfg, null, 2));
EOF
}

# Start the provider; $1 = port (0 = ephemeral). Sets PID and ISSUER.
start() {
  : > "$TMP/stdout"; : > "$TMP/stderr"
  node "$HERE/provider.mjs" --config "$TMP/config.json" --port "$1" >"$TMP/stdout" 2>"$TMP/stderr" &
  PID=$!
  for _ in $(seq 1 100); do
    if grep -q '^READY ' "$TMP/stdout"; then break; fi
    kill -0 "$PID" 2>/dev/null || fail "provider exited before READY"
    sleep 0.1
  done
  grep -q '^READY ' "$TMP/stdout" || fail "no READY line within 10s"
  [[ "$(wc -l < "$TMP/stdout")" -eq 1 ]] || fail "stdout has more than the READY line"
  ISSUER="$(sed -n 's/^READY //p' "$TMP/stdout")"
  echo "started pid=$PID: $(cat "$TMP/stdout")"
}

stop() {
  kill -TERM "$PID"
  wait "$PID" || fail "provider exit status $? on SIGTERM"
  PID=""
}

# Decode + verify a token against the served JWKS. $1 = token, $2 = expected alg, $3 = expected sub.
check_token() {
  node --input-type=module - "$1" "$2" "$3" "$ISSUER" "$TMP/jwks.json" <<'EOF'
import { createPublicKey, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
const [, , token, alg, sub, issuer, jwksFile] = process.argv;
const [h, p, s] = token.split('.');
const dec = (x) => JSON.parse(Buffer.from(x, 'base64url').toString());
const header = dec(h); const payload = dec(p);
console.log('  header :', JSON.stringify(header));
console.log('  payload:', JSON.stringify(payload));
const jwk = JSON.parse(readFileSync(jwksFile, 'utf8')).keys.find((k) => k.kid === header.kid);
const ok = jwk && verify('sha256', Buffer.from(`${h}.${p}`), {
  key: createPublicKey({ key: jwk, format: 'jwk' }), dsaEncoding: 'ieee-p1363',
}, Buffer.from(s, 'base64url'));
const now = Math.floor(Date.now() / 1000);
const checks = {
  'typ=at+jwt': header.typ === 'at+jwt',
  [`alg=${alg}`]: header.alg === alg,
  'kid in jwks': !!jwk,
  'signature valid': !!ok,
  iss: payload.iss === issuer,
  'aud=nats-callout': payload.aud === 'nats-callout',
  [`sub=${sub}`]: payload.sub === sub && payload.client_id === sub,
  device_id: typeof payload.device_id === 'string',
  'exp-iat=300': payload.exp - payload.iat === 300 && Math.abs(payload.iat - now) < 60,
  jti: typeof payload.jti === 'string' && payload.jti.length > 0,
};
const bad = Object.entries(checks).filter(([, v]) => !v).map(([k]) => k);
console.log(`  checks : ${bad.length ? 'FAILED ' + bad.join(', ') : 'ok (' + Object.keys(checks).join(', ') + ')'}`);
process.exit(bad.length ? 1 : 0);
EOF
}

token() { # $1 = client_id, $2 = secret, $3 = basic|post, extra curl args...
  local id="$1" secret="$2" mode="$3"; shift 3
  if [[ "$mode" == basic ]]; then
    curl -sS -u "$id:$secret" -d grant_type=client_credentials "$@" "$ISSUER/token"
  else
    curl -sS -d grant_type=client_credentials -d "client_id=$id" -d "client_secret=$secret" "$@" "$ISSUER/token"
  fi
}

json_field() { node -e 'let d="";process.stdin.on("data",c=>d+=c).on("end",()=>{const v=JSON.parse(d)[process.argv[1]];process.stdout.write(v===undefined?"":String(v))})' "$1"; }

write_config 1
start 0
PORT="${ISSUER##*:}"

echo "== discovery"
curl -sfS "$ISSUER/.well-known/openid-configuration" > "$TMP/disc.json" || fail "discovery"
node -e 'const d=require(process.argv[1]);console.log(JSON.stringify({issuer:d.issuer,jwks_uri:d.jwks_uri,token_endpoint:d.token_endpoint,grant_types_supported:d.grant_types_supported,token_endpoint_auth_methods_supported:d.token_endpoint_auth_methods_supported}))' "$TMP/disc.json"
[[ "$(json_field issuer < "$TMP/disc.json")" == "$ISSUER" ]] || fail "issuer mismatch"
JWKS_URI="$(json_field jwks_uri < "$TMP/disc.json")"

echo "== jwks ($JWKS_URI)"
curl -sfS "$JWKS_URI" > "$TMP/jwks.json" || fail "jwks"
node -e 'const j=require(process.argv[1]);for(const k of j.keys){console.log("  ",JSON.stringify({kid:k.kid,kty:k.kty,alg:k.alg,use:k.use,crv:k.crv}));if(k.d)process.exit(1)}' "$TMP/jwks.json" || fail "jwks leaks private key material"

echo "== RS256 client (client_secret_basic)"
RESP="$(token dev-rsa s3cret-rsa basic)"; echo "  response: ${RESP:0:120}..."
check_token "$(json_field access_token <<<"$RESP")" RS256 dev-rsa || fail "RS256 token"

echo "== ES256 client (client_secret_post, scope=nats)"
RESP="$(token dev-ec s3cret-ec post -d scope=nats)"; echo "  response: ${RESP:0:120}..."
check_token "$(json_field access_token <<<"$RESP")" ES256 dev-ec || fail "ES256 token"

echo "== wrong secret is rejected"
CODE="$(curl -s -o "$TMP/err.json" -w '%{http_code}' -u dev-rsa:nope -d grant_type=client_credentials "$ISSUER/token")"
echo "  HTTP $CODE $(cat "$TMP/err.json")"
[[ "$CODE" == 401 ]] || fail "expected 401"

echo "== /__stats"
STATS="$(curl -sfS "$ISSUER/__stats")"; echo "  $STATS"
[[ "$(json_field jwks_fetches <<<"$STATS")" == 1 ]] || fail "expected jwks_fetches=1"

echo "== SIGTERM, restart on port $PORT with rotated keys"
stop
write_config 2
start "$PORT"
[[ "$ISSUER" == "http://127.0.0.1:$PORT" ]] || fail "issuer changed across restart"
curl -sfS "$JWKS_URI" > "$TMP/jwks.json" || fail "jwks after restart"
KIDS="$(node -e 'console.log(require(process.argv[1]).keys.map(k=>k.kid).join(","))' "$TMP/jwks.json")"
echo "  kids now: $KIDS"
[[ "$KIDS" == "rsa-2,ec-2" ]] || fail "rotated kids not served"
RESP="$(token dev-rsa s3cret-rsa basic)"
check_token "$(json_field access_token <<<"$RESP")" RS256 dev-rsa || fail "RS256 token after rotation"
STATS="$(curl -sfS "$ISSUER/__stats")"; echo "  stats after restart: $STATS"
stop

echo "SMOKE OK"
