//! Issue #19, the respond stage under attack: a local user replays an
//! older, validly signed policy bundle (a downgrade), or waits for a
//! restart to get a bundle the agent rolled back taken again. Root.

use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_integration::policy_fixture::{
    python_copy, write_gguf, write_signed_bundle, HOLD_MODEL_OPEN as HOLD,
};
use vigil_integration::{free_port, privileged, wait_for, Agent, ControlPlane};
use vigil_policy::SigningKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_bundle_is_refused_and_stays_refused_after_a_restart() {
    if !privileged("an_older_bundle_is_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let write = |version: u64, action: &str| {
        let path = tmp.path().join(format!("v{version}.json"));
        let rules = format!(
            "id: test.downgrade\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: process.name == \"downgrade-me\"\naction: {action}\n"
        );
        write_signed_bundle(&path, &key, version, &rules);
        path
    };
    // v1 only alerts; v2 kills.
    let v1 = write(1, "alert");
    let v2 = write(2, "kill");
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let data = tmp.path().join("agent");
    let start = |bundle: std::path::PathBuf| {
        let cp = cp.endpoint();
        let data = data.clone();
        let key = key.public_hex();
        async move {
            Agent::start_with(
                &data,
                &cp,
                "downgrade-host",
                &[
                    "--trusted-policy-key",
                    &key,
                    "--policy-bundle",
                    bundle.to_str().unwrap(),
                ],
            )
            .await
        }
    };
    let dir = tmp.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("m.gguf");
    write_gguf(&model);
    let victim = python_copy(&dir, "downgrade-me");
    let killed = || {
        use std::os::unix::process::ExitStatusExt;
        let mut child = Command::new(&victim)
            .args(["-c", HOLD])
            .arg(&model)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Killed within a few seconds, or alive (then stopped here).
        for _ in 0..100 {
            if let Some(status) = child.try_wait().unwrap() {
                return status.signal() == Some(9);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    };

    let agent = start(v2.clone()).await;
    assert!(
        agent.log_text().contains("policy bundle active"),
        "{}",
        agent.log_text()
    );
    assert!(killed(), "v2 kills");
    drop(agent);

    // Restarted with the older bundle: refused, v2 (restored from the
    // agent's database) still kills.
    let agent = start(v1.clone()).await;
    let log = agent.log_text();
    assert!(
        log.contains("policy bundle version 1 refused: it is older than version 2"),
        "{log}"
    );
    assert!(killed(), "v2 still kills after the refused downgrade");
    drop(agent);

    // Once more: the refusal is not a one-off of the process that saw v2.
    let agent = start(v1).await;
    assert!(
        agent.log_text().contains("older than version 2"),
        "{}",
        agent.log_text()
    );
    assert!(killed(), "v2 still kills after a second restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_rolled_back_automatically_stays_refused_after_a_restart() {
    if !privileged("a_version_rolled_back_automatically_stays_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let cp = ControlPlane::start_with(
        &tmp.path().join("cp"),
        free_port(),
        &["--trusted-policy-key", &key.public_hex()],
    );
    cp.wait_leader().await;
    let data = tmp.path().join("agent");
    let public = key.public_hex();
    let flags = [
        "--trusted-policy-key",
        public.as_str(),
        "--policy-auto-rollback-per-minute",
        "5",
    ];
    let agent = Agent::start_with(&data, &cp.endpoint(), "rollback-host", &flags).await;
    let push = |version: u64, rules: &str| {
        let path = tmp.path().join(format!("v{version}.json"));
        write_signed_bundle(&path, &key, version, rules);
        let out = cp.vigilctl(&["policy", "push", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let on = |want: &'static str| {
        let cp = &cp;
        async move {
            wait_for(want, Duration::from_secs(20), || async {
                let out = cp.vigilctl(&["agents", "show", "rollback-host"]);
                let show = String::from_utf8_lossy(&out.stdout).into_owned();
                show.contains(want).then_some(show)
            })
            .await
        }
    };
    push(
        1,
        "id: quiet\ndescription: d\nseverity: high\nwhen: [ai_serving]\n",
    );
    on("policy: version 1\n").await;
    push(
        2,
        "id: loud\ndescription: d\nseverity: low\nwhen: [model_file]\n",
    );
    on("policy: version 2\n").await;
    let models = tmp.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    for i in 0..8 {
        let m = models.join(format!("m{i}.gguf"));
        write_gguf(&m);
        let status = Command::new("/bin/cat")
            .arg(&m)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    on("the last bundle was REFUSED: version 2 was rolled back automatically").await;
    drop(agent);

    // After a restart the control plane offers version 2 again (still its
    // active one): the agent remembers and keeps version 1.
    let agent = Agent::start_with(&data, &cp.endpoint(), "rollback-host", &flags).await;
    let show = on("it was rolled back automatically on this host").await;
    assert!(show.contains("policy: version 1;"), "{show}");
    assert!(
        agent.log_text().contains("policy bundle version 2 refused"),
        "{}",
        agent.log_text()
    );
}
