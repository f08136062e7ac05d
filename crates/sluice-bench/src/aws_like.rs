//! The AWS-like table: the operations again, on an emulator that answers each AWS request after
//! an in-region latency (`infra/emulator.py --latency`), so that wall time — what Lambda bills —
//! is dominated by round trips as it is in AWS; beside them the Python peer (`../shared/peer`),
//! run on the same emulator with the same latency, and the ratios.
//!
//! Per operation: wall time (median and 95th percentile of one handler call), the round trips on
//! its critical path (the longest chain of requests each sent after the previous one's answer,
//! from the [`crate::timeline`] interceptor) beside the total request count, and handler CPU.
//! The peer's handlers are synchronous boto3 code, so each of its requests is a round trip on
//! the critical path; its request count comes from its own botocore hook.
//!
//! moto copies every table a `TransactWriteItems` touches, so its answers slow down as a table
//! grows (see the peer's README); as the peer does, each round (a first call and its repeat)
//! is followed by an untimed deletion, through an uncounted client, of every item the round
//! added — the table stays at its size after setup (the tenant, its profile and keys).

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, ensure};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use serde_json::{Value, json};

use crate::{
    events,
    in_process::{Cost, Scenario},
    scenarios, timeline,
};

/// Milliseconds per request, per service: DynamoDB's single-digit milliseconds, SQS SendMessage
/// and KMS a little more (README "Performance" says where the figures come from).
pub const DEFAULT_LATENCY: &str = "dynamodb=4,sqs=8,kms=6";
/// Discarded rounds before the measured ones.
const WARM_UP: usize = 5;

/// One side's figures for one operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub wall_ms: f64,
    pub wall_p95_ms: f64,
    pub sequential: f64,
    pub requests: f64,
    /// e.g. `DynamoDB 1, SQS 1`.
    pub by_service: String,
    pub cpu_ms: f64,
    /// CPU plus the modelled latency along the critical path: the wall time the operation would
    /// take if AWS answered in exactly the model's latency (moto's own processing left out).
    pub modelled_ms: f64,
}

/// `"dynamodb=4,sqs=8"` → milliseconds by service, lower-case (the emulator checks the spec).
pub fn latency_model(spec: &str) -> BTreeMap<String, f64> {
    spec.split(',')
        .filter_map(|part| part.split_once('='))
        .filter_map(|(s, ms)| Some((s.trim().to_ascii_lowercase(), ms.trim().parse().ok()?)))
        .collect()
}

impl Figures {
    pub fn of(cost: &Cost, model: &BTreeMap<String, f64>) -> Figures {
        let latency = |r: &timeline::Request| {
            model
                .get(&r.service.to_ascii_lowercase())
                .copied()
                .unwrap_or(0.0)
        };
        let waits: f64 = cost
            .calls
            .iter()
            .map(|c| timeline::critical_path(c, latency))
            .sum::<f64>()
            / cost.calls.len().max(1) as f64;
        Figures {
            wall_ms: cost.wall_median.as_secs_f64() * 1e3,
            wall_p95_ms: cost.wall_p95.as_secs_f64() * 1e3,
            sequential: cost.sequential,
            requests: cost.total_requests(),
            by_service: cost
                .requests
                .iter()
                .map(|(s, n)| format!("{s} {}", count(*n)))
                .collect::<Vec<_>>()
                .join(", "),
            cpu_ms: cost.cpu_per_call.as_secs_f64() * 1e3,
            modelled_ms: cost.cpu_per_call.as_secs_f64() * 1e3 + waits,
        }
    }
}

/// One row: an operation, measured on Sluice and (when it has one) on the peer.
pub struct Row {
    pub op: &'static str,
    pub sluice: Result<Figures, String>,
    pub peer: Option<Figures>,
}

/// The operations, in the table's order, with the peer's case names.
const OPS: [(&str, Option<&str>); 5] = [
    (
        "new Stripe event (with its notification)",
        Some("new Stripe event"),
    ),
    ("duplicate Stripe event", Some("duplicate Stripe event")),
    (
        "first usage write (POST /v1/usage)",
        Some("first idempotent debit"),
    ),
    ("idempotent replay", Some("replayed idempotent debit")),
    ("egress delivery, warm (one message)", None),
];

