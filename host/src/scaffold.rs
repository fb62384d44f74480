//! `weft plugin new <kind> <name>`: writes a plugin crate from the templates in
//! `host/templates/plugin/`, ready to build for `wasm32-wasip2`, with sample calls in
//! `fixtures/` that `weft plugin run` runs against it before anything is uploaded.

use std::path::{Path, PathBuf};

use crate::kind::PluginKind;

const CARGO: &str = include_str!("../templates/plugin/Cargo.toml.tmpl");
const README: &str = include_str!("../templates/plugin/README.md.tmpl");
const CARGO_CONFIG: &str = include_str!("../templates/plugin/cargo-config.toml.tmpl");
const JOURNEY: &str = include_str!("../templates/plugin/lib.rs.journey-rule.tmpl");
const PERSONALIZE: &str = include_str!("../templates/plugin/lib.rs.personalization.tmpl");
const ADAPTER: &str = include_str!("../templates/plugin/lib.rs.channel-adapter.tmpl");
const FLOW: &str = include_str!("../templates/plugin/lib.rs.chatbot-flow.tmpl");

/// The sample calls written to `fixtures/` for `kind`: file name and template. Each one
/// exercises a branch of the kind's `lib.rs` template and succeeds against it as written.
pub fn fixtures(kind: PluginKind) -> &'static [(&'static str, &'static str)] {
    macro_rules! fixture {
        ($file:literal) => {
            include_str!(concat!("../templates/plugin/fixtures/", $file))
        };
    }
    match kind {
        PluginKind::JourneyRule => &[
            ("entered.json", fixture!("journey-rule.entered.json")),
            ("follow-up.json", fixture!("journey-rule.follow-up.json")),
        ],
        PluginKind::Personalization => &[("decide.json", fixture!("personalization.decide.json"))],
        PluginKind::ChannelAdapter => &[
            (
                "capabilities.json",
                fixture!("channel-adapter.capabilities.json"),
            ),
            ("send.json", fixture!("channel-adapter.send.json")),
            (
                "send-rate-limited.json",
                fixture!("channel-adapter.send-rate-limited.json"),
            ),
            ("webhook.json", fixture!("channel-adapter.webhook.json")),
        ],
        PluginKind::ChatbotFlow => &[
            ("start.json", fixture!("chatbot-flow.start.json")),
            ("agent.json", fixture!("chatbot-flow.agent.json")),
        ],
    }
}

/// The release build of plugin `name`, relative to its directory.
fn release_wasm(name: &str) -> String {
    format!(
        "target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    )
}

/// The `weft plugin run` command for each of `kind`'s fixtures, from the plugin's
/// directory, on its release build (each fixture's call names its kind).
pub fn run_commands(kind: PluginKind, name: &str) -> Vec<String> {
    let wasm = release_wasm(name);
    fixtures(kind)
        .iter()
        .map(|(file, _)| format!("weft plugin run --input fixtures/{file} {wasm}"))
        .collect()
}

/// The `weft plugin run` command for all of the plugin's fixtures at once.
pub fn run_all_command(name: &str) -> String {
    format!("weft plugin run --input fixtures/ {}", release_wasm(name))
}

/// The `weft plugin upload` command that installs and activates the release build as
/// version 0.1.0, with the tenant's secret key from `WEFT_KEY`.
fn upload_command(kind: PluginKind, name: &str) -> String {
    format!(
        "WEFT_KEY=<tenant secret key> weft plugin upload {} --name {name} --version 0.1.0 --kind {kind} --activate --url http://127.0.0.1:8080",
        release_wasm(name)
    )
}

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

/// What the templates' placeholders stand for.
struct Vars<'a> {
    name: &'a str,
    crate_name: &'a str,
    sdk: &'a str,
    run: &'a str,
    run_all: &'a str,
    upload: &'a str,
}

fn render(t: &str, v: &Vars<'_>) -> String {
    t.replace("{{name}}", v.name)
        .replace("{{crate_name}}", v.crate_name)
        .replace("{{sdk_path}}", v.sdk)
        .replace("{{run}}", v.run)
        .replace("{{run_all}}", v.run_all)
        .replace("{{upload}}", v.upload)
}

/// Creates `<dir>/<name>/` with `Cargo.toml`, `README.md`, `.cargo/config.toml` (link
/// settings), `src/lib.rs` for `kind`, and its [`fixtures`].
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
    std::fs::create_dir_all(root.join("fixtures")).map_err(io(&root))?;
    let run = run_commands(kind, name).join("\n");
    let run_all = run_all_command(name);
    let upload = upload_command(kind, name);
    let vars = Vars {
        name,
        crate_name: &crate_name,
        sdk: &sdk,
        run: &run,
        run_all: &run_all,
        upload: &upload,
    };
    let files = [
        ("Cargo.toml", CARGO),
        ("README.md", README),
        (".cargo/config.toml", CARGO_CONFIG),
        ("src/lib.rs", lib),
    ];
    let samples = fixtures(kind)
        .iter()
        .map(|(file, t)| (format!("fixtures/{file}"), *t));
    for (rel, t) in files
        .map(|(rel, t)| (rel.to_string(), t))
        .into_iter()
        .chain(samples)
    {
        let p = root.join(rel);
        std::fs::write(&p, render(t, &vars)).map_err(io(&p))?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kinds_fixtures_are_calls_of_that_kind() {
        for kind in PluginKind::ALL {
            assert!(!fixtures(kind).is_empty(), "{kind} has no sample call");
            for (file, t) in fixtures(kind) {
                let vars = Vars {
                    name: "my-plugin",
                    crate_name: "my_plugin",
                    sdk: "/sdk",
                    run: "",
                    run_all: "",
                    upload: "",
                };
                let text = render(t, &vars);
                let f = crate::runner::parse_fixture(text.as_bytes())
                    .unwrap_or_else(|e| panic!("{kind} fixture {file}: {e}"));
                assert_eq!(f.call.kind(), kind, "{file}");
            }
        }
    }

    #[test]
    fn the_readme_runs_each_fixture_and_uploads_the_build() {
        let dir = tempfile::tempdir().unwrap();
        let root = new_plugin(PluginKind::JourneyRule, "my-rule", dir.path(), dir.path()).unwrap();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        for (file, _) in fixtures(PluginKind::JourneyRule) {
            assert!(root.join("fixtures").join(file).is_file(), "{file} written");
            assert!(
                readme.contains(&format!(
                    "weft plugin run --input fixtures/{file} \
                     target/wasm32-wasip2/release/my_rule.wasm"
                )),
                "README runs {file}:\n{readme}"
            );
        }
        assert!(
            readme.contains(
                "weft plugin run --input fixtures/ \
                 target/wasm32-wasip2/release/my_rule.wasm"
            ),
            "README runs them all:\n{readme}"
        );
        assert!(
            readme.contains("weft plugin upload target/wasm32-wasip2/release/my_rule.wasm --name my-rule --version 0.1.0 --kind journey-rule --activate"),
            "README uploads the build:\n{readme}"
        );
        assert!(!readme.contains("{{"), "every placeholder rendered");
    }
}
