//! A stand-in for the two Stripe endpoints localstripe lacks — Checkout Sessions and Billing
//! Portal sessions — as a small axum server on a free port, in front of localstripe.
//!
//! - `POST /v1/checkout/sessions` and `POST /v1/billing_portal/sessions` check each parameter's
//!   name and type against what Stripe documents for them (an unknown name, a wrong type, a
//!   missing required one, or a parameter Stripe refuses in that mode is Stripe's `400`
//!   `parameter_unknown` / `parameter_invalid_*` / `parameter_missing`), and answer Stripe's
//!   published object fixtures (`tests/fixtures/stripe-api/`) with the request's values.
//! - Every other path is forwarded to localstripe (customers), with Stripe's idempotency that
//!   localstripe lacks: the same `Idempotency-Key` replays the first answer (concurrent ones wait
//!   for it), another body under a used key is Stripe's `400 idempotency_error`.
//! - Every answer carries a `request-id`; [`StandIn::fail_next`] scripts error answers (a `500`,
//!   a `402 card_declined`…) for a path; [`StandIn::requests`] lists what arrived.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::support::http_client;

/// One request that reached the stand-in.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
    pub params: Vec<(String, String)>,
}

impl Seen {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted error answer.
struct Fault {
    path: String,
    status: u16,
    code: &'static str,
}

/// The first request under one `Idempotency-Key`: its body and answer (status, JSON).
type Slot = Arc<tokio::sync::Mutex<Option<(String, (u16, Value))>>>;

#[derive(Default)]
struct Inner {
    seen: Vec<Seen>,
    faults: Vec<Fault>,
    /// Idempotency-Key → (body, answer); the per-key lock serialises concurrent uses.
    idempotent: HashMap<String, Slot>,
    /// Requests forwarded to localstripe (after idempotent replays were answered here).
    forwarded: Vec<String>,
    counter: u64,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    localstripe: String,
}

/// The running stand-in; stops with the test's runtime.
pub struct StandIn {
    pub url: String,
    shared: Shared,
}

impl StandIn {
    /// Starts on a free port in front of `localstripe` (its base URL).
    pub async fn start(localstripe: &str) -> StandIn {
        let shared = Shared {
            inner: Arc::default(),
            localstripe: localstripe.trim_end_matches('/').to_owned(),
        };
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        StandIn { url, shared }
    }

    /// The next `times` requests to `path` answer `status` with Stripe's error `code`.
    pub fn fail_next(&self, path: &str, status: u16, code: &'static str, times: usize) {
        let mut inner = self.shared.inner.lock().unwrap();
        for _ in 0..times {
            inner.faults.push(Fault {
                path: path.into(),
                status,
                code,
            });
        }
    }

    /// Every request to `path` so far, in arrival order.
    pub fn requests(&self, path: &str) -> Vec<Seen> {
        let inner = self.shared.inner.lock().unwrap();
        inner
            .seen
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    /// Requests to `path` that reached localstripe (idempotent replays excluded).
    pub fn forwarded(&self, path: &str) -> usize {
        let inner = self.shared.inner.lock().unwrap();
        inner.forwarded.iter().filter(|p| *p == path).count()
    }
}

fn stripe_error(status: u16, kind: &str, code: &str, message: &str, request_id: &str) -> Response {
    let mut res = (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"error": {"type": kind, "code": code, "message": message}})),
    )
        .into_response();
    res.headers_mut()
        .insert("request-id", request_id.parse().unwrap());
    res
}

