//! `sluice-local trigger <event.json>`: our `stripe trigger` for the local stack.
//!
//! Reads a Stripe event file (e.g. one of `tests/fixtures/stripe/`), optionally gives it a fresh
//! `id` and `created` (a new event rather than a redelivery) and a real tenant in place of the
//! fixtures' placeholder, signs it with the first of `STRIPE_WEBHOOK_SECRETS` exactly as Stripe
//! does, POSTs it to `http://127.0.0.1:$SLUICE_PORT/webhooks/stripe` and prints the answer.

use anyhow::{Context, bail};
use serde_json::Value;
use sluice::{clock, ids, stripe::signature};

/// The tenant id the shared fixtures use.
pub const FIXTURE_TENANT: &str = "tnt_fixture0001";

const USAGE: &str = "usage: sluice-local trigger [--fresh] [--tenant tnt_…] <event.json>
  --fresh           new event id and `created` = now (otherwise a redelivery of the file's event)
  --tenant tnt_…    replaces the fixtures' placeholder tenant (tnt_fixture0001)
environment: STRIPE_WEBHOOK_SECRETS (the first secret signs), SLUICE_PORT (default 3000)";

/// What to send.
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    pub file: String,
    pub fresh: bool,
    pub tenant: Option<String>,
}

/// Parses the arguments after `trigger`.
pub fn parse_args(args: &[String]) -> anyhow::Result<Options> {
    let mut opts = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--fresh" => opts.fresh = true,
            "--tenant" => {
                let t = it.next().context("--tenant needs a tenant id")?;
                if !ids::has_prefix(t, "tnt") {
                    bail!("{t:?} is not a tenant id (tnt_…)");
                }
                opts.tenant = Some(t.clone());
            }
            "-h" | "--help" => bail!("{USAGE}"),
            other if other.starts_with("--") => bail!("unknown option {other:?}\n{USAGE}"),
            file if opts.file.is_empty() => opts.file = file.to_owned(),
            extra => bail!("unexpected argument {extra:?}\n{USAGE}"),
        }
    }
    if opts.file.is_empty() {
        bail!("{USAGE}");
    }
    Ok(opts)
}

/// The body to send: the file's text, with the tenant replaced and, if `fresh`, a new id and
/// `created` (then re-serialized; otherwise the bytes are sent as they are in the file).
pub fn prepare(text: &str, fresh: bool, tenant: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let text = match tenant {
        Some(t) => text.replace(FIXTURE_TENANT, t),
        None => text.to_owned(),
    };
    if !fresh {
        return Ok(text.into_bytes());
    }
    let mut event: Value = serde_json::from_str(&text).context("the event file is not JSON")?;
    let Some(obj) = event.as_object_mut() else {
        bail!("the event file is not a JSON object");
    };
    let id = ids::new_id("evt");
    obj.insert("id".into(), Value::String(id));
    obj.insert("created".into(), Value::from(clock::now_epoch()));
    Ok(serde_json::to_vec_pretty(&event)?)
}

/// Signs `body` with `secret` now and POSTs it to `{base_url}/webhooks/stripe`; returns the
/// status and the answer's text.
pub async fn send(base_url: &str, secret: &str, body: Vec<u8>) -> anyhow::Result<(u16, String)> {
    sluice::tls::install_crypto_provider();
    let header = signature::sign(secret, clock::now_epoch(), &body);
    let res = reqwest::Client::new()
        .post(format!("{base_url}/webhooks/stripe"))
        .header(signature::HEADER, header)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {base_url}/webhooks/stripe (is `make dev` running?)"))?;
    let status = res.status().as_u16();
    Ok((status, res.text().await.unwrap_or_default()))
}

/// `sluice-local trigger …`.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = parse_args(args)?;
    let secret = std::env::var("STRIPE_WEBHOOK_SECRETS")
        .ok()
        .and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find(|s| !s.is_empty())
                .map(String::from)
        })
        .context("set STRIPE_WEBHOOK_SECRETS to the secret `make dev` uses (it prints it)")?;
    let port = match std::env::var("SLUICE_PORT") {
        Ok(p) => p
            .parse::<u16>()
            .with_context(|| format!("SLUICE_PORT={p:?} is not a port number"))?,
        Err(_) => 3000,
    };
    let text =
        std::fs::read_to_string(&opts.file).with_context(|| format!("reading {}", opts.file))?;
    let body = prepare(&text, opts.fresh, opts.tenant.as_deref())?;
    let (status, answer) = send(&format!("http://127.0.0.1:{port}"), &secret, body).await?;
    println!("{status} {answer}");
    if status >= 400 {
        bail!("the event was not accepted ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_are_parsed() {
        let o = parse_args(&args(&["--fresh", "--tenant", "tnt_abc", "e.json"])).unwrap();
        assert_eq!(
            o,
            Options {
                file: "e.json".into(),
                fresh: true,
                tenant: Some("tnt_abc".into())
            }
        );
        assert!(parse_args(&args(&[])).is_err());
        assert!(parse_args(&args(&["--tenant", "bob", "e.json"])).is_err());
        assert!(parse_args(&args(&["a.json", "b.json"])).is_err());
    }

    #[test]
    fn fresh_events_get_a_new_id_and_created_and_the_tenant_is_replaced() {
        let text = r#"{"id":"evt_1","created":5,"object":"event","data":{"object":{"metadata":{"tenant_id":"tnt_fixture0001"}}}}"#;
        assert_eq!(prepare(text, false, None).unwrap(), text.as_bytes());
        let out: Value =
            serde_json::from_slice(&prepare(text, true, Some("tnt_real")).unwrap()).unwrap();
        assert_ne!(out["id"], "evt_1");
        assert!(out["id"].as_str().unwrap().starts_with("evt_"));
        assert!(out["created"].as_i64().unwrap() > 5);
        assert_eq!(out["data"]["object"]["metadata"]["tenant_id"], "tnt_real");
    }
}
