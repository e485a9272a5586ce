//! The SOC dashboard in a real browser (Debian's chromium, driven through
//! chromedriver by WebDriver) on a real control plane with a real agent
//! (eBPF, so root): an analyst logs in, a finding caused by a real process
//! on this host appears live without reload, is acked and shows acked
//! after a reload; a viewer sees no ack button and the API answers 403; a
//! wrong password, an expired session and a forged CSRF token are refused.
//! XSS: the process's executable is named `<img src=x onerror=alert(1)>`
//! and a comment carries a script tag: both show as text, no dialog opens.
//! Screenshots of the overview, the host page and the findings go to a
//! temporary directory, and to docs/ with VIGIL_UPDATE_SCREENSHOTS=1.
//! chromedriver and every chromium process it started are killed when the
//! test ends, failed or not (their process group, and any process naming
//! the test's own --user-data-dir).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use vigil_integration::dashboard::DashboardPlane;
use vigil_integration::{compile_c, free_port, privileged, Agent};

const EVIL_EXE: &str = "<img src=x onerror=alert(1)>";
const EVIL_COMMENT: &str = "<script>alert(1)</script>";
const ANALYST_PW: &str = "analyst-password-1";
const VIEWER_PW: &str = "viewer-password-1";
/// Idle seconds before a session expires, in this test: longer than any
/// quiet stretch of the analyst's (waiting for the finding), short enough
/// to wait out at the end.
const IDLE_SECS: u64 = 20;

fn chromium_ready() -> Option<String> {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(bin).exists() {
            return Some(format!(
                "{bin} is missing (scripts/install-deps.sh installs it)"
            ));
        }
    }
    None
}

/// chromedriver and the chromium it starts: on drop (the test's end, or a
/// panic) every one of their processes is killed.
struct Browser {
    driver: Child,
    user_data: PathBuf,
}

/// Pids of live processes in process group `group` or naming `profile`
/// on their command line (zombies left out).
fn browser_processes(group: i32, profile: &str) -> Vec<i32> {
    {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| {
                let in_group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
                    .is_ok_and(|g| g.as_raw() == group);
                let names_profile = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(profile));
                let zombie =
                    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
                        st.rsplit_once(") ")
                            .is_some_and(|(_, rest)| rest.starts_with('Z'))
                    });
                (in_group || names_profile) && !zombie
            })
            .collect()
    }
}

impl Browser {
    fn processes(&self) -> Vec<i32> {
        browser_processes(
            self.driver.id() as i32,
            &self.user_data.display().to_string(),
        )
    }

    /// Kills everything (as on drop) and waits up to 10 s for it to be
    /// gone: the pids still there.
    async fn close(self) -> Vec<i32> {
        let group = self.driver.id() as i32;
        let profile = self.user_data.display().to_string();
        drop(self);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = browser_processes(group, &profile);
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::Pid;
        let _ = killpg(Pid::from_raw(self.driver.id() as i32), Signal::SIGKILL);
        for pid in self.processes() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn browser(user_data: &Path) -> (Browser, Client) {
    let port = free_port();
    std::fs::create_dir_all(user_data).unwrap();
    let driver = Browser {
        driver: Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            // Its own process group, which chromium joins: killed as one.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver"),
        user_data: user_data.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
                format!("--user-data-dir={}", user_data.display()),
            ],
        }),
    );
    let client = tokio::time::timeout(
        Duration::from_secs(30),
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}")),
    )
    .await
    .expect("chromium did not start in 30 s")
    .expect("a chromium session");
    (driver, client)
}

/// Waits up to `secs` for `f` to give Some.
async fn until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ready(c: &Client, what: &str) {
    until(what, 10, || async {
        let v = c
            .execute(
                "return document.body && document.body.dataset.ready === '1';",
                vec![],
            )
            .await
            .ok()?;
        (v == serde_json::json!(true)).then_some(())
    })
    .await
}

