//! The key pairs the API accepts: a file in the AWS CLI's own credentials format, where every
//! section (`[name]` or `[profile name]`) with `aws_access_key_id` and `aws_secret_access_key`
//! is one key pair. It holds secrets, so it must not be accessible by group or others.

use std::{
    collections::HashMap,
    fmt,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

/// The accepted key pairs.
#[derive(Clone)]
pub struct Credentials {
    /// Access key id → (profile, secret).
    keys: HashMap<String, (String, String)>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets.
        f.debug_struct("Credentials").field("access_key_ids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

/// Why the credentials file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// It cannot be read.
    #[error("API credentials {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Group or others may access it.
    #[error(
        "API credentials {}: mode {mode:04o} lets group or others access the secrets; make it private \
         (chmod 600 {})",
        .path.display(), .path.display()
    )]
    Mode { path: PathBuf, mode: u32 },
    /// It is not a credentials file (line numbers from 1).
    #[error("API credentials {}: line {line}: {reason}", .path.display())]
    Malformed { path: PathBuf, line: usize, reason: String },
    /// It has no key pair.
    #[error(
        "API credentials {}: no key pair (a section like [sg-admin] with aws_access_key_id and \
         aws_secret_access_key)",
        .path.display()
    )]
    Empty { path: PathBuf },
}

impl Credentials {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
        let read = |source| CredentialsError::Read { path: path.to_path_buf(), source };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CredentialsError::Mode { path: path.to_path_buf(), mode });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let keys = parse(&text).map_err(|(line, reason)| CredentialsError::Malformed {
            path: path.to_path_buf(),
            line,
            reason,
        })?;
        if keys.is_empty() {
            return Err(CredentialsError::Empty { path: path.to_path_buf() });
        }
        Ok(Credentials { keys })
    }

    /// The secret of an access key id, and the profile it comes from.
    pub fn secret(&self, access_key_id: &str) -> Option<(&str, &str)> {
        self.keys.get(access_key_id).map(|(profile, secret)| (profile.as_str(), secret.as_str()))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

type Keys = HashMap<String, (String, String)>;

/// The key pairs of an INI text as the AWS CLI writes it; an error names its line (from 1).
fn parse(text: &str) -> Result<Keys, (usize, String)> {
    struct Section {
        name: String,
        line: usize,
        id: Option<String>,
        secret: Option<String>,
    }
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            // A continuation (the CLI's nested settings, like `s3 =` and indented lines).
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let name = header.strip_suffix(']').ok_or((i + 1, format!("{line:?}: a section header is [name]")))?;
            let name = name.trim();
            let name = name.strip_prefix("profile ").map_or(name, str::trim);
            if name.is_empty() {
                return Err((i + 1, "a section needs a name".to_owned()));
            }
            if let Some(first) = sections.iter().find(|s| s.name == name) {
                return Err((i + 1, format!("section [{name}] again (first on line {})", first.line)));
            }
            sections.push(Section { name: name.to_owned(), line: i + 1, id: None, secret: None });
            continue;
        }
        let (key, value) =
            line.split_once('=').ok_or((i + 1, format!("expected `key = value` or a [section], found {line:?}")))?;
        let section = sections.last_mut().ok_or((i + 1, "a setting before any [section]".to_owned()))?;
        let (key, value) = (key.trim(), value.trim());
        let slot = match key {
            "aws_access_key_id" => &mut section.id,
            "aws_secret_access_key" => &mut section.secret,
            // Anything else a profile may hold (region, output, session tokens) is not ours.
            _ => continue,
        };
        if value.is_empty() {
            return Err((i + 1, format!("{key} is empty")));
        }
        if slot.replace(value.to_owned()).is_some() {
            return Err((i + 1, format!("{key} given twice in [{}]", section.name)));
        }
    }
    let mut keys: Keys = HashMap::new();
    for s in sections {
        match (s.id, s.secret) {
            (None, None) => {}
            (Some(id), Some(secret)) => {
                if let Some((first, _)) = keys.get(&id) {
                    return Err((s.line, format!("access key id {id} is also in [{first}]")));
                }
                keys.insert(id, (s.name, secret));
            }
            (Some(_), None) => return Err((s.line, format!("[{}] has no aws_secret_access_key", s.name))),
            (None, Some(_)) => return Err((s.line, format!("[{}] has no aws_access_key_id", s.name))),
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_with_a_key_pair_is_accepted() {
        let keys = parse(
            "# sg-agent API keys\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\nregion = \
             us-east-1\n\n[profile ops]\naws_access_key_id=AKIDOPS\naws_secret_access_key=s2/+x\ns3 =\n  \
             max_concurrent_requests = 2\n[only-settings]\nregion = eu-west-1\n",
        )
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys["AKIDDEFAULT"], ("default".to_owned(), "s1".to_owned()));
        assert_eq!(keys["AKIDOPS"], ("ops".to_owned(), "s2/+x".to_owned()));
    }

    #[test]
    fn malformed_files_name_the_line() {
        assert_eq!(parse("aws_access_key_id = x\n").unwrap_err().0, 1);
        assert_eq!(parse("[a]\naws_access_key_id = x\n").unwrap_err(), (1, "[a] has no aws_secret_access_key".into()));
        assert_eq!(parse("[a]\njunk\n").unwrap_err().0, 2);
        assert_eq!(parse("[a\n").unwrap_err().0, 1);
        let twice = "[a]\naws_access_key_id = k\naws_secret_access_key = s\n[b]\naws_access_key_id = k\n\
                     aws_secret_access_key = t\n";
        assert_eq!(parse(twice).unwrap_err(), (4, "access key id k is also in [a]".into()));
    }

    #[test]
    fn the_file_must_be_private() {
        let dir = std::env::temp_dir().join(format!("sg-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials");
        std::fs::write(&path, "[a]\naws_access_key_id = k\naws_secret_access_key = s\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Credentials::load(&path).unwrap_err();
        assert!(matches!(e, CredentialsError::Mode { mode: 0o640, .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let creds = Credentials::load(&path).unwrap();
        assert_eq!(creds.secret("k"), Some(("a", "s")));
        assert!(!format!("{creds:?}").contains("\"s\""), "Debug shows no secret");
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(Credentials::load(&path), Err(CredentialsError::Empty { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
