//! The OpenAPI document against the code: the committed `docs/openapi.json` is what the code
//! generates, it is served, and every answer `Stack::send` receives validates against it
//! ([`validate`]: operation by path template and method, status or `default`, content type, and
//! the JSON body against its schema with the `jsonschema` crate, JSON Schema 2020-12 as
//! OpenAPI 3.1 uses).

use std::sync::LazyLock;

use http::Method;
use serde_json::{Value, json};

use crate::support::{Req, Res, Stack};

/// The document the code generates.
static DOC: LazyLock<Value> = LazyLock::new(sluice_api::openapi::document);

/// Routes not in the document yet (the next wave annotates them, then removes them here).
/// Their answers are not validated; every other route's are.
pub const UNDOCUMENTED: &[(&str, &str)] = &[
    ("POST", "/v1/usage"),
    ("GET", "/v1/ledger"),
    ("POST", "/v1/endpoints"),
    ("GET", "/v1/endpoints"),
    ("GET", "/v1/endpoints/{id}"),
    ("PATCH", "/v1/endpoints/{id}"),
    ("DELETE", "/v1/endpoints/{id}"),
    ("GET", "/v1/endpoints/{id}/secret"),
    ("POST", "/v1/endpoints/{id}/rotate-secret"),
    ("POST", "/v1/secrets"),
    ("GET", "/v1/secrets"),
    ("PUT", "/v1/secrets/{provider}"),
    ("DELETE", "/v1/secrets/{provider}"),
    ("POST", "/admin/tenants"),
    ("POST", "/admin/tenants/{id}/api-keys"),
    ("DELETE", "/admin/tenants/{id}/api-keys/{key_id}"),
    ("POST", "/admin/secrets/rewrap"),
    ("POST", "/webhooks/stripe"),
];

/// Served beside the document, not described by it.
const SELF: &[&str] = &["/openapi.json", "/docs", "/docs/style.css"];

/// True when `path` (no query) fits `template` (`{x}` matches one non-empty segment).
fn fits(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| {
            if t.starts_with('{') && t.ends_with('}') {
                !p.is_empty()
            } else {
                t == p
            }
        })
}

/// A JSON Schema validator for a schema of the document: the document's components ride along
/// at the root so that `#/components/schemas/…` references resolve.
fn validator(schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    if let Value::Object(map) = &mut root {
        map.insert("components".into(), DOC["components"].clone());
    } else {
        root = json!({ "allOf": [schema], "components": DOC["components"] });
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("invalid schema in the document ({e}): {schema}"))
}

fn check_body(schema: &Value, body: &Value) -> Result<(), String> {
    let errors: Vec<String> = validator(schema)
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Checks an answer against the document; `Err` says what differs.
pub fn validate(method: &Method, path: &str, res: &Res) -> Result<(), String> {
    let path = path.split('?').next().unwrap_or(path);
    let m = method.as_str();
    if SELF.contains(&path) {
        return Ok(());
    }
    let template = DOC["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(t, _)| t.as_str())
        .find(|t| fits(t, path));
    let operation = template.and_then(|t| DOC["paths"][t].get(m.to_ascii_lowercase()));
    let Some(operation) = operation else {
        if UNDOCUMENTED
            .iter()
            .any(|(um, ut)| *um == m && fits(ut, path))
        {
            return Ok(());
        }
        // No such operation: only an error answer (401 before 404 under /v1 and /admin) fits.
        if res.status.is_client_error() {
            return check_problem(res);
        }
        return Err(format!(
            "{m} {path} answered {} but is not in docs/openapi.json (add it, or list it in UNDOCUMENTED)",
            res.status
        ));
    };
    let responses = &operation["responses"];
    let response = responses
        .get(res.status.as_str())
        .or_else(|| responses.get("default"))
        .ok_or_else(|| {
            format!(
                "{m} {path} answered {}, a status its operation does not document",
                res.status
            )
        })?;
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        return if res.body.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{m} {path} {}: documented without a body, answered {}",
                res.status,
                res.text()
            ))
        };
    };
    let ctype = res
        .header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    let media = content.get(ctype).ok_or_else(|| {
        format!(
            "{m} {path} {}: content type `{ctype}` is not one of {:?}",
            res.status,
            content.keys().collect::<Vec<_>>()
        )
    })?;
    let body: Value = serde_json::from_slice(&res.body)
        .map_err(|e| format!("{m} {path} {}: body is not JSON ({e})", res.status))?;
    match media.get("schema") {
        Some(schema) => check_body(schema, &body)
            .map_err(|e| format!("{m} {path} {}: {e}\nbody: {body}", res.status)),
        None => Ok(()),
    }
}

fn check_problem(res: &Res) -> Result<(), String> {
    let ctype = res.header("content-type").unwrap_or("");
    if ctype != sluice::error::PROBLEM_JSON {
        return Err(format!("{}: not a problem+json answer", res.status));
    }
    let body: Value = serde_json::from_slice(&res.body).map_err(|e| e.to_string())?;
    check_body(&json!({ "$ref": "#/components/schemas/Problem" }), &body)
}

