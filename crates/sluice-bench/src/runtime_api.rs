//! A minimal Lambda Runtime API on loopback, enough to start a function's release binary as
//! Lambda would and feed it invocations.
//!
//! Implements `GET /2018-06-01/runtime/invocation/next` (long-polls until an event is queued),
//! `POST …/invocation/{id}/response`, `POST …/invocation/{id}/error` and `POST …/init/error`,
//! and records when the function first asked for work and when each answer arrived.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use tokio::sync::Notify;

/// One answered invocation.
#[derive(Clone, Debug)]
pub struct Answer {
    pub at: Instant,
    pub ok: bool,
    pub body: Bytes,
}

#[derive(Default)]
struct Inner {
    queue: Mutex<VecDeque<(String, Vec<u8>)>>,
    queued: Notify,
    first_next: Mutex<Option<Instant>>,
    answers: Mutex<Vec<Answer>>,
    answered: Notify,
    init_error: Mutex<Option<String>>,
}

/// A running Runtime API; dropping it stops serving.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Serves on a free loopback port.
    pub async fn start() -> anyhow::Result<RuntimeApi> {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(RuntimeApi {
            addr,
            inner,
            server,
        })
    }

    /// `AWS_LAMBDA_RUNTIME_API` for the function process.
    pub fn env_value(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an invocation event (JSON).
    pub fn push(&self, request_id: &str, event: Vec<u8>) {
        self.inner
            .queue
            .lock()
            .unwrap()
            .push_back((request_id.to_owned(), event));
        self.inner.queued.notify_one();
    }

    /// When the function first asked for an invocation, once it has.
    pub async fn wait_first_next(&self, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = *self.inner.first_next.lock().unwrap() {
                return Ok(at);
            }
            if let Some(err) = self.inner.init_error.lock().unwrap().clone() {
                anyhow::bail!("the function failed to initialise: {err}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the function never asked for work"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Waits until `n` invocations have been answered; returns all answers so far.
    pub async fn wait_answers(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Answer>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.answered.notified();
            {
                let answers = self.inner.answers.lock().unwrap();
                if answers.len() >= n {
                    return Ok(answers.clone());
                }
            }
            if let Some(err) = self.inner.init_error.lock().unwrap().clone() {
                anyhow::bail!("the function failed to initialise: {err}");
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.inner.answers.lock().unwrap().len();
                anyhow::bail!("only {got} of {n} invocations were answered in {timeout:?}");
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(inner): State<Arc<Inner>>) -> impl IntoResponse {
    inner
        .first_next
        .lock()
        .unwrap()
        .get_or_insert_with(Instant::now);
    let (id, event) = loop {
        let notified = inner.queued.notified();
        if let Some(item) = inner.queue.lock().unwrap().pop_front() {
            break item;
        }
        notified.await;
    };
    let deadline_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 30_000;
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    };
    set("lambda-runtime-aws-request-id", id);
    set("lambda-runtime-deadline-ms", deadline_ms.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:bench".into(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000".into(),
    );
    set("content-type", "application/json".into());
    (StatusCode::OK, headers, event)
}

fn record(inner: &Inner, ok: bool, body: Bytes) -> StatusCode {
    inner.answers.lock().unwrap().push(Answer {
        at: Instant::now(),
        ok,
        body,
    });
    inner.answered.notify_waiters();
    StatusCode::ACCEPTED
}

async fn response(
    State(inner): State<Arc<Inner>>,
    Path(_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    record(&inner, true, body)
}

async fn error(
    State(inner): State<Arc<Inner>>,
    Path(_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    record(&inner, false, body)
}

async fn init_error(State(inner): State<Arc<Inner>>, body: Bytes) -> StatusCode {
    *inner.init_error.lock().unwrap() = Some(String::from_utf8_lossy(&body).into_owned());
    StatusCode::ACCEPTED
}
