//! The Events page: the tenant's outbound events (`GET /v1/events` with its filters and
//! cursors), one event's deliveries and every attempt (`GET /v1/events/{id}`), replaying a
//! delivery or an event (`POST /v1/events/{id}/replay`) and recovering an endpoint since a time
//! (`POST /v1/endpoints/{id}/recover`) — all through [`PortalApi`], as the pages module says.

use std::{collections::HashMap, fmt::Write};

use axum::{
    Extension,
    body::Bytes,
    extract::{Path, Query},
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use sluice::event_types;
use time::{OffsetDateTime, PrimitiveDateTime, format_description::well_known::Rfc3339};

use super::{
    PortalApi, SameOrigin, Session, Shown,
    html::{esc, idempotency_field, ok_page, problem_box, time},
    pages::{Form, Q, done_notice, i64_at, not_found, see_other, segment, str_at},
};

/// Events read per page.
const PAGE: u32 = 20;
/// Recover calls one portal submission makes at most (each replays one page of 99 events).
const MAX_RECOVER_PAGES: usize = 10;
/// The statuses `GET /v1/events` filters on.
const STATUSES: [&str; 4] = ["pending", "failed", "delivered", "no_endpoints"];

fn enc(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// A time a filter form sent: the script's UTC twin (`{name}_utc`, RFC 3339) when present, else
/// the `datetime-local` value itself read as UTC (no script: the label says so). Pure.
pub fn time_param(values: &HashMap<String, String>, name: &str) -> Option<i64> {
    let twin = values
        .get(&format!("{name}_utc"))
        .filter(|v| !v.is_empty())
        .and_then(|v| OffsetDateTime::parse(v, &Rfc3339).ok());
    if let Some(t) = twin {
        return Some(t.unix_timestamp());
    }
    let raw = values
        .get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())?;
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let with_seconds =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    PrimitiveDateTime::parse(raw, &format)
        .or_else(|_| PrimitiveDateTime::parse(raw, &with_seconds))
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// The `datetime-local` value (UTC) of epoch seconds, to keep a filter filled in. Pure.
fn local_value(epoch: i64) -> String {
    sluice::clock::rfc3339(epoch)
        .get(..16)
        .unwrap_or_default()
        .to_owned()
}

/// The `/v1/events` query of the page's filters. Pure.
pub fn api_query(q: &HashMap<String, String>) -> String {
    let mut path = format!("/events?limit={PAGE}");
    let text = |name: &str| q.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    for (ours, theirs) in [
        ("type", "type"),
        ("status", "status"),
        ("endpoint", "endpoint_id"),
        ("cursor", "cursor"),
    ] {
        if let Some(v) = text(ours) {
            let _ = write!(path, "&{theirs}={}", enc(v));
        }
    }
    for name in ["since", "until"] {
        if let Some(t) = time_param(q, name) {
            let _ = write!(path, "&{name}={t}");
        }
    }
    path
}

fn select(
    id: &str,
    name: &str,
    label: &str,
    options: &[(String, String)],
    current: &str,
) -> String {
    let mut html = format!(
        "<div><label for=\"{id}\">{label}</label><select id=\"{id}\" name=\"{name}\"><option value=\"\">Any</option>"
    );
    for (value, text) in options {
        let selected = if value == current { " selected" } else { "" };
        let _ = write!(
            html,
            "<option value=\"{}\"{selected}>{}</option>",
            esc(value),
            esc(text)
        );
    }
    html.push_str("</select></div>");
    html
}

fn time_input(id: &str, name: &str, label: &str, value: Option<i64>) -> String {
    format!(
        "<div><label for=\"{id}\">{label}</label>\
         <input id=\"{id}\" name=\"{name}\" type=\"datetime-local\" value=\"{}\">\
         <input type=\"hidden\" name=\"{name}_utc\" value=\"\"></div>",
        value.map(local_value).unwrap_or_default()
    )
}

/// The tenant's endpoints as (id, url) options.
async fn endpoint_options(api: &PortalApi, tenant_id: &str) -> Vec<(String, String)> {
    api.call(tenant_id, Method::GET, "/endpoints", None, None)
        .await
        .ok()
        .and_then(|l| l.get("data").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| (str_at(e, "/id").to_owned(), str_at(e, "/url").to_owned()))
        .collect()
}

async fn list_page(
    api: &PortalApi,
    tenant_id: &str,
    q: &HashMap<String, String>,
    top: &str,
    status: StatusCode,
) -> Response {
    let path = api_query(q);
    let (page, endpoints) = tokio::join!(
        api.call(tenant_id, Method::GET, &path, None, None),
        endpoint_options(api, tenant_id),
    );
    let page = match page {
        Ok(p) => p,
        Err(shown) => return shown.into_response(),
    };
    let current = |name: &str| q.get(name).map(String::as_str).unwrap_or_default();
    let mut body = String::from(top);
    // Filters (a GET form: the page's address names them).
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/portal/events\" class=\"filters\" aria-label=\"Filter events\">\
         <div><label for=\"f-type\">Type</label><input id=\"f-type\" name=\"type\" list=\"known-types\" value=\"{}\"></div>\
         <datalist id=\"known-types\">",
        esc(current("type"))
    );
    for t in event_types::catalog() {
        let _ = write!(body, "<option value=\"{}\">", esc(t.name));
    }
    body.push_str("</datalist>");
    let statuses: Vec<(String, String)> = STATUSES
        .iter()
        .map(|s| (s.to_string(), s.replace('_', " ")))
        .collect();
    body.push_str(&select(
        "f-status",
        "status",
        "Status",
        &statuses,
        current("status"),
    ));
    body.push_str(&select(
        "f-endpoint",
        "endpoint",
        "Endpoint",
        &endpoints,
        current("endpoint"),
    ));
    body.push_str(&time_input(
        "f-since",
        "since",
        "From",
        time_param(q, "since"),
    ));
    body.push_str(&time_input(
        "f-until",
        "until",
        "To",
        time_param(q, "until"),
    ));
    body.push_str("<div><button type=\"submit\">Filter</button></div></form>");

    let events = page
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if events.is_empty() {
        body.push_str(if endpoints.is_empty() {
            "<p class=\"empty\">No events yet. Add an endpoint under <a href=\"/portal/endpoints\">Endpoints</a>, \
             then send it a test event from its page.</p>"
        } else {
            "<p class=\"empty\">No events match. Clear the filters, or send a test event from an \
             endpoint's page under <a href=\"/portal/endpoints\">Endpoints</a>.</p>"
        });
    } else {
        body.push_str(
            "<div class=\"scroll\"><table id=\"events\"><caption>Outbound events, newest first</caption><thead><tr>\
             <th scope=\"col\">When</th><th scope=\"col\">Type</th><th scope=\"col\">Status</th>\
             <th scope=\"col\">Deliveries</th></tr></thead><tbody>",
        );
        for e in &events {
            let deliveries: Vec<String> = e
                .get("deliveries")
                .and_then(Value::as_array)
                .map(|ds| {
                    ds.iter()
                        .map(|d| {
                            format!(
                                "<code>{}</code> {}",
                                esc(str_at(d, "/endpoint_id")),
                                esc(str_at(d, "/status"))
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(
                body,
                "<tr><td>{}</td><td><a href=\"/portal/events/{id}\">{}</a></td><td>{}</td><td>{}</td></tr>",
                time(i64_at(e, "/created_at").unwrap_or(0)),
                esc(str_at(e, "/type")),
                esc(&str_at(e, "/status").replace('_', " ")),
                if deliveries.is_empty() {
                    "none".to_owned()
                } else {
                    deliveries.join("<br>")
                },
                id = esc(str_at(e, "/id")),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    if let Some(next) = page.get("next_cursor").and_then(Value::as_str) {
        let mut next_q: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "cursor")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        next_q.push(("cursor".into(), next.to_owned()));
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(next_q)
            .finish();
        let _ = write!(
            body,
            "<nav class=\"pager\" aria-label=\"Event pages\"><a href=\"/portal/events\">Newest</a>\
             <a href=\"/portal/events?{}\" rel=\"next\">Older events</a></nav>",
            esc(&query)
        );
    }
    // Recover: replay everything that failed on an endpoint since a time.
    if !endpoints.is_empty() {
        let options: String = endpoints
            .iter()
            .map(|(id, url)| format!("<option value=\"{}\">{}</option>", esc(id), esc(url)))
            .collect();
        let _ = write!(
            body,
            "<section aria-labelledby=\"recover-h\"><h2 id=\"recover-h\">Recover an endpoint</h2>\
             <p class=\"muted\">Delivers again every failed delivery of an endpoint since a time \
             (after an outage of your receiver, say).</p>\
             <form method=\"post\" action=\"/portal/events/recover\" class=\"stack\">{}\
             <label for=\"r-endpoint\">Endpoint</label><select id=\"r-endpoint\" name=\"endpoint\" required>{options}</select>\
             <label for=\"r-since\">Failed since <span class=\"muted\">(your local time)</span></label>\
             <input id=\"r-since\" name=\"since\" type=\"datetime-local\" required>\
             <input type=\"hidden\" name=\"since_utc\" value=\"\">\
             <button type=\"submit\">Recover</button></form></section>",
            idempotency_field()
        );
    }
    let mut res = ok_page("Events", "/portal/events", &body);
    *res.status_mut() = status;
    res
}

/// `GET /portal/events?type=&status=&endpoint=&since=&until=&cursor=`.
pub async fn list(Extension(api): Extension<PortalApi>, session: Session, Query(q): Q) -> Response {
    let top = done_notice(q.get("done"));
    list_page(&api, &session.tenant_id, &q, &top, StatusCode::OK).await
}

/// `POST /portal/events/recover`: `POST /v1/endpoints/{id}/recover` until done (at most
/// [`MAX_RECOVER_PAGES`] calls, each with its own key derived from the form's).
pub async fn recover(
    Extension(api): Extension<PortalApi>,
    _origin: SameOrigin,
    session: Session,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    let values: HashMap<String, String> = ["since", "since_utc"]
        .iter()
        .filter_map(|k| form.get(k).map(|v| (k.to_string(), v.to_owned())))
        .collect();
    let tenant = session.tenant_id.as_str();
    let api_ref = &api;
    let refused = |shown: Shown| async move {
        list_page(
            api_ref,
            tenant,
            &HashMap::new(),
            &problem_box(&shown.title, &shown.detail),
            shown.status,
        )
        .await
    };
    let Some(endpoint) = form.get("endpoint").and_then(segment) else {
        return refused(Shown {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            title: "Invalid field".into(),
            detail: "choose an endpoint".into(),
        })
        .await;
    };
    let Some(since) = time_param(&values, "since") else {
        return refused(Shown {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            title: "Invalid field".into(),
            detail: "give the time from which to recover".into(),
        })
        .await;
    };
    let key = form.get("idempotency_key").unwrap_or_default().to_owned();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_RECOVER_PAGES {
        let page_key = format!("{key}-{page}");
        let mut req = json!({ "since": since });
        if let Some(c) = &cursor {
            req["cursor"] = json!(c);
        }
        match api
            .call(
                tenant,
                Method::POST,
                &format!("/endpoints/{endpoint}/recover"),
                (!key.is_empty()).then_some(page_key.as_str()),
                Some(&req),
            )
            .await
        {
            Ok(out) => {
                cursor = out
                    .get("next_cursor")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if out.get("done").and_then(Value::as_bool).unwrap_or(true) || cursor.is_none() {
                    break;
                }
            }
            Err(shown) => return refused(shown).await,
        }
    }
    see_other(&format!(
        "/portal/events?endpoint={}&done=recovered",
        enc(endpoint)
    ))
}

/// The attempts of one delivery as a table.
fn attempts_table(attempts: &[Value]) -> String {
    if attempts.is_empty() {
        return "<p class=\"muted\">No attempt yet: it is queued.</p>".to_owned();
    }
    let mut html = String::from(
        "<div class=\"scroll\"><table class=\"attempts\"><caption>Attempts, oldest first</caption><thead><tr>\
         <th scope=\"col\">#</th><th scope=\"col\">When</th><th scope=\"col\">Result</th>\
         <th scope=\"col\" class=\"num\">Duration</th><th scope=\"col\">Response</th></tr></thead><tbody>",
    );
    for a in attempts {
        // The API shows `at` as epoch seconds (stored attempts) or RFC 3339.
        let when = match a.get("at") {
            Some(Value::Number(n)) => time(n.as_i64().unwrap_or(0)),
            Some(Value::String(iso)) => format!(
                "<time datetime=\"{}\">{}</time>",
                esc(iso),
                esc(&iso.replacen('T', " ", 1).replace('Z', " UTC"))
            ),
            _ => "—".to_owned(),
        };
        let response = str_at(a, "/response");
        let result = match (
            a.get("status_code").and_then(Value::as_i64),
            a.get("error").and_then(Value::as_str),
        ) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(err)) => esc(err),
            (None, None) => "—".to_owned(),
        };
        let _ = write!(
            html,
            "<tr><td>{}.{}</td><td>{when}</td><td>{result}</td>\
             <td class=\"num\">{} ms</td><td>{}</td></tr>",
            i64_at(a, "/generation").unwrap_or(0),
            i64_at(a, "/attempt").unwrap_or(0),
            i64_at(a, "/duration_ms").unwrap_or(0),
            if response.is_empty() {
                "<span class=\"muted\">(empty)</span>".to_owned()
            } else {
                format!("<code>{}</code>", esc(response))
            },
        );
    }
    html.push_str("</tbody></table></div>");
    html
}

async fn event_page(api: &PortalApi, tenant_id: &str, id: &str, top: &str) -> Response {
    let Some(id) = segment(id) else {
        return not_found("event");
    };
    let e = match api
        .call(tenant_id, Method::GET, &format!("/events/{id}"), None, None)
        .await
    {
        Ok(e) => e,
        Err(shown) => return shown.into_response(),
    };
    let id = esc(id);
    let mut body = String::from(top);
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>Type</dt><dd>{}</dd><dt>Id</dt><dd><code>{id}</code></dd><dt>Created</dt><dd>{}</dd></dl>\
         <form method=\"post\" action=\"/portal/events/{id}/replay\">{}<button type=\"submit\" id=\"replay-event\">Replay to every endpoint</button></form>\
         <details><summary>Payload</summary><pre><code>{}</code></pre></details>\
         <h2>Deliveries</h2>",
        esc(str_at(&e, "/type")),
        time(i64_at(&e, "/created_at").unwrap_or(0)),
        idempotency_field(),
        esc(
            &serde_json::to_string_pretty(e.get("data").unwrap_or(&Value::Null))
                .unwrap_or_default()
        ),
    );
    let deliveries = e
        .get("deliveries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if deliveries.is_empty() {
        body.push_str("<p class=\"empty\">No deliveries: no endpoint matched this event when it was sent.</p>");
    }
    for (i, d) in deliveries.iter().enumerate() {
        let endpoint = str_at(d, "/endpoint_id");
        let attempts = d
            .get("attempts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let _ = write!(
            body,
            "<section class=\"card delivery\" aria-labelledby=\"d-{i}\"><h3 id=\"d-{i}\">To <a href=\"/portal/endpoints/{ep}\"><code>{ep}</code></a>: \
             <span class=\"delivery-status\">{}</span></h3>{}{}\
             <form method=\"post\" action=\"/portal/events/{id}/replay\">{}\
             <input type=\"hidden\" name=\"endpoint\" value=\"{ep}\">\
             <button type=\"submit\" class=\"replay-delivery\">Replay this delivery</button></form></section>",
            esc(str_at(d, "/status")),
            attempts_table(&attempts),
            i64_at(d, "/next_attempt_at")
                .map(|t| format!("<p>Next attempt {}</p>", time(t)))
                .unwrap_or_default(),
            idempotency_field(),
            ep = esc(endpoint),
        );
    }
    ok_page("Event", "/portal/events", &body)
}

/// `GET /portal/events/{id}`: the event, each delivery and every attempt.
pub async fn show(
    Extension(api): Extension<PortalApi>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Q,
) -> Response {
    event_page(&api, &session.tenant_id, &id, &done_notice(q.get("done"))).await
}

/// `POST /portal/events/{id}/replay` (`endpoint`: only that delivery):
/// `POST /v1/events/{id}/replay`.
pub async fn replay(
    Extension(api): Extension<PortalApi>,
    _origin: SameOrigin,
    session: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(id) = segment(&id) else {
        return not_found("event");
    };
    let form = Form::parse(&body);
    let req = match form.get("endpoint") {
        Some(ep) => json!({ "endpoint_id": ep }),
        None => json!({}),
    };
    match api
        .call(
            &session.tenant_id,
            Method::POST,
            &format!("/events/{id}/replay"),
            form.get("idempotency_key"),
            Some(&req),
        )
        .await
    {
        Ok(_) => see_other(&format!("/portal/events/{id}?done=replayed")),
        Err(shown) if shown.status == StatusCode::NOT_FOUND => shown.into_response(),
        Err(shown) => {
            let mut res = event_page(
                &api,
                &session.tenant_id,
                id,
                &problem_box(&shown.title, &shown.detail),
            )
            .await;
            *res.status_mut() = shown.status;
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn times_come_from_the_scripts_utc_twin_or_are_read_as_utc() {
        let twin = q(&[
            ("since", "2026-12-02T16:30"),
            ("since_utc", "2026-12-02T15:30:00.000Z"),
        ]);
        assert_eq!(time_param(&twin, "since"), Some(1_796_225_400));
        let bare = q(&[("since", "2026-12-02T15:30")]);
        assert_eq!(time_param(&bare, "since"), Some(1_796_225_400));
        assert_eq!(time_param(&q(&[("since", "soon")]), "since"), None);
        assert_eq!(time_param(&q(&[]), "since"), None);
        assert_eq!(local_value(1_796_225_400), "2026-12-02T15:30");
    }

    #[test]
    fn filters_become_the_apis_query() {
        let query = api_query(&q(&[
            ("type", "credits.added"),
            ("status", "failed"),
            ("endpoint", "ep_1"),
            ("since", "2026-12-02T15:30"),
            ("cursor", "a b"),
            ("until", ""),
        ]));
        assert_eq!(
            query,
            "/events?limit=20&type=credits.added&status=failed&endpoint_id=ep_1&cursor=a+b&since=1796225400"
        );
    }
}
