//! The options that say how to reach the store (fleet mode, SPEC §8), shared by `run` and the
//! `fleet` commands.

use std::path::PathBuf;

use crate::store::{self, Layout, StoreError, StoreOptions, TlsFiles};

/// The environment variable an etcd user's password is read from.
pub const PASSWORD_ENV: &str = "SG_STORE_PASSWORD";

#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The etcd v3 cluster holding the fleet's policy: etcd://HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Key prefix of this fleet in the store.
    #[arg(long, value_name = "PREFIX", default_value = store::DEFAULT_PREFIX)]
    pub store_prefix: String,
    /// CA certificate (PEM) that signed the store's server certificates; turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub store_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present (with --store-key). Without --store-user, etcd takes
    /// its common name as the user.
    #[arg(long, value_name = "FILE", requires = "store_key")]
    pub store_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "store_cert")]
    pub store_key: Option<PathBuf>,
    /// etcd user; the password comes from the environment variable SG_STORE_PASSWORD or from
    /// --store-password-file (never from the command line).
    #[arg(long, value_name = "NAME")]
    pub store_user: Option<String>,
    /// File holding the etcd user's password (a trailing newline is ignored).
    #[arg(long, value_name = "FILE", requires = "store_user")]
    pub store_password_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The store options, if `--store` was given.
    pub fn options(&self) -> Result<Option<StoreOptions>, StoreError> {
        let Some(url) = &self.store else {
            let stray = [
                (self.store_ca.is_some(), "--store-ca"),
                (self.store_cert.is_some(), "--store-cert"),
                (self.store_user.is_some(), "--store-user"),
            ];
            if let Some((_, name)) = stray.iter().find(|(given, _)| *given) {
                return Err(StoreError::Usage(format!("{name} is an option of --store")));
            }
            return Ok(None);
        };
        let members = StoreOptions::members_of(url)?;
        let prefix = self.store_prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || prefix.len() < 2 {
            return Err(StoreError::Usage(format!(
                "--store-prefix {:?}: expected a key prefix like /sg/v1",
                self.store_prefix
            )));
        }
        let tls = match (&self.store_ca, &self.store_cert, &self.store_key) {
            (None, None, _) => None,
            (None, Some(_), _) => {
                return Err(StoreError::Usage(
                    "--store-cert needs --store-ca (the CA that signed the store's certificates)".to_owned(),
                ));
            }
            (Some(ca), cert, key) => Some(TlsFiles { ca: ca.clone(), identity: cert.clone().zip(key.clone()) }),
        };
        let user = match &self.store_user {
            None => None,
            Some(user) => Some((user.clone(), self.password()?)),
        };
        Ok(Some(StoreOptions { members, layout: Layout::new(prefix), tls, user }))
    }

    /// The options of a command that needs the store.
    pub fn required(&self) -> Result<StoreOptions, StoreError> {
        self.options()?.ok_or_else(|| StoreError::Usage("--store etcd://HOST:PORT is needed".to_owned()))
    }

    fn password(&self) -> Result<String, StoreError> {
        if let Some(path) = &self.store_password_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| StoreError::File { path: path.clone(), source })?;
            return Ok(text.trim_end_matches(['\n', '\r']).to_owned());
        }
        std::env::var(PASSWORD_ENV).map_err(|_| {
            StoreError::Usage(format!(
                "--store-user needs a password: set {PASSWORD_ENV} or give --store-password-file"
            ))
        })
    }
}
