//! `make bench`: every SPEC §9 figure, measured on the local stack, printed as one table; then the
//! AWS-like table ([`aws_like`]): the operations under an in-region latency model, beside the
//! Python peer.
//!
//! Exits non-zero only when something could not be measured — never because a figure misses its
//! target (machines here are noisy; the table says how each figure compares).

mod aws_like;
mod cost;
mod events;
mod in_process;
mod micro;
mod process;
mod report;
mod runtime_api;
mod scenarios;
mod timeline;

use std::collections::HashMap;

use anyhow::Context;
use sluice::aws::AwsClients;
use sluice_local::{
    emulator::Emulator,
    provision::{self, StackDefinition},
};

use crate::{
    process::{Function, median},
    report::{Report, Row},
};

const FUNCTIONS: [&str; 3] = ["stripe-ingress", "api", "webhook-egress"];
const COLD_START_RUNS: usize = 7;

fn main() -> anyhow::Result<()> {
    // The functions run on a current-thread runtime (one invocation at a time per instance);
    // `--multi-thread` measures the in-process figures on tokio's default runtime instead.
    let mut runtime = if std::env::args().any(|a| a == "--multi-thread") {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    runtime.enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    if let Some(name) = arg_value("--scenario") {
        return one_scenario(&name).await;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // `--aws-like`: only the AWS-like table (no release binaries).
    if std::env::args().any(|a| a == "--aws-like") {
        let table = aws_like_table(quick).await?;
        println!("{table}");
        write_report(&table)?;
        return Ok(());
    }
    // `--in-process`: only the in-process figures and micro-benchmarks (no release binaries).
    let in_process_only = std::env::args().any(|a| a == "--in-process");
    let functions: &[&str] = if in_process_only { &[] } else { &FUNCTIONS };
    let load_n = if quick { 300 } else { 3000 };
    let mut report = Report::default();

    let emulator = Emulator::start_on_free_port().context("starting the emulator")?;
    let aws = AwsClients::new(&emulator.sdk_config().await);
    let def = StackDefinition::from_template()?;
    let resources = provision::provision(&aws, &def, "bench").await?;
    let admin_key = sluice::ids::new_api_key();
    let stripe_secret = sluice_local::dev::generate_stripe_secret();
    let config = sluice_local::dev::local_config(&resources, &admin_key, &stripe_secret, &[])?;
    let (tenant, key) = sluice::tenants::create_tenant(
        &aws.dynamodb,
        &config.table_name,
        sluice::tenants::NewTenant {
            name: "Bench".into(),
            monthly_budget_minor: Some(1_000_000),
            currency: "usd".into(),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the bench tenant: {e:?}"))?;

    // The environment template.yaml gives each function, pointed at the emulator.
    let mut env: HashMap<String, String> = resources.env();
    env.extend([
        ("AWS_ENDPOINT_URL".into(), emulator.endpoint.clone()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        (
            "ADMIN_KEY_SHA256".into(),
            hex::encode(sluice::auth::digest(&admin_key)),
        ),
        ("STRIPE_WEBHOOK_SECRETS".into(), stripe_secret.clone()),
        ("EGRESS_ALLOW_HTTP".into(), "true".into()),
        (
            "EGRESS_ALLOW_CIDRS".into(),
            sluice_local::dev::LOCAL_ALLOW_CIDRS.into(),
        ),
        ("RUST_LOG".into(), "info".into()),
    ]);

    // Binary sizes.
    for &name in functions {
        let bytes = process::size_of(&process::release_binary(name))?;
        report.push(Row::size(name, bytes));
    }

    let api_key = key.api_key.clone();
    let tenant_id = tenant.id.clone().into_string();
    let secret = stripe_secret.clone();
    let queue_arn = resources.queue_arn.clone();
    let event_for = move |name: &str| -> Box<dyn Fn(usize) -> Vec<u8> + Sync> {
        match name {
            "api" => {
                let key = api_key.clone();
                Box::new(move |_| {
                    events::http_event(
                        "GET",
                        "/v1/account",
                        &[("authorization", &format!("Bearer {key}"))],
                        b"",
                    )
                })
            }
            "stripe-ingress" => {
                let (tenant_id, secret) = (tenant_id.clone(), secret.clone());
                Box::new(move |_| {
                    let body = events::checkout_paid(&tenant_id, 100);
                    let signature = events::stripe_signature(&secret, &body);
                    events::http_event(
                        "POST",
                        "/webhooks/stripe",
                        &[
                            ("stripe-signature", &signature),
                            ("content-type", "application/json"),
                        ],
                        &body,
                    )
                })
            }
            _ => {
                let (tenant_id, queue_arn) = (tenant_id.clone(), queue_arn.clone());
                Box::new(move |_| {
                    // A delivery that does not exist: the claim finds nothing to send.
                    let message = sluice::fanout::DeliveryMessage::Deliver {
                        tenant_id: tenant_id.clone(),
                        event_id: sluice::ids::new_id("msg"),
                        endpoint_id: "ep_none".into(),
                        generation: 1,
                    };
                    events::sqs_event(&queue_arn, &[message.to_body()])
                })
            }
        }
    };

    for &name in functions {
        let function = Function {
            name,
            binary: process::release_binary(name),
            env: env.clone(),
        };
        let event = event_for(name);
        let runs = process::cold_starts(&function, COLD_START_RUNS, &*event)
            .await
            .with_context(|| format!("cold start of {name}"))?;
        report.push(Row::cold_start(
            name,
            median(runs.iter().map(|r| r.to_ready).collect()),
            median(runs.iter().map(|r| r.to_first_answer).collect()),
            COLD_START_RUNS,
        ));
        // moto's transactions copy the whole table: keep it small while the load runs.
        let trimmer = tokio::spawn(trim_forever(aws.clone(), config.table_name.clone()));
        // Every ingress request is a new event and a DynamoDB transaction, which moto serves
        // slower and slower as its process grows: a thousand of them is load enough.
        let n = if name == "stripe-ingress" {
            load_n.min(1000)
        } else {
            load_n
        };
        let load = process::load(&function, n, &*event).await;
        trimmer.abort();
        let load = load.with_context(|| format!("load on {name}"))?;
        report.push(Row::peak_rss(name, load));
    }

    in_process_figures(
        &mut report,
        &emulator.sdk_config().await,
        if quick { 50 } else { 300 },
    )
    .await;
    for row in micro_rows() {
        report.push(row);
    }

    drop(emulator);
    let aws_like = if in_process_only {
        Ok(String::new())
    } else {
        aws_like_table(quick).await
    };
    report.print();
    let aws_like = aws_like?;
    println!("{aws_like}");
    write_report(&format!("{}\n{aws_like}", report.markdown()))?;
    anyhow::ensure!(
        report.failures() == 0,
        "{} figure(s) could not be measured (see the table)",
        report.failures()
    );
    Ok(())
}

/// The AWS-like table (see [`aws_like`]): `--latency SPEC` for another model, `--peer DIR` for
/// the peer's checkout.
async fn aws_like_table(quick: bool) -> anyhow::Result<String> {
    let latency = arg_value("--latency").unwrap_or_else(|| aws_like::DEFAULT_LATENCY.into());
    let rounds = arg_value("--rounds").map_or(Ok(if quick { 30 } else { 200 }), |n| n.parse())?;
    let mut notes = Vec::new();
    let peer = aws_like::peer_dir(arg_value("--peer"));
    let rows = aws_like::run(&latency, rounds, &peer, &mut notes).await?;
    let failures = rows.iter().filter(|r| r.sluice.is_err()).count();
    let table = aws_like::markdown(&latency, &rows, &notes);
    anyhow::ensure!(
        failures == 0,
        "{table}\n{failures} AWS-like figure(s) could not be measured"
    );
    let cost = cost_table(&rows)
        .await
        .unwrap_or_else(|e| format!("Cost per million: not measured: {e:#}\n"));
    Ok(format!("{table}\n{cost}"))
}

/// The cost tables ([`cost`]): each operation once more on a plain emulator, its items sized,
/// priced with the AWS-like table's CPU and round trips.
async fn cost_table(rows: &[aws_like::Row]) -> anyhow::Result<String> {
    eprintln!("cost: sizing what each operation writes");
    let emulator = Emulator::start_on_free_port().context("starting the emulator")?;
    let ops = cost::measure(&emulator.sdk_config().await).await?;
    Ok(cost::table(ops, rows)?.markdown())
}

fn write_report(markdown: &str) -> anyhow::Result<()> {
    let path = sluice_local::repo_root().join("target/bench/report.md");
    std::fs::create_dir_all(path.parent().expect("a directory"))?;
    std::fs::write(path, markdown)?;
    Ok(())
}

/// The GetItem floor's two halves: the SDK's own work, and one HTTP round trip without it.
fn floor_part_rows(sdk_alone: &in_process::Cost, http_alone: &in_process::Cost) -> [Row; 2] {
    let mut sdk = Row::cpu("floor part: the SDK alone", sdk_alone, None, None);
    sdk.how = format!(
        "the floor's GetItem {} times, same SDK configuration, through an in-memory HTTP client \
         answering the emulator's own bytes at once (no socket)",
        sdk_alone.n
    );
    let mut http = Row::cpu(
        "floor part: the HTTP round trip alone",
        http_alone,
        None,
        None,
    );
    http.how = format!(
        "the floor's GetItem body POSTed {} times by a bare hyper client to the emulator on a \
         kept-alive connection (no SDK, unsigned)",
        http_alone.n
    );
    [sdk, http]
}

/// The micro-benchmarks' rows.
fn micro_rows() -> impl Iterator<Item = Row> {
    micro::run()
        .into_iter()
        .map(|(name, ns)| Row::micro(name, ns))
}

/// The value after `flag` on the command line.
fn arg_value(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

/// `--scenario get|floor|stripe|idem|egress|micro [--n N]`: one in-process scenario and nothing
/// else, printed as measured — for profiling (`perf record -g target/profiling/sluice-bench
/// --scenario …`) and for checking how fast the machine is today (`micro`). `get` is the GetItem
/// floor alone; `floor` adds its parts and the write floor.
async fn one_scenario(name: &str) -> anyhow::Result<()> {
    let n: usize = arg_value("--n").map_or(Ok(300), |n| n.parse())?;
    if name == "micro" {
        let mut report = Report::default();
        for row in micro_rows() {
            report.push(row);
        }
        report.print();
        return Ok(());
    }
    let emulator = Emulator::start_on_free_port().context("starting the emulator")?;
    let sdk = emulator.sdk_config().await;
    // The same rows `make bench` prints, without targets.
    let cpu = |what: &str, cost: &in_process::Cost| Row::cpu(what, cost, None, None);
    let rows = match name {
        "get" => vec![cpu("GetItem", &scenarios::sdk_floor(&sdk, n).await?)],
        "floor" => {
            let (sdk_alone, http_alone) = scenarios::sdk_floor_parts(&sdk, n).await?;
            let mut rows = vec![cpu("GetItem", &scenarios::sdk_floor(&sdk, n).await?)];
            rows.extend(floor_part_rows(&sdk_alone, &http_alone));
            rows.push(cpu(
                "PutItem + TransactWriteItems",
                &scenarios::sdk_floor_write(&sdk, n).await?,
            ));
            rows
        }
        "stripe" => {
            let (new, duplicate) = scenarios::stripe_events(&sdk, n).await?;
            vec![
                cpu("new Stripe event", &new),
                cpu("duplicate Stripe event", &duplicate),
            ]
        }
        "idem" => {
            let (first, replay) = scenarios::idempotent_writes(&sdk, n).await?;
            vec![
                cpu("first idempotent write", &first),
                cpu("idempotent replay", &replay),
            ]
        }
        "egress" => vec![cpu(
            "egress delivery",
            &scenarios::egress_deliveries(&sdk, n).await?,
        )],
        other => {
            anyhow::bail!("unknown scenario {other} (get, floor, stripe, idem, egress, micro)")
        }
    };
    let mut report = Report::default();
    for row in rows {
        report.push(row);
    }
    report.print();
    Ok(())
}

/// The peer's figures on this machine (SPEC §9): Python, Powertools idempotency, stripe-python,
/// boto3, on the same local stack.
const PEER_STRIPE_EVENT_MS: f64 = 2.7;
const PEER_FIRST_IDEMPOTENT_MS: f64 = 4.4;
const PEER_REPLAY_MS: f64 = 1.7;

async fn in_process_figures(report: &mut Report, sdk: &aws_config::SdkConfig, n: usize) {
    let floor = match scenarios::sdk_floor(sdk, n).await {
        Ok(floor) => {
            report.push(Row::cpu(
                "one bare SDK GetItem (the floor)",
                &floor,
                None,
                None,
            ));
            Some(floor)
        }
        Err(err) => {
            report.failed("SDK floor", err);
            None
        }
    };
    let floor = floor.as_ref();
    match scenarios::sdk_floor_parts(sdk, n).await {
        Ok((sdk_alone, http_alone)) => {
            for row in floor_part_rows(&sdk_alone, &http_alone) {
                report.push(row);
            }
        }
        Err(err) => report.failed("SDK floor, taken apart", err),
    }
    match scenarios::sdk_floor_write(sdk, n).await {
        Ok(cost) => report.push(Row::cpu(
            "bare SDK PutItem + 3-item TransactWriteItems (the calls of a first idempotent write)",
            &cost,
            None,
            floor,
        )),
        Err(err) => report.failed("SDK write floor", err),
    }
    match scenarios::stripe_events(sdk, n).await {
        Ok((new, duplicate)) => {
            report.push(Row::requests(
                "new Stripe event",
                &new,
                "DynamoDB",
                1.0,
                "= 1",
            ));
            report.push(Row::requests(
                "duplicate Stripe event",
                &duplicate,
                "DynamoDB",
                1.0,
                "= 1",
            ));
            report.push(Row::cpu(
                "new Stripe event",
                &new,
                Some(PEER_STRIPE_EVENT_MS),
                floor,
            ));
            report.push(Row::cpu(
                "duplicate Stripe event",
                &duplicate,
                Some(PEER_STRIPE_EVENT_MS),
                floor,
            ));
        }
        Err(err) => report.failed("Stripe events", err),
    }
    match scenarios::idempotent_writes(sdk, n).await {
        Ok((first, replay)) => {
            let op = "first idempotent write (POST /v1/usage)";
            report.push(Row::requests(op, &first, "DynamoDB", 2.0, "≤ 2"));
            report.push(Row::requests(
                "idempotent replay",
                &replay,
                "DynamoDB",
                1.0,
                "= 1",
            ));
            report.push(Row::cpu(op, &first, Some(PEER_FIRST_IDEMPOTENT_MS), floor));
            report.push(Row::cpu(
                "idempotent replay",
                &replay,
                Some(PEER_REPLAY_MS),
                floor,
            ));
        }
        Err(err) => report.failed("idempotent writes", err),
    }
    match scenarios::egress_deliveries(sdk, n).await {
        Ok(delivery) => {
            report.push(Row::requests(
                "egress delivery, warm",
                &delivery,
                "KMS",
                0.0,
                "= 0",
            ));
            report.push(Row::cpu("egress delivery, warm", &delivery, None, floor));
        }
        Err(err) => report.failed("egress deliveries", err),
    }
    match scenarios::egress_concurrency(sdk).await {
        Ok(c) => report.push(Row::concurrency(c.wall, c.slowest, c.sum)),
        Err(err) => report.failed("egress batch concurrency", err),
    }
}

/// Deletes what a load leaves behind (Stripe events, money keys, ledger entries, outbound events,
/// deliveries, counters), keeping tenants and API keys, every half second until aborted.
async fn trim_forever(aws: AwsClients, table: String) {
    use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
    use sluice::table::ItemExt;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let Ok(scan) = aws
            .dynamodb
            .scan()
            .table_name(&table)
            .projection_expression("pk, sk")
            .send()
            .await
        else {
            continue;
        };
        let doomed: Vec<WriteRequest> = scan
            .items()
            .iter()
            .filter(|item| {
                let (pk, sk) = (
                    item.get_s("pk").unwrap_or(""),
                    item.get_s("sk").unwrap_or(""),
                );
                !(sk == sluice::table::TENANT_PROFILE_SK
                    || sk.starts_with("APIKEY")
                    || sk.starts_with("ENDPOINT#")
                    || pk.starts_with("APIKEY#"))
            })
            .map(|item| {
                WriteRequest::builder()
                    .delete_request(
                        DeleteRequest::builder()
                            .set_key(Some(item.clone()))
                            .build()
                            .expect("key set"),
                    )
                    .build()
            })
            .collect();
        for chunk in doomed.chunks(25) {
            let _ = aws
                .dynamodb
                .batch_write_item()
                .request_items(&table, chunk.to_vec())
                .send()
                .await;
        }
    }
}
