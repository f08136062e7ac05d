//! The tenant portal (`/portal`): access (one-time links, sessions, cookie attributes, CSP,
//! `Origin`), isolation between tenants, forms going through the API's idempotency, and the
//! whole journey in headless Chromium.

use http::StatusCode;
use serde_json::{Value, json};
use sluice::table;

use crate::support::{Req, Res, Stack, get_item};

/// The local `Host` the in-process requests carry (a `make dev` port).
const HOST: &str = "127.0.0.1:3000";
const ORIGIN: &str = "http://127.0.0.1:3000";
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'";

/// `POST /v1/portal-sessions` as the tenant → the link.
async fn mint(stack: &Stack, api_key: &str) -> String {
    let res = stack
        .send(
            Req::post("/v1/portal-sessions")
                .bearer(api_key)
                .header("host", HOST),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    res.json()["url"].as_str().unwrap().to_owned()
}

fn path_of(url: &str) -> &str {
    url.strip_prefix(ORIGIN)
        .unwrap_or_else(|| panic!("{url} is not on {ORIGIN}"))
}

fn token_of(url: &str) -> &str {
    url.split_once("token=").unwrap().1
}

async fn open(stack: &Stack, url: &str) -> Res {
    stack
        .send(Req::get(path_of(url)).header("host", HOST))
        .await
}

/// `name=value` of the answer's `Set-Cookie`.
fn cookie_of(res: &Res) -> String {
    res.header("set-cookie")
        .expect("a Set-Cookie header")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// A signed-in session's cookie for the tenant of `api_key`.
async fn sign_in(stack: &Stack, api_key: &str) -> String {
    let res = open(stack, &mint(stack, api_key).await).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    cookie_of(&res)
}

fn page(path: &str, cookie: &str) -> Req {
    Req::get(path).header("host", HOST).header("cookie", cookie)
}

/// A portal form `POST` from the portal's own page.
fn form(path: &str, cookie: &str, body: &str) -> Req {
    Req::post(path)
        .header("host", HOST)
        .header("cookie", cookie)
        .header("origin", ORIGIN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
}

fn assert_portal_headers(res: &Res) {
    assert_eq!(res.header("content-security-policy"), Some(CSP));
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(res.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(res.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn a_link_opens_one_strict_session_and_is_stored_only_as_a_digest() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Portal Co").await;
    let res = stack
        .send(
            Req::post("/v1/portal-sessions")
                .bearer(&key)
                .header("host", HOST),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let minted = res.json();
    let url = minted["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:3000/portal/login?token="),
        "{url}"
    );
    let ttl = minted["expires_at"].as_i64().unwrap() - sluice::clock::now_epoch();
    assert!((590..=600).contains(&ttl), "{ttl}");
    // Only the token's digest is a key of the table.
    let token = token_of(&url);
    let digest = hex::encode(sluice::auth::digest(token));
    let stored = get_item(
        &stack,
        &table::portal_token_pk(&digest),
        table::PORTAL_TOKEN_SK,
    )
    .await
    .expect("the token's digest is stored");
    assert!(!format!("{stored:?}").contains(token));

    let res = open(&stack, &url).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_portal_headers(&res);
    assert!(
        res.text()
            .contains("<meta http-equiv=\"refresh\" content=\"0;url=/portal\">")
    );
    let set_cookie = res.header("set-cookie").unwrap().to_owned();
    for part in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/portal",
        "Max-Age=28800",
    ] {
        assert!(set_cookie.contains(part), "{set_cookie}");
    }
    // Local plain http: no `Secure` (the browser would drop the cookie).
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    let cookie = cookie_of(&res);
    assert!(!cookie.contains(token));

    // The token is consumed: its item is gone and a second use is refused.
    assert!(
        get_item(
            &stack,
            &table::portal_token_pk(&digest),
            table::PORTAL_TOKEN_SK
        )
        .await
        .is_none()
    );
    let again = open(&stack, &url).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(again.text().contains("already used"), "{}", again.text());
    assert!(again.header("set-cookie").is_none());

    let overview = stack.send(page("/portal", &cookie)).await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.text());
    assert_portal_headers(&overview);
    let html = overview.text();
    assert!(
        html.contains("Portal Co") && html.contains("0.00 USD"),
        "{html}"
    );
    assert_eq!(
        stack
            .send(Req::get("/portal").header("host", HOST))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn forged_expired_and_raced_tokens_are_refused() {
    let stack = Stack::with_settings(&[("PORTAL_LINK_TTL_SECS", "1")]).await;
    let (_, key) = stack.create_tenant("Racer").await;

    // Forged: a well-formed token never issued, one character changed, and garbage.
    let url = mint(&stack, &key).await;
    let token = token_of(&url);
    let flipped: String = token
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == 'A' { 'B' } else { 'A' }
            } else {
                c
            }
        })
        .collect();
    for forged in [
        sluice_api::portal::access::new_secret(),
        flipped,
        "x".to_owned(),
        String::new(),
    ] {
        let res = stack
            .send(Req::get(&format!("/portal/login?token={forged}")).header("host", HOST))
            .await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{forged}");
        assert!(res.header("set-cookie").is_none());
    }

    // Raced: many exchanges of one token at once open exactly one session (the conditional
    // delete decides; no timing involved).
    let url = mint(&stack, &key).await;
    let tries = futures::future::join_all((0..6).map(|_| open(&stack, &url))).await;
    let opened = tries.iter().filter(|r| r.status == StatusCode::OK).count();
    assert_eq!(
        opened,
        1,
        "{:?}",
        tries.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        tries
            .iter()
            .all(|r| r.status == StatusCode::OK || r.status == StatusCode::UNAUTHORIZED)
    );

    // Expired: the stored expiry is in the past (TTL deletion is lazy; the condition checks it).
    let url = mint(&stack, &key).await;
    let digest = hex::encode(sluice::auth::digest(token_of(&url)));
    stack
        .aws
        .dynamodb
        .update_item()
        .table_name(&stack.config.table_name)
        .set_key(Some(table::key(
            table::portal_token_pk(&digest),
            table::PORTAL_TOKEN_SK,
        )))
        .update_expression("SET #ttl = :past")
        .expression_attribute_names("#ttl", table::TTL)
        .expression_attribute_values(":past", table::n(sluice::clock::now_epoch() - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(open(&stack, &url).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_admin_mints_links_for_existing_tenants_and_replays_with_the_same_key() {
    let stack = Stack::new().await;
    let (tenant, _) = stack.create_tenant("Admin minted").await;
    let req = |id: &str| {
        Req::post(&format!("/admin/tenants/{id}/portal-sessions"))
            .admin(&stack.admin_key)
            .header("host", HOST)
            .idempotency_key(&format!("mint-{id}"))
    };
    let first = stack.send(req(&tenant)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    let replay = stack.send(req(&tenant)).await;
    assert_eq!(replay.json()["url"], first.json()["url"]);
    stack
        .send(req("tnt_nosuchtenant"))
        .await
        .assert_problem(404);
    stack
        .send(Req::post(&format!("/admin/tenants/{tenant}/portal-sessions")).header("host", HOST))
        .await
        .assert_problem(401);
    let res = open(&stack, first.json()["url"].as_str().unwrap()).await;
    assert_eq!(res.status, StatusCode::OK);
}

#[tokio::test]
async fn links_never_point_at_a_forged_host_and_a_deployed_cookie_is_secure() {
    // No configured base URL and a Host that is not loopback (nor API Gateway's domain): no
    // trustworthy origin, so no link (a generic 500: an operator must set PORTAL_BASE_URL).
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Hosted").await;
    let res = stack
        .send(
            Req::post("/v1/portal-sessions")
                .bearer(&key)
                .header("host", "evil.example"),
        )
        .await;
    let problem = res.assert_problem(500);
    assert!(!problem.to_string().contains("evil"));

    let stack = Stack::with_settings(&[
        ("PORTAL_BASE_URL", "https://portal.example.com"),
        ("PORTAL_FRAME_ANCESTORS", "https://app.example.com"),
        ("PORTAL_SESSION_TTL_SECS", "900"),
    ])
    .await;
    let (_, key) = stack.create_tenant("Hosted").await;
    let res = stack
        .send(
            Req::post("/v1/portal-sessions")
                .bearer(&key)
                .header("host", "evil.example"),
        )
        .await;
    let url = res.json()["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("https://portal.example.com/portal/login?token="),
        "{url}"
    );
    let path = url.strip_prefix("https://portal.example.com").unwrap();
    let res = stack
        .send(Req::get(path).header("host", "portal.example.com"))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let set_cookie = res.header("set-cookie").unwrap();
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    assert!(set_cookie.contains("Max-Age=900"), "{set_cookie}");
    assert_eq!(
        res.header("content-security-policy"),
        Some("default-src 'self'; frame-ancestors https://app.example.com; form-action 'self'")
    );
    // A form from another origin (or none) is refused; from the configured origin it passes.
    let cookie = cookie_of(&res);
    let post = |origin: Option<&str>| {
        let mut r = Req::post("/portal/logout")
            .header("host", "portal.example.com")
            .header("cookie", &cookie);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r
    };
    assert_eq!(stack.send(post(None)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        stack.send(post(Some("https://evil.example"))).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        stack
            .send(post(Some("https://portal.example.com")))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn forms_need_the_portals_origin_and_sign_out_ends_the_session() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Forms").await;
    let cookie = sign_in(&stack, &key).await;
    let body = "provider=openai&value=sk-test-abcdefgh1234&idempotency_key=portal-k1";

    let mut no_origin = form("/portal/keys", &cookie, body);
    no_origin.headers.retain(|(k, _)| k != "origin");
    let mut evil = form("/portal/keys", &cookie, body);
    evil.headers.retain(|(k, _)| k != "origin");
    let evil = evil.header("origin", "http://evil.example");
    for refused in [no_origin, evil] {
        let res = stack.send(refused).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.text());
        assert_portal_headers(&res);
    }
    // Nothing was stored.
    let listed = stack
        .send(Req::get("/v1/secrets").bearer(&key))
        .await
        .json();
    assert_eq!(listed["data"], json!([]));

    let res = stack.send(form("/portal/keys", &cookie, body)).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert_eq!(res.header("location"), Some("/portal/keys?done=key-saved"));
    let keys = stack.send(page("/portal/keys", &cookie)).await.text();
    assert!(keys.contains("openai") && keys.contains("1234"), "{keys}");
    assert!(!keys.contains("sk-test-abcdefgh1234"));

    // A refusal shows the problem's title and detail, not a raw body.
    let res = stack
        .send(form(
            "/portal/keys",
            &cookie,
            "provider=openai&value=other&idempotency_key=portal-k2",
        ))
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    let html = res.text();
    assert!(html.contains("class=\"problem\""), "{html}");
    assert!(!html.contains("\"type\""), "{html}");

    let out = stack.send(form("/portal/logout", &cookie, "")).await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = stack.send(page("/portal", &cookie)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_double_submitted_form_creates_once_and_shows_the_same_secret() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Twice").await;
    let cookie = sign_in(&stack, &key).await;
    let body = "url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&description=Orders&event_types=credits.added&idempotency_key=portal-twice";
    let first = stack.send(form("/portal/endpoints", &cookie, body)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let second = stack.send(form("/portal/endpoints", &cookie, body)).await;
    let secret = |res: &Res| {
        let html = res.text();
        let start = html.find("id=\"secret\">").expect("the secret is shown") + 12;
        html[start..start + html[start..].find('<').unwrap()].to_owned()
    };
    assert!(secret(&first).starts_with("whsec_"));
    assert_eq!(secret(&first), secret(&second));
    let listed = stack
        .send(Req::get("/v1/endpoints").bearer(&key))
        .await
        .json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["data"][0]["event_types"], json!(["credits.added"]));

    // The API's validation, as the API answers it.
    let res = stack
        .send(form(
            "/portal/endpoints",
            &cookie,
            "url=ftp%3A%2F%2Fx&idempotency_key=portal-bad",
        ))
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().contains("ftp://x"), "the form keeps its values");
}

#[tokio::test]
async fn a_session_never_reaches_another_tenants_endpoint() {
    let stack = Stack::new().await;
    let (_, key_a) = stack.create_tenant("A").await;
    let (_, key_b) = stack.create_tenant("B").await;
    let theirs = stack
        .send(
            Req::post("/v1/endpoints")
                .bearer(&key_b)
                .json(&json!({ "url": "http://127.0.0.1:9/b-secret-hook" })),
        )
        .await
        .json();
    let id = theirs["id"].as_str().unwrap();
    let cookie = sign_in(&stack, &key_a).await;

    let res = stack
        .send(page(&format!("/portal/endpoints/{id}"), &cookie))
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert!(!res.text().contains("b-secret-hook"));
    for action in ["reveal", "rotate", "disable", "delete"] {
        let res = stack
            .send(form(
                &format!("/portal/endpoints/{id}/{action}"),
                &cookie,
                &format!("idempotency_key=portal-{action}"),
            ))
            .await;
        assert_eq!(
            res.status,
            StatusCode::NOT_FOUND,
            "{action}: {}",
            res.text()
        );
        assert!(!res.text().contains("whsec_"));
    }
    let res = stack
        .send(form(
            &format!("/portal/endpoints/{id}"),
            &cookie,
            "url=http%3A%2F%2F127.0.0.1%3A9%2Fmine&idempotency_key=portal-edit",
        ))
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    // B's endpoint is untouched.
    let still: Value = stack
        .send(Req::get(&format!("/v1/endpoints/{id}")).bearer(&key_b))
        .await
        .json();
    assert_eq!(still["url"], "http://127.0.0.1:9/b-secret-hook");
    assert_eq!(still["enabled"], true);
    // A path that is no id at all is not found either (never reaches another API path).
    let res = stack
        .send(page("/portal/endpoints/..%2Fsecrets", &cookie))
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_events_page_filters_failures_and_recovers_an_endpoint_since_a_time() {
    let stack = Stack::new().await;
    let (_, key) = stack.create_tenant("Recovering").await;
    let cookie = sign_in(&stack, &key).await;
    // An endpoint whose receiver answers `410 Gone` (so it is disabled and the delivery failed
    // for good), then an event to it.
    let gone = Receiver::answering(StatusCode::GONE).await;
    let ep = stack
        .send(
            Req::post("/v1/endpoints")
                .bearer(&key)
                .json(&json!({ "url": gone.url })),
        )
        .await
        .json();
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    let secret = ep["secret"].as_str().unwrap().to_owned();
    let res = stack
        .send(
            Req::post("/v1/events")
                .bearer(&key)
                .json(&json!({ "type": "order.created", "data": {} })),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text());
    in_chromium::deliver(&stack).await;

    let failed = stack
        .send(page(
            &format!("/portal/events?status=failed&endpoint={ep_id}"),
            &cookie,
        ))
        .await;
    assert_eq!(failed.status, StatusCode::OK);
    let html = failed.text();
    assert!(
        html.contains("order.created") && html.contains(" failed"),
        "{html}"
    );
    let delivered = stack
        .send(page("/portal/events?status=delivered", &cookie))
        .await
        .text();
    assert!(delivered.contains("No events match"), "{delivered}");

    // The receiver is back: recover everything that failed since an hour ago (a
    // `datetime-local` value without the script's UTC twin is read as UTC).
    let receiver = Receiver::start().await;
    stack
        .send(
            Req::patch(&format!("/v1/endpoints/{ep_id}"))
                .bearer(&key)
                .json(&json!({ "url": receiver.url, "enabled": true })),
        )
        .await;
    let since = &sluice::clock::rfc3339(sluice::clock::now_epoch() - 3600)[..16];
    let res = stack
        .send(form(
            "/portal/events/recover",
            &cookie,
            &format!("endpoint={ep_id}&since={since}&since_utc=&idempotency_key=portal-recover"),
        ))
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert_eq!(
        res.header("location"),
        Some(format!("/portal/events?endpoint={ep_id}&done=recovered").as_str())
    );
    in_chromium::deliver(&stack).await;
    assert_eq!(receiver.verified_with(&secret), 1);

    // Another tenant's endpoint cannot be recovered through this session.
    let (_, other) = stack.create_tenant("Other").await;
    let theirs = stack
        .send(
            Req::post("/v1/endpoints")
                .bearer(&other)
                .json(&json!({ "url": "http://127.0.0.1:9/theirs" })),
        )
        .await
        .json();
    let res = stack
        .send(form(
            "/portal/events/recover",
            &cookie,
            &format!(
                "endpoint={}&since={since}&idempotency_key=portal-recover-theirs",
                theirs["id"].as_str().unwrap()
            ),
        ))
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text());
}

/// A local webhook receiver that keeps every request (and answers `204`).
struct Receiver {
    url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::answering(StatusCode::NO_CONTENT).await
    }

    async fn answering(status: StatusCode) -> Receiver {
        let got: std::sync::Arc<std::sync::Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>> =
            Default::default();
        let kept = got.clone();
        let app =
            axum::Router::new().fallback(move |headers: http::HeaderMap, body: bytes::Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push((headers, body));
                    status
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, got }
    }

    /// How many deliveries verify with `secret`.
    fn verified_with(&self, secret: &str) -> usize {
        let key = sluice::webhook_signature::SigningKey::from_secret(secret).unwrap();
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, b)| {
                sluice_local::receiver::inspect(
                    h,
                    b,
                    std::slice::from_ref(&key),
                    sluice::clock::now_epoch(),
                )
                .verification
                    == sluice_local::receiver::Verification::Verified
            })
            .count()
    }
}

mod in_chromium {
    use fantoccini::{Client, Locator, key::Key};
    use serde_json::json;

    use super::*;
    use crate::browser::{Browser, serve};

    async fn text(c: &Client, css: &str) -> String {
        match c.wait().for_element(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap(),
            Err(e) => panic!(
                "{css}: {e}\nat {}:\n{}",
                c.current_url().await.unwrap(),
                c.source().await.unwrap_or_default()
            ),
        }
    }

    /// Marks the current document, so that [`next_page`] can tell the next one from it.
    async fn mark_page(c: &Client) {
        c.execute("document.documentElement.dataset.before = '1'", vec![])
            .await
            .unwrap();
    }

    /// Waits until the document marked by [`mark_page`] was replaced.
    async fn next_page(c: &Client) {
        text(c, "html:not([data-before]) body").await;
    }

    /// Clicks what navigates, and waits for the next page.
    async fn click(c: &Client, css: &str) {
        mark_page(c).await;
        c.find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
        next_page(c).await;
    }

    /// Every visible input, select and textarea of the page has a label.
    async fn assert_labelled(c: &Client) {
        let unlabelled = c
            .execute(
                "return [...document.querySelectorAll('input:not([type=hidden]),select,textarea')]\
                 .filter(e => !(e.labels && e.labels.length)).map(e => e.outerHTML)",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabelled, json!([]), "inputs without a label");
    }

    /// The page fits the viewport's width (no horizontal scrolling of the page itself).
    async fn assert_fits(c: &Client) {
        let fits = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        if fits != json!(true) {
            let wide = c
                .execute(
                    "return [...document.querySelectorAll('body *')]\
                     .filter(e => !e.closest('.scroll') && e.getBoundingClientRect().right > window.innerWidth + 1)\
                     .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))\
                     .slice(0, 8)",
                    vec![],
                )
                .await
                .unwrap();
            panic!(
                "{} scrolls sideways at {:?}: {wide}",
                c.current_url().await.unwrap(),
                c.execute("return window.innerWidth", vec![]).await.unwrap()
            );
        }
    }

    /// Runs the delivery side once: relay the outbox, then one egress round on the queue.
    pub(super) async fn deliver(stack: &Stack) {
        stack.relay_outbox().await;
        sluice_local::poller::poll_once(
            &stack.aws.sqs,
            &stack.resources.queue_url,
            &stack.resources.queue_arn,
            &stack.egress(),
            1,
        )
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenant_uses_the_portal_in_chromium() {
        let stack = Stack::new().await;
        let (base, _stop) = serve(&stack).await;
        let created = stack
            .send(
                Req::post("/admin/tenants")
                    .admin(&stack.admin_key)
                    .json(&json!({ "name": "Acme Robotics", "monthly_budget_minor": 5000 })),
            )
            .await
            .json();
        let tenant = created["id"].as_str().unwrap().to_owned();
        let key = created["api_key"].as_str().unwrap().to_owned();
        let (_, other_key) = stack.create_tenant("Someone else").await;
        let theirs = stack
            .send(
                Req::post("/v1/endpoints")
                    .bearer(&other_key)
                    .json(&json!({ "url": "http://127.0.0.1:9/their-hook" })),
            )
            .await
            .json();
        // A Stripe top-up reaches the ingress, signed as Stripe signs it.
        crate::stripe_ingress::deliver_ok(
            &stack,
            crate::stripe_ingress::fixture("payment_intent.succeeded.credits", &tenant),
            "processed",
        )
        .await;
        // Its `credits.added` notification is relayed before any endpoint exists.
        deliver(&stack).await;
        let receiver = Receiver::start().await;

        // The SaaS backend mints a link over real HTTP (the Host is this server's).
        let minted: Value = crate::support::http_client()
            .post(format!("{base}/v1/portal-sessions"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let link = minted["url"].as_str().unwrap().to_owned();
        assert!(
            link.starts_with(&format!("{base}/portal/login?token=")),
            "{link}"
        );

        let browser = Browser::start().await;
        let c = &browser.client;
        c.goto(&link).await.unwrap();
        // Signed in, moved on to the overview: the token is no longer in the address bar.
        assert_eq!(text(c, "#balance").await, "25.00 USD");
        assert_eq!(
            c.current_url().await.unwrap().as_str(),
            format!("{base}/portal")
        );
        let main = text(c, "main").await;
        assert!(
            main.contains("Acme Robotics") && main.contains("of 50.00 USD"),
            "{main}"
        );
        // The 30-day chart counts the top-up as today's credits.
        assert_eq!(
            c.find_all(Locator::Css("svg.chart rect.credits"))
                .await
                .unwrap()
                .len(),
            30
        );
        let figures = c
            .execute(
                "return document.querySelector('details table').textContent",
                vec![],
            )
            .await
            .unwrap();
        assert!(figures.as_str().unwrap().contains("25.00 USD"), "{figures}");
        browser.screenshot("portal-overview").await;

        // Ledger: the top-up, with its time in the viewer's zone (the script rewrote it).
        click(c, "nav a[href='/portal/ledger']").await;
        let ledger = text(c, "table").await;
        assert!(ledger.contains("25.00 USD"), "{ledger}");
        let shown_time = text(c, "table time").await;
        assert!(!shown_time.ends_with("UTC"), "{shown_time}");
        browser.screenshot("portal-ledger").await;

        // Endpoints: empty, then one added with the keyboard (type, then Enter submits).
        click(c, "nav a[href='/portal/endpoints']").await;
        assert!(text(c, ".empty").await.contains("No endpoints yet"));
        assert_labelled(c).await;
        let url_input = c.find(Locator::Id("ep-url")).await.unwrap();
        mark_page(c).await;
        url_input
            .send_keys(&format!("{}{}", receiver.url, char::from(Key::Enter)))
            .await
            .unwrap();
        next_page(c).await;
        let secret = text(c, "#secret").await;
        assert!(secret.starts_with("whsec_"), "{secret}");
        assert_eq!(text(c, "#endpoint-url").await, receiver.url);
        browser.screenshot("portal-endpoint").await;
        let endpoint_page = format!("{base}/portal/endpoints/{}", text(c, "dl.facts code").await);

        // Reveal shows the same secret.
        click(c, "#reveal").await;
        assert_eq!(text(c, "#secret").await, secret);

        // An event reaches the receiver, signed with that secret, and its attempt is shown.
        click(c, "#send-test").await;
        assert!(text(c, ".notice").await.contains("test event"));
        deliver(&stack).await;
        assert_eq!(receiver.verified_with(&secret), 1);
        c.goto(&format!("{base}/portal/events")).await.unwrap();
        let events = text(c, "#events").await;
        assert!(
            events.contains("sluice.test") && events.contains("delivered"),
            "{events}"
        );
        assert_labelled(c).await;
        browser.screenshot("portal-events").await;
        click(c, "#events a").await;
        let attempts = text(c, ".attempts").await;
        assert!(attempts.contains("HTTP 204"), "{attempts}");
        assert!(!text(c, ".attempts time").await.is_empty());
        browser.screenshot("portal-event").await;

        // Replay that delivery: queued through the outbox, delivered again, a second attempt.
        click(c, ".replay-delivery").await;
        assert!(text(c, ".notice").await.contains("Queued again"));
        deliver(&stack).await;
        assert_eq!(receiver.verified_with(&secret), 2);
        c.refresh().await.unwrap();
        let rows = c
            .find_all(Locator::Css(".attempts tbody tr"))
            .await
            .unwrap()
            .len();
        assert_eq!(rows, 2);

        // Rotate: a new secret is shown.
        c.goto(&endpoint_page).await.unwrap();
        click(c, "#rotate").await;
        let rotated = text(c, "#secret").await;
        assert!(rotated.starts_with("whsec_") && rotated != secret);

        // Another tenant's endpoint, by id, through the portal's URL: not found.
        c.goto(&format!(
            "{base}/portal/endpoints/{}",
            theirs["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
        assert!(text(c, ".problem").await.contains("Not found"));
        assert!(!c.source().await.unwrap().contains("their-hook"));

        // Provider keys: add one, see only its hint.
        c.goto(&format!("{base}/portal/keys")).await.unwrap();
        assert_labelled(c).await;
        c.find(Locator::Id("key-provider"))
            .await
            .unwrap()
            .send_keys("openai")
            .await
            .unwrap();
        c.find(Locator::Id("key-value"))
            .await
            .unwrap()
            .send_keys("sk-live-portal-test-9876")
            .await
            .unwrap();
        click(c, "form[action='/portal/keys'] button").await;
        assert!(text(c, ".notice").await.contains("stored"));
        let table = text(c, "table").await;
        assert!(
            table.contains("openai") && table.contains("9876"),
            "{table}"
        );
        assert!(
            !c.source()
                .await
                .unwrap()
                .contains("sk-live-portal-test-9876")
        );
        browser.screenshot("portal-keys").await;

        // Readable at 375 px: nothing scrolls sideways.
        c.set_window_size(375, 800).await.unwrap();
        for path in [
            "/portal",
            "/portal/ledger",
            "/portal/endpoints",
            "/portal/keys",
        ] {
            c.goto(&format!("{base}{path}")).await.unwrap();
            text(c, "h1").await;
            assert_fits(c).await;
        }
        c.goto(&format!("{base}/portal")).await.unwrap();
        text(c, "#balance").await;
        browser.screenshot("portal-overview-375").await;
        c.set_window_size(1280, 900).await.unwrap();

        // Sign out: the cookie no longer opens anything; the used link stays used.
        c.goto(&format!("{base}/portal")).await.unwrap();
        click(c, ".signout button").await;
        assert!(text(c, "main").await.contains("signed out"));
        c.goto(&format!("{base}/portal")).await.unwrap();
        assert!(text(c, "h1").await.contains("Signed out"));
        c.goto(&link).await.unwrap();
        assert!(text(c, "main").await.contains("already used"));
        // A stolen link whose token was tampered with is refused too.
        c.goto(&format!("{}X", &link[..link.len() - 1]))
            .await
            .unwrap();
        assert!(text(c, "main").await.contains("not valid"));

        // Everything the pages loaded came from this origin.
        let seen = browser.off_origin_requests();
        browser.close().await;
        assert!(seen.is_empty(), "requests to another origin: {seen:?}");
    }
}
