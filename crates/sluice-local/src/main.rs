//! `sluice-local`: the local development stack.
//!
//! ```text
//! sluice-local [dev]      the whole stack on 127.0.0.1 (SLUICE_PORT, default 3000)
//! sluice-local trigger [--fresh] [--tenant tnt_…] <event.json>
//!                         sign a Stripe event with STRIPE_WEBHOOK_SECRETS and POST it to the stack
//! sluice-local receive [--port 4000] [--secret whsec_…]…
//!                         a webhook endpoint that prints each delivery and checks its signature
//! sluice-local iam-check <dir>
//!                         the AWS actions recorded in <dir> (SLUICE_AWS_OPS_DIR) against the
//!                         policies in template.yaml
//! ```

const USAGE: &str = "usage: sluice-local [dev]\n       sluice-local trigger [--fresh] [--tenant tnt_…] <event.json>\n       sluice-local receive [--port 4000] [--secret whsec_…]…\n       sluice-local iam-check <dir>";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice::telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("dev") => sluice_local::dev::run().await,
        Some("trigger") => sluice_local::trigger::run(&args[1..]).await,
        Some("receive") => {
            let options = sluice_local::receiver::Options::parse(&args[1..])
                .map_err(|e| anyhow::anyhow!("{e:#}\n{USAGE}"))?;
            sluice_local::receiver::run(options).await
        }
        Some("iam-check") => sluice_local::iam::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown command {other:?}\n{USAGE}"),
    }
}
