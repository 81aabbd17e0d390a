"""A nats-callout authentication plugin in Python (componentize-py): services connect
with an API key as their bearer token, people with a username and password.

The operator's settings list, per service, the SHA-256 of its key, and per user a
bcrypt or argon2id hash, which the host verifies natively (`verify-password-hash`);
each entry gives an account and permissions, with `{{name}}` for the entry's name:

    plugins:
      - name: python-apikey
        path: plugins/python_apikey.wasm
        settings:
          keys:
            billing:
              sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
              account: SERVICES
              permissions: { pub: { allow: ["billing.{{name}}.>"] } }
          users:
            alice:
              password_hash: "$2b$10$..."
              account: PEOPLE
              permissions: { sub: { allow: ["reports.{{name}}"] } }

A key or a username it does not know is not this plugin's: it abstains, so a later
plugin of the route may still decide. The same plugin in Rust is
examples/apikey-plugin, in JavaScript examples/js-plugin.
"""

import hashlib
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

HEX = set("0123456789abcdef")

# What init compiled. Module state, not instance attributes: componentize-py creates an
# `Authenticator` for every call into the component, and the module lives as long as the
# instance does (one per pooled instance in the host).
KEYS: dict = {}
USERS: dict = {}


class Entry:
    """A compiled permissions entry: its grant, with `{{name}}` filled."""

    def __init__(self, name: str, raw: dict, at: str):
        if not isinstance(raw.get("account"), str) or not raw["account"]:
            raise Err(f"{at}.account: required")
        perms = raw.get("permissions") or {}
        unknown = set(perms) - {"pub", "sub"}
        if unknown:
            raise Err(f"{at}.permissions: unknown field {sorted(unknown)[0]!r}")

        def rules(direction: str) -> types.Permission:
            rule = perms.get(direction) or {}
            fill = lambda subjects: [s.replace("{{name}}", name) for s in subjects]
            return types.Permission(
                allow=fill(rule.get("allow", [])), deny=fill(rule.get("deny", []))
            )

        self.grant = types.Grant(
            account=raw["account"],
            name=name,
            publish=rules("pub"),
            subscribe=rules("sub"),
            response=None,
            expires_at=None,
            times=[],
            locale=None,
            allowed_connection_types=[],
            source_networks=[],
            proxy_required=False,
        )


class Authenticator(exports.Authenticator):
    def init(self, config: str) -> types.PluginInfo:
        settings = json.loads(config).get("settings") or {}
        keys, users = {}, {}
        for name, raw in (settings.get("keys") or {}).items():
            at = f"settings.keys.{name}"
            digest = str(raw.get("sha256", "")).lower()
            if len(digest) != 64 or not set(digest) <= HEX:
                raise Err(f"{at}.sha256: must be 64 hex digits")
            if digest in keys:
                raise Err(f"{at}.sha256: the same key twice")
            keys[digest] = Entry(name, raw, at)
        for name, raw in (settings.get("users") or {}).items():
            at = f"settings.users.{name}"
            if not isinstance(raw.get("password_hash"), str):
                raise Err(f"{at}.password_hash: required")
            users[name] = (raw["password_hash"], Entry(name, raw, at))
        if not keys and not users:
            raise Err("settings: no keys and no users configured")
        KEYS.clear()
        KEYS.update(keys)
        USERS.clear()
        USERS.update(users)
        return types.PluginInfo(
            credentials=[types.CredentialKind.BEARER_TOKEN, types.CredentialKind.USER_PASSWORD],
            # It decides on the credential alone: the host hands it no server, client,
            # CONNECT or TLS part (contract 0.3.0), and copies less into every call.
            reads=types.RequestParts(0),
        )

    def authenticate(self, request: types.AuthRequest) -> types.Decision:
        credential = request.credential
        if isinstance(credential, types.Credential_BearerToken):
            digest = hashlib.sha256(credential.value.encode()).hexdigest()
            entry = KEYS.get(digest)
            if entry is None:
                host.log(types.LogLevel.DEBUG, "not a configured API key")  # never the key
                return types.Decision_Abstain()
            return types.Decision_Allow(entry.grant)
        if isinstance(credential, types.Credential_UserPassword):
            user = credential.value
            known = USERS.get(user.username)
            if known is None:
                return types.Decision_Abstain()
            password_hash, entry = known
            try:
                matches = host.verify_password_hash(user.password, password_hash)
            except Err as e:
                return types.Decision_Deny(f"user {user.username!r}: {e.value}")
            if not matches:
                return types.Decision_Deny(f"wrong password for user {user.username!r}")
            return types.Decision_Allow(entry.grant)
        return types.Decision_Abstain()
