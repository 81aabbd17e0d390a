//! The Helm chart (deploy/helm/nats-callout), rendered by Helm itself (3.17.3, which
//! `scripts/setup` installs into `.tools/bin`): `helm lint`, then `helm template` with the
//! default values (which must refuse to render: no mode configured), with every
//! `examples/values-*.yaml`, as the `auth-callout` subchart of an umbrella chart
//! (tests/fixtures/umbrella), and in operator mode; and `nats-callout check` on the
//! `config.yaml` of the rendered ConfigMap, run with the environment the rendered
//! Deployment gives the container (seeds from the Secret, `AUTH_CALLOUT_PLUGIN_DIR` of
//! the image, `AUTH_CALLOUT_MTLS_CA_PATH` when mTLS is on) and, in operator mode, the
//! files of a real `nats-callout operator init` where the release mounts them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use nats_callout_tests::ops::callout_bin;
use nats_callout_tests::{Keys, plugin_dir, workspace_root};
use serde::Deserialize;
use serde_yaml_ng::Value;

fn chart() -> PathBuf {
    workspace_root().join("deploy/helm/nats-callout")
}

/// The helm binary: `HELM_BIN`, else the one `scripts/setup` installs.
fn helm() -> Result<PathBuf> {
    let bin = std::env::var_os("HELM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/bin/helm"));
    ensure!(
        bin.exists(),
        "helm not found at {}: run scripts/setup (or set HELM_BIN)",
        bin.display()
    );
    Ok(bin)
}

/// Run helm on `chart` with these values files: its stdout, or stdout and stderr as the
/// error.
fn helm_on(chart: &Path, args: &[&str], values: &[PathBuf]) -> Result<String, String> {
    let mut cmd = Command::new(helm().map_err(|e| e.to_string())?);
    cmd.args(args).arg(chart);
    for f in values {
        cmd.arg("-f").arg(f);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn helm_run(args: &[&str], values: &[PathBuf]) -> Result<String> {
    helm_on(&chart(), args, values)
        .map_err(|e| anyhow::anyhow!("helm {args:?} {values:?} failed:\n{e}"))
}

/// The manifests `helm template` renders with these values files.
fn render(values: &[PathBuf]) -> Result<Vec<Value>> {
    parse(&helm_run(&["template", "nats-callout"], values)?)
}

fn parse(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).context("helm rendered something that is not YAML")?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn manifest<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .with_context(|| format!("no {kind} rendered"))
}

/// The container's environment variable names.
fn env_names(docs: &[Value]) -> Result<Vec<String>> {
    let container = &manifest(docs, "Deployment")?["spec"]["template"]["spec"]["containers"][0];
    Ok(container["env"]
        .as_sequence()
        .context("the container has no env")?
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect())
}

fn read_yaml(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))
}

fn path<'a>(values: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(values, |v, k| v.get(*k))
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        Value::Sequence(s) => s.is_empty(),
        _ => false,
    }
}

/// A self-signed CA, standing in for the mounted `nats-mtls-server-tls` CA.
fn test_ca(dir: &Path) -> Result<PathBuf> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "helm test CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&rcgen::KeyPair::generate()?)?;
    let path = dir.join("ca.crt");
    std::fs::write(&path, cert.pem())?;
    Ok(path)
}

/// Run `nats-callout check` on the rendered ConfigMap's config as the rendered container
/// would; returns check's stdout.
fn check(docs: &[Value], label: &str) -> Result<String> {
    check_as(docs, label, None)
}

/// Where an operator-mode release mounts the files `nats-callout operator init` writes.
const OPERATOR_MOUNT: &str = "/etc/nats-callout/operator/";

