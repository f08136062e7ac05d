//! Whole-process figures of the release binaries: cold start, peak RSS, size.
//!
//! Each function's `bootstrap` (from `cargo lambda build --release`) is started exactly as Lambda
//! starts it — environment variables, `AWS_LAMBDA_RUNTIME_API` — against [`RuntimeApi`] on
//! loopback and the local AWS emulator.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::runtime_api::RuntimeApi;

/// A function's release binary and how to make invocations for it.
pub struct Function {
    /// `api`, `stripe-ingress`, `webhook-egress`.
    pub name: &'static str,
    pub binary: PathBuf,
    /// The function's environment (configuration and AWS endpoint), as the template sets it.
    pub env: HashMap<String, String>,
}

/// `target/lambda/{name}/bootstrap`.
pub fn release_binary(name: &str) -> PathBuf {
    sluice_local::repo_root()
        .join("target/lambda")
        .join(name)
        .join("bootstrap")
}

impl Function {
    fn spawn(&self, runtime: &RuntimeApi) -> anyhow::Result<Child> {
        Command::new(&self.binary)
            .env_clear()
            .envs(&self.env)
            .env("AWS_LAMBDA_RUNTIME_API", runtime.env_value())
            .env("AWS_LAMBDA_FUNCTION_NAME", self.name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", self.name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))
    }
}

/// One cold start: process spawn → first `GET …/invocation/next`, and → first answer.
#[derive(Clone, Copy, Debug)]
pub struct ColdStart {
    pub to_ready: Duration,
    pub to_first_answer: Duration,
}

/// Starts the binary `runs` times, each time answering one invocation made by `event`.
pub async fn cold_starts(
    function: &Function,
    runs: usize,
    event: &(dyn Fn(usize) -> Vec<u8> + Sync),
) -> anyhow::Result<Vec<ColdStart>> {
    let mut out = Vec::with_capacity(runs);
    for run in 0..runs {
        let runtime = RuntimeApi::start().await?;
        runtime.push(&format!("cold-{run}"), event(run));
        let spawned = Instant::now();
        let mut child = function.spawn(&runtime)?;
        let result = async {
            let ready = runtime.wait_first_next(Duration::from_secs(10)).await?;
            let answers = runtime.wait_answers(1, Duration::from_secs(30)).await?;
            anyhow::ensure!(
                answers[0].ok,
                "{} answered its first invocation with an error: {}",
                function.name,
                String::from_utf8_lossy(&answers[0].body)
            );
            Ok(ColdStart {
                to_ready: ready - spawned,
                to_first_answer: answers[0].at - spawned,
            })
        }
        .await;
        let _ = child.kill();
        let _ = child.wait();
        out.push(result?);
    }
    Ok(out)
}

/// Load result: the process's own peak RSS after `n` invocations.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub invocations: usize,
    pub peak_rss_kib: u64,
    pub wall: Duration,
    pub errors: usize,
}

/// Feeds `n` invocations to one process (at most `in_flight` queued at a time, like a busy
/// Lambda instance that always has the next event waiting), then reads its `VmHWM`.
pub async fn load(
    function: &Function,
    n: usize,
    event: &(dyn Fn(usize) -> Vec<u8> + Sync),
) -> anyhow::Result<Load> {
    let runtime = RuntimeApi::start().await?;
    let mut child = function.spawn(&runtime)?;
    let started = Instant::now();
    let result = async {
        const AHEAD: usize = 4;
        let mut pushed = 0;
        while pushed < n.min(AHEAD) {
            runtime.push(&format!("load-{pushed}"), event(pushed));
            pushed += 1;
        }
        let mut answered = 0;
        while answered < n {
            answered = runtime
                .wait_answers(answered + 1, Duration::from_secs(60))
                .await?
                .len();
            while pushed < n && pushed < answered + AHEAD {
                runtime.push(&format!("load-{pushed}"), event(pushed));
                pushed += 1;
            }
        }
        let answers = runtime.wait_answers(n, Duration::from_secs(60)).await?;
        // The process is alive, long-polling for the next invocation: its own high-water mark.
        let peak = peak_rss_kib(child.id())?;
        Ok(Load {
            invocations: n,
            peak_rss_kib: peak,
            wall: started.elapsed(),
            errors: answers.iter().filter(|a| !a.ok).count(),
        })
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// `VmHWM` of a live process, from `/proc/{pid}/status`.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/{pid}/status")
}

/// Size of a file in bytes.
pub fn size_of(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("{} (run `make bench`, which builds it)", path.display()))?
        .len())
}

/// The median of some durations.
pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}