/// Waits for the findings page's live feed to be open.
async fn live(c: &Client) {
    until("the live feed", 10, || async {
        let t = c
            .find(Locator::Id("live-state"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (t == "live").then_some(())
    })
    .await
}

async fn login(c: &Client, base: &str, name: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    let name_box = c.wait().for_element(Locator::Id("name")).await.unwrap();
    name_box.send_keys(name).await.unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn path_of(c: &Client) -> String {
    c.current_url()
        .await
        .map(|u| u.path().to_string())
        .unwrap_or_default()
}

/// No dialog is open (an XSS payload's alert() would open one).
async fn no_dialog(c: &Client, when: &str) {
    assert!(
        c.get_alert_text().await.is_err(),
        "a dialog opened {when}: XSS"
    );
}

/// A POST of `body` from the page's own context (its cookie, its origin)
/// with the CSRF token given, or the session's own when None: the status.
async fn page_post(c: &Client, path: &str, token: Option<&str>, body: serde_json::Value) -> u64 {
    let script = r#"
        const [path, token, body, done] = arguments;
        const s = await (await fetch('/api/session')).json();
        const r = await fetch(path, { method: 'POST', headers: {
            'Content-Type': 'application/json',
            'X-CSRF-Token': token === null ? s.csrf : token },
            body: JSON.stringify(body) });
        done(r.status);"#;
    let script = format!("(async () => {{ {script} }})(...arguments);");
    let token = token.map_or(serde_json::Value::Null, |t| serde_json::json!(t));
    let v = c
        .execute_async(&script, vec![serde_json::json!(path), token, body])
        .await
        .unwrap();
    v.as_u64().unwrap_or(0)
}

/// The texts of the elements `css` finds (those still there).
async fn texts(c: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in c.find_all(Locator::Css(css)).await.unwrap_or_default() {
        if let Ok(t) = e.text().await {
            out.push(t);
        }
    }
    out
}

/// A shared library with ONNX Runtime's entry point, and a copy of python3
/// named `EVIL_EXE` that loads it: the agent reports an AI runtime whose
/// process's executable is that name. Returns its pid.
fn run_evil_runtime(dir: &Path) -> u32 {
    let lib = compile_c(
        dir,
        "libkernels.so",
        "struct OrtApiBase { void *a, *b; };\nstatic struct OrtApiBase base;\nconst struct OrtApiBase *OrtGetApiBase(void) { return &base; }\n",
        &["-shared", "-fPIC"],
    );
    let python = String::from_utf8(
        Command::new("python3")
            .args([
                "-c",
                "import os, sys; print(os.path.realpath(sys.executable))",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let evil: PathBuf = dir.join(EVIL_EXE);
    std::fs::copy(python.trim(), &evil).unwrap();
    let mut child = Command::new(&evil)
        .args([
            "-c",
            "import ctypes, sys, time; ctypes.CDLL(sys.argv[1]); time.sleep(1)",
        ])
        .arg(&lib)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success(), "the renamed python3 ran");
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_sees_a_real_finding_live_and_acks_it_and_nothing_injects_script() {
    if !privileged("an_analyst_sees_a_real_finding_live_and_acks_it_and_nothing_injects_script") {
        return;
    }
    if let Some(why) = chromium_ready() {
        if std::env::var("VIGIL_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("dashboard browser test: {why}");
        }
        eprintln!("SKIP dashboard browser test: {why}");
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let idle = IDLE_SECS.to_string();
    let d = DashboardPlane::start(
        &tmp.path().join("cp"),
        &["--allow-unsigned", "--dashboard-idle-secs", &idle],
    )
    .await;
    d.add_user("ana", "analyst", ANALYST_PW).await;
    d.add_user("vic", "viewer", VIEWER_PW).await;
    let _agent = Agent::start(&tmp.path().join("agent"), &d.cp.endpoint(), "dash-host").await;
    let (chrome, c) = browser(&tmp.path().join("chrome")).await;
    let base = d.url("");

    // A wrong password is refused and stays on the login page.
    login(&c, &base, "ana", "not-the-password").await;
    let err = until("the login error", 10, || async {
        let t = c
            .find(Locator::Id("login-error"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert!(err.contains("wrong name or password"), "{err}");
    assert_eq!(path_of(&c).await, "/login");

    // The analyst logs in and opens the live findings.
    login(&c, &base, "ana", ANALYST_PW).await;
    until("the overview", 10, || async {
        (path_of(&c).await == "/").then_some(())
    })
    .await;
    ready(&c, "the overview").await;
    c.goto(&format!("{base}/findings")).await.unwrap();
    ready(&c, "the findings page").await;
    live(&c).await;

    // A real process on this host: the finding appears without reload.
    let shown_from = Instant::now();
    let pid = run_evil_runtime(&work);
    let row = until("the finding in the live feed", 20, || async {
        for row in c.find_all(Locator::Css("#findings tbody tr")).await.ok()? {
            let exe = row
                .find(Locator::Css(".exe"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            if exe.ends_with(EVIL_EXE) {
                return Some(row);
            }
        }
        None
    })
    .await;
    eprintln!(
        "finding of pid {pid} shown {:?} after the process ran",
        shown_from.elapsed()
    );
    let index = row.attr("data-index").await.unwrap().unwrap();
    assert!(
        c.find_all(Locator::Css("#findings img"))
            .await
            .unwrap()
            .is_empty(),
        "the executable's name became an element"
    );
    no_dialog(&c, "showing the finding").await;

    // Ack it; after a reload it shows acknowledged.
    row.find(Locator::Css("button.ack"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let status = |c: Client, index: String| async move {
        let sel = format!("#findings tbody tr[data-index='{index}'] .status");
        c.find(Locator::Css(&sel)).await.ok()?.text().await.ok()
    };
    until("acknowledged", 10, || {
        let (c, i) = (c.clone(), index.clone());
        async move { (status(c, i).await? == "acknowledged").then_some(()) }
    })
    .await;
    let acked_in = shown_from.elapsed();
    c.refresh().await.unwrap();
    ready(&c, "the findings page again").await;
    until("acknowledged after reload", 10, || {
        let (c, i) = (c.clone(), index.clone());
        async move { (status(c, i).await? == "acknowledged").then_some(()) }
    })
    .await;

    // The finding's page shows the ack in its history, by the analyst.
    c.goto(&format!("{base}/finding?i={index}")).await.unwrap();
    ready(&c, "the finding page").await;
    let history = texts(&c, "#history li").await;
    assert!(
        history.iter().any(|h| h.ends_with(" ana ack")),
        "the ack is not in the history: {history:?}"
    );
    assert!(
        !c.find(Locator::Id("ack"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap(),
        "an acknowledged finding still offers ack"
    );

    // A comment with a script tag shows as text in the history.
    let form = c
        .find(Locator::Css("#comment-form textarea"))
        .await
        .unwrap();
    form.send_keys(EVIL_COMMENT).await.unwrap();
    c.find(Locator::Css("#comment-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let comment = until("the comment in the history", 10, || async {
        for li in c.find_all(Locator::Css("#history .comment")).await.ok()? {
            let t = li.text().await.ok()?;
            if t == EVIL_COMMENT {
                return Some(t);
            }
        }
        None
    })
    .await;
    assert_eq!(comment, EVIL_COMMENT);
    assert!(c
        .find_all(Locator::Css("#history script, #details img"))
        .await
        .unwrap()
        .is_empty());
    no_dialog(&c, "showing the comment").await;

    // A forged CSRF token sent from the page is refused (the cookie and
    // the origin alone are not enough); the session's own token works.
    let triage = format!("/api/findings/{index}/triage");
    let note = serde_json::json!({ "action": "comment", "text": "from the page" });
    for forged in ["forged", &"0".repeat(64)] {
        assert_eq!(
            page_post(&c, &triage, Some(forged), note.clone()).await,
            403
        );
    }
    assert_eq!(page_post(&c, &triage, None, note).await, 200);

    // Screenshots: the overview and the host page.
    let shots = tmp.path().join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    c.goto(&format!("{base}/")).await.unwrap();
    ready(&c, "the overview").await;
    std::fs::write(
        shots.join("dashboard-overview.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    c.goto(&format!("{base}/host?id=dash-host")).await.unwrap();
    ready(&c, "the host page").await;
    let exes = texts(&c, "#host-findings .exe").await;
    assert!(
        exes.iter().any(|e| e.ends_with(EVIL_EXE)),
        "the host page lists the finding's executable as text: {exes:?}"
    );
    assert!(c
        .find_all(Locator::Css("#main img"))
        .await
        .unwrap()
        .is_empty());
    no_dialog(&c, "on the host page").await;
    std::fs::write(
        shots.join("dashboard-host.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    c.goto(&format!("{base}/findings")).await.unwrap();
    ready(&c, "the findings page").await;
    std::fs::write(
        shots.join("dashboard-findings.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    if std::env::var("VIGIL_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        std::fs::create_dir_all(&docs).unwrap();
        for name in [
            "dashboard-overview.png",
            "dashboard-host.png",
            "dashboard-findings.png",
        ] {
            std::fs::copy(shots.join(name), docs.join(name)).unwrap();
        }
    }
    no_dialog(&c, "on any page").await;

    // Log out; the viewer sees no ack button, and the API refuses its ack.
    c.find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until("the login page", 10, || async {
        (path_of(&c).await == "/login").then_some(())
    })
    .await;
    login(&c, &base, "vic", VIEWER_PW).await;
    until("the overview", 10, || async {
        (path_of(&c).await == "/").then_some(())
    })
    .await;
    c.goto(&format!("{base}/findings")).await.unwrap();
    ready(&c, "the viewer's findings").await;
    live(&c).await;
    assert!(
        !c.find_all(Locator::Css("#findings tbody tr"))
            .await
            .unwrap()
            .is_empty(),
        "the viewer sees findings"
    );
    assert!(
        c.find_all(Locator::Css("button.ack"))
            .await
            .unwrap()
            .is_empty(),
        "a viewer is shown an ack button"
    );
    let ack = serde_json::json!({ "action": "ack" });
    assert_eq!(
        page_post(&c, &triage, None, ack).await,
        403,
        "a viewer's ack"
    );

    // An expired session: the open page's live feed ends and the page goes
    // back to the login page by itself (no request keeps the session).
    let expiry_from = Instant::now();
    until("the login page after expiry", IDLE_SECS + 20, || async {
        (path_of(&c).await == "/login").then_some(())
    })
    .await;
    let expired_in = expiry_from.elapsed();
    assert!(
        expired_in >= Duration::from_secs(IDLE_SECS.saturating_sub(2)),
        "the session ended after {expired_in:?}, before its {IDLE_SECS} s"
    );
    c.goto(&format!("{base}/findings")).await.unwrap();
    until("the login page for an expired session", 10, || async {
        (path_of(&c).await == "/login").then_some(())
    })
    .await;
    no_dialog(&c, "at the end").await;
    c.close().await.unwrap();
    let left = chrome.close().await;
    assert!(left.is_empty(), "browser processes left: {left:?}");
    eprintln!(
        "dashboard browser test took {:?} (finding shown and acked {acked_in:?} after the process ran, session expired {expired_in:?} after the last request)",
        started.elapsed()
    );
}
