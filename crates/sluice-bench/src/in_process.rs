//! In-process figures: handler CPU per request (SDK work included) and AWS requests per
//! operation, through the very routers and batch handler the Lambda binaries run, against moto.
//!
//! CPU is this process's CPU time (`getrusage`, every thread: the handler, the SDK's request
//! building, signing and parsing, hyper), split into user-space and kernel time, summed over the
//! handler calls only —
//! preparing requests (signing Stripe events, …) happens outside the measured windows, and
//! moto runs in its own process. Requests are recorded with an SDK interceptor (with their start
//! and end, for the round trips on the critical path); wall time is taken around the same
//! calls. Every scenario
//! provisions its own small table, since moto's transactions slow down as a table grows.

use std::{
    collections::BTreeMap,
    future::Future,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use bytes::Bytes;
use serde_json::{Value, json};
use sluice::aws::AwsClients;
use sluice_local::{
    dev::LocalStack,
    server::{HttpFunctions, lambda_request},
};

use crate::{
    events,
    timeline::{self, Timeline},
};

/// What one operation cost, averaged over `n` calls.
#[derive(Clone, Debug)]
pub struct Cost {
    pub n: usize,
    pub cpu_per_call: Duration,
    /// Of which in user space (our code, the SDK, hyper, rustls); the rest is kernel time.
    pub user_per_call: Duration,
    /// Wall time of one call: the median, and the 95th percentile.
    pub wall_median: Duration,
    pub wall_p95: Duration,
    /// Requests per call, by service.
    pub requests: BTreeMap<String, f64>,
    /// Round trips on the critical path per call (see [`timeline::sequential_round_trips`]).
    pub sequential: f64,
    /// Operations of the first measured call, e.g. `DynamoDB:TransactWriteItems`.
    pub first_call: Vec<String>,
    /// Every call's requests, for figures under a latency model.
    pub calls: Vec<Vec<timeline::Request>>,
}

impl Cost {
    /// Requests per call to one service.
    pub fn per_call(&self, service: &str) -> f64 {
        self.requests.get(service).copied().unwrap_or(0.0)
    }

    /// Requests per call, all services.
    pub fn total_requests(&self) -> f64 {
        self.requests.values().sum()
    }

    /// Means (CPU, requests, round trips) and wall-time percentiles of measured calls.
    pub fn from_samples(samples: &[Sample]) -> anyhow::Result<Cost> {
        let n = samples.len();
        ensure!(n > 0, "nothing to measure");
        let mut requests = BTreeMap::new();
        for sample in samples {
            for r in &sample.requests {
                *requests.entry(r.service.clone()).or_insert(0.0) += 1.0 / n as f64;
            }
        }
        let sum = |f: fn(&Sample) -> Duration| samples.iter().map(f).sum::<Duration>();
        let (user, system) = (sum(|s| s.user), sum(|s| s.system));
        let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
        walls.sort();
        let sequential = samples
            .iter()
            .map(|s| timeline::sequential_round_trips(&s.requests) as f64)
            .sum::<f64>()
            / n as f64;
        Ok(Cost {
            n,
            cpu_per_call: (user + system) / n as u32,
            user_per_call: user / n as u32,
            wall_median: walls[(n - 1) / 2],
            wall_p95: walls[(n * 95).div_ceil(100).max(1) - 1],
            requests,
            sequential,
            first_call: samples[0]
                .requests
                .iter()
                .map(|r| format!("{}:{}", r.service, r.operation))
                .collect(),
            calls: samples.iter().map(|s| s.requests.clone()).collect(),
        })
    }
}

/// One measured call.
#[derive(Clone, Debug)]
pub struct Sample {
    pub user: Duration,
    pub system: Duration,
    pub wall: Duration,
    /// The AWS requests it sent (empty when measured without a timeline).
    pub requests: Vec<timeline::Request>,
}

/// Measures one call: CPU (user, kernel) and wall time around `call` only.
pub async fn sample(call: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<Sample> {
    let cpu = cpu_times()?;
    let started = Instant::now();
    call.await?;
    let wall = started.elapsed();
    let end = cpu_times()?;
    Ok(Sample {
        user: end.0.saturating_sub(cpu.0),
        system: end.1.saturating_sub(cpu.1),
        wall,
        requests: Vec::new(),
    })
}

/// A local stack with counted clients and the functions built on them.
pub struct Scenario {
    pub timeline: Timeline,
    pub aws: AwsClients,
    pub stack: LocalStack,
    pub functions: HttpFunctions,
    pub tenant_key: String,
    pub tenant_id: String,
}

impl Scenario {
    pub async fn new(sdk: &aws_config::SdkConfig, name: &str) -> anyhow::Result<Scenario> {
        let timeline = Timeline::default();
        let aws = timeline.clients(sdk);
        // Requests are signed before the measured runs, which can take minutes on moto.
        let settings = [("STRIPE_TOLERANCE_SECS", "7200")];
        let stack = LocalStack::provision(&aws, &format!("bench-{name}"), &settings).await?;
        let functions = stack.functions(&aws)?;
        let mut scenario = Scenario {
            timeline,
            aws,
            stack,
            functions,
            tenant_key: String::new(),
            tenant_id: String::new(),
        };
        let created = scenario
            .call(
                "POST",
                "/admin/tenants",
                &[("x-admin-key", &scenario.stack.admin_key.clone())],
                json!({"name": "Bench", "monthly_budget_minor": 100_000_000, "currency": "usd"}),
            )
            .await?;
        scenario.tenant_id = created["id"].as_str().context("tenant id")?.to_owned();
        scenario.tenant_key = created["api_key"].as_str().context("api key")?.to_owned();
        Ok(scenario)
    }

    /// One request through the local API Gateway routing; a non-2xx answer is an error.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> anyhow::Result<Value> {
        let (status, body) = self.send(request(method, path, headers, body)).await;
        ensure!(
            status.is_success(),
            "{method} {path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn send(&self, req: lambda_http::Request) -> (http::StatusCode, Bytes) {
        let res = self.functions.invoke(req).await;
        (res.status(), res.into_body())
    }

    /// Runs `requests` through the functions, measuring only the handler calls. Every answer
    /// must be 2xx.
    pub async fn measure_http(&self, requests: Vec<lambda_http::Request>) -> anyhow::Result<Cost> {
        let mut samples = Vec::with_capacity(requests.len());
        for req in requests {
            samples.push(self.sample_http(req).await?);
        }
        Cost::from_samples(&samples)
    }

    /// Measures `run` over each input: CPU and wall time of the calls only, and the AWS requests
    /// each call sent.
    pub async fn measure<I, F, Fut>(&self, inputs: Vec<I>, mut run: F) -> anyhow::Result<Cost>
    where
        F: FnMut(I) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let mut samples = Vec::with_capacity(inputs.len());
        for input in inputs {
            samples.push(self.sample(run(input)).await?);
        }
        Cost::from_samples(&samples)
    }

    /// Measures one call, with the AWS requests it sent.
    pub async fn sample(
        &self,
        call: impl Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<Sample> {
        self.timeline.take();
        let mut measured = sample(call).await?;
        measured.requests = self.timeline.take();
        Ok(measured)
    }

    /// Measures one request through the functions, which must answer 2xx.
    pub async fn sample_http(&self, req: lambda_http::Request) -> anyhow::Result<Sample> {
        self.sample(async {
            let (status, body) = self.send(req).await;
            ensure!(
                status.is_success(),
                "answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
            Ok(())
        })
        .await
    }

    /// A signed Stripe webhook request.
    pub fn stripe_request(&self, body: &[u8]) -> lambda_http::Request {
        let signature = events::stripe_signature(&self.stack.stripe_secret, body);
        raw_request(
            "POST",
            "/webhooks/stripe",
            &[
                ("stripe-signature", &signature),
                ("content-type", "application/json"),
            ],
            Bytes::copy_from_slice(body),
        )
    }

    /// A tenant API request with the scenario tenant's key.
    pub fn tenant_request(
        &self,
        method: &str,
        path: &str,
        idempotency_key: Option<&str>,
        body: Value,
    ) -> lambda_http::Request {
        let auth = format!("Bearer {}", self.tenant_key);
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(key) = idempotency_key {
            headers.push(("idempotency-key", key));
        }
        request(method, path, &headers, body)
    }

    /// Receives every message now on the delivery queue (with the attributes Lambda passes).
    pub async fn receive_all(
        &self,
        expected: usize,
    ) -> anyhow::Result<Vec<aws_sdk_sqs::types::Message>> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.len() < expected {
            ensure!(
                Instant::now() < deadline,
                "only {} of {expected} messages arrived",
                out.len()
            );
            let got = self
                .aws
                .sqs
                .receive_message()
                .queue_url(&self.stack.resources.queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(600)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await?;
            out.extend(got.messages.unwrap_or_default());
        }
        Ok(out)
    }
}

fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> lambda_http::Request {
    let bytes = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec(&body).expect("serializes"))
    };
    let mut all = headers.to_vec();
    if !bytes.is_empty() {
        all.push(("content-type", "application/json"));
    }
    raw_request(method, path, &all, bytes)
}

fn raw_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> lambda_http::Request {
    let mut builder = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let (parts, ()) = builder.body(()).expect("valid request").into_parts();
    lambda_request(parts, body)
}

/// CPU and wall time of `run` over each input, taken around each call only. No AWS requests
/// are counted here.
pub async fn measure_cpu<I, F, Fut>(inputs: Vec<I>, mut run: F) -> anyhow::Result<Cost>
where
    F: FnMut(I) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut samples = Vec::with_capacity(inputs.len());
    for input in inputs {
        samples.push(sample(run(input)).await?);
    }
    Cost::from_samples(&samples)
}

/// (user, system) CPU time of this process so far.
fn cpu_times() -> anyhow::Result<(Duration, Duration)> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let d = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    Ok((d(usage.user_time()), d(usage.system_time())))
}