/// [`check`], for an operator-mode release: `operator_init` is a directory
/// `nats-callout operator init` wrote, standing in for the mounted ConfigMap of account
/// JWTs and the Secret of signing seeds and creds, and for the seeds Secret (its issuer
/// and xkey seeds; the container must not expect an nkey seed).
fn check_as(docs: &[Value], label: &str, operator_init: Option<&Path>) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let text = manifest(docs, "ConfigMap")?["data"]["config.yaml"]
        .as_str()
        .context("the ConfigMap has no config.yaml")?;
    let mut config: Value = serde_yaml_ng::from_str(text)?;
    // A file of an operator-mode mount, from operator init's directory (account JWTs and
    // signing seeds are in its accounts/, the creds at its top).
    let from_init = |file: &str| -> Result<Option<String>> {
        let (Some(init), Some(rest)) = (operator_init, file.strip_prefix(OPERATOR_MOUNT)) else {
            return Ok(None);
        };
        let name = Path::new(rest).file_name().context("a file name")?;
        let local = match rest.split_once('/') {
            Some(("keys", n)) if !n.ends_with(".sk") => init.join(name),
            _ => init.join("accounts").join(name),
        };
        ensure!(
            local.exists(),
            "{label}: {file} stands for {local:?}, which operator init did not write"
        );
        Ok(Some(local.to_str().context("utf-8 path")?.to_owned()))
    };
    let nats = config.get_mut("nats").and_then(Value::as_sequence_mut);
    for entry in nats.into_iter().flatten() {
        if let Some(file) = entry.get("credentials_file").and_then(Value::as_str) {
            let local = from_init(file)?.with_context(|| format!("{label}: creds at {file}"))?;
            entry["credentials_file"] = Value::from(local);
        }
        // `check` reads the NATS TLS files as `run` does; in a pod they come from mounted
        // Secrets, here from stand-ins at the same names.
        let Some(tls) = entry.get_mut("tls") else {
            continue;
        };
        for key in ["ca_file", "cert_file", "key_file"] {
            let Some(file) = tls.get(key).and_then(Value::as_str) else {
                continue;
            };
            let name = Path::new(file).file_name().context("a file name")?;
            let stand_in = dir.path().join(name);
            std::fs::write(&stand_in, "mounted from a Secret in the pod")?;
            tls[key] = Value::from(stand_in.to_str().context("utf-8 path")?);
        }
    }
    if let Some(operator) = config.get_mut("operator") {
        let file = operator["callout_account_jwt_file"]
            .as_str()
            .unwrap_or_default();
        operator["callout_account_jwt_file"] =
            Value::from(from_init(file)?.context("callout account JWT")?);
        let accounts = operator.get_mut("accounts").and_then(Value::as_mapping_mut);
        for (_, account) in accounts.into_iter().flatten() {
            for key in ["jwt_file", "signing_key_file"] {
                let file = account[key].as_str().unwrap_or_default();
                account[key] =
                    Value::from(from_init(file)?.with_context(|| format!("{key} {file}"))?);
            }
        }
    }
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, serde_yaml_ng::to_string(&config)?)?;
    let env = env_names(docs)?;
    let keys = Keys::generate();
    let mut cmd = Command::new(callout_bin()?);
    cmd.args(["check", "--config"])
        .arg(&config_path)
        .env("AUTH_CALLOUT_PLUGIN_DIR", plugin_dir())
        .env_remove("AUTH_CALLOUT_MTLS_CA_PATH");
    let seeds = match operator_init {
        None => vec![
            ("AUTH_CALLOUT_NKEY_SEED", keys.callout.seed()?),
            ("AUTH_CALLOUT_ISSUER_SEED", keys.issuer.seed()?),
            ("AUTH_CALLOUT_XKEY_SEED", keys.xkey.seed()?),
        ],
        Some(init) => {
            ensure!(
                !env.iter().any(|e| e == "AUTH_CALLOUT_NKEY_SEED"),
                "{label}: logs in with creds, yet the container expects an nkey seed"
            );
            let seed = |f: &str| std::fs::read_to_string(init.join(f)).map(|s| s.trim().to_owned());
            vec![
                ("AUTH_CALLOUT_ISSUER_SEED", seed("issuer-seed")?),
                ("AUTH_CALLOUT_XKEY_SEED", seed("xkey-seed")?),
            ]
        }
    };
    for (var, seed) in seeds {
        ensure!(
            env.iter().any(|e| e == var),
            "{label}: the container lacks {var}"
        );
        cmd.env(var, seed);
    }
    if env.iter().any(|e| e == "AUTH_CALLOUT_MTLS_CA_PATH") {
        cmd.env("AUTH_CALLOUT_MTLS_CA_PATH", test_ca(dir.path())?);
    }
    let out = cmd.output()?;
    ensure!(
        out.status.success(),
        "{label}: nats-callout check refused the chart's config:\n{}\nconfig.yaml:\n{text}",
        String::from_utf8_lossy(&out.stderr),
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn examples() -> Result<Vec<PathBuf>> {
    let mut examples: Vec<PathBuf> = std::fs::read_dir(chart().join("examples"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    examples.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("values-") && n.ends_with(".yaml"))
    });
    examples.sort();
    ensure!(!examples.is_empty(), "no examples/values-*.yaml");
    Ok(examples)
}

