//! `velo server`'s Arrow Flight SQL endpoint, driven by the real Python
//! clients (ADBC's Flight SQL driver, pyarrow.flight) over TLS with
//! authentication on: tests/server/flight_check.py deploys, queries,
//! subscribes, cancels and manages jobs and checks every answer against
//! its own; the REST API refuses calls without credentials the same way;
//! and the Python example of the README runs against a plain server.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::server::{Server, python, sample, scrape};

const TOKEN: &str = "velo-test-token-5f2b9c7e1d";
const PASSWORD: &str = "alice-password-c0ffee";

/// A self-signed certificate for 127.0.0.1 (openssl), as `(cert, key)`.
fn certificate(dir: &Path) -> (String, String) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let o = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

/// A REST call over HTTPS with curl: the status code and the body.
fn https(port: u16, path: &str, cert: &str, auth: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-w", "\n%{http_code}", "--cacert", cert]);
    if let Some(a) = auth {
        c.args(["-H", &format!("Authorization: {a}")]);
    }
    let o = c
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn flight_sql_clients_deploy_query_subscribe_and_manage_jobs_over_tls_with_auth() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (cert, key) = certificate(dir);
    let config = dir.join("velo.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  auth:\n    tokens: [\"{TOKEN}\"]\n    users:\n      alice: \"${{ALICE_PASSWORD}}\"\n  tls:\n    cert: {cert}\n    key: {key}\n"
        ),
    )
    .unwrap();
    let s = Server::start_with(
        dir,
        &[("ALICE_PASSWORD", PASSWORD)],
        &["--config", config.to_str().unwrap()],
    );

    // the REST API over TLS refuses calls without valid credentials
    let (code, body) = https(s.port, "/api/jobs", &cert, None);
    assert_eq!(code, 401, "{body}\n{}", s.log());
    assert!(body.contains("credentials required"), "{body}");
    let (code, _) = https(
        s.port,
        "/metrics",
        &cert,
        Some("Bearer wrong-token-wrong-token"),
    );
    assert_eq!(code, 401);
    let (code, body) = https(s.port, "/api/jobs", &cert, Some(&format!("Bearer {TOKEN}")));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, "[]");

    let cfg = json!({
        "uri": format!("grpc+tls://127.0.0.1:{}", s.flight),
        "token": TOKEN,
        "user": "alice",
        "password": PASSWORD,
        "dir": dir,
        "tls_cert": cert,
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/server/flight_check.py");
    let o = Command::new(python())
        .arg(script)
        .arg(cfg.to_string())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "flight_check.py failed:\n{out}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        s.log()
    );
    let report: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(report["ok"], true, "{report}");

    // what the Flight clients did is what the REST API shows
    let (code, body) = https(
        s.port,
        "/api/jobs/totals/status",
        &cert,
        Some(&format!("Bearer {TOKEN}")),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "Finished", "{v}");
    assert_eq!(v["metrics"]["records_processed"], 500, "{v}");
    assert_eq!(v["subscribers"], 0, "{v}");

    // no secret in the server's log
    let log = s.log();
    for secret in [TOKEN, PASSWORD] {
        assert!(!log.contains(secret), "the log holds a secret:\n{log}");
    }
}

#[test]
fn the_python_example_runs_against_a_server() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let s = Server::start(dir, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/flight_sql.py");
    let o = Command::new(python())
        .arg(script)
        .env("VELO_FLIGHT", format!("grpc://127.0.0.1:{}", s.flight))
        .current_dir(dir)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "the example failed:\n{out}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        s.log()
    );
    assert!(out.contains("deployed: orders_by_status"), "{out}");
    assert!(out.contains("table: {'status': 'CANCELLED'"), "{out}");
    assert!(out.contains("live rows: 20"), "{out}");
    assert!(out.contains("dropped: orders_by_status"), "{out}");
    let (code, jobs) = s.call("GET", "/api/jobs", None);
    assert_eq!((code, jobs), (200, json!([])));
    assert_eq!(
        sample(&scrape(s.port), "velo_job_subscribers", &[]),
        None,
        "the dropped job's series are gone"
    );
}
