//! `--with-registry-auth`: the credentials the client has for an image's registry, read as the
//! docker CLI reads them: from `$DOCKER_CONFIG/config.json` (`~/.docker/config.json` by
//! default), through the credential helper it names for the registry (`credHelpers`), or its
//! store for all (`credsStore`), or else the `auths` entry that `docker login` wrote.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use essaim_core::model::RegistryCredentials;
use serde_json::Value;

/// The name Docker gives its own registry's credentials.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// The registry an image comes from, as `docker login` names it: the image's first path part
/// when it looks like a host (a `.` or `:` in it, or `localhost`), Docker Hub otherwise.
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => DOCKER_HUB.to_string(),
    }
}

fn config_path() -> PathBuf {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".docker")
        });
    dir.join("config.json")
}

/// A key of `auths` reduced to its host: `https://reg.example.com/v1/` is `reg.example.com`.
fn host_of(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// The client's credentials for `image`'s registry.
///
/// # Errors
/// No credentials for it, an unreadable config, or a credential helper that fails; each
/// naming the file or helper and what to do.
pub fn credentials_for(image: &str) -> Result<RegistryCredentials, String> {
    credentials_in(&config_path(), image)
}

fn credentials_in(path: &std::path::Path, image: &str) -> Result<RegistryCredentials, String> {
    let registry = registry_of(image);
    let no_login = || {
        format!(
            "--with-registry-auth: no credentials for {registry} in {} (log in first: \
             docker login {})",
            path.display(),
            if registry == DOCKER_HUB {
                ""
            } else {
                &registry
            }
        )
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(no_login()),
        Err(e) => return Err(format!("--with-registry-auth: {}: {e}", path.display())),
    };
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| format!("--with-registry-auth: {}: {e}", path.display()))?;
    let helper = config["credHelpers"][registry.as_str()]
        .as_str()
        .or_else(|| config["credsStore"].as_str())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        return from_helper(helper, &registry);
    }
    let wanted = host_of(&registry);
    let entry = config["auths"]
        .as_object()
        .and_then(|auths| {
            auths
                .iter()
                .find(|(key, _)| key.as_str() == registry || host_of(key) == wanted)
        })
        .map(|(_, entry)| entry)
        .ok_or_else(no_login)?;
    let mut credentials = RegistryCredentials {
        server_address: registry.clone(),
        identity_token: entry["identitytoken"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        ..Default::default()
    };
    if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let decoded = STANDARD
            .decode(auth)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                format!(
                    "--with-registry-auth: {}: the auth of {registry} is not base64 of \
                     USER:PASSWORD",
                    path.display()
                )
            })?;
        let (username, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        credentials.username = username.to_string();
        credentials.password = password.to_string();
    }
    if credentials.username.is_empty() && credentials.identity_token.is_empty() {
        return Err(no_login());
    }
    Ok(credentials)
}

/// Asks `docker-credential-HELPER get`, as the docker CLI does.
fn from_helper(helper: &str, registry: &str) -> Result<RegistryCredentials, String> {
    let program = format!("docker-credential-{helper}");
    let failed = |why: String| format!("--with-registry-auth: {program} get {registry}: {why}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout);
        let said = if said.trim().is_empty() {
            String::from_utf8_lossy(&output.stderr).to_string()
        } else {
            said.to_string()
        };
        return Err(failed(said.trim().to_string()));
    }
    let answer: Value =
        serde_json::from_slice(&output.stdout).map_err(|e| failed(e.to_string()))?;
    let username = answer["Username"].as_str().unwrap_or_default();
    let secret = answer["Secret"].as_str().unwrap_or_default().to_string();
    // A helper gives an identity token as the secret of the user `<token>`.
    Ok(if username == "<token>" {
        RegistryCredentials {
            server_address: registry.to_string(),
            identity_token: secret,
            ..Default::default()
        }
    } else {
        RegistryCredentials {
            server_address: registry.to_string(),
            username: username.to_string(),
            password: secret,
            identity_token: String::new(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_s_registry_is_its_first_part_when_that_looks_like_a_host() {
        assert_eq!(registry_of("127.0.0.1:5000/app:1"), "127.0.0.1:5000");
        assert_eq!(
            registry_of("registry.example.com/team/app"),
            "registry.example.com"
        );
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("team/app:1"), DOCKER_HUB);
        assert_eq!(registry_of("nginx"), DOCKER_HUB);
        assert_eq!(host_of("https://reg.example.com/v1/"), "reg.example.com");
    }

    #[test]
    fn credentials_come_from_what_docker_login_wrote() {
        let dir = tempfile::tempdir().expect("dir");
        let config = serde_json::json!({
            "auths": {
                "https://127.0.0.1:5000": { "auth": STANDARD.encode("ci:p4ss:word") },
                "other.example.com": { "identitytoken": "tok" },
            }
        });
        let path = dir.path().join("config.json");
        std::fs::write(&path, config.to_string()).expect("write");
        let found = credentials_in(&path, "127.0.0.1:5000/app:1").expect("found");
        assert_eq!(
            (found.username.as_str(), found.password.as_str()),
            ("ci", "p4ss:word")
        );
        let token = credentials_in(&path, "other.example.com/app").expect("token");
        assert_eq!(token.identity_token, "tok");
        let missing = credentials_in(&path, "nginx").expect_err("no hub login");
        assert!(
            missing.contains("no credentials for https://index.docker.io/v1/"),
            "{missing}"
        );
    }
}