/// What every release has, whatever its values.
fn assert_deployment_basics(docs: &[Value]) -> Result<()> {
    let deployment = manifest(docs, "Deployment")?;
    let replicas = deployment["spec"]["replicas"].as_u64();
    assert!(replicas >= Some(2), "replicas share load: {replicas:?}");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(9090));
    // The container listens where the probes and the Service look.
    assert_eq!(config_of(docs)?["http_listen"], "0.0.0.0:9090");
    assert_eq!(
        container["args"][2].as_str(),
        Some("/etc/nats-callout/config/config.yaml"),
        "the config is read where the ConfigMap is mounted"
    );
    for kind in ["Service", "PodDisruptionBudget"] {
        manifest(docs, kind)?;
    }
    Ok(())
}

/// The host config of the rendered ConfigMap.
fn config_of(docs: &[Value]) -> Result<Value> {
    let text = manifest(docs, "ConfigMap")?["data"]["config.yaml"]
        .as_str()
        .context("config.yaml")?;
    Ok(serde_yaml_ng::from_str(text)?)
}

#[test]
fn helm_lints_the_chart_with_every_values_file() -> Result<()> {
    // Defaults included: lint reports the chart's own `fail` as information.
    helm_run(&["lint", "--strict"], &[])?;
    for example in examples()? {
        helm_run(&["lint", "--strict"], &[example])?;
    }
    Ok(())
}

/// Nothing is admitted by default, anonymous clients least of all: a release that
/// configures no mode does not render, and says what to set.
#[test]
fn default_values_admit_nobody_and_say_what_to_set() -> Result<()> {
    let Err(e) = helm_on(&chart(), &["template", "nats-callout"], &[]) else {
        anyhow::bail!("helm template rendered a release that configures no mode");
    };
    assert!(
        e.contains("global.eventBus.auth.permissions enables no mode"),
        "{e}"
    );
    // One mode given, only that one is on: no anonymous access came with it.
    let dir = tempfile::tempdir()?;
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "global: { eventBus: { auth: { permissions: { nkey: { svc: { public_key: \
         UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4, account: CSC, \
         permissions: { pub: { allow: [\"svc.>\"] } } } } } } } }\n",
    )?;
    let docs = render(std::slice::from_ref(&values))?;
    let out = check(&docs, "nkey only")?;
    assert!(out.contains("routes [nkey]"), "{out}");
    assert_deployment_basics(&docs)?;
    assert!(
        !env_names(&docs)?
            .iter()
            .any(|e| e.starts_with("AUTH_CALLOUT_SYSTEM")),
        "no system user unless one is configured"
    );
    Ok(())
}

/// A system user (closing revoked identities' connections) logs in with a password
/// from a Secret; `check` sees the revocation wiring whole.
#[test]
fn the_system_users_password_comes_from_a_secret() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "global: { eventBus: { auth: { permissions: { noauth: { account: ANONYMOUS, \
         permissions: { pub: { allow: [\"public.>\"] } } } } } } }\n\
         auth-callout:\n  systemUser: { secretName: nats-sys, passwordKey: sys-password }\n  \
         serviceConfig:\n    nats: [ { name: main, url: \"nats://nats:4222\", \
         system_user: { user: sys } } ]\n    revocation: { kv_bucket: revoked }\n",
    )?;
    let docs = render(std::slice::from_ref(&values))?;
    let container = &manifest(&docs, "Deployment")?["spec"]["template"]["spec"]["containers"][0];
    let password = container["env"]
        .as_sequence()
        .and_then(|env| {
            env.iter()
                .find(|e| e["name"] == "AUTH_CALLOUT_SYSTEM_PASSWORD")
        })
        .context("no AUTH_CALLOUT_SYSTEM_PASSWORD")?;
    assert_eq!(password["valueFrom"]["secretKeyRef"]["name"], "nats-sys");
    assert_eq!(password["valueFrom"]["secretKeyRef"]["key"], "sys-password");
    let out = check(&docs, "system user")?;
    assert!(
        out.contains("live connections of revoked identities are closed"),
        "{out}"
    );
    Ok(())
}

