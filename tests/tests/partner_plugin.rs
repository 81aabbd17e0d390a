//! The example partner plugin (`examples/apikey-plugin`), built as a component the way a
//! partner builds theirs and loaded from the config's `plugins:` list: its clients get
//! exactly their entry's permissions, and keys it does not know are refused.

use anyhow::Result;
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::{
    Callout, Keys, NatsServer, callout_server_config, connect_watching, expect_server_error,
    init_tracing,
};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn services_connect_with_their_api_keys() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let digest: String = Sha256::digest(b"billing-key-1")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let yaml = format!(
        "nats:\n  - {{ url: {}, nkey_seed_file: nkey-seed }}\nissuer_seed_file: issuer-seed\n\
         plugins:\n  - mode: oauth2\n    builtin: apikey\n    settings:\n      keys:\n        \
         billing:\n          sha256: {digest}\n          account: DEVICES\n          permissions:\n            \
         pub: {{ allow: [\"billing.{{{{name}}}}.>\"] }}\n",
        server.url()
    );
    let _callout = Callout::start(&keys, &yaml).await?;
    assert_eq!(
        raw::bearer(server.port, "billing-key-1").await?,
        Outcome::Admitted
    );
    assert_eq!(
        raw::bearer(server.port, "guessed-key").await?,
        Outcome::Refused("Authorization Violation".into())
    );

    // Admitted with the entry's permissions, and only those.
    let options = async_nats::ConnectOptions::with_token("billing-key-1".into());
    let (client, mut errors) = connect_watching(&server.url(), options).await?;
    client
        .publish("billing.billing.invoice", "1".into())
        .await?;
    client.publish("payroll.run", "1".into()).await?;
    client.flush().await?;
    let e = expect_server_error(&mut errors, "permissions violation").await?;
    assert!(e.contains("payroll.run"), "{e}");
    Ok(())
}
