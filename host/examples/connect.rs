//! Connect to a NATS server guarded by nats-callout, publish one message and receive it.
//!
//! ```text
//! cargo run -p nats-callout --example connect -- nats://127.0.0.1:4222 public.hello
//! cargo run -p nats-callout --example connect -- nats://127.0.0.1:4222 device-state.demo-device .dev/keys/device-seed
//! ```
//! The subject must be one the identity may both publish and subscribe to (for an
//! NKey device, give it a pub+sub grant or watch the platform side instead).

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let subject = args.next().unwrap_or_else(|| "public.hello".into());
    let options = match args.next() {
        Some(seed_file) => {
            let seed = std::fs::read_to_string(&seed_file)
                .with_context(|| format!("cannot read {seed_file}"))?;
            println!("connecting with the NKey in {seed_file}");
            async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
        }
        None => {
            println!("connecting anonymously");
            async_nats::ConnectOptions::new()
        }
    };
    let client = options
        .max_reconnects(Some(0))
        .connect(&url)
        .await
        .context("connect refused (see the callout's log for the reason)")?;
    println!("admitted by {url}");
    let mut sub = client.subscribe(subject.clone()).await?;
    client
        .publish(subject.clone(), "hello from the example".into())
        .await?;
    client.flush().await?;
    match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
        Ok(Some(msg)) => println!(
            "received on {}: {}",
            msg.subject,
            String::from_utf8_lossy(&msg.payload)
        ),
        _ => println!("nothing received on {subject} (not permitted to subscribe or publish?)"),
    }
    Ok(())
}
