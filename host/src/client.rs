//! A small HTTP client for the CLI commands that talk to a running server.

use std::path::Path;

use crate::kind::PluginKind;

async fn show(resp: reqwest::Response) -> anyhow::Result<()> {
    let status = resp.status();
    let body = resp.text().await?;
    let pretty = serde_json::from_str::<serde_json::Value>(&body)
        .map(|v| serde_json::to_string_pretty(&v).unwrap_or(body.clone()))
        .unwrap_or(body);
    if status.is_success() {
        println!("{pretty}");
        Ok(())
    } else {
        anyhow::bail!("server answered {status}: {pretty}")
    }
}

/// `POST /v1/tenants` with the admin token.
pub async fn create_tenant(url: &str, admin: &str, name: &str) -> anyhow::Result<()> {
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/tenants"))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await?;
    show(resp).await
}

/// `PUT /v1/plugins/{name}/versions/{version}?kind=`.
pub async fn upload(
    url: &str,
    key: &str,
    file: &Path,
    name: &str,
    version: &str,
    kind: PluginKind,
    activate: bool,
) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
    let resp = reqwest::Client::new()
        .put(format!(
            "{url}/v1/plugins/{name}/versions/{version}?kind={kind}&activate={activate}"
        ))
        .bearer_auth(key)
        .body(bytes)
        .send()
        .await?;
    show(resp).await
}

/// A bodiless authenticated `POST`.
pub async fn post(url: &str, key: &str, path: &str) -> anyhow::Result<()> {
    let resp = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(key)
        .send()
        .await?;
    show(resp).await
}
