//! The command line against a running server: `velo deploy`, `velo jobs`,
//! `velo status`, `velo stop`, `velo start`, `velo drop`, each one call of
//! the REST API, printed as `velo run` prints its jobs.

use std::path::Path;

use serde_json::Value;

/// Where the server is, and how to prove who we are.
#[derive(Debug, Clone)]
pub struct Client {
    /// The server's base URL (`--server`, else `VELO_SERVER`, else
    /// `http://127.0.0.1:8080`).
    pub server: String,
    /// A bearer token (`--token`, else `VELO_TOKEN`).
    pub token: Option<String>,
}

/// A failed command: its exit code (1: refused, 2: the server cannot be
/// reached) and what to tell the user.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    /// Exit code.
    pub code: u8,
    /// Message.
    pub message: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), ClientError> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let mut req = reqwest::Client::new().request(method, &url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| ClientError {
            code: 2,
            message: format!(
                "cannot reach the velo server at {}: {e}; start it with `velo server`, or pass --server (or VELO_SERVER)",
                self.server
            ),
        })?;
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if code >= 400 {
            let message = v["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("the server answered {code}: {v}"));
            return Err(ClientError {
                code: if code >= 500 { 2 } else { 1 },
                message,
            });
        }
        Ok((code, v))
    }

    /// Deploys the SQL file `file`; the jobs created.
    pub async fn deploy(
        &self,
        file: &Path,
        sql: String,
        name: Option<String>,
        profile: Option<String>,
        sets: Vec<(String, String)>,
    ) -> Result<String, ClientError> {
        let base = std::path::absolute(file)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let body = serde_json::json!({
            "sql": sql,
            "name": name,
            "profile": profile,
            "set": sets.into_iter().map(|(k, v)| (k, Value::String(v))).collect::<serde_json::Map<String, Value>>(),
            "base_dir": base,
        });
        let (_, v) = self
            .call(reqwest::Method::POST, "/api/jobs", Some(body))
            .await?;
        let mut out = String::new();
        for j in v["jobs"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "deployed job '{}' ({})\n",
                j["name"].as_str().unwrap_or(""),
                j["status"].as_str().unwrap_or("")
            ));
        }
        for w in v["warnings"].as_array().into_iter().flatten() {
            out.push_str(&format!("  warning: {}\n", w.as_str().unwrap_or("")));
        }
        Ok(out)
    }

    /// The jobs, one line each.
    pub async fn jobs(&self) -> Result<String, ClientError> {
        let (_, list) = self.call(reqwest::Method::GET, "/api/jobs", None).await?;
        let mut rows = vec![[
            "NAME".to_string(),
            "STATUS".into(),
            "SOURCES".into(),
            "SINKS".into(),
            "SINCE".into(),
        ]];
        for j in list.as_array().into_iter().flatten() {
            let names = |k: &str| {
                j[k].as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>().join(","))
                    .unwrap_or_default()
            };
            rows.push([
                text(&j["name"]),
                text(&j["status"]),
                names("sources"),
                names("sinks"),
                text(&j["since"]),
            ]);
        }
        Ok(table(&rows))
    }

    /// One job's status, as `velo run` summarises a job.
    pub async fn status(&self, job: &str) -> Result<String, ClientError> {
        self.on_job(reqwest::Method::GET, job, "status").await
    }

    /// Stops a job (after it commits its epoch).
    pub async fn stop(&self, job: &str) -> Result<String, ClientError> {
        self.on_job(reqwest::Method::POST, job, "stop").await
    }

    /// Starts a job again.
    pub async fn start(&self, job: &str) -> Result<String, ClientError> {
        self.on_job(reqwest::Method::POST, job, "start").await
    }

    /// `method /api/jobs/{job}/{action}`: the job's status document as text.
    async fn on_job(
        &self,
        method: reqwest::Method,
        job: &str,
        action: &str,
    ) -> Result<String, ClientError> {
        let path = format!("/api/jobs/{}/{action}", segment(job));
        let (_, v) = self.call(method, &path, None).await?;
        Ok(status_text(&v))
    }

    /// Drops a job (and with `purge`, its checkpoints).
    pub async fn drop_job(&self, job: &str, purge: bool) -> Result<String, ClientError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/api/jobs/{}?purge_state={purge}", segment(job)),
            None,
        )
        .await?;
        Ok(format!(
            "dropped job '{job}'{}\n",
            if purge { " and its state" } else { "" }
        ))
    }
}

/// A job name as one URL path segment.
fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// A status document as lines: the job's state, then its figures.
fn status_text(v: &Value) -> String {
    let m = &v["metrics"];
    let mut out = format!(
        "Job '{}': {} since {}\n",
        text(&v["name"]),
        text(&v["status"]),
        text(&v["since"])
    );
    if let Some(e) = v["error"].as_str() {
        out.push_str(&format!("  error: {e}\n"));
    }
    let per = |k: &str| {
        m[k].as_object()
            .map(|o| {
                o.iter()
                    .map(|(n, c)| format!("{n}={c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    out.push_str(&format!(
        "  records read: {} ({})\n  records written: {} ({})\n  records failed: {}, late: {}, dead-lettered: {}\n  epochs: {} committed, {} failed; {:.0} records/s\n  watermark: {}, lag: {} ms; state: {} rows, {:.1} MB; restarts: {}\n",
        text(&m["records_processed"]),
        per("sources"),
        text(&m["records_written"]),
        per("sinks"),
        text(&m["records_failed"]),
        text(&m["records_late"]),
        text(&m["records_dead_lettered"]),
        text(&m["batches_processed"]),
        text(&m["batches_failed"]),
        m["records_per_second"].as_f64().unwrap_or(0.0),
        text(&v["watermark"]),
        text(&v["lag_ms"]),
        text(&m["state_rows"]),
        m["memory_usage_mb"].as_f64().unwrap_or(0.0),
        text(&v["restarts"]),
    ));
    out
}

/// Rows as aligned columns.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
