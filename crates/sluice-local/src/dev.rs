//! `sluice-local dev`: the whole stack on 127.0.0.1 (what `make dev` runs).

use std::collections::HashMap;

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
