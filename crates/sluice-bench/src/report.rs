//! The table `make bench` prints: one row per SPEC §9 figure, with its target and how it was
//! measured.

use std::{path::Path, time::Duration};

use crate::process::Load;

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

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    pub fn push(&mut self, row: Row) {
        eprintln!("  measured: {} = {}", row.what, row.measured);
        self.rows.push(row);
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

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, self.markdown())?;
        Ok(())
    }
}
