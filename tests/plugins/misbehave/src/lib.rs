//! A plugin that misbehaves on purpose, to prove the host contains it. Its one setting,
//! `behaviour`, picks how: `trap` (panics, i.e. `unreachable`), `loop` (never returns),
//! `alloc` (grows memory until the limit), `slow:<ms>` (busy-waits, then allows),
//! `allow` (behaves: admits with `grant`, the SDK's `Grant` as JSON, default into
//! `account`, default `ANONYMOUS`, with `public.>`),
//! `verify-jwt` (has the host verify the bearer token, then admits as `allow`,
//! setting no expiry of its own: the careless partner plugin), `log-flood` (logs 1000
//! lines, each trying to forge a second line, then admits as `allow`), `connect` (opens
//! a TCP connection, which the sandbox refuses, then denies with the error), `echo`
//! (denies, saying what of the request it was handed: `server=<name> client=<host>
//! connect=<lang> tls=<bool>`). `reads` (`server`, `client`, `connect`, `tls`) is what it
//! says it reads; all of them if unset.

//! It takes every credential kind.

use nats_callout_sdk::{
    AuthRequest, Credential, CredentialKind, Decision, Grant, Host, InitError, Permission, Plugin,
    PluginConfig, RequestParts,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    behaviour: String,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    grant: Option<Grant>,
    #[serde(default)]
    reads: Option<Vec<String>>,
}

pub struct Misbehave {
    behaviour: Behaviour,
    grant: Grant,
    reads: RequestParts,
}

enum Behaviour {
    Trap,
    Loop,
    Alloc,
    Slow(u64),
    Allow,
    VerifyJwt,
    LogFlood,
    Connect,
    Echo,
}

impl Plugin for Misbehave {
    fn init(config: PluginConfig) -> Result<Self, InitError> {
        let s: Settings = config.settings()?;
        let behaviour = match s.behaviour.as_str() {
            "trap" => Behaviour::Trap,
            "loop" => Behaviour::Loop,
            "alloc" => Behaviour::Alloc,
            "allow" => Behaviour::Allow,
            "verify-jwt" => Behaviour::VerifyJwt,
            "log-flood" => Behaviour::LogFlood,
            "connect" => Behaviour::Connect,
            "echo" => Behaviour::Echo,
            other => match other.strip_prefix("slow:").and_then(|ms| ms.parse().ok()) {
                Some(ms) => Behaviour::Slow(ms),
                None => return Err(format!("settings.behaviour: unknown {other:?}").into()),
            },
        };
        let grant = s.grant.unwrap_or_else(|| {
            let public = Permission {
                allow: vec!["public.>".into()],
                deny: Vec::new(),
            };
            let mut grant = Grant::default();
            grant.account = s.account.unwrap_or_else(|| "ANONYMOUS".into());
            grant.publish = public.clone();
            grant.subscribe = public;
            grant
        });
        let reads = match s.reads {
            None => RequestParts::ALL,
            Some(names) => {
                let mut parts = RequestParts::NONE;
                for name in names {
                    match name.as_str() {
                        "server" => parts.server = true,
                        "client" => parts.client = true,
                        "connect" => parts.connect = true,
                        "tls" => parts.tls = true,
                        other => return Err(format!("settings.reads: unknown {other:?}").into()),
                    }
                }
                parts
            }
        };
        Ok(Self {
            behaviour,
            grant,
            reads,
        })
    }

    fn credentials(&self) -> &[CredentialKind] {
        &CredentialKind::ALL
    }

    fn reads(&self) -> RequestParts {
        self.reads
    }

    fn authenticate(&self, request: &AuthRequest, host: &dyn Host) -> Decision {
        match self.behaviour {
            Behaviour::Trap => panic!("misbehave: deliberate trap"),
            Behaviour::Loop => loop {
                std::hint::spin_loop();
            },
            Behaviour::Alloc => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Behaviour::Slow(ms) => {
                let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
                self.allow()
            }
            Behaviour::Allow => self.allow(),
            Behaviour::LogFlood => {
                for i in 0..1000 {
                    host.info(&format!("flood {i}\nFORGED-LINE level=ERROR all is lost"));
                }
                self.allow()
            }
            Behaviour::Connect => match std::net::TcpStream::connect("127.0.0.1:4222") {
                Ok(_) => Decision::deny("connected: the sandbox has a network"),
                Err(e) => Decision::deny(format!("no network: {e}")),
            },
            Behaviour::Echo => Decision::deny(format!(
                "server={} client={} connect={} tls={}",
                request.server.name,
                request.client.host.as_deref().unwrap_or(""),
                request.connect.lang.as_deref().unwrap_or(""),
                request.tls.is_some()
            )),
            Behaviour::VerifyJwt => {
                let token = match &request.credential {
                    Credential::BearerToken(t) => t.expose(),
                    _ => "",
                };
                match host.verify_jwt(token) {
                    Ok(_) => self.allow(),
                    Err(e) => Decision::deny(e),
                }
            }
        }
    }
}

impl Misbehave {
    fn allow(&self) -> Decision {
        Decision::Allow(self.grant.clone())
    }
}

nats_callout_sdk::export_plugin!(Misbehave);
