"""Native tests of app.py: the bindings componentize-py generates are plain Python; the
host's functions are replaced by a fake host, as the Rust SDK's TestHost does.

    componentize-py -d ../../guest-sdk/wit/v0.3.0 -w plugin bindings build/bindings
    PYTHONPATH=build/bindings python3 -m unittest
"""

import hashlib
import json
import unittest

from componentize_py_types import Err
from wit_world.imports import host, types

import app

LOGS = []


def fake_verify(password: str, password_hash: str) -> bool:
    # The fake's hashes are "fake$<password>"; anything else is a hash it cannot check.
    if not password_hash.startswith("fake$"):
        raise Err("not a bcrypt or argon2id hash")
    return password_hash == "fake$" + password


host.verify_password_hash = fake_verify
host.log = lambda level, message: LOGS.append((level, message))


def config(settings: dict) -> str:
    return json.dumps({"permissions": None, "settings": settings, "host": {}})


SETTINGS = {
    "keys": {
        "billing": {
            "sha256": hashlib.sha256(b"billing-key").hexdigest(),
            "account": "SERVICES",
            "permissions": {"pub": {"allow": ["billing.{{name}}.>"]}},
        }
    },
    "users": {
        "alice": {
            "password_hash": "fake$s3cret",
            "account": "PEOPLE",
            "permissions": {"sub": {"allow": ["reports.{{name}}"]}},
        }
    },
}


def request(credential) -> types.AuthRequest:
    # As the host hands it over: only the parts the plugin says it reads (none).
    return types.AuthRequest(
        route="services",
        credential=credential,
        server=None,
        user_nkey="UUSER",
        client=None,
        connect=None,
        tls=None,
    )


class AuthenticatorTest(unittest.TestCase):
    def setUp(self):
        self.plugin = app.Authenticator()
        info = self.plugin.init(config(SETTINGS))
        self.assertEqual(
            info.credentials,
            [types.CredentialKind.BEARER_TOKEN, types.CredentialKind.USER_PASSWORD],
        )
        self.assertEqual(info.reads, types.RequestParts(0))
        LOGS.clear()

    def decide(self, credential):
        return self.plugin.authenticate(request(credential))

    def test_a_known_key_gets_its_entry(self):
        d = self.decide(types.Credential_BearerToken("billing-key"))
        self.assertIsInstance(d, types.Decision_Allow)
        self.assertEqual(d.value.account, "SERVICES")
        self.assertEqual(d.value.name, "billing")
        self.assertEqual(d.value.publish.allow, ["billing.billing.>"])
        self.assertEqual(d.value.subscribe.allow, [])

    def test_an_unknown_key_abstains_and_is_not_logged(self):
        d = self.decide(types.Credential_BearerToken("guessed-key"))
        self.assertIsInstance(d, types.Decision_Abstain)
        self.assertTrue(LOGS)
        self.assertFalse(any("guessed-key" in m for _, m in LOGS))

    def test_passwords_are_checked_by_the_host(self):
        right = types.UserPassword("alice", "s3cret")
        d = self.decide(types.Credential_UserPassword(right))
        self.assertIsInstance(d, types.Decision_Allow)
        self.assertEqual(d.value.subscribe.allow, ["reports.alice"])
        wrong = types.UserPassword("alice", "guess")
        d = self.decide(types.Credential_UserPassword(wrong))
        self.assertEqual(d, types.Decision_Deny("wrong password for user 'alice'"))
        stranger = types.UserPassword("mallory", "x")
        self.assertIsInstance(self.decide(types.Credential_UserPassword(stranger)), types.Decision_Abstain)
        self.assertIsInstance(self.decide(types.Credential_None_()), types.Decision_Abstain)

    def test_config_errors_name_the_key(self):
        for settings, expected in [
            ({"keys": {"x": {"sha256": "abc", "account": "A"}}}, "settings.keys.x.sha256"),
            ({"users": {"u": {"account": "A"}}}, "settings.users.u.password_hash"),
            ({"users": {"u": {"password_hash": "h"}}}, "settings.users.u.account"),
            ({}, "settings: no keys"),
        ]:
            with self.assertRaises(Err) as caught:
                app.Authenticator().init(config(settings))
            self.assertTrue(caught.exception.value.startswith(expected), caught.exception.value)


if __name__ == "__main__":
    unittest.main()
