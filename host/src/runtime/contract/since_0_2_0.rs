//! What the contract versions from 0.2.0 on share in shape, written once: the bindings'
//! options, the host imports but `verify-jwt` (which 0.3.0 changed, so each version
//! passes its own), the credential kinds, the request's lowering and the decision's
//! lifting. Each version's
//! bindings are Rust types of their own (wasmtime's `with` maps whole interfaces only,
//! and `types` changed between them), so the one body is expanded in each version's
//! module over that version's `wit` types, with a `part` function saying how a request
//! part the plugin may leave unread is passed (0.2.0: always; 0.3.0: an `option`).

macro_rules! since_0_2_0 {
    ($wit:literal, $verify_jwt:item) => {
        wasmtime::component::bindgen!({
            path: $wit,
            world: "plugin",
            // As 0.1.0: calls on fibers, `verify-jwt` the one import that may wait.
            imports: {
                "nats-callout:plugin/host.verify-jwt": async,
                // Runs on the blocking pool; the plugin is suspended meanwhile.
                "nats-callout:plugin/host.verify-password-hash": async,
            },
            exports: { default: async },
            // The request is lowered straight from the host's strings.
            ownership: Borrowing { duplicate_if_necessary: false },
        });

        use self::nats_callout::plugin::types as wit;

        pub fn add_to_linker(
            linker: &mut wasmtime::component::Linker<State>,
        ) -> wasmtime::Result<()> {
            Plugin::add_to_linker::<State, wasmtime::component::HasSelf<State>>(linker, |s| s)
        }

        impl wit::Host for State {}

        impl self::nats_callout::plugin::host::Host for State {
            fn log(&mut self, level: wit::LogLevel, message: String) {
                let level = match level {
                    wit::LogLevel::Trace => sdk::LogLevel::Trace,
                    wit::LogLevel::Debug => sdk::LogLevel::Debug,
                    wit::LogLevel::Info => sdk::LogLevel::Info,
                    wit::LogLevel::Warn => sdk::LogLevel::Warn,
                    wit::LogLevel::Error => sdk::LogLevel::Error,
                };
                State::log(self, level, &message);
            }

            fn verify_nkey_signature(
                &mut self,
                public_key: String,
                payload: Vec<u8>,
                signature: String,
            ) -> Result<(), String> {
                self.caps
                    .verify_nkey_signature(&public_key, &payload, &signature)
            }

            $verify_jwt

            fn verify_certificate_chain(&mut self, chain: Vec<String>) -> Result<(), String> {
                self.caps.verify_certificate_chain(&chain)
            }

            async fn verify_password_hash(
                &mut self,
                password: String,
                hash: String,
            ) -> Result<bool, String> {
                State::verify_password_hash(self, password, hash).await
            }

            fn cache_get(&mut self, key: String) -> Option<Vec<u8>> {
                self.caps.cache_get(&key)
            }

            fn cache_set(&mut self, key: String, value: Vec<u8>, ttl_millis: u64) {
                self.caps
                    .cache_set(&key, value, std::time::Duration::from_millis(ttl_millis));
            }
        }

        fn verified(
            v: Result<crate::runtime::capabilities::VerifiedJwt, String>,
        ) -> Result<wit::VerifiedJwt, String> {
            v.map(|v| wit::VerifiedJwt {
                claims_json: v.claims_json,
                expires_at: v.expires_at,
            })
        }

        fn kind(k: wit::CredentialKind) -> sdk::CredentialKind {
            match k {
                wit::CredentialKind::None => sdk::CredentialKind::None,
                wit::CredentialKind::BearerToken => sdk::CredentialKind::BearerToken,
                wit::CredentialKind::UserPassword => sdk::CredentialKind::UserPassword,
                wit::CredentialKind::Nkey => sdk::CredentialKind::Nkey,
                wit::CredentialKind::Certificate => sdk::CredentialKind::Certificate,
                wit::CredentialKind::UserJwt => sdk::CredentialKind::UserJwt,
            }
        }

        /// Run `authenticate` on `input`, with the parts the plugin does not read left out
        /// (`part`). As in 0.1.0, the WIT request borrows the host's strings: each is copied
        /// once, straight into the component's memory.
        pub async fn authenticate(
            world: &Plugin,
            store: &mut wasmtime::Store<State>,
            input: &PluginRequest,
            reads: sdk::RequestParts,
        ) -> wasmtime::Result<decision::Decision> {
            fn strs(v: &[String]) -> Vec<&str> {
                v.iter().map(String::as_str).collect()
            }
            let req = &input.request;
            let credential = match &req.credential {
                sdk::Credential::BearerToken(t) => wit::Credential::BearerToken(t.expose()),
                sdk::Credential::UserPassword { username, password } => {
                    wit::Credential::UserPassword(wit::UserPassword {
                        username,
                        password: password.expose(),
                    })
                }
                sdk::Credential::Nkey(key) => wit::Credential::Nkey(key),
                sdk::Credential::Certificate => wit::Credential::Certificate,
                sdk::Credential::UserJwt(jwt) => wit::Credential::UserJwt(jwt.expose()),
                _ => wit::Credential::None,
            };
            let (s, c, o) = (&req.server, &req.client, &req.connect);
            // Lists only for parts the plugin reads: a server's tags are set in its config
            // and would otherwise be collected on every call for nothing.
            let server_tags = if reads.server { strs(&s.tags) } else { Vec::new() };
            let client_tags = if reads.client { strs(&c.tags) } else { Vec::new() };
            let tls = req.tls.as_ref().filter(|_| reads.tls);
            let certs = tls.iter().flat_map(|t| &t.verified_chain);
            let names: Vec<[Vec<&str>; 5]> = certs
                .clone()
                .map(|p| {
                    [
                        strs(&p.common_names),
                        strs(&p.dns_sans),
                        strs(&p.uri_sans),
                        strs(&p.email_sans),
                        strs(&p.ip_sans),
                    ]
                })
                .collect();
            let chain: Vec<wit::Certificate<'_>> = certs
                .zip(&names)
                .map(|(p, [cn, dns, uri, email, ip])| wit::Certificate {
                    pem: &p.pem,
                    subject: &p.subject,
                    common_names: cn,
                    dns_sans: dns,
                    uri_sans: uri,
                    email_sans: email,
                    ip_sans: ip,
                    not_before: p.not_before,
                    not_after: p.not_after,
                    fingerprint_sha256: &p.fingerprint_sha256,
                })
                .collect();
            let request = wit::AuthRequest {
                route: &req.route,
                credential,
                server: part(reads.server, || wit::ServerInfo {
                    name: &s.name,
                    host: &s.host,
                    id: &s.id,
                    version: &s.version,
                    cluster: s.cluster.as_deref(),
                    tags: &server_tags,
                }),
                user_nkey: &req.user_nkey,
                client: part(reads.client, || wit::ClientInfo {
                    host: c.host.as_deref(),
                    id: c.id,
                    user: c.user.as_deref(),
                    name: c.name.as_deref(),
                    tags: &client_tags,
                    name_tag: c.name_tag.as_deref(),
                    kind: c.kind.as_deref(),
                    client_type: c.client_type.as_deref(),
                    mqtt_id: c.mqtt_id.as_deref(),
                    nonce: c.nonce.as_deref(),
                }),
                connect: part(reads.connect, || wit::ConnectOpts {
                    name: o.name.as_deref(),
                    lang: o.lang.as_deref(),
                    version: o.version.as_deref(),
                    protocol: o.protocol,
                }),
                tls: tls.map(|t| wit::ClientTls {
                    version: t.version.as_deref(),
                    cipher: t.cipher.as_deref(),
                    verified_chain: &chain,
                }),
            };
            let d = world
                .nats_callout_plugin_authenticator()
                .call_authenticate(store, request)
                .await?;
            Ok(decision(d))
        }

        fn permission(p: wit::Permission) -> decision::Permission {
            decision::Permission {
                allow: p.allow,
                deny: p.deny,
            }
        }

        fn decision(d: wit::Decision) -> decision::Decision {
            match d {
                wit::Decision::Allow(g) => {
                    let mut grant = decision::Grant::default();
                    grant.account = g.account;
                    grant.name = g.name;
                    grant.publish = permission(g.publish);
                    grant.subscribe = permission(g.subscribe);
                    grant.response = g.response.map(|r| decision::ResponsePermission {
                        max_msgs: r.max_msgs,
                        ttl_millis: r.ttl_millis,
                    });
                    grant.expires_at = g.expires_at;
                    grant.times = g
                        .times
                        .into_iter()
                        .map(|t| sdk::TimeRange {
                            start: t.start,
                            end: t.end,
                        })
                        .collect();
                    grant.locale = g.locale;
                    grant.allowed_connection_types = g
                        .allowed_connection_types
                        .into_iter()
                        .map(|t| match t {
                            wit::ConnectionType::Standard => sdk::ConnectionType::Standard,
                            wit::ConnectionType::Websocket => sdk::ConnectionType::Websocket,
                            wit::ConnectionType::Mqtt => sdk::ConnectionType::Mqtt,
                            wit::ConnectionType::Leafnode => sdk::ConnectionType::Leafnode,
                        })
                        .collect();
                    grant.source_networks = g.source_networks;
                    grant.proxy_required = g.proxy_required;
                    decision::Decision::Allow(grant)
                }
                wit::Decision::Deny(reason) => decision::Decision::Deny(reason),
                wit::Decision::Abstain => decision::Decision::Abstain,
            }
        }
    };
}
