//! `sluice-local dev`: the whole stack on 127.0.0.1 (what `make dev` runs).

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::STANDARD};
use sluice::{Config, aws::AwsClients, ids};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    emulator::Emulator,
    iam, poller,
    provision::{self, Resources, StackDefinition},
    server::{self, HttpFunctions},
    stream_poller,
};

/// Loopback ranges local receivers listen on; allowed as endpoint targets only in local runs.
pub const LOCAL_ALLOW_CIDRS: &str = "127.0.0.0/8,::1/128";

/// The configuration the functions get locally: the template's variables for the provisioned
/// resources, plus the local-only allowances (http and loopback endpoints).
pub fn local_config(
    resources: &Resources,
    admin_key: &str,
    stripe_secrets: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<Config> {
    let mut vars: HashMap<String, String> = resources.env();
    vars.insert(
        "ADMIN_KEY_SHA256".into(),
        hex::encode(sluice::auth::digest(admin_key)),
    );
    vars.insert("STRIPE_WEBHOOK_SECRETS".into(), stripe_secrets.into());
    vars.insert("EGRESS_ALLOW_HTTP".into(), "true".into());
    vars.insert("EGRESS_ALLOW_CIDRS".into(), LOCAL_ALLOW_CIDRS.into());
    for (k, v) in extra {
        vars.insert((*k).into(), (*v).into());
    }
    // Settings not given here fall back to the process environment, as in Lambda.
    Ok(Config::from_lookup(|name| {
        vars.get(name).cloned().or_else(|| std::env::var(name).ok())
    })?)
}

/// One set of provisioned resources with the functions' configuration for them (tests and
/// benchmarks make one per scenario, so they never share state).
#[derive(Clone)]
pub struct LocalStack {
    pub resources: Resources,
    pub config: Config,
    pub admin_key: String,
    pub stripe_secret: String,
}

impl LocalStack {
    /// Provisions the template's resources under `prefix` with a fresh admin key and Stripe
    /// secret; `extra` overrides settings.
    pub async fn provision(
        aws: &AwsClients,
        prefix: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<LocalStack> {
        let resources =
            provision::provision(aws, &StackDefinition::from_template()?, prefix).await?;
        let admin_key = ids::new_api_key();
        let stripe_secret = generate_stripe_secret();
        let config = local_config(&resources, &admin_key, &stripe_secret, extra)?;
        Ok(LocalStack {
            resources,
            config,
            admin_key,
            stripe_secret,
        })
    }

    /// Both HTTP functions, built as their `main`s build them (each with its clients tagged for
    /// the IAM check).
    pub fn functions(&self, aws: &AwsClients) -> anyhow::Result<HttpFunctions> {
        Ok(HttpFunctions {
            ingress: stripe_ingress::router(stripe_ingress::IngressState::new(
                self.config.clone(),
                iam::tag(aws, "stripe-ingress"),
            )?),
            api: sluice_api::router(sluice_api::AppState::new(
                self.config.clone(),
                iam::tag(aws, "api"),
            )?),
        })
    }
}

/// The setting of `make dev`'s reconciliation timer: seconds between sweeps.
pub const RECONCILE_EVERY_ENV: &str = "SLUICE_RECONCILE_EVERY_SECS";
/// As the template's schedule: every 15 minutes.
const RECONCILE_EVERY_DEFAULT: Duration = Duration::from_secs(15 * 60);

/// How often `make dev` sweeps Stripe's events (`None`: never). Off without a Stripe API key
/// (there is nothing to list) or with `0`; otherwise `setting` seconds, 15 minutes by default.
pub fn reconcile_every(
    setting: Option<&str>,
    has_stripe_key: bool,
) -> anyhow::Result<Option<Duration>> {
    let every =
        match setting.map(str::trim).filter(|s| !s.is_empty()) {
            None => RECONCILE_EVERY_DEFAULT,
            Some(v) => Duration::from_secs(v.parse().with_context(|| {
                format!("{RECONCILE_EVERY_ENV}={v:?} is not a number of seconds")
            })?),
        };
    Ok((has_stripe_key && !every.is_zero()).then_some(every))
}

/// `make dev`'s stand-in for the template's schedule: the sweep every `every`, through the code
/// the scheduled invocation runs, until `stopped`. A failed run is logged; the next starts again
/// from the checkpoint.
async fn reconcile_timer(
    state: sluice_api::AppState,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.changed() => return,
        }
        match sluice_api::admin::reconcile::sweep(&state, None).await {
            Ok(r) => tracing::info!(
                listed = r.found.listed,
                recovered = r.found.recovered,
                checkpoint = r.checkpoint,
                "reconciliation timer"
            ),
            Err(err) => tracing::warn!(error = %err, "reconciliation timer: the sweep failed"),
        }
    }
}

/// A random Stripe-style signing secret for a local run.
pub fn generate_stripe_secret() -> String {
    format!("whsec_{}", STANDARD.encode(ids::random_bytes::<24>()))
}

fn env_or(name: &str, default: impl FnOnce() -> String) -> (String, bool) {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => (v.trim().to_owned(), false),
        _ => (default(), true),
    }
}

fn port_setting(name: &str, default: u16) -> anyhow::Result<u16> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a port number")),
        Err(_) => Ok(default),
    }
}