fn with_request_id(status: u16, body: Value, request_id: &str) -> Response {
    let mut res = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    res.headers_mut()
        .insert("request-id", request_id.parse().unwrap());
    res
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let idempotency_key = header("idempotency-key");
    let (request_id, fault) = {
        let mut inner = shared.inner.lock().unwrap();
        inner.counter += 1;
        let request_id = format!("req_standin{:06}", inner.counter);
        inner.seen.push(Seen {
            path: path.clone(),
            idempotency_key: idempotency_key.clone(),
            stripe_version: header("stripe-version"),
            params: params.clone(),
        });
        let fault = inner
            .faults
            .iter()
            .position(|f| f.path == path)
            .map(|i| inner.faults.remove(i));
        (request_id, fault)
    };
    if !header("authorization").is_some_and(|a| a.starts_with("Bearer sk_")) {
        return stripe_error(
            401,
            "invalid_request_error",
            "",
            "no valid key",
            &request_id,
        );
    }
    if let Some(f) = fault {
        let kind = if f.status == 402 {
            "card_error"
        } else if f.status >= 500 {
            "api_error"
        } else {
            "invalid_request_error"
        };
        return stripe_error(
            f.status,
            kind,
            f.code,
            "scripted by the test (this message must not reach a client)",
            &request_id,
        );
    }
    if method == Method::POST && idempotency_key.is_none() {
        return stripe_error(
            400,
            "invalid_request_error",
            "idempotency_key_missing",
            "Sluice promises an Idempotency-Key on every POST",
            &request_id,
        );
    }
    // Stripe's idempotency: same key → the first answer; another body → 400.
    let slot = idempotency_key.as_ref().map(|k| {
        shared
            .inner
            .lock()
            .unwrap()
            .idempotent
            .entry(k.clone())
            .or_default()
            .clone()
    });
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let mut guard = match &slot {
        Some(slot) => Some(slot.clone().lock_owned().await),
        None => None,
    };
    if let Some(Some((first_body, (status, answer)))) = guard.as_deref() {
        if *first_body != body_text {
            return stripe_error(
                400,
                "idempotency_error",
                "idempotency_key_in_use",
                "Keys for idempotent requests can only be used with the same parameters",
                &request_id,
            );
        }
        return with_request_id(*status, answer.clone(), &request_id);
    }
    let (status, answer) = match path.as_str() {
        "/v1/checkout/sessions" => match checkout(&params) {
            Ok(v) => (200, v),
            Err((code, message)) => {
                return stripe_error(400, "invalid_request_error", code, &message, &request_id);
            }
        },
        "/v1/billing_portal/sessions" => match portal(&params) {
            Ok(v) => (200, v),
            Err((code, message)) => {
                return stripe_error(400, "invalid_request_error", code, &message, &request_id);
            }
        },
        _ => {
            shared.inner.lock().unwrap().forwarded.push(path.clone());
            let mut req =
                http_client().request(method.clone(), format!("{}{}", shared.localstripe, uri));
            for name in ["authorization", "content-type", "stripe-version"] {
                if let Some(v) = header(name) {
                    req = req.header(name, v);
                }
            }
            let res = req.body(body.clone()).send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    if let Some(guard) = guard.as_mut()
        && status < 500
    {
        **guard = Some((body_text, (status, answer.clone())));
    }
    with_request_id(status, answer, &request_id)
}

/// A parameter's documented type.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Enum(&'static [&'static str]),
}

/// Parameter names (`[N]` for list indexes, `[*]` for metadata keys) and types Stripe documents
/// for `POST /v1/checkout/sessions` (the subset a Sluice-like caller might send).
const CHECKOUT_PARAMS: &[(&str, Kind)] = &[
    ("mode", Kind::Enum(&["payment", "setup", "subscription"])),
    ("customer", Kind::Str),
    ("customer_email", Kind::Str),
    ("client_reference_id", Kind::Str),
    ("success_url", Kind::Str),
    ("cancel_url", Kind::Str),
    ("expires_at", Kind::Int),
    ("allow_promotion_codes", Kind::Bool),
    ("locale", Kind::Str),
    ("metadata[*]", Kind::Str),
    ("line_items[N][price]", Kind::Str),
    ("line_items[N][quantity]", Kind::Int),
    ("line_items[N][price_data][currency]", Kind::Str),
    ("line_items[N][price_data][unit_amount]", Kind::Int),
    ("line_items[N][price_data][product]", Kind::Str),
    ("line_items[N][price_data][product_data][name]", Kind::Str),
    ("payment_intent_data[metadata][*]", Kind::Str),
    ("payment_intent_data[description]", Kind::Str),
    ("subscription_data[metadata][*]", Kind::Str),
    ("subscription_data[description]", Kind::Str),
];

const PORTAL_PARAMS: &[(&str, Kind)] = &[
    ("customer", Kind::Str),
    ("return_url", Kind::Str),
    ("configuration", Kind::Str),
    ("locale", Kind::Str),
];

/// `line_items[0][price]` → `line_items[N][price]`, `metadata[x]` → `metadata[*]`.
fn shape(name: &str) -> String {
    let mut out = String::new();
    let mut after_metadata = false;
    for (i, part) in name.split('[').enumerate() {
        let part = part.trim_end_matches(']');
        if i == 0 {
            out.push_str(part);
        } else if after_metadata {
            out.push_str("[*]");
        } else if part.parse::<u32>().is_ok() {
            out.push_str("[N]");
        } else {
            out.push('[');
            out.push_str(part);
            out.push(']');
        }
        after_metadata = part == "metadata";
    }
    out
}

type Refusal = (&'static str, String);

fn check(params: &[(String, String)], documented: &[(&str, Kind)]) -> Result<(), Refusal> {
    for (name, value) in params {
        let shaped = shape(name);
        let Some((_, kind)) = documented.iter().find(|(n, _)| *n == shaped) else {
            return Err((
                "parameter_unknown",
                format!("Received unknown parameter: {name}"),
            ));
        };
        let ok = match kind {
            Kind::Str => !value.is_empty(),
            Kind::Int => value.parse::<i64>().is_ok(),
            Kind::Bool => value == "true" || value == "false",
            Kind::Enum(values) => values.contains(&value.as_str()),
        };
        if !ok {
            return Err((
                "parameter_invalid_empty",
                format!("Invalid value for {name}"),
            ));
        }
    }
    Ok(())
}

fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn metadata(params: &[(String, String)], prefix: &str) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in params {
        if let Some(key) = k
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('['))
            .and_then(|r| r.strip_suffix(']'))
        {
            map.insert(key.to_owned(), json!(v));
        }
    }
    Value::Object(map)
}

