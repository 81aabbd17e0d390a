// Native tests of src/plugin.js (`npm test`): the plugin against a fake host, as the Rust
// SDK's TestHost and the Python example's fake do.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import { createAuthenticator } from '../src/plugin.js';

const logs = [];
const fakeHost = {
  log: (level, message) => logs.push([level, message]),
  // The fake's hashes are "fake$<password>"; anything else is a hash it cannot check,
  // answered as the host's `err` is: an error with a payload.
  verifyPasswordHash(password, hash) {
    if (!hash.startsWith('fake$')) throw Object.assign(new Error('err'), { payload: 'not a bcrypt or argon2id hash' });
    return hash === `fake$${password}`;
  },
};

const settings = {
  keys: {
    billing: {
      sha256: createHash('sha256').update('billing-key').digest('hex'),
      account: 'SERVICES',
      permissions: { pub: { allow: ['billing.{{name}}.>'] } },
    },
  },
  users: {
    alice: { password_hash: 'fake$s3cret', account: 'PEOPLE', permissions: { sub: { allow: ['reports.{{name}}'] } } },
    bob: { password_hash: 'plain', account: 'PEOPLE', permissions: {} },
  },
};

function plugin() {
  const p = createAuthenticator(fakeHost);
  const info = p.init(JSON.stringify({ permissions: null, settings, host: {} }));
  assert.deepEqual(info.credentials, ['bearer-token', 'user-password']);
  assert.deepEqual(info.reads, { server: false, client: false, connect: false, tls: false });
  return p;
}

const request = (credential) => ({ route: 'services', credential });

test('a known key gets its entry', () => {
  const d = plugin().authenticate(request({ tag: 'bearer-token', val: 'billing-key' }));
  assert.equal(d.tag, 'allow');
  assert.equal(d.val.account, 'SERVICES');
  assert.equal(d.val.name, 'billing');
  assert.deepEqual(d.val.publish, { allow: ['billing.billing.>'], deny: [] });
  assert.deepEqual(d.val.subscribe, { allow: [], deny: [] });
});

test('an unknown key abstains and is not logged', () => {
  logs.length = 0;
  const d = plugin().authenticate(request({ tag: 'bearer-token', val: 'guessed-key' }));
  assert.equal(d.tag, 'abstain');
  assert.ok(logs.length > 0);
  assert.ok(!logs.some(([, m]) => m.includes('guessed-key')));
});

test('passwords are checked by the host', () => {
  const p = plugin();
  const login = (username, password) => p.authenticate(request({ tag: 'user-password', val: { username, password } }));
  const ok = login('alice', 's3cret');
  assert.equal(ok.tag, 'allow');
  assert.deepEqual(ok.val.subscribe.allow, ['reports.alice']);
  assert.deepEqual(login('alice', 'guess'), { tag: 'deny', val: "wrong password for user 'alice'" });
  assert.deepEqual(login('bob', 'x'), { tag: 'deny', val: "user 'bob': not a bcrypt or argon2id hash" });
  assert.equal(login('mallory', 'x').tag, 'abstain');
  assert.equal(p.authenticate(request({ tag: 'none' })).tag, 'abstain');
});

test('config errors name the key', () => {
  for (const [bad, expected] of [
    [{ keys: { x: { sha256: 'abc', account: 'A' } } }, 'settings.keys.x.sha256'],
    [{ users: { u: { account: 'A' } } }, 'settings.users.u.password_hash'],
    [{ users: { u: { password_hash: 'h' } } }, 'settings.users.u.account'],
    [{}, 'settings: no keys'],
  ]) {
    assert.throws(
      () => createAuthenticator(fakeHost).init(JSON.stringify({ settings: bad })),
      (e) => typeof e === 'string' && e.startsWith(expected),
    );
  }
});
