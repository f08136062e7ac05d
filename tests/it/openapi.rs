//! The OpenAPI document against the code: the committed `docs/openapi.json` is what the code
//! generates, it is served, and every answer `Stack::send` receives validates against it
//! ([`validate`]: operation by path template and method, status or `default`, content type, and
//! the JSON body against its schema with the `jsonschema` crate, JSON Schema 2020-12 as
//! OpenAPI 3.1 uses). Every route of both HTTP functions is in the document, so no answer goes
//! unchecked; an unknown route may only answer a problem.
//!
//! Also the repository's own docs: README.md and docs/*.md link only to files inside the
//! repository, and docs/configuration.md lists every variable `sluice::Config` reads.

use std::sync::LazyLock;

use http::Method;
use serde_json::{Value, json};

use crate::support::{Req, Res, Stack};

/// The document the code generates.
static DOC: LazyLock<Value> = LazyLock::new(sluice_api::openapi::document);

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
    // The portal's HTML pages and forms are not API operations (their answers are HTML, their
    // refusals HTML pages); `tests/it/portal.rs` checks them. The API routes that mint portal
    // links are under /v1 and /admin and are validated like every other.
    if path == "/portal" || path.starts_with("/portal/") {
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
        // No such operation: only an error answer (401 before 404 under /v1 and /admin) fits.
        if res.status.is_client_error() {
            return check_problem(res);
        }
        return Err(format!(
            "{m} {path} answered {} but is not in docs/openapi.json (annotate its handler)",
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
}

/// Every route is documented, so a status or a field the code drops or adds without its
/// annotation fails the answer that shows it: here one per kind, on routes of each area.
#[test]
fn the_validator_catches_drift_on_every_area() {
    let post = Method::POST;
    let json = "application/json";
    // POST /v1/usage: the ledger entry, and its refusals.
    let entry =
        r#"{"id":"led_1","type":"debit","amount_minor":-150,"source":"api","created_at":1}"#;
    assert_eq!(validate(&post, "/v1/usage", &res(201, json, entry)), Ok(()));
    // A field removed from the answer.
    let no_id = r#"{"type":"debit","amount_minor":-150,"source":"api","created_at":1}"#;
    assert!(validate(&post, "/v1/usage", &res(201, json, no_id)).is_err());
    // A value outside the enum the code's type has.
    let refund = entry.replace("debit", "refund");
    assert!(validate(&post, "/v1/usage", &res(201, json, &refund)).is_err());
    // A status the operation does not document (a 2xx other than its own, a 4xx it cannot answer).
    assert!(validate(&post, "/v1/usage", &res(200, json, entry)).is_err());
    let payment_required = r#"{"type":"/docs#problem-insufficient-credits","title":"Insufficient credits","status":402,"detail":"x"}"#;
    let problem = sluice::error::PROBLEM_JSON;
    assert_eq!(
        validate(&post, "/v1/usage", &res(402, problem, payment_required)),
        Ok(())
    );
    assert!(
        validate(
            &Method::GET,
            "/v1/ledger",
            &res(402, problem, payment_required)
        )
        .is_err()
    );
    // The endpoint answer without its secret; the secret list without `data`.
    let endpoint = r#"{"id":"ep_1","url":"https://example.com/h","description":null,"event_types":[],"enabled":true,"disabled_reason":null,"failing_since":null,"created_at":1,"updated_at":1"#;
    let created = format!(r#"{endpoint},"secret":"whsec_x"}}"#);
    assert_eq!(
        validate(&post, "/v1/endpoints", &res(201, json, &created)),
        Ok(())
    );
    let unsigned = format!("{endpoint}}}");
    assert!(validate(&post, "/v1/endpoints", &res(201, json, &unsigned)).is_err());
    assert!(validate(&Method::GET, "/v1/secrets", &res(200, json, "{}")).is_err());
    // An answer with a body where the document has none.
    assert!(validate(&Method::DELETE, "/v1/secrets/openai", &res(204, json, "{}")).is_err());
    // The ingress function's answer is in the same document.
    let received = r#"{"received":true,"id":"evt_1","status":"processed"}"#;
    assert_eq!(
        validate(&post, "/webhooks/stripe", &res(200, json, received)),
        Ok(())
    );
    let unknown_status = received.replace("processed", "done");
    assert!(validate(&post, "/webhooks/stripe", &res(200, json, &unknown_status)).is_err());
    assert!(validate(&post, "/webhooks/stripe", &res(202, json, received)).is_err());
    // An admin answer missing a field.
    assert!(
        validate(
            &post,
            "/admin/tenants",
            &res(201, json, r#"{"id":"tnt_1","name":"A","currency":"usd"}"#)
        )
        .is_err()
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

#[tokio::test]
async fn every_other_route_answers_as_documented_through_the_stack() {
    // Stack::send validates each answer: one success and one refusal per route at least.
    let stack = Stack::new().await;
    let (tenant, key) = stack.create_tenant("Docs").await;
    let send = |req: Req| stack.send(req);

    // Usage and ledger.
    send(
        Req::post("/v1/usage")
            .bearer(&key)
            .json(&json!({ "amount_minor": 5 })),
    )
    .await
    .assert_problem(402);
    send(Req::post("/v1/usage").bearer(&key).body("{not json"))
        .await
        .assert_problem(400);
    send(
        Req::post("/v1/usage")
            .bearer(&key)
            .json(&json!({ "amount_minor": 0 })),
    )
    .await
    .assert_problem(422);
    let ledger = send(Req::get("/v1/ledger?limit=5").bearer(&key)).await;
    assert_eq!(ledger.status, 200, "{}", ledger.text());
    send(Req::get("/v1/ledger?limit=0").bearer(&key))
        .await
        .assert_problem(400);

    // Endpoints, their secret and its rotation.
    let created = send(
        Req::post("/v1/endpoints")
            .bearer(&key)
            .json(&json!({ "url": "http://127.0.0.1:9/hook", "event_types": ["a.b"] })),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let ep = created.json()["id"].as_str().unwrap().to_owned();
    send(
        Req::post("/v1/endpoints")
            .bearer(&key)
            .json(&json!({ "url": "ftp://x" })),
    )
    .await
    .assert_problem(422);
    assert_eq!(
        send(Req::get("/v1/endpoints").bearer(&key)).await.status,
        200
    );
    let path = format!("/v1/endpoints/{ep}");
    assert_eq!(send(Req::get(&path).bearer(&key)).await.status, 200);
    send(Req::get("/v1/endpoints/ep_nope").bearer(&key))
        .await
        .assert_problem(404);
    let patched = send(
        Req::patch(&path)
            .bearer(&key)
            .json(&json!({ "enabled": false, "description": "docs" })),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    send(
        Req::patch(&path)
            .bearer(&key)
            .json(&json!({ "enabled": "no" })),
    )
    .await
    .assert_problem(400);
    let secret = send(Req::get(&format!("{path}/secret")).bearer(&key)).await;
    assert_eq!(secret.status, 200, "{}", secret.text());
    let rotated = send(Req::post(&format!("{path}/rotate-secret")).bearer(&key)).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_eq!(send(Req::delete(&path).bearer(&key)).await.status, 204);
    send(Req::delete(&path).bearer(&key))
        .await
        .assert_problem(404);

    // Provider secrets.
    let stored = send(
        Req::post("/v1/secrets")
            .bearer(&key)
            .json(&json!({ "provider": "openai", "value": "sk-docs-1234" })),
    )
    .await;
    assert_eq!(stored.status, 201, "{}", stored.text());
    send(
        Req::post("/v1/secrets")
            .bearer(&key)
            .json(&json!({ "provider": "openai", "value": "sk-docs-1234" })),
    )
    .await
    .assert_problem(409);
    let replaced = send(
        Req::put("/v1/secrets/openai")
            .bearer(&key)
            .json(&json!({ "value": "sk-docs-5678" })),
    )
    .await;
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    send(
        Req::put("/v1/secrets/Bad!")
            .bearer(&key)
            .json(&json!({ "value": "x" })),
    )
    .await
    .assert_problem(422);
    assert_eq!(send(Req::get("/v1/secrets").bearer(&key)).await.status, 200);
    assert_eq!(
        send(Req::delete("/v1/secrets/openai").bearer(&key))
            .await
            .status,
        204
    );
    send(Req::delete("/v1/secrets/openai").bearer(&key))
        .await
        .assert_problem(404);

    // The operator's tenant, key and rewrap routes.
    let admin = &stack.admin_key;
    send(
        Req::post("/admin/tenants")
            .admin(admin)
            .json(&json!({ "name": "" })),
    )
    .await
    .assert_problem(422);
    send(
        Req::post("/admin/tenants")
            .admin(admin)
            .json(&json!({ "name": 5 })),
    )
    .await
    .assert_problem(400);
    let issued = send(Req::post(&format!("/admin/tenants/{tenant}/api-keys")).admin(admin)).await;
    assert_eq!(issued.status, 201, "{}", issued.text());
    let key_id = issued.json()["key_id"].as_str().unwrap().to_owned();
    send(Req::post("/admin/tenants/tnt_nope/api-keys").admin(admin))
        .await
        .assert_problem(404);
    let revoke = format!("/admin/tenants/{tenant}/api-keys/{key_id}");
    assert_eq!(send(Req::delete(&revoke).admin(admin)).await.status, 204);
    send(Req::delete(&revoke).admin(admin))
        .await
        .assert_problem(404);
    let rewrap = send(
        Req::post("/admin/secrets/rewrap")
            .admin(admin)
            .json(&json!({ "limit": 10 })),
    )
    .await;
    assert_eq!(rewrap.status, 200, "{}", rewrap.text());
    send(
        Req::post("/admin/secrets/rewrap")
            .admin(admin)
            .json(&json!({ "limit": 0 })),
    )
    .await
    .assert_problem(422);

    // The ingress function: refused without a signature, accepted (and a duplicate) with one.
    send(Req::post("/webhooks/stripe").body("{}"))
        .await
        .assert_problem(400);
    let event = json!({
        "id": "evt_docs_1", "object": "event", "type": "plan.created",
        "created": sluice::clock::now_epoch(), "livemode": false, "data": { "object": {} },
    })
    .to_string();
    for duplicate in [false, true] {
        let header = sluice::stripe::signature::sign(
            &stack.stripe_secret,
            sluice::clock::now_epoch(),
            event.as_bytes(),
        );
        let res = send(
            Req::post("/webhooks/stripe")
                .header("stripe-signature", &header)
                .body(event.clone()),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(
            res.json()["duplicate"].as_bool().unwrap_or(false),
            duplicate
        );
    }
}

// The repository's own documentation: the README and docs/ link only inside the repository, and
// the configuration table lists every variable the code reads.

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The targets of the Markdown links (`[text](target)`) in `text`.
fn link_targets(text: &str) -> Vec<&str> {
    text.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            rest.find(')').map(|end| rest[..end].trim())
        })
        .collect()
}

/// `Err` for a link that leaves the repository: another origin, or a file outside it or missing.
fn check_link(
    root: &std::path::Path,
    from_dir: &std::path::Path,
    target: &str,
) -> Result<(), String> {
    let file = target.split('#').next().unwrap_or("");
    if file.is_empty() {
        return Ok(()); // an anchor on the same page
    }
    if file.contains("://") || file.starts_with("//") || file.starts_with("mailto:") {
        return Err(format!("`{target}` leaves the repository"));
    }
    match from_dir.join(file).canonicalize() {
        Ok(path) if path.starts_with(root) => Ok(()),
        Ok(_) => Err(format!("`{target}` is outside the repository")),
        Err(_) => Err(format!("`{target}` does not exist")),
    }
}

#[test]
fn readme_and_docs_link_only_inside_the_repository() {
    let root = repo_root();
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut bad = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for target in link_targets(&text) {
            if let Err(e) = check_link(&root, page.parent().unwrap(), target) {
                bad.push(format!("{}: {e}", page.display()));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
    // The checker itself: what the README linked to before, and other ways out.
    let docs = root.join("docs");
    assert!(check_link(&root, &root, "../shared/SPEC.md").is_err());
    assert!(check_link(&root, &root, "https://www.standardwebhooks.com/").is_err());
    assert!(check_link(&root, &docs, "../../x.md").is_err());
    assert!(check_link(&root, &docs, "openapi.json#x").is_ok());
    assert_eq!(link_targets("a [b](c.md) d [e](#f)"), ["c.md", "#f"]);
}

/// Every environment variable `Config` reads, found by reading it through a recording lookup
/// (a required one missing is supplied and the read repeated), so no list is kept by hand.
fn config_variables() -> Vec<String> {
    use std::{cell::RefCell, collections::BTreeSet};
    let seen = RefCell::new(BTreeSet::new());
    let mut supplied: Vec<&'static str> = Vec::new();
    for _ in 0..20 {
        let lookup = |name: &str| {
            seen.borrow_mut().insert(name.to_owned());
            supplied.contains(&name).then(|| "x".to_owned())
        };
        match sluice::Config::from_lookup(lookup) {
            Ok(_) => return seen.into_inner().into_iter().collect(),
            Err(e) if !supplied.contains(&e.name) => supplied.push(e.name),
            Err(e) => panic!("Config refuses the value supplied for {}: {e}", e.name),
        }
    }
    panic!("Config keeps asking for more required variables");
}

#[test]
fn the_configuration_table_lists_every_variable_the_config_reads() {
    let table = std::fs::read_to_string(repo_root().join("docs/configuration.md")).unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| `")).collect();
    let variables = config_variables();
    assert!(variables.len() >= 10, "{variables:?}");
    let missing: Vec<&String> = variables
        .iter()
        .filter(|v| {
            !rows.iter().any(|row| {
                row.split('|')
                    .nth(1)
                    .is_some_and(|c| c.contains(&format!("`{v}`")))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not list {missing:?} (read by crates/sluice/src/config.rs)"
    );
}
