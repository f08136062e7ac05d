//! Headless Chromium for the tests (Debian's `chromium` and `chromium-driver`, installed by
//! `infra/bootstrap.sh chromium`), driven over WebDriver with `fantoccini`.
//!
//! - One `chromedriver` per test binary, on a free port, started on first use; it runs under a
//!   `sh` that kills it when the test binary's end of its stdin closes (the binary exited).
//! - Each [`Browser`] is a fresh session with its own temporary profile, whose every request to
//!   another origin goes to a [`RecordingProxy`] (`--proxy-server`): Chromium sends loopback
//!   directly by its implicit bypass rule, so the stack under test is reached as is and anything
//!   else is recorded (and refused). `the_proxy_catches_a_request_to_another_origin` proves it
//!   with a deliberately bad page.
//! - [`serve`] puts a stack's functions on a real local port (the local runner's server).

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::watch,
};

use crate::support::{Stack, unique};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Hosts Debian's Chromium contacts by itself at startup whatever the flags below (component
/// updates, sign-in, a preconnect to its default search engine), never because of a page. Exact
/// hosts: a page's request to any other (a font or script CDN, say) is still reported.
const BROWSER_OWN_HOSTS: [&str; 4] = [
    "start.duckduckgo.com",
    "update.googleapis.com",
    "accounts.google.com",
    "clients2.google.com",
];
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    url: String,
    _child: Child,
    _stdin: ChildStdin,
}

static DRIVER: OnceLock<Driver> = OnceLock::new();

fn driver() -> &'static Driver {
    DRIVER.get_or_init(|| {
        assert!(
            std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
            "Chromium is missing: run `infra/bootstrap.sh chromium` (make test does)"
        );
        let port = sluice_local::emulator::free_port().unwrap();
        // `exec`-less on purpose: the shell waits for stdin to close, then ends chromedriver.
        let script = format!(
            "{CHROMEDRIVER} --port={port} --log-level=SEVERE & pid=$!; cat >/dev/null; kill $pid"
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).unwrap();
            assert!(n > 0, "chromedriver exited before it was ready");
            if line.contains("started successfully") {
                break;
            }
        }
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Driver {
            url: format!("http://127.0.0.1:{port}"),
            _child: child,
            _stdin: stdin,
        }
    })
}

/// An HTTP proxy that records the first line of every request it receives (`CONNECT host:443`,
/// `GET http://host/…`) and answers each with `403`.
#[derive(Clone)]
pub struct RecordingProxy {
    pub addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl RecordingProxy {
    pub async fn start() -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = RecordingProxy {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
        };
        let seen = proxy.seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]);
                    if let Some(first) = head.lines().next().filter(|l| !l.is_empty()) {
                        seen.lock().unwrap().push(first.to_owned());
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        proxy
    }

    /// Every request line received so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A headless Chromium session whose off-origin requests go to its [`RecordingProxy`].
pub struct Browser {
    pub client: Client,
    pub proxy: RecordingProxy,
    profile: PathBuf,
}

impl Browser {
    pub async fn start() -> Browser {
        let driver = driver();
        let proxy = RecordingProxy::start().await;
        let profile = std::env::temp_dir().join(unique("sluice-chromium"));
        std::fs::create_dir_all(&profile).unwrap();
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            // The browser's own traffic (time, updates, sign-in, search-engine preconnect) would
            // otherwise reach the proxy too and hide what the page itself requests.
            "--disable-default-apps".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-component-extensions-with-background-pages".to_owned(),
            "--disable-client-side-phishing-detection".to_owned(),
            "--disable-domain-reliability".to_owned(),
            "--disable-breakpad".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--no-pings".to_owned(),
            "--disable-search-engine-choice-screen".to_owned(),
            "--safebrowsing-disable-auto-update".to_owned(),
            "--password-store=basic".to_owned(),
            "--allow-browser-signin=false".to_owned(),
            "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate,\
             AutofillServerCommunication,CertificateTransparencyComponentUpdater,PreconnectToSearch,\
             SearchEnginePreconnectInterval,SearchEnginePreconnect2,InterestFeedContentSuggestions"
                .to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            // Loopback bypasses the proxy by Chromium's implicit rule (no bypass list given).
            format!("--proxy-server=http://{}", proxy.addr),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a Chromium session starts");
        Browser {
            client,
            proxy,
            profile,
        }
    }