fn fixture(name: &str) -> Value {
    let path = sluice_local::repo_root().join(format!("tests/fixtures/stripe-api/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn checkout(params: &[(String, String)]) -> Result<Value, Refusal> {
    check(params, CHECKOUT_PARAMS)?;
    let mode =
        get(params, "mode").ok_or(("parameter_missing", "Missing required param: mode.".into()))?;
    if get(params, "success_url").is_none() {
        return Err((
            "parameter_missing",
            "Missing required param: success_url.".into(),
        ));
    }
    let has = |prefix: &str| params.iter().any(|(k, _)| k.starts_with(prefix));
    if mode != "subscription" && has("subscription_data") {
        return Err((
            "parameter_invalid",
            "subscription_data can only be used in subscription mode".into(),
        ));
    }
    if mode != "payment" && has("payment_intent_data") {
        return Err((
            "parameter_invalid",
            "payment_intent_data can only be used in payment mode".into(),
        ));
    }
    if !has("line_items[0]") {
        return Err((
            "parameter_missing",
            "line_items is required in this mode".into(),
        ));
    }
    let id = format!("cs_test_{}", sluice::ids::new_id("x").replace('_', ""));
    let mut session = fixture("checkout.session");
    session["id"] = json!(id);
    session["url"] = json!(format!("https://checkout.stripe.com/c/pay/{id}"));
    session["mode"] = json!(mode);
    session["status"] = json!("open");
    session["customer"] = json!(get(params, "customer"));
    session["client_reference_id"] = json!(get(params, "client_reference_id"));
    session["metadata"] = metadata(params, "metadata");
    session["success_url"] = json!(get(params, "success_url"));
    session["cancel_url"] = json!(get(params, "cancel_url"));
    session["expires_at"] = json!(sluice::clock::now_epoch() + 24 * 3600);
    if let Some(amount) = get(params, "line_items[0][price_data][unit_amount]") {
        session["amount_total"] = json!(amount.parse::<i64>().unwrap());
        session["currency"] = json!(get(params, "line_items[0][price_data][currency]"));
    }
    Ok(session)
}

fn portal(params: &[(String, String)]) -> Result<Value, Refusal> {
    check(params, PORTAL_PARAMS)?;
    let customer = get(params, "customer").ok_or((
        "parameter_missing",
        "Missing required param: customer.".into(),
    ))?;
    let mut session = fixture("billing_portal.session");
    session["customer"] = json!(customer);
    session["return_url"] = json!(get(params, "return_url"));
    session["url"] = json!(format!(
        "https://billing.stripe.com/p/session/test_{}",
        sluice::ids::new_id("x").replace('_', "")
    ));
    Ok(session)
}

#[test]
fn the_stand_in_refuses_what_stripe_refuses() {
    let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        shape("line_items[0][price_data][unit_amount]"),
        "line_items[N][price_data][unit_amount]"
    );
    assert_eq!(
        shape("payment_intent_data[metadata][tenant_id]"),
        "payment_intent_data[metadata][*]"
    );
    let base = [
        ("mode", "payment"),
        ("success_url", "https://a/ok"),
        ("line_items[0][quantity]", "1"),
        ("line_items[0][price_data][unit_amount]", "100"),
    ];
    assert!(checkout(&p(&base)).is_ok());
    let code = |extra: (&str, &str)| {
        let mut all = p(&base);
        all.push((extra.0.into(), extra.1.into()));
        checkout(&all).unwrap_err().0
    };
    assert_eq!(code(("client_reference", "x")), "parameter_unknown");
    assert_eq!(
        code(("line_items[1][quantity]", "one")),
        "parameter_invalid_empty"
    );
    assert_eq!(
        code(("subscription_data[metadata][tenant_id]", "t")),
        "parameter_invalid"
    );
    assert_eq!(
        portal(&p(&[("return_url", "https://a/")])).unwrap_err().0,
        "parameter_missing"
    );
}
