//! A Confluent schema registry client: the REST calls Velostream needs
//! (schema by id, latest of a subject, register), with schemas cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use velo_connectors::Result;

/// A registry at one URL.
#[derive(Debug)]
pub struct SchemaRegistry {
    url: String,
    agent: ureq::Agent,
    by_id: Mutex<HashMap<u32, String>>,
}

/// The registry's answer for a schema.
#[derive(serde::Deserialize)]
struct SchemaReply {
    schema: String,
    #[serde(default)]
    id: Option<u32>,
}

#[derive(serde::Deserialize)]
struct IdReply {
    id: u32,
}

impl SchemaRegistry {
    /// A client for `url` (`http://host:8081`).
    pub fn new(url: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Self {
            url: url.trim_end_matches('/').to_string(),
            agent,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, path: &str) -> Result<Option<String>> {
        let url = format!("{}{path}", self.url);
        let mut resp = self
            .agent
            .get(&url)
            .header("Accept", "application/vnd.schemaregistry.v1+json")
            .call()
            .map_err(|e| {
                crate::error::registry(format!(
                    "schema registry {}: {e}",
                    velo_config::display_value("url", &self.url)
                ))
            })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| crate::error::registry(format!("{e}")))?;
        match status {
            200 => Ok(Some(body)),
            404 => Ok(None),
            s => Err(crate::error::registry(format!(
                "schema registry answered {s} for {path}: {body}"
            ))),
        }
    }

    /// The writer schema with `id` (cached).
    pub fn schema_by_id(&self, id: u32) -> Result<Option<String>> {
        if let Some(s) = self.by_id.lock().expect("registry cache").get(&id) {
            return Ok(Some(s.clone()));
        }
        let Some(body) = self.get(&format!("/schemas/ids/{id}"))? else {
            return Ok(None);
        };
        let reply: SchemaReply = serde_json::from_str(&body)
            .map_err(|e| crate::error::registry(format!("bad reply: {e}")))?;
        self.by_id
            .lock()
            .expect("registry cache")
            .insert(id, reply.schema.clone());
        Ok(Some(reply.schema))
    }

    /// The latest schema of `subject` and its id.
    pub fn latest(&self, subject: &str) -> Result<Option<(u32, String)>> {
        let Some(body) = self.get(&format!("/subjects/{subject}/versions/latest"))? else {
            return Ok(None);
        };
        let reply: SchemaReply = serde_json::from_str(&body)
            .map_err(|e| crate::error::registry(format!("bad reply: {e}")))?;
        let id = reply
            .id
            .ok_or_else(|| crate::error::registry("reply without an id"))?;
        self.by_id
            .lock()
            .expect("registry cache")
            .insert(id, reply.schema.clone());
        Ok(Some((id, reply.schema)))
    }

    /// Registers `schema` under `subject` (or finds it there); returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let url = format!("{}/subjects/{subject}/versions", self.url);
        let body = serde_json::json!({ "schema": schema }).to_string();
        let mut resp = self
            .agent
            .post(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send(body.as_bytes())
            .map_err(|e| crate::error::registry(format!("{e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| crate::error::registry(format!("{e}")))?;
        if status != 200 {
            return Err(crate::error::registry(format!(
                "schema registry refused the schema for subject '{subject}' ({status}): {text}"
            )));
        }
        let reply: IdReply = serde_json::from_str(&text)
            .map_err(|e| crate::error::registry(format!("bad reply: {e}")))?;
        Ok(reply.id)
    }
}