    /// Requests that left for another origin (through the proxy), less the browser's own
    /// startup traffic ([`BROWSER_OWN_HOSTS`]).
    pub fn off_origin_requests(&self) -> Vec<String> {
        self.proxy
            .seen()
            .into_iter()
            .filter(|line| {
                let target = line.split(' ').nth(1).unwrap_or("");
                let host = target
                    .trim_start_matches("http://")
                    .split([':', '/'])
                    .next()
                    .unwrap_or("");
                !BROWSER_OWN_HOSTS.contains(&host)
            })
            .collect()
    }

    /// Saves a PNG of the viewport under `target/screenshots/{name}.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session and removes its profile.
    pub async fn close(self) {
        let _ = self.client.close().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A stack's HTTP functions on a real local port; serves until the returned sender is dropped
/// or set to `true`.
pub async fn serve(stack: &Stack) -> (String, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    let functions = stack.functions();
    tokio::spawn(sluice_local::server::serve(listener, functions, stopped));
    (base, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_catches_a_request_to_another_origin() {
    // A deliberately bad page: a style sheet and an image from another origin.
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            axum::response::Html(
                "<!doctype html><title>bad</title>\
                 <link rel=stylesheet href=\"http://sluice-off-origin.test/x.css\">\
                 <img src=\"http://sluice-off-origin.test/y.png\"><p id=here>here</p>",
            )
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let browser = Browser::start().await;
    browser.client.goto(&base).await.unwrap();
    // Loopback went direct (the page is there, the proxy never saw it) …
    let here = browser.client.find(Locator::Id("here")).await.unwrap();
    assert_eq!(here.text().await.unwrap(), "here");
    // … and the load event waited for the sub-resources, which went to the proxy.
    let seen = browser.off_origin_requests();
    browser.close().await;
    assert!(
        seen.iter().any(|l| l.contains("sluice-off-origin.test")),
        "the proxy saw {seen:?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains("127.0.0.1")),
        "loopback went through the proxy: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_renders_in_chromium_from_this_origin_only() {
    let started = std::time::Instant::now();
    let stack = Stack::new().await;
    let (base, _stop) = serve(&stack).await;
    let browser = Browser::start().await;
    browser.client.goto(&format!("{base}/docs")).await.unwrap();

    let c = &browser.client;
    let h1 = c
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(h1, "Sluice API reference");
    let route = c
        .find(Locator::Id("op-get-v1-account"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(route.contains("/v1/account"), "{route}");
    let schema = c
        .find(Locator::Id("schema-credits"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(schema.contains("balance_minor"), "{schema}");
    let problem = c
        .find(Locator::Id("problem-idempotency-key-reused"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(problem.contains("Idempotency key reused"), "{problem}");
    // The style sheet loaded under the page's CSP (the layout is its grid).
    let display = c
        .execute("return getComputedStyle(document.body).display", vec![])
        .await
        .unwrap();
    assert_eq!(display, json!("grid"));
    // What the page itself loaded, as the page saw it: this origin only.
    let loaded = c
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            vec![],
        )
        .await
        .unwrap();
    let loaded: Vec<String> = serde_json::from_value(loaded).unwrap();
    assert!(!loaded.is_empty());
    assert!(
        loaded
            .iter()
            .all(|url| url.starts_with(&format!("{base}/"))),
        "{loaded:?}"
    );
    let shot = browser.screenshot("docs").await;
    let seen = browser.off_origin_requests();
    browser.close().await;
    assert!(seen.is_empty(), "requests to another origin: {seen:?}");
    assert!(shot.exists());
    eprintln!(
        "browser: /docs rendered and checked in {:?} (screenshot {})",
        started.elapsed(),
        shot.display()
    );
}