/// Measures every operation on an emulator with `latency`, then the peer when `peer_dir` holds
/// one; `notes` collects what the table's reader needs to know (a skipped peer, a failure).
pub async fn run(
    latency: &str,
    rounds: usize,
    peer_dir: &Path,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let emulator = sluice_local::emulator::Emulator::start_with_args(
        sluice_local::emulator::free_port()?,
        &["--latency", latency],
    )?;
    let model = latency_model(latency);
    let figures = |c: &Cost| Figures::of(c, &model);
    let sdk = sluice_local::emulator::sdk_config_for(&emulator.endpoint).await;
    let mut sluice: Vec<Result<Figures, String>> = Vec::new();
    let failed = |e: anyhow::Error| format!("{e:#}");
    eprintln!("aws-like: Stripe events ({rounds} rounds, latency {latency})");
    match stripe_rounds(&sdk, rounds).await {
        Ok((new, dup)) => sluice.extend([Ok(figures(&new)), Ok(figures(&dup))]),
        Err(e) => sluice.extend([Err(failed(e)), Err("see above".into())]),
    }
    eprintln!("aws-like: idempotent writes");
    match usage_rounds(&sdk, rounds).await {
        Ok((first, replay)) => sluice.extend([Ok(figures(&first)), Ok(figures(&replay))]),
        Err(e) => sluice.extend([Err(failed(e)), Err("see above".into())]),
    }
    eprintln!("aws-like: egress deliveries");
    sluice.push(
        scenarios::egress_deliveries(&sdk, rounds)
            .await
            .map(|c| figures(&c))
            .map_err(failed),
    );
    drop(emulator);

    let peer = if peer_dir.join("run.sh").is_file() {
        eprintln!("aws-like: the Python peer in {}", peer_dir.display());
        match run_peer(peer_dir, latency, rounds, &model) {
            Ok(peer) => peer,
            Err(e) => {
                notes.push(format!("The peer could not be measured: {e:#}"));
                BTreeMap::new()
            }
        }
    } else {
        notes.push(format!(
            "No peer in {} (`--peer DIR` or `SLUICE_PEER` names another): its columns are empty.",
            peer_dir.display()
        ));
        BTreeMap::new()
    };
    Ok(OPS
        .iter()
        .zip(sluice)
        .map(|(&(op, peer_case), sluice)| Row {
            op,
            sluice,
            peer: peer_case.and_then(|c| peer.get(c).cloned()),
        })
        .collect())
}

/// Rounds of a new Stripe event, then the same event redelivered (re-signed, as Stripe does).
async fn stripe_rounds(sdk: &SdkConfig, rounds: usize) -> anyhow::Result<(Cost, Cost)> {
    let s = Scenario::new(sdk, "aws-like-stripe").await?;
    let keep = Trim::new(sdk, &s).await?;
    let (mut new, mut dup) = (Vec::new(), Vec::new());
    for i in 0..WARM_UP + rounds {
        let body = events::checkout_paid(&s.tenant_id, 100);
        let first = s.sample_http(s.stripe_request(&body)).await?;
        let again = s.sample_http(s.stripe_request(&body)).await?;
        keep.trim().await?;
        if i >= WARM_UP {
            new.push(first);
            dup.push(again);
        }
    }
    Ok((Cost::from_samples(&new)?, Cost::from_samples(&dup)?))
}

/// Rounds of a first `POST /v1/usage`, then the same request again (a replay).
async fn usage_rounds(sdk: &SdkConfig, rounds: usize) -> anyhow::Result<(Cost, Cost)> {
    let s = Scenario::new(sdk, "aws-like-usage").await?;
    let keep = Trim::new(sdk, &s).await?;
    // Credits to spend (on the tenant's profile item, which stays); the event's items go.
    let credit = events::checkout_paid(&s.tenant_id, 1_000_000);
    s.sample_http(s.stripe_request(&credit)).await?;
    keep.trim().await?;
    let (mut first, mut replay) = (Vec::new(), Vec::new());
    for i in 0..WARM_UP + rounds {
        let key = format!("aws-like-{i}");
        let request = || {
            s.tenant_request(
                "POST",
                "/v1/usage",
                Some(&key),
                json!({"amount_minor": 1, "description": "bench"}),
            )
        };
        let once = s.sample_http(request()).await?;
        let twice = s.sample_http(request()).await?;
        keep.trim().await?;
        if i >= WARM_UP {
            first.push(once);
            replay.push(twice);
        }
    }
    Ok((Cost::from_samples(&first)?, Cost::from_samples(&replay)?))
}

