//! The table `make bench` prints: one row per SPEC §9 figure, with its target and how it was
//! measured.

use std::time::Duration;

use crate::{in_process::Cost, process::Load};

/// One measured figure.
pub struct Row {
    pub what: String,
    pub measured: String,
    pub target: String,
    /// Whether the figure meets the target (`None`: no target to compare with).
    pub meets: Option<bool>,
    pub how: String,
}

impl Row {
    pub fn size(function: &str, bytes: u64) -> Row {
        let mb = bytes as f64 / 1_000_000.0;
        Row {
            what: format!("release binary, {function}"),
            measured: format!("{mb:.2} MB"),
            target: "≤ 10 MB".into(),
            meets: Some(mb <= 10.0),
            how: "size of target/lambda/{function}/bootstrap from `cargo lambda build --release` (stripped)".into(),
        }
    }

    pub fn cold_start(function: &str, ready: Duration, answer: Duration, runs: usize) -> Row {
        Row {
            what: format!("cold start, {function}"),
            measured: format!("{} (first answer {})", ms(ready), ms(answer)),
            target: "≤ 20 ms to ready".into(),
            meets: Some(ready <= Duration::from_millis(20)),
            how: format!(
                "median of {runs} spawns of the release binary: spawn → first GET /runtime/invocation/next \
                 on a loopback Runtime API (first answer: → first invocation answered, AWS calls to moto included)"
            ),
        }
    }

    pub fn peak_rss(function: &str, load: Load) -> Row {
        let mib = load.peak_rss_kib as f64 / 1024.0;
        Row {
            what: format!("peak RSS under load, {function}"),
            measured: format!("{mib:.1} MiB"),
            target: "≤ 24 MB".into(),
            meets: Some(load.peak_rss_kib as f64 * 1024.0 <= 24.0 * 1_000_000.0),
            how: format!(
                "VmHWM of the release binary's own process after {} invocations in {:.1} s ({} answered with an error)",
                load.invocations,
                load.wall.as_secs_f64(),
                load.errors
            ),
        }
    }
}

impl Row {
    /// Requests per call to `service` (with every service's count in the figure).
    pub fn requests(op: &str, cost: &Cost, service: &str, max: f64, target: &str) -> Row {
        let all: Vec<String> = cost
            .requests
            .iter()
            .map(|(s, n)| format!("{s} {n:.2}"))
            .collect();
        let got = cost.per_call(service);
        Row {
            what: format!("{service} requests, {op}"),
            measured: format!(
                "{got:.2} ({})",
                if all.is_empty() {
                    "none".into()
                } else {
                    all.join(", ")
                }
            ),
            target: target.into(),
            meets: Some(got <= max + 1e-9),
            how: format!(
                "SDK interceptor, mean over {} calls through the function's handler; first call: {}",
                cost.n,
                cost.first_call.join(" ")
            ),
        }
    }

    /// Handler CPU per call (user-space and kernel), against a tenth of the peer's figure when
    /// there is one; the comparison uses both (user + kernel), as a process's CPU time would. With
    /// `floor` (the bare SDK GetItem's cost), what the operation's AWS calls would cost at that
    /// floor is shown beside it.
    pub fn cpu(op: &str, cost: &Cost, peer_ms: Option<f64>, floor: Option<&Cost>) -> Row {
        let total_ms = cost.cpu_per_call.as_secs_f64() * 1000.0;
        let user_ms = cost.user_per_call.as_secs_f64() * 1000.0;
        let mut measured = format!("{total_ms:.3} ms ({user_ms:.3} ms user)");
        if let Some(floor) = floor {
            let calls: f64 = cost.requests.values().sum();
            let floor_ms = floor.cpu_per_call.as_secs_f64() * 1000.0;
            measured.push_str(&format!(
                "; its {calls:.0} AWS call(s) × the bare-call floor = {:.3} ms",
                calls * floor_ms
            ));
        }
        Row {
            what: format!("handler CPU, {op}"),
            measured,
            target: peer_ms.map_or("–".into(), |p| {
                format!("≤ {:.3} ms (peer {p} ms / 10)", p / 10.0)
            }),
            meets: peer_ms.map(|p| total_ms <= p / 10.0),
            how: format!(
                "getrusage of the whole process around {} in-process handler calls (all threads, SDK \
                 work included, moto excluded; connections kept alive, as in Lambda)",
                cost.n
            ),
        }
    }

    pub fn concurrency(wall: Duration, slowest: Duration, sum: Duration) -> Row {
        Row {
            what: "egress batch of 10 to 10 endpoints".into(),
            measured: format!("{} wall", ms(wall)),
            target: format!(
                "≈ slowest endpoint ({}), not the sum ({})",
                ms(slowest),
                ms(sum)
            ),
            meets: Some(wall < slowest + (sum - slowest) / 4),
            how: "one handle_batch call; endpoints on loopback answer after 100, 200, … 1000 ms"
                .into(),
        }
    }

    pub fn micro(name: &str, ns: f64) -> Row {
        Row {
            what: format!("micro: {name}"),
            measured: format!("{:.2} µs", ns / 1000.0),
            target: "–".into(),
            meets: None,
            how: "median of 15 batches of 2000 calls, release build".into(),
        }
    }
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    failures: usize,
}

impl Report {
    pub fn push(&mut self, row: Row) {
        eprintln!("  measured: {} = {}", row.what, row.measured);
        self.rows.push(row);
    }

    /// A figure that could not be measured: a row saying why, and a non-zero exit at the end.
    pub fn failed(&mut self, what: &str, err: anyhow::Error) {
        eprintln!("  FAILED to measure {what}: {err:#}");
        self.failures += 1;
        self.rows.push(Row {
            what: what.into(),
            measured: "**not measured**".into(),
            target: "–".into(),
            meets: None,
            how: format!("{err:#}").replace('|', "/"),
        });
    }

    pub fn failures(&self) -> usize {
        self.failures
    }

    pub fn markdown(&self) -> String {
        let mut out =
            String::from("| what | measured | target | met | how |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            let met = match r.meets {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {met} | {} |\n",
                r.what, r.measured, r.target, r.how
            ));
        }
        out
    }

    pub fn print(&self) {
        println!("{}", self.markdown());
    }
}
