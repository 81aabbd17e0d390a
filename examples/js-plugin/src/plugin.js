// The plugin's logic, apart from the component's imports so that `node --test` can run it
// against a fake host (test/plugin.test.js); src/app.js wires it to the real one.
//
// Services connect with an API key as their bearer token, people with a username and
// password. The operator's settings list, per service, the SHA-256 of its key, and per
// user a bcrypt or argon2id hash, which the host verifies natively
// (`verify-password-hash`); each entry gives an account and permissions, with `{{name}}`
// for the entry's name. A key or a username it does not know is not this plugin's: it
// abstains, so a later plugin of the route may still decide.

import { sha256 } from '@noble/hashes/sha2';
import { bytesToHex } from '@noble/hashes/utils';

const HEX64 = /^[0-9a-f]{64}$/;

/** A config error: `init` answers it as the `err` of its result, naming the key. */
class ConfigError extends Error {}

/** A compiled permissions entry: its grant, `{{name}}` filled. */
function compile(name, raw, at) {
  if (typeof raw.account !== 'string' || raw.account === '') {
    throw new ConfigError(`${at}.account: required`);
  }
  const perms = raw.permissions ?? {};
  for (const key of Object.keys(perms)) {
    if (key !== 'pub' && key !== 'sub') {
      throw new ConfigError(`${at}.permissions: unknown field '${key}'`);
    }
  }
  const fill = (subjects) => (subjects ?? []).map((s) => s.replaceAll('{{name}}', name));
  const rules = (direction) => ({
    allow: fill(perms[direction]?.allow),
    deny: fill(perms[direction]?.deny),
  });
  return {
    account: raw.account,
    name,
    publish: rules('pub'),
    subscribe: rules('sub'),
    response: undefined,
    expiresAt: undefined,
    times: [],
    locale: undefined,
    allowedConnectionTypes: [],
    sourceNetworks: [],
    proxyRequired: false,
  };
}

/** The `authenticator` interface, calling `host` (the WIT `host` interface's functions). */
export function createAuthenticator(host) {
  let keys = new Map();
  let users = new Map();
  return {
    init(config) {
      try {
        const settings = JSON.parse(config).settings ?? {};
        keys = new Map();
        for (const [name, raw] of Object.entries(settings.keys ?? {})) {
          const at = `settings.keys.${name}`;
          const digest = String(raw.sha256 ?? '').toLowerCase();
          if (!HEX64.test(digest)) throw new ConfigError(`${at}.sha256: must be 64 hex digits`);
          if (keys.has(digest)) throw new ConfigError(`${at}.sha256: the same key twice`);
          keys.set(digest, compile(name, raw, at));
        }
        users = new Map();
        for (const [name, raw] of Object.entries(settings.users ?? {})) {
          const at = `settings.users.${name}`;
          if (typeof raw.password_hash !== 'string') {
            throw new ConfigError(`${at}.password_hash: required`);
          }
          users.set(name, { hash: raw.password_hash, grant: compile(name, raw, at) });
        }
        if (keys.size === 0 && users.size === 0) {
          throw new ConfigError('settings: no keys and no users configured');
        }
      } catch (e) {
        // A thrown string is the `err` of init's result: the host refuses the plugin
        // with it at load.
        throw e instanceof ConfigError ? e.message : `settings: ${e}`;
      }
      // It decides on the credential alone: the host hands it no server, client,
      // CONNECT or TLS part (contract 0.3.0), and copies less into every call.
      const reads = { server: false, client: false, connect: false, tls: false };
      return { credentials: ['bearer-token', 'user-password'], reads };
    },

    authenticate(request) {
      const credential = request.credential;
      if (credential.tag === 'bearer-token') {
        const digest = bytesToHex(sha256(new TextEncoder().encode(credential.val)));
        const grant = keys.get(digest);
        if (grant === undefined) {
          host.log('debug', 'not a configured API key'); // never the key itself
          return { tag: 'abstain' };
        }
        return { tag: 'allow', val: grant };
      }
      if (credential.tag === 'user-password') {
        const { username, password } = credential.val;
        const user = users.get(username);
        if (user === undefined) return { tag: 'abstain' };
        let matches;
        try {
          matches = host.verifyPasswordHash(password, user.hash);
        } catch (e) {
          // The host's `err`: jco hands it over as the error's payload.
          return { tag: 'deny', val: `user '${username}': ${e?.payload ?? e}` };
        }
        if (!matches) return { tag: 'deny', val: `wrong password for user '${username}'` };
        return { tag: 'allow', val: user.grant };
      }
      return { tag: 'abstain' };
    },
  };
}
