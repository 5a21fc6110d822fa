//! The webhook signing secrets: given by the operator, or generated once
//! and kept in the data directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use queue_proto::webhooks::Secret;

/// The file, in the data directory, that keeps a generated secret.
pub const SECRET_FILE: &str = "webhook-secret";

/// Where the secrets came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The flag or the environment.
    Configured,
    /// This file, written by an earlier start.
    Stored(PathBuf),
    /// This file, written now.
    Generated(PathBuf),
    /// The database every server on it shares, stored by an earlier start
    /// (of this server or another).
    Database,
    /// The database every server on it shares, generated and stored now.
    GeneratedInDatabase,
}

/// On a store that several servers share (PostgreSQL), when no secret is
/// given: the secret stored in it, or a new one stored there now, so that
/// every server signs with the same key. `None` when secrets are given or
/// the store is the embedded one (then [`resolve`] decides).
///
/// # Errors
/// A malformed stored secret, or a storage failure.
pub async fn resolve_shared(
    given: &[String],
    queue: &queue_core::Queue,
) -> Result<Option<(Vec<Secret>, Source)>, String> {
    if given
        .iter()
        .any(|s| s.split(',').any(|s| !s.trim().is_empty()))
    {
        return Ok(None);
    }
    let candidate = generate()?;
    let stored = queue
        .shared_secret("webhook-secret", &candidate.expose())
        .await
        .map_err(|e| format!("reading the shared webhook secret: {e}"))?;
    let Some(text) = stored else {
        return Ok(None);
    };
    let secret = text
        .trim()
        .parse::<Secret>()
        .map_err(|e| format!("the webhook secret stored in the database: {e}"))?;
    let source = if text == candidate.expose().as_str() {
        Source::GeneratedInDatabase
    } else {
        Source::Database
    };
    Ok(Some((vec![secret], source)))
}

/// The secrets to sign with: `given` (from `--webhook-secret` or
/// `QUEUE_WEBHOOK_SECRET`) if any, else the one stored in `data_dir`,
/// else a new one, generated and stored there (readable by the owner
/// only). Never logs a secret.
///
/// # Errors
/// A malformed secret (given or stored), or a file that cannot be read
/// or written.
pub fn resolve(given: &[String], data_dir: &Path) -> Result<(Vec<Secret>, Source), String> {
    let given: Vec<&str> = given
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !given.is_empty() {
        let secrets = given
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<Secret>()
                    .map_err(|e| format!("webhook secret #{}: {e}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((secrets, Source::Configured));
    }
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = text
                .trim()
                .parse::<Secret>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((vec![secret], Source::Stored(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = generate()?;
            store(&path, &secret)?;
            Ok((vec![secret], Source::Generated(path)))
        }
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// A new secret of 32 random bytes.
fn generate() -> Result<Secret, String> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for a webhook secret: {e}"))?;
    Secret::from_bytes(&key).map_err(|e| e.to_string())
}

/// Writes `secret` to `path`, created new with mode 0600, and syncs it.
fn store(path: &Path, secret: &Secret) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut file = options.open(path)?;
        file.write_all(secret.expose().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    };
    write().map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_secrets_win_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let given = vec![
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
                .to_owned(),
        ];
        let (secrets, source) = resolve(&given, dir.path()).unwrap();
        assert_eq!(secrets.len(), 2);
        assert_eq!(source, Source::Configured);
        assert!(!dir.path().join(SECRET_FILE).exists());
        let error = resolve(&["whsec_short".to_owned()], dir.path()).unwrap_err();
        assert!(error.contains("#1"), "{error}");
        assert!(
            !error.contains("whsec_short"),
            "never echo a secret: {error}"
        );
    }

    #[test]
    fn a_secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = resolve(&[], dir.path()).unwrap();
        let path = dir.path().join(SECRET_FILE);
        assert_eq!(source, Source::Generated(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, source) = resolve(&[String::new()], dir.path()).unwrap();
        assert_eq!(source, Source::Stored(path.clone()));
        assert_eq!(first, again);
        std::fs::write(&path, "garbage").unwrap();
        assert!(resolve(&[], dir.path()).is_err());
    }
}