/// Deletes, through a client no interceptor sees, every item that was not in the table when the
/// scenario was set up (the tenant, its profile and keys): items a call only updates stay, items
/// it creates (events, ledger, counters, notifications, locks) are created afresh each round.
struct Trim {
    db: aws_sdk_dynamodb::Client,
    table: String,
    kept: HashSet<(String, String)>,
}

type Key = std::collections::HashMap<String, AttributeValue>;

impl Trim {
    async fn new(sdk: &SdkConfig, s: &Scenario) -> anyhow::Result<Trim> {
        let mut trim = Trim {
            db: aws_sdk_dynamodb::Client::new(sdk),
            table: s.stack.config.table_name.clone(),
            kept: HashSet::new(),
        };
        trim.kept = trim.keys().await?.iter().map(Self::id).collect();
        Ok(trim)
    }

    async fn keys(&self) -> anyhow::Result<Vec<Key>> {
        let mut keys = Vec::new();
        let mut start: Option<Key> = None;
        loop {
            let page = self
                .db
                .scan()
                .table_name(&self.table)
                .projection_expression("pk, sk")
                .set_exclusive_start_key(start)
                .send()
                .await?;
            keys.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(keys);
            }
        }
    }

    fn id(key: &Key) -> (String, String) {
        let s = |name: &str| match key.get(name) {
            Some(AttributeValue::S(v)) => v.clone(),
            other => format!("{other:?}"),
        };
        (s("pk"), s("sk"))
    }

    async fn trim(&self) -> anyhow::Result<()> {
        let doomed: Vec<WriteRequest> = {
            let keys = self.keys().await?;
            keys.into_iter()
                .filter(|k| !self.kept.contains(&Self::id(k)))
                .map(|k| {
                    let delete = DeleteRequest::builder().set_key(Some(k)).build();
                    WriteRequest::builder()
                        .delete_request(delete.expect("key set"))
                        .build()
                })
                .collect()
        };
        for chunk in doomed.chunks(25) {
            let out = self
                .db
                .batch_write_item()
                .request_items(&self.table, chunk.to_vec())
                .send()
                .await?;
            ensure!(
                out.unprocessed_items.unwrap_or_default().is_empty(),
                "moto left items unprocessed"
            );
        }
        Ok(())
    }
}