/// Runs the stack until Ctrl-C (or SIGTERM); everything it started stops with it.
pub async fn run() -> anyhow::Result<()> {
    let port = port_setting("SLUICE_PORT", 3000)?;
    let aws_port = port_setting("SLUICE_AWS_PORT", 4566)?;
    let (admin_key, admin_generated) = env_or("SLUICE_ADMIN_KEY", ids::new_api_key);
    let (stripe_secrets, stripe_generated) =
        env_or("STRIPE_WEBHOOK_SECRETS", generate_stripe_secret);

    // Bind first: a busy port fails before anything is started.
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("port {port} is in use (set SLUICE_PORT)"))?;
    let emulator = Emulator::start(aws_port)?;
    let aws = AwsClients::new(&emulator.sdk_config().await);
    let resources =
        provision::provision(&aws, &StackDefinition::from_template()?, "sluice-local").await?;
    let config = local_config(&resources, &admin_key, &stripe_secrets, &[])?;

    let stack = LocalStack {
        resources: resources.clone(),
        config: config.clone(),
        admin_key: admin_key.clone(),
        stripe_secret: stripe_secrets.clone(),
    };
    let functions = stack.functions(&aws)?;
    let egress =
        webhook_egress::EgressState::new(config.clone(), iam::tag(&aws, "webhook-egress"))?;
    let (stop, stopped) = watch::channel(false);
    // Lambda's event source mapping, not the function: its calls are checked against SAM's
    // implicit poller policy.
    let event_source = iam::tag(&aws, &format!("webhook-egress{}", iam::EVENT_SOURCE_SUFFIX));
    let poller = tokio::spawn(poller::run(
        event_source.sqs,
        resources.queue_url.clone(),
        resources.queue_arn.clone(),
        egress,
        stopped.clone(),
    ));
    // The outbox: the table's stream feeds the same egress function (its second event source).
    let stream_arn = resources
        .stream_arn
        .clone()
        .context("the template's table has no stream")?;
    let relay = tokio::spawn(stream_poller::run(
        stream_poller::StreamPoller::new(
            &emulator.sdk_config().await,
            "webhook-egress",
            &stream_arn,
        )?,
        webhook_egress::EgressState::new(config.clone(), iam::tag(&aws, "webhook-egress"))?,
        stopped.clone(),
    ));
    let reconcile_every = reconcile_every(
        std::env::var(RECONCILE_EVERY_ENV).ok().as_deref(),
        config.billing.stripe_key.is_some(),
    )?;
    let timer = match reconcile_every {
        Some(every) => Some(tokio::spawn(reconcile_timer(
            sluice_api::AppState::new(config.clone(), iam::tag(&aws, "api"))?,
            every,
            stopped.clone(),
        ))),
        None => None,
    };
    let server = tokio::spawn(server::serve(listener, functions, stopped));

    let base = format!("http://127.0.0.1:{port}");
    let note = |generated: bool| {
        if generated {
            " (generated; set it to choose your own)"
        } else {
            ""
        }
    };
    println!("Sluice is running.");
    println!("  API and Stripe webhooks  {base}   (POST {base}/webhooks/stripe)");
    println!(
        "  local AWS (moto)         {}   (table {}, queue {})",
        emulator.endpoint, resources.table_name, resources.queue_url
    );
    println!(
        "  SLUICE_ADMIN_KEY         {admin_key}{}",
        note(admin_generated)
    );
    println!(
        "  STRIPE_WEBHOOK_SECRETS   {stripe_secrets}{}",
        note(stripe_generated)
    );
    match reconcile_every {
        Some(every) => println!(
            "  Stripe reconciliation    every {} s   ({RECONCILE_EVERY_ENV}; 0 turns it off)",
            every.as_secs()
        ),
        None => println!(
            "  Stripe reconciliation    off   (no STRIPE_API_KEY, or {RECONCILE_EVERY_ENV}=0)"
        ),
    }
    println!("Try:");
    println!("  curl -s {base}/health");
    println!(
        "  curl -s -X POST {base}/admin/tenants -H 'X-Admin-Key: {admin_key}' -H 'content-type: application/json' -d '{{\"name\":\"Acme\"}}'"
    );
    println!("Ctrl-C stops everything.");

    wait_for_stop_signal().await;
    println!("Stopping…");
    let _ = stop.send(true);
    let _ = tokio::join!(poller, relay, server);
    if let Some(timer) = timer {
        let _ = timer.await;
    }
    drop(emulator);
    Ok(())
}

async fn wait_for_stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::reconcile_every;

    #[test]
    fn the_timer_sweeps_every_15_minutes_unless_told_otherwise_and_only_with_a_stripe_key() {
        let every = |s: Option<&str>, key| reconcile_every(s, key).unwrap();
        assert_eq!(every(None, true), Some(Duration::from_secs(900)));
        assert_eq!(every(Some(" "), true), Some(Duration::from_secs(900)));
        assert_eq!(every(Some("30"), true), Some(Duration::from_secs(30)));
        assert_eq!(every(Some("0"), true), None);
        assert_eq!(every(None, false), None);
        assert_eq!(every(Some("30"), false), None);
        assert!(reconcile_every(Some("15m"), true).is_err());
    }
}
