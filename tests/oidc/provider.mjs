// Test-only OpenID provider for the nats-callout end-to-end tests.
//
// Wraps `oidc-provider` (panva) with a client_credentials-only setup that
// issues JWT access tokens (typ "at+jwt") for a configured audience.
// See README.md in this directory for the config schema and protocol.
//
// Usage:
//   node provider.mjs --config <file.json> [--port <port>]
//   OIDC_CONFIG=<file.json> OIDC_PORT=<port> node provider.mjs
//
// Stdout carries exactly one line, `READY <issuer>`, once listening.
// Everything else (provider notices, errors) goes to stderr.

import * as http from 'node:http';
import { readFileSync } from 'node:fs';
import {
  randomBytes, generateKeyPairSync, createPrivateKey, createPublicKey, sign as cryptoSign,
} from 'node:crypto';

// oidc-provider prints NOTICEs via console.info (stdout). Keep stdout clean
// for the READY protocol line by routing all console output to stderr.
for (const m of ['log', 'info', 'debug']) {
  // eslint-disable-next-line no-console
  console[m] = (...args) => console.error(...args);
}

function die(msg) {
  process.stderr.write(`oidc fixture: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const take = (name) => {
      if (a === `--${name}`) {
        if (i + 1 >= argv.length) die(`--${name} needs a value`);
        out[name] = argv[++i];
        return true;
      }
      if (a.startsWith(`--${name}=`)) {
        out[name] = a.slice(name.length + 3);
        return true;
      }
      return false;
    };
    if (take('config') || take('port')) continue;
    if (a === '-h' || a === '--help') {
      process.stderr.write('usage: node provider.mjs --config <file.json> [--port <port>]\n');
      process.exit(0);
    }
    die(`unknown argument: ${a}`);
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const configPath = args.config ?? process.env.OIDC_CONFIG;
if (!configPath) die('no config: pass --config <file> or set OIDC_CONFIG');

let cfg;
try {
  cfg = JSON.parse(readFileSync(configPath, 'utf8'));
} catch (e) {
  die(`cannot read config ${configPath}: ${e.message}`);
}

const portRaw = args.port ?? process.env.OIDC_PORT ?? process.env.PORT ?? cfg.port ?? 0;
const port = Number(portRaw);
if (!Number.isInteger(port) || port < 0 || port > 65535) die(`invalid port: ${portRaw}`);

// ---- keys ------------------------------------------------------------------

// `generate: [{kid, alg}]` instead of `keys`: fresh keys made here (RS256: RSA-2048,
// ES256: P-256), so a test can restart the provider with new keys to rotate them.
if (!cfg.keys && Array.isArray(cfg.generate)) {
  cfg.keys = {
    keys: cfg.generate.map(({ kid, alg }) => {
      const pair = alg === 'ES256'
        ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
        : generateKeyPairSync('rsa', { modulusLength: 2048 });
      return { ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
    }),
  };
}

// ---- validate config -------------------------------------------------------

if (!cfg.keys || !Array.isArray(cfg.keys.keys) || cfg.keys.keys.length === 0) {
  die('config.keys must be a JWKS object {"keys": [...]} with at least one private key');
}
const SUPPORTED_ALGS = new Set(['RS256', 'ES256']);
for (const [i, k] of cfg.keys.keys.entries()) {
  if (typeof k.kid !== 'string' || !k.kid) die(`keys.keys[${i}] needs a "kid"`);
  if (!SUPPORTED_ALGS.has(k.alg)) die(`keys.keys[${i}] ("${k.kid}") needs "alg" RS256 or ES256`);
  if (!k.d) die(`keys.keys[${i}] ("${k.kid}") must be a private key (missing "d")`);
}
const keyAlgs = new Set(cfg.keys.keys.map((k) => k.alg));
const defaultAlg = cfg.keys.keys[0].alg;

if (typeof cfg.audience !== 'string' || !cfg.audience) die('config.audience must be a non-empty string');
const ttl = cfg.ttl ?? 300;
if (!Number.isSafeInteger(ttl) || ttl <= 0) die('config.ttl must be a positive integer (seconds)');

function isAbsoluteUri(v) {
  try {
    new URL(v); // eslint-disable-line no-new
    return true;
  } catch {
    return false;
  }
}

// Resource indicator (RFC 8707) identifier that maps to `audience`. It has to
// be an absolute URI; requests without a `resource` parameter default to it.
const defaultResourceId = cfg.resource
  ?? (isAbsoluteUri(cfg.audience) ? cfg.audience : `urn:nats-callout:resource:${encodeURIComponent(cfg.audience)}`);
if (!isAbsoluteUri(defaultResourceId)) die('config.resource must be an absolute URI');

if (!Array.isArray(cfg.clients)) die('config.clients must be an array');
const clients = new Map();
const extraScopes = new Set();
for (const [i, c] of cfg.clients.entries()) {
  if (typeof c.client_id !== 'string' || !c.client_id) die(`clients[${i}].client_id missing`);
  if (typeof c.client_secret !== 'string' || !c.client_secret) die(`clients[${i}].client_secret missing`);
  if (clients.has(c.client_id)) die(`duplicate client_id ${c.client_id}`);
  const alg = c.alg ?? defaultAlg;
  if (!SUPPORTED_ALGS.has(alg)) die(`clients[${i}].alg must be RS256 or ES256`);
  if (!keyAlgs.has(alg)) die(`clients[${i}] wants alg ${alg} but no key with that alg is configured`);
  if (c.kid !== undefined && !cfg.keys.keys.some((k) => k.kid === c.kid && k.alg === alg)) {
    die(`clients[${i}].kid ${c.kid} does not name a configured ${alg} key`);
  }
  const scope = c.scope === undefined ? '' : String(c.scope).trim();
  scope.split(' ').filter(Boolean).forEach((s) => extraScopes.add(s));
  if (c.claims !== undefined && (typeof c.claims !== 'object' || c.claims === null || Array.isArray(c.claims))) {
    die(`clients[${i}].claims must be an object`);
  }
  if (c.format !== undefined && c.format !== 'jwt' && c.format !== 'opaque') {
    die(`clients[${i}].format must be "jwt" or "opaque"`);
  }
  clients.set(c.client_id, {
    alg,
    kid: c.kid,
    scope,
    claims: c.claims ?? {},
    audience: c.audience,
    override: c.override_claims,
    format: c.format ?? 'jwt',
  });
}

// ---- server ----------------------------------------------------------------

const stats = {
  jwks_fetches: 0, discovery_fetches: 0, token_requests: 0, introspection_requests: 0,
};
const JWKS_PATH = '/jwks';
const DISCOVERY_PATH = '/.well-known/openid-configuration';
let providerCallback = null;

function sendJson(res, code, body) {
  const data = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(data);
}

// Test-only: sign any header/payload with a configured key (or a throwaway attacker
// key whose public JWK is embedded in the header), without any validation of what is
// signed: hostile-token tests need tokens that a real provider would never issue.
const privateKeys = new Map(cfg.keys.keys.map((k) => [k.kid, { alg: k.alg, key: createPrivateKey({ key: k, format: 'jwk' }) }]));
const b64url = (buf) => Buffer.from(buf).toString('base64url');
function signCompact(kid, extraHeader, payload) {
  let alg;
  let key;
  const header = { ...extraHeader };
  if (kid === 'attacker') {
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    alg = 'ES256';
    key = pair.privateKey;
    if (header.embed_jwk) header.jwk = pair.publicKey.export({ format: 'jwk' });
    delete header.embed_jwk;
  } else {
    const k = privateKeys.get(kid);
    if (!k) return null;
    ({ alg, key } = k);
  }
  const protectedHeader = { alg, kid, ...header };
  const input = `${b64url(JSON.stringify(protectedHeader))}.${b64url(JSON.stringify(payload))}`;
  const sig = cryptoSign('sha256', Buffer.from(input), alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key);
  return `${input}.${b64url(sig)}`;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const server = http.createServer(async (req, res) => {
  const path = (req.url ?? '/').split('?')[0];
  if (path === '/__sign' && req.method === 'POST') {
    try {
      const { kid, header, payload } = JSON.parse(await readBody(req));
      const token = signCompact(kid, header ?? {}, payload ?? {});
      if (!token) return sendJson(res, 404, { error: `no key ${kid}` });
      res.writeHead(200, { 'content-type': 'text/plain' });
      return res.end(token);
    } catch (e) {
      return sendJson(res, 400, { error: String(e?.message ?? e) });
    }
  }
  if (path.startsWith('/__pem/')) {
    const k = privateKeys.get(decodeURIComponent(path.slice('/__pem/'.length)));
    if (!k) return sendJson(res, 404, { error: 'no such key' });
    res.writeHead(200, { 'content-type': 'application/x-pem-file' });
    return res.end(createPublicKey(k.key).export({ type: 'spki', format: 'pem' }));
  }
  if (path === '/__stats') {
    if (req.method === 'GET') return sendJson(res, 200, stats);
    return sendJson(res, 405, { error: 'method not allowed' });
  }
  if (path === '/__stats/reset') {
    if (req.method !== 'POST') return sendJson(res, 405, { error: 'method not allowed' });
    for (const k of Object.keys(stats)) stats[k] = 0;
    return sendJson(res, 200, stats);
  }
  if (path === JWKS_PATH) stats.jwks_fetches += 1;
  else if (path === DISCOVERY_PATH) stats.discovery_fetches += 1;
  else if (path === '/token') stats.token_requests += 1;
  else if (path === '/token/introspection') stats.introspection_requests += 1;
  if (!providerCallback) return sendJson(res, 503, { error: 'starting' });
  return providerCallback(req, res);
});
server.keepAliveTimeout = 5000;

server.on('error', (e) => die(`listen on 127.0.0.1:${port} failed: ${e.message}`));
await new Promise((resolve) => { server.listen(port, '127.0.0.1', resolve); });
const actualPort = server.address().port;
const issuer = `http://127.0.0.1:${actualPort}`;

const { default: Provider } = await import('oidc-provider');

const provider = new Provider(issuer, {
  jwks: cfg.keys,
  clients: [...cfg.clients].map((c) => {
    const meta = clients.get(c.client_id);
    return {
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      // client_secret_post is accepted as well (oidc-provider treats the two interchangeably).
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: meta.alg,
      ...(meta.scope ? { scope: meta.scope } : {}),
    };
  }),
  scopes: ['openid', 'offline_access', ...extraScopes],
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // RFC 7662 at /token/introspection, for opaque tokens: any confidential client of
    // the fixture may introspect any token.
    introspection: { enabled: true, allowedPolicy: async () => true },
    // RFC 7009 at /token/revocation: a client revokes its own tokens.
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => defaultResourceId,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator, client) => {
        const meta = clients.get(client.clientId);
        // The default resource maps to the configured audience; any other
        // (absolute URI) resource indicator becomes the `aud` verbatim, which
        // is handy for wrong-audience tests.
        let audience = resourceIndicator === defaultResourceId ? cfg.audience : resourceIndicator;
        if (meta.audience !== undefined && resourceIndicator === defaultResourceId) {
          audience = meta.audience;
        }
        return {
          scope: meta.scope,
          audience,
          accessTokenTTL: ttl,
          accessTokenFormat: meta.format,
          jwt: { sign: { alg: meta.alg, ...(meta.kid ? { kid: meta.kid } : {}) } },
        };
      },
    },
  },
  extraTokenClaims: async (_ctx, token) => {
    const meta = clients.get(token.clientId);
    if (!meta) return undefined;
    return { ...meta.claims, azp: token.clientId };
  },
  formats: {
    customizers: {
      // Optional per-client `override_claims` are applied last and may replace
      // standard claims (iss, exp, ...) for negative tests.
      jwt: async (_ctx, token, jwt) => {
        const meta = clients.get(token.clientId);
        if (meta?.override) Object.assign(jwt.payload, meta.override);
      },
    },
  },
  ttl: { ClientCredentials: ttl },
  // No end-user flows are exercised; the defaults only log notices.
  findAccount: async () => undefined,
});

provider.on('server_error', (_ctx, err) => process.stderr.write(`oidc fixture server_error: ${err?.stack ?? err}\n`));
provider.on('grant.error', (_ctx, err) => process.stderr.write(`oidc fixture grant.error: ${err?.message}${err?.error_description ? ` (${err.error_description})` : ''}\n`));

providerCallback = provider.callback();

// ---- lifecycle -------------------------------------------------------------

let shuttingDown = false;
function shutdown(reason) {
  if (shuttingDown) return;
  shuttingDown = true;
  process.stderr.write(`oidc fixture: shutting down (${reason})\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGHUP', () => shutdown('SIGHUP'));

// Opt-in: exit when stdin reaches EOF (spawn with a piped stdin and simply
// drop the pipe). Off by default, since stdin is often /dev/null.
if (process.env.OIDC_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

// Always: exit when the parent process goes away (we get re-parented).
const parentPid = process.ppid;
setInterval(() => {
  if (process.ppid !== parentPid) shutdown('parent exited');
}, 500).unref();

process.stdout.write(`READY ${issuer}\n`);