/// `global.eventBus.mtls.enabled` wires the mTLS cluster: a second `nats` entry at its
/// URL, logging in with the client certificate Secret and trusting the server's CA,
/// both mounted where the entry names them.
#[test]
fn mtls_wires_the_mtls_clusters_nats_entry_and_its_secrets() -> Result<()> {
    let example = chart().join("examples/values-event-bus.yaml");
    let docs = render(std::slice::from_ref(&example))?;
    let config = config_of(&docs)?;
    let mtls = config["nats"]
        .as_sequence()
        .and_then(|n| n.iter().find(|e| e["name"] == "mtls"))
        .context("no mtls nats entry")?;
    assert_eq!(mtls["url"], "tls://nats-mtls:4222");
    let pod = &manifest(&docs, "Deployment")?["spec"]["template"]["spec"];
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .context("mounts")?;
    let volumes = pod["volumes"].as_sequence().context("volumes")?;
    for key in ["ca_file", "cert_file", "key_file"] {
        let file = mtls["tls"][key].as_str().context("a tls file")?;
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"].as_str().is_some_and(|p| file.starts_with(p)))
            .with_context(|| format!("{key} {file} is not under a mount"))?;
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .context("the mount's volume")?;
        let item = Path::new(file).file_name().and_then(|n| n.to_str());
        assert!(
            volume["secret"]["items"]
                .as_sequence()
                .is_some_and(|items| items.iter().any(|i| i["path"].as_str() == item)),
            "{key}: {file} is not an item of {volume:?}"
        );
    }
    let client = volumes
        .iter()
        .find(|v| v["name"] == "client-tls")
        .context("client-tls volume")?;
    assert_eq!(client["secret"]["secretName"], "nats-callout-client-tls");
    // An entry named mtls besides is refused, not duplicated.
    let dir = tempfile::tempdir()?;
    let twice = dir.path().join("twice.yaml");
    std::fs::write(
        &twice,
        "auth-callout: { serviceConfig: { nats: [ { name: mtls, url: \"tls://x:4222\" } ] } }\n",
    )?;
    let e = helm_on(&chart(), &["template", "x"], &[example, twice])
        .err()
        .context("an mtls entry twice was accepted")?;
    assert!(e.contains("has an entry named mtls"), "{e}");
    Ok(())
}

