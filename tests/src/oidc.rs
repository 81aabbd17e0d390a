//! A real OpenID provider for the tests: the npm package `oidc-provider`, wrapped by
//! `tests/oidc/provider.mjs` (installed by `scripts/setup`). It issues client-credentials
//! access tokens (JWTs, or opaque ones it introspects and revokes) and serves discovery
//! and JWKS; test-only endpoints sign arbitrary tokens with its keys (for hostile-token
//! tests) and count requests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;

use crate::workspace_root;

/// A running provider, killed on drop.
pub struct Oidc {
    child: Child,
    pub port: u16,
    pub issuer: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// A client-credentials client of the provider whose tokens are opaque.
pub fn opaque_client(id: &str, claims: serde_json::Value) -> serde_json::Value {
    let mut c = client(id, "RS256", claims);
    c["format"] = "opaque".into();
    c
}

/// A client-credentials client of the provider.
pub fn client(id: &str, alg: &str, claims: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "client_id": id,
        "client_secret": format!("{id}-secret"),
        "alg": alg,
        "claims": claims,
    })
}

impl Oidc {
    /// Start on a free port with fresh RS256 and ES256 keys (kids `rsa-1`, `ec-1`).
    pub fn start(audience: &str, clients: Vec<serde_json::Value>) -> Result<Self> {
        Self::start_with(
            serde_json::json!({
                "generate": [ { "kid": "rsa-1", "alg": "RS256" }, { "kid": "ec-1", "alg": "ES256" } ],
                "audience": audience,
                "clients": clients,
            }),
            0,
        )
    }

    /// Start with a full fixture config (see tests/oidc/README.md) on `port` (0: free).
    pub fn start_with(config: serde_json::Value, port: u16) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("oidc.json");
        std::fs::write(&path, serde_json::to_vec(&config)?)?;
        let script = workspace_root().join("tests/oidc/provider.mjs");
        let mut cmd = Command::new("node");
        cmd.arg(&script)
            .arg("--config")
            .arg(&path)
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(
                dir.path().join("oidc.log"),
            )?));
        crate::dies_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .context("cannot start node (is Node.js installed? run scripts/setup)")?;
        let stdout = child.stdout.take().context("no stdout")?;
        // The fixture prints exactly one line, `READY <issuer>`, once it listens.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let Some(issuer) = line.trim().strip_prefix("READY ").map(str::to_owned) else {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("oidc.log")).unwrap_or_default();
            bail!("OIDC fixture did not start: {line:?}\n{log}");
        };
        let port = issuer
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("issuer has no port")?;
        Ok(Self {
            child,
            port,
            issuer,
            dir,
            http: {
                let _ = rustls::crypto::ring::default_provider().install_default();
                // No idle connections kept: Node closes an idle keep-alive connection
                // after 5 s, and a request sent on it just then fails ("connection
                // closed before message completed", seen between two benchmark storms).
                reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap_or_default()
            },
        })
    }

    /// Stop the provider (e.g. to test an outage); the port stays known for a restart.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("oidc.log")).unwrap_or_default()
    }

    /// A client-credentials access token from the token endpoint.
    pub async fn token(&self, client_id: &str) -> Result<String> {
        let resp = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth(client_id, Some(format!("{client_id}-secret")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await?;
        let status = resp.status();
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)?;
        if !status.is_success() {
            bail!("token endpoint answered {status}: {body}");
        }
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access_token in the token response")
    }

    /// A JWS over `payload` signed with the provider's own key `kid` (extra header
    /// fields merged in): how the tests forge tokens the JWKS really vouches for.
    pub async fn sign(
        &self,
        kid: &str,
        header: serde_json::Value,
        payload: serde_json::Value,
    ) -> Result<String> {
        let resp = self
            .http
            .post(format!("{}/__sign", self.issuer))
            .header("content-type", "application/json")
            .body(
                serde_json::json!({ "kid": kid, "header": header, "payload": payload }).to_string(),
            )
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("__sign answered {}", resp.status());
        }
        Ok(resp.text().await?.trim().to_owned())
    }

    /// The public key `kid` as SPKI PEM.
    pub async fn public_pem(&self, kid: &str) -> Result<String> {
        Ok(self
            .http
            .get(format!("{}/__pem/{kid}", self.issuer))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// How many times the JWKS was fetched since the last reset.
    pub async fn jwks_fetches(&self) -> Result<u64> {
        self.stat("jwks_fetches").await
    }

    /// How many times a token was introspected since the last reset.
    pub async fn introspections(&self) -> Result<u64> {
        self.stat("introspection_requests").await
    }

    async fn stat(&self, name: &str) -> Result<u64> {
        let stats: serde_json::Value = serde_json::from_slice(
            &self
                .http
                .get(format!("{}/__stats", self.issuer))
                .send()
                .await?
                .bytes()
                .await?,
        )?;
        stats[name].as_u64().with_context(|| format!("no {name}"))
    }

    /// Revokes `token` as its client (RFC 7009).
    pub async fn revoke(&self, client_id: &str, token: &str) -> Result<()> {
        self.http
            .post(format!("{}/token/revocation", self.issuer))
            .basic_auth(client_id, Some(format!("{client_id}-secret")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

impl Drop for Oidc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The header and payload of a compact JWS, decoded (no verification).
pub fn decode_parts(token: &str) -> Result<(serde_json::Value, serde_json::Value)> {
    let mut parts = token.split('.');
    let mut next = || -> Result<serde_json::Value> {
        let seg = parts.next().context("not a JWS")?;
        Ok(serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(seg)?,
        )?)
    };
    Ok((next()?, next()?))
}