/// The peer's README names its warm cases; its JSON (`--json`) carries every sample.
fn run_peer(
    dir: &Path,
    latency: &str,
    rounds: usize,
    model: &BTreeMap<String, f64>,
) -> anyhow::Result<BTreeMap<String, Figures>> {
    let root = sluice_local::repo_root();
    let out = std::env::temp_dir().join(format!("sluice-bench-peer-{}.json", std::process::id()));
    let ran = Command::new("bash")
        .arg(dir.join("run.sh"))
        .arg("--moto-server")
        .arg(dir.join("emulator-waitress.sh"))
        .arg("--json")
        .arg(&out)
        .args(["-n", &rounds.to_string(), "--warmup", &WARM_UP.to_string()])
        .args(["--cold-repeats", "1"])
        .current_dir(&root)
        .env("SLUICE_CHECKOUT", &root)
        .env("EMULATOR_ARGS", format!("--latency {latency}"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running the peer's run.sh")?;
    ensure!(
        ran.status.success(),
        "the peer's run.sh failed ({}): {}",
        ran.status,
        String::from_utf8_lossy(&ran.stdout)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let text = std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()));
    let _ = std::fs::remove_file(&out);
    peer_figures(&serde_json::from_str(&text?)?, model)
}

/// The peer's warm cases from its `--json` output: median wall time, mean CPU and requests (its
/// requests are sequential: synchronous boto3 calls, all to DynamoDB).
pub fn peer_figures(
    json: &Value,
    model: &BTreeMap<String, f64>,
) -> anyhow::Result<BTreeMap<String, Figures>> {
    let dynamodb_ms = model.get("dynamodb").copied().unwrap_or(0.0);
    let cases = json["warm"].as_array().context("no `warm` cases")?;
    let mut out = BTreeMap::new();
    for case in cases {
        let name = case["case"].as_str().context("a case without a name")?;
        let numbers = |field: &str| -> anyhow::Result<Vec<f64>> {
            let values = case[field]
                .as_array()
                .context(format!("{name}: no {field}"))?;
            let v: Vec<f64> = values.iter().filter_map(Value::as_f64).collect();
            ensure!(
                !v.is_empty() && v.len() == values.len(),
                "{name}: {field} is not a list of numbers"
            );
            Ok(v)
        };
        let mut wall = numbers("lat_ms")?;
        wall.sort_by(f64::total_cmp);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let requests = mean(&numbers("requests")?);
        let cpu_ms = mean(&numbers("cpu_us")?) / 1e3;
        out.insert(
            name.to_owned(),
            Figures {
                wall_ms: wall[(wall.len() - 1) / 2],
                wall_p95_ms: wall[(wall.len() * 95).div_ceil(100).max(1) - 1],
                sequential: requests,
                requests,
                by_service: format!("DynamoDB {}", count(requests)),
                cpu_ms,
                modelled_ms: cpu_ms + requests * dynamodb_ms,
            },
        );
    }
    Ok(out)
}

/// A per-call count: an integer when it is one.
fn count(n: f64) -> String {
    if (n - n.round()).abs() < 0.005 {
        format!("{}", n.round())
    } else {
        format!("{n:.2}")
    }
}

/// `peer ÷ Sluice`, e.g. `2.1×` (above 1: Sluice is lower).
fn ratio(peer: f64, sluice: f64) -> String {
    if sluice > 0.0 {
        format!("{:.1}×", peer / sluice)
    } else {
        "–".into()
    }
}

/// The table, in markdown, under a line naming the model.
pub fn markdown(latency: &str, rows: &[Row], notes: &[String]) -> String {
    let mut out = format!(
        "AWS-like: every AWS request answered after {latency} ms (per service) by the emulator; \
         Sluice and the peer each on their own emulator with that latency.\n\n\
         | operation | Sluice wall ms, median (p95) | Sluice modelled ms | Sluice round trips: sequential / all | Sluice CPU ms | \
         peer wall ms, median (p95) | peer modelled ms | peer round trips | peer CPU ms | wall: peer ÷ Sluice | modelled: peer ÷ Sluice | CPU: peer ÷ Sluice |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    let side = |f: &Figures| {
        (
            format!(
                "{:.2} ({:.2}) | {:.2}",
                f.wall_ms, f.wall_p95_ms, f.modelled_ms
            ),
            format!(
                "{} / {} ({})",
                count(f.sequential),
                count(f.requests),
                f.by_service
            ),
            format!("{:.3}", f.cpu_ms),
        )
    };
    for row in rows {
        let (sw, sr, sc) = match &row.sluice {
            Ok(f) => side(f),
            Err(e) => (
                "**not measured** | –".into(),
                e.replace('|', "/"),
                "–".into(),
            ),
        };
        let (pw, pr, pc) = row
            .peer
            .as_ref()
            .map_or(("– | –".into(), "–".into(), "–".into()), side);
        let (rw, rm, rc) = match (&row.sluice, &row.peer) {
            (Ok(s), Some(p)) => (
                ratio(p.wall_ms, s.wall_ms),
                ratio(p.modelled_ms, s.modelled_ms),
                ratio(p.cpu_ms, s.cpu_ms),
            ),
            _ => ("–".into(), "–".into(), "–".into()),
        };
        out.push_str(&format!(
            "| {} | {sw} | {sr} | {sc} | {pw} | {pr} | {pc} | {rw} | {rm} | {rc} |\n",
            row.op
        ));
    }
    for note in notes {
        out.push_str(&format!("\n{note}\n"));
    }
    out
}

/// Where the peer is: `--peer DIR`, else `$SLUICE_PEER`, else `../shared/peer` beside the
/// checkout.
pub fn peer_dir(flag: Option<String>) -> PathBuf {
    flag.or_else(|| std::env::var("SLUICE_PEER").ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| sluice_local::repo_root().join("../shared/peer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_json() -> Value {
        json!({"warm": [
            {"case": "new Stripe event", "lat_ms": [9.0, 5.0, 7.0], "cpu_us": [1000, 2000, 3000],
             "requests": [1, 1, 1], "request_sequences": {"TransactWriteItems": 3}},
            {"case": "first idempotent debit", "lat_ms": [14.0, 15.0], "cpu_us": [4000.0, 4000.0],
             "requests": [3, 3], "request_sequences": {"PutItem+UpdateItem+UpdateItem": 2}},
        ]})
    }

    #[test]
    fn the_peers_json_gives_median_wall_mean_cpu_and_sequential_requests() {
        let figures = peer_figures(&peer_json(), &latency_model("dynamodb=4,sqs=8")).unwrap();
        let new = &figures["new Stripe event"];
        assert_eq!(new.wall_ms, 7.0);
        assert_eq!(new.wall_p95_ms, 9.0);
        assert_eq!(new.cpu_ms, 2.0);
        assert_eq!((new.sequential, new.requests), (1.0, 1.0));
        let first = &figures["first idempotent debit"];
        assert_eq!(first.wall_ms, 14.0);
        assert_eq!((first.sequential, first.requests), (3.0, 3.0));
        assert_eq!(first.by_service, "DynamoDB 3");
        // Its CPU, then three DynamoDB round trips of 4 ms one after the other.
        assert_eq!(first.modelled_ms, 4.0 + 12.0);
    }

    #[test]
    fn a_peer_json_without_samples_is_an_error() {
        let model = BTreeMap::new();
        assert!(peer_figures(&json!({}), &model).is_err());
        let empty = json!({"warm": [{"case": "x", "lat_ms": [], "cpu_us": [], "requests": []}]});
        assert!(peer_figures(&empty, &model).is_err());
    }

    #[test]
    fn the_table_shows_both_sides_and_their_ratios() {
        let sluice = Figures {
            wall_ms: 5.0,
            wall_p95_ms: 6.0,
            sequential: 1.0,
            requests: 2.0,
            by_service: "DynamoDB 1, SQS 1".into(),
            cpu_ms: 0.5,
            modelled_ms: 12.5,
        };
        let model = latency_model("dynamodb=4");
        let peer = peer_figures(&peer_json(), &model).unwrap()["new Stripe event"].clone();
        let rows = [
            Row {
                op: "new Stripe event",
                sluice: Ok(sluice.clone()),
                peer: Some(peer),
            },
            Row {
                op: "egress delivery",
                sluice: Ok(sluice),
                peer: None,
            },
            Row {
                op: "broken",
                sluice: Err("a|b".into()),
                peer: None,
            },
        ];
        let table = markdown("dynamodb=4", &rows, &["No peer.".into()]);
        assert!(table.contains(
            "| new Stripe event | 5.00 (6.00) | 12.50 | 1 / 2 (DynamoDB 1, SQS 1) | 0.500 \
             | 7.00 (9.00) | 6.00 | 1 / 1 (DynamoDB 1) | 2.000 | 1.4× | 0.5× | 4.0× |"
        ));
        assert!(table.contains("| egress delivery | 5.00 (6.00) | 12.50 | 1 / 2 (DynamoDB 1, SQS 1) | 0.500 | – | – | – | – | – | – | – |"));
        assert!(table.contains("| broken | **not measured** | – | a/b |"));
        assert!(table.ends_with("\nNo peer.\n"));
    }

    #[test]
    fn the_latency_model_reads_milliseconds_by_service() {
        let model = latency_model("dynamodb=4, SQS=8,kms=6.5");
        assert_eq!(model["dynamodb"], 4.0);
        assert_eq!(model["sqs"], 8.0);
        assert_eq!(model["kms"], 6.5);
    }

    #[test]
    fn counts_print_as_integers_when_they_are() {
        assert_eq!(count(2.0), "2");
        assert_eq!(count(1.999), "2");
        assert_eq!(count(1.5), "1.50");
    }
}
