//! Connect to a NATS server guarded by nats-callout with any credential a route may take,
//! publish one message and receive it.
//!
//! ```text
//! cargo run -p nats-callout --example connect -- nats://127.0.0.1:4222 public.hello
//! cargo run -p nats-callout --example connect -- nats://127.0.0.1:4222 device-state.demo-device --nkey .dev/keys/device-seed
//! cargo run -p nats-callout --example connect -- nats://127.0.0.1:4222 sensors.sensor-7.temp --user sensor-7 --pass s3cret
//! cargo run -p nats-callout --example connect -- nats://127.0.0.1:4222 events.x --user oauthtoken --pass "$TOKEN"
//! cargo run -p nats-callout --example connect -- nats://127.0.0.1:4222 billing.x --token "$API_KEY"
//! ```
//! The subject must be one the identity may both publish and subscribe to; otherwise the
//! server's permission error is printed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use futures::StreamExt;

#[derive(Parser)]
#[command(about = "Connect through nats-callout, publish one message, receive it")]
struct Args {
    #[arg(default_value = "nats://127.0.0.1:4222")]
    url: String,
    #[arg(default_value = "public.hello")]
    subject: String,
    /// An NKey seed file (`SU...`): sign the server's nonce with it.
    #[arg(long, conflicts_with_all = ["token", "user"])]
    nkey: Option<PathBuf>,
    /// A bearer token (`auth_token`): an API key, or an access token.
    #[arg(long, conflicts_with = "user")]
    token: Option<String>,
    /// Username, with `--pass` (`oauthtoken` with an access token as password).
    #[arg(long, requires = "pass")]
    user: Option<String>,
    #[arg(long, requires = "user")]
    pass: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let options = if let Some(seed_file) = &args.nkey {
        let seed = std::fs::read_to_string(seed_file)
            .with_context(|| format!("cannot read {}", seed_file.display()))?;
        println!("connecting with the NKey in {}", seed_file.display());
        async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
    } else if let Some(token) = args.token {
        println!("connecting with a bearer token");
        async_nats::ConnectOptions::with_token(token)
    } else if let (Some(user), Some(pass)) = (args.user, args.pass) {
        println!("connecting as user {user:?}");
        async_nats::ConnectOptions::with_user_and_password(user, pass)
    } else {
        println!("connecting anonymously");
        async_nats::ConnectOptions::new()
    };
    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let client = options
        .event_callback(move |event| {
            let tx = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .max_reconnects(Some(0))
        .connect(&args.url)
        .await
        .context("connect refused (see the callout's log for the reason)")?;
    println!("admitted by {}", args.url);
    let subject = args.subject;
    let mut sub = client.subscribe(subject.clone()).await?;
    client
        .publish(subject.clone(), "hello from the example".into())
        .await?;
    client.flush().await?;
    tokio::select! {
        msg = tokio::time::timeout(Duration::from_secs(2), sub.next()) => match msg {
            Ok(Some(msg)) => println!(
                "received on {}: {}",
                msg.subject,
                String::from_utf8_lossy(&msg.payload)
            ),
            _ => println!("nothing received on {subject}"),
        },
        Some(e) = errors.recv() => println!("refused by the server: {e}"),
    }
    Ok(())
}