/// Operator mode: the config's `operator` section names the account JWTs and signing
/// seeds where the release mounts them (from a ConfigMap and a Secret, items and all),
/// every `nats` entry logs in with the creds, no nkey seed is expected, and `check`
/// accepts the config with the files `nats-callout operator init` wrote. Without an
/// account to grant into, the release refuses to render.
#[test]
fn operator_mode_mounts_account_jwts_signing_keys_and_creds() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let init = dir.path().join("init");
    let out = Command::new(callout_bin()?)
        .args(["operator", "init", "--dir"])
        .arg(&init)
        .output()?;
    ensure!(
        out.status.success(),
        "operator init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values = dir.path().join("values.yaml");
    let permissions = "global: { eventBus: { auth: { permissions: { noauth: { account: ANONYMOUS, \
         permissions: { pub: { allow: [\"public.>\"] } } } } } } }\n";
    std::fs::write(
        &values,
        format!(
            "{permissions}auth-callout:\n  operator: {{ enabled: true, accounts: [DEVICES, ANONYMOUS] }}\n"
        ),
    )?;
    let docs = render(std::slice::from_ref(&values))?;
    let config = config_of(&docs)?;
    assert_eq!(
        config["nats"][0]["credentials_file"],
        "/etc/nats-callout/operator/keys/callout.creds"
    );
    assert_eq!(
        config["operator"]["accounts"]["DEVICES"]["signing_key_file"],
        "/etc/nats-callout/operator/keys/DEVICES.sk"
    );
    let volumes = manifest(&docs, "Deployment")?["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .context("volumes")?
        .clone();
    let items = |name: &str, source: &str| -> Vec<String> {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v[source]["items"].as_sequence())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["path"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        items("operator-jwts", "configMap"),
        ["AUTH.jwt", "DEVICES.jwt", "ANONYMOUS.jwt"]
    );
    assert_eq!(
        items("operator-keys", "secret"),
        ["callout.creds", "DEVICES.sk", "ANONYMOUS.sk"]
    );
    let out = check_as(&docs, "operator mode", Some(&init))?;
    assert!(
        out.contains("mode: operator (callout account AUTH"),
        "{out}"
    );
    assert_deployment_basics(&docs)?;

    let none = dir.path().join("none.yaml");
    std::fs::write(
        &none,
        format!("{permissions}auth-callout: {{ operator: {{ enabled: true }} }}\n"),
    )?;
    let e = helm_on(&chart(), &["template", "x"], &[none])
        .err()
        .context("operator mode without accounts rendered")?;
    assert!(
        e.contains("auth-callout.operator.accounts names no account"),
        "{e}"
    );
    Ok(())
}

/// As the `auth-callout` subchart of an umbrella chart, with the values shape of the
/// event-bus chart: Helm hands the parent's `auth-callout:` block to the subchart at the
/// top of its values, and the chart must read it there.
#[test]
fn the_chart_works_as_the_auth_callout_subchart_of_an_umbrella() -> Result<()> {
    let umbrella = tempfile::tempdir()?;
    let fixture = workspace_root().join("tests/fixtures/umbrella");
    for file in ["Chart.yaml", "values.yaml"] {
        std::fs::copy(fixture.join(file), umbrella.path().join(file))?;
    }
    copy_dir(&chart(), &umbrella.path().join("charts/nats-callout"))?;
    let lint = helm_on(umbrella.path(), &["lint", "--strict"], &[]);
    lint.map_err(|e| anyhow::anyhow!("helm lint: {e}"))?;
    let text = helm_on(umbrella.path(), &["template", "event-bus"], &[])
        .map_err(|e| anyhow::anyhow!("helm template: {e}"))?;
    let docs = parse(&text)?;
    let out = check(&docs, "umbrella")?;
    assert!(out.contains("routes [mtls, nkey]"), "{out}");
    let deployment = manifest(&docs, "Deployment")?;
    assert_eq!(
        deployment["spec"]["replicas"].as_u64(),
        Some(3),
        "the parent's replicaCount"
    );
    let config = config_of(&docs)?;
    let urls: Vec<&str> = config["nats"]
        .as_sequence()
        .context("nats")?
        .iter()
        .filter_map(|n| n["url"].as_str())
        .collect();
    assert_eq!(
        urls,
        [
            "nats://event-bus-nats:4222",
            "tls://event-bus-nats-mtls:4222"
        ]
    );
    assert!(
        text.contains("name: event-bus-callout-seeds"),
        "the parent's seeds Secret"
    );
    assert!(text.contains("secretName: event-bus-callout-client-tls"));
    assert_deployment_basics(&docs)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[test]
fn example_values_render_configs_that_check_accept() -> Result<()> {
    for example in examples()? {
        let label = example.display().to_string();
        let docs = render(std::slice::from_ref(&example))?;
        let out = check(&docs, &label)?;
        // Every configured mode is loaded with its built-in plugin, and only those.
        let values = read_yaml(&example)?;
        let configured: Vec<String> =
            match path(&values, &["global", "eventBus", "auth", "permissions"]) {
                Some(Value::Mapping(m)) => m
                    .iter()
                    .filter(|(_, v)| !is_empty(v))
                    .filter_map(|(k, _)| k.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
        ensure!(!configured.is_empty(), "{label}: configures no mode");
        let order = ["oauth2", "mtls", "nkey", "password", "jwt", "noauth"];
        let expected: Vec<&str> = order
            .into_iter()
            .filter(|m| configured.iter().any(|c| c == m))
            .collect();
        let want = format!("routes [{}]", expected.join(", "));
        assert!(out.contains(&want), "{label}: expected {want} in {out}");
    }
    Ok(())
}

/// The image ships every built-in plugin that scripts/setup builds, as `/plugins/<mode>.wasm`
/// (no Docker engine runs here, so the Dockerfile is checked as text).
#[test]
fn dockerfile_ships_every_built_in_plugin() -> Result<()> {
    let root = workspace_root();
    let setup = std::fs::read_to_string(root.join("scripts/setup"))?;
    let plugins: Vec<&str> = setup
        .lines()
        .find_map(|l| l.strip_prefix("PLUGINS=("))
        .and_then(|l| l.strip_suffix(')'))
        .context("scripts/setup has no PLUGINS=(...) line")?
        .split_whitespace()
        .collect();
    let mut builtins = nats_callout::ops::config::BUILTINS.to_vec();
    let mut built = plugins.clone();
    builtins.sort_unstable();
    built.sort_unstable();
    assert_eq!(built, builtins, "scripts/setup builds the built-in plugins");
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile"))?;
    for p in &plugins {
        assert!(
            dockerfile.contains(&format!("-p nats-callout-plugin-{p}")),
            "Dockerfile does not build the {p} plugin"
        );
    }
    let mut installed: Vec<&str> = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("&& for p in "))
        .and_then(|l| l.split_once("; do"))
        .map(|(list, _)| list.split_whitespace().collect())
        .context("Dockerfile has no `for p in ...; do` copy loop")?;
    let mut expected = plugins.clone();
    installed.sort_unstable();
    expected.sort_unstable();
    assert_eq!(installed, expected, "plugins copied to /plugins");
    for needle in [
        "USER 65532",
        "ENV AUTH_CALLOUT_PLUGIN_DIR=/plugins",
        "EXPOSE 9090",
        r#"ENTRYPOINT ["nats-callout"]"#,
        r#"CMD ["run", "--config", "/etc/nats-callout/config.yaml"]"#,
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lost {needle:?}");
    }
    Ok(())
}
