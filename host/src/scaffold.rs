//! `weft plugin new <kind> <name>`: writes a plugin crate from the templates in
//! `host/templates/plugin/`, ready to build for `wasm32-wasip2`.

use std::path::{Path, PathBuf};

use crate::kind::PluginKind;

const CARGO: &str = include_str!("../templates/plugin/Cargo.toml.tmpl");
const README: &str = include_str!("../templates/plugin/README.md.tmpl");
const CARGO_CONFIG: &str = include_str!("../templates/plugin/cargo-config.toml.tmpl");
const JOURNEY: &str = include_str!("../templates/plugin/lib.rs.journey-rule.tmpl");
const PERSONALIZE: &str = include_str!("../templates/plugin/lib.rs.personalization.tmpl");
const ADAPTER: &str = include_str!("../templates/plugin/lib.rs.channel-adapter.tmpl");
const FLOW: &str = include_str!("../templates/plugin/lib.rs.chatbot-flow.tmpl");

/// Why scaffolding failed.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// Bad crate name.
    #[error(
        "invalid plugin name `{0}`: use lower-case letters, digits and `-`, starting with a letter"
    )]
    InvalidName(String),
    /// The directory exists.
    #[error("{0} already exists; choose another name or directory")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn render(t: &str, name: &str, crate_name: &str, sdk: &str) -> String {
    t.replace("{{name}}", name)
        .replace("{{crate_name}}", crate_name)
        .replace("{{sdk_path}}", sdk)
}

/// Creates `<dir>/<name>/` with `Cargo.toml`, `README.md`, `.cargo/config.toml` (link
/// settings) and `src/lib.rs` for `kind`.
pub fn new_plugin(
    kind: PluginKind,
    name: &str,
    dir: &Path,
    sdk: &Path,
) -> Result<PathBuf, ScaffoldError> {
    let ok = name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !ok {
        return Err(ScaffoldError::InvalidName(name.into()));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let sdk = std::fs::canonicalize(sdk).unwrap_or_else(|_| sdk.to_path_buf());
    let sdk = sdk.to_string_lossy().replace('\\', "/");
    let crate_name = name.replace('-', "_");
    let lib = match kind {
        PluginKind::JourneyRule => JOURNEY,
        PluginKind::Personalization => PERSONALIZE,
        PluginKind::ChannelAdapter => ADAPTER,
        PluginKind::ChatbotFlow => FLOW,
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Io { path, source }
    };
    std::fs::create_dir_all(root.join("src")).map_err(io(&root))?;
    std::fs::create_dir_all(root.join(".cargo")).map_err(io(&root))?;
    for (rel, t) in [
        ("Cargo.toml", CARGO),
        ("README.md", README),
        (".cargo/config.toml", CARGO_CONFIG),
        ("src/lib.rs", lib),
    ] {
        let p = root.join(rel);
        std::fs::write(&p, render(t, name, &crate_name, &sdk)).map_err(io(&p))?;
    }
    Ok(root)
}