/// [`validate`], panicking with the difference (what `Stack::send` calls).
pub fn assert_valid(method: &Method, path: &str, res: &Res) {
    if let Err(e) = validate(method, path, res) {
        panic!("answer does not match docs/openapi.json: {e}");
    }
}

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_committed_document_is_what_the_code_generates() {
    let generated = sluice_api::openapi::pretty(&DOC);
    let path = committed_path();
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from what the code generates; regenerate it with \
         `SLUICE_BLESS=1 cargo test -p sluice-local --test it openapi::the_committed` and commit it"
    );
}

fn res(status: u16, ctype: &str, body: &str) -> Res {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", ctype.parse().unwrap());
    Res {
        status: http::StatusCode::from_u16(status).unwrap(),
        headers,
        body: body.to_owned().into(),
    }
}

#[test]
fn the_validator_catches_drift() {
    let health =
        r#"{"status":"healthy","checks":{"dynamodb":"ok","sqs":"ok","kms":"ok"},"last_24h":null}"#;
    let get = Method::GET;
    assert_eq!(
        validate(&get, "/health", &res(200, "application/json", health)),
        Ok(())
    );
    // A missing field, a value outside an enum, an undocumented status, a wrong content type.
    let missing = r#"{"status":"healthy","last_24h":null}"#;
    assert!(validate(&get, "/health", &res(200, "application/json", missing)).is_err());
    let fine = health.replace("healthy", "fine");
    assert!(validate(&get, "/health", &res(200, "application/json", &fine)).is_err());
    assert!(validate(&get, "/health", &res(418, "application/json", health)).is_err());
    assert!(validate(&get, "/health", &res(200, "text/plain", health)).is_err());
    // A problem whose type the document does not list.
    let problem = r#"{"type":"https://example.com/x","title":"X","status":404,"detail":"x"}"#;
    let r = res(404, sluice::error::PROBLEM_JSON, problem);
    assert!(validate(&get, "/v1/events/msg_1", &r).is_err());
    let problem = problem.replace("https://example.com/x", "/docs#problem-not-found");
    let r = res(404, sluice::error::PROBLEM_JSON, &problem);
    assert_eq!(validate(&get, "/v1/events/msg_1", &r), Ok(()));
    // Routes: templates match one segment; unknown routes may only answer a problem.
    assert!(fits("/v1/events/{id}/replay", "/v1/events/msg_1/replay"));
    assert!(!fits("/v1/events/{id}", "/v1/events/"));
    assert!(validate(&get, "/v1/nope", &r).is_ok());
    assert!(validate(&get, "/v1/nope", &res(200, "application/json", "{}")).is_err());
    assert!(
        validate(
            &Method::POST,
            "/v1/usage",
            &res(201, "application/json", "{}")
        )
        .is_ok()
    );
}

#[tokio::test]
async fn the_document_and_the_reference_are_served_without_authentication() {
    let stack = Stack::new().await;
    let res = stack.send(Req::get("/openapi.json")).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.json(), *DOC);

    let page = stack.send(Req::get("/docs")).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        page.header("content-security-policy"),
        Some(sluice_api::openapi::DOCS_CSP)
    );
    assert!(page.text().contains("id=\"op-get-v1-account\""));
    let css = stack.send(Req::get("/docs/style.css")).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
}

#[tokio::test]
async fn documented_answers_validate_through_the_stack() {
    // Stack::send validates every answer; these cover each annotated route once.
    let stack = Stack::new().await;
    let (_tenant, key) = stack.create_tenant("Docs").await;
    stack.send(Req::get("/health")).await;
    stack.send(Req::get("/v1/account").bearer(&key)).await;
    stack
        .send(Req::get("/v1/account"))
        .await
        .assert_problem(401);
    let created = stack
        .send(
            Req::post("/v1/events")
                .bearer(&key)
                .idempotency_key("docs-1")
                .json(&json!({ "type": "docs.checked", "data": { "a": 1 } })),
        )
        .await;
    assert_eq!(created.status, 202, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    stack
        .send(Req::get(&format!("/v1/events/{id}")).bearer(&key))
        .await;
    stack
        .send(Req::post(&format!("/v1/events/{id}/replay")).bearer(&key))
        .await;
    stack
        .send(Req::get("/v1/events/msg_nope").bearer(&key))
        .await
        .assert_problem(404);
    let admin = &stack.admin_key;
    stack.send(Req::get("/admin/stats").admin(admin)).await;
    stack
        .send(Req::get("/admin/stats?hours=0").admin(admin))
        .await
        .assert_problem(400);
    stack
        .send(Req::get("/admin/stripe-events?limit=5").admin(admin))
        .await;
    stack
        .send(Req::get("/admin/stripe-events/evt_nope").admin(admin))
        .await
        .assert_problem(404);
    stack
        .send(Req::post("/admin/stripe-events/evt_nope/retry").admin(admin))
        .await
        .assert_problem(404);
    stack.send(Req::post("/admin/cleanup").admin(admin)).await;
}
