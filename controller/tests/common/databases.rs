//! The databases a controller test runs on: SQLite in a temporary
//! directory, and a fresh PostgreSQL database (dropped afterwards) when
//! `MESHTABLE_TEST_DATABASE_URL` names a server. Included by path; the
//! including test declares `mod pg_url` (crates/store/tests/common).

use std::process::Command;

use anyhow::{Context, Result, ensure};

/// A database for one run.
pub struct Db {
    /// Its URL.
    pub url: String,
    /// On PostgreSQL: the admin URL and the database's name, to drop it.
    pg: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Db {
    /// The backend, as the URL's scheme names it.
    pub fn backend(&self) -> &str {
        self.url.split(':').next().unwrap_or("")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg {
            let _ = Command::new("psql")
                .args([
                    admin.as_str(),
                    "-q",
                    "-c",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .output();
        }
    }
}

/// SQLite, then PostgreSQL if configured; `test` names the PostgreSQL
/// database (`meshtable_{test}_<random>`) and the skip message.
pub fn databases(test: &str) -> Result<Vec<Db>> {
    let dir = tempfile::tempdir()?;
    let mut out = vec![Db {
        url: format!("sqlite://{}/meshtable.db", dir.path().display()),
        pg: None,
        _dir: dir,
    }];
    match std::env::var("MESHTABLE_TEST_DATABASE_URL") {
        Ok(admin) if !admin.is_empty() => {
            let name = format!("meshtable_{test}_{:016x}", rand::random::<u64>());
            let o = Command::new("psql")
                .args([
                    admin.as_str(),
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-q",
                    "-c",
                    &format!("CREATE DATABASE {name}"),
                ])
                .output()
                .context("run psql")?;
            ensure!(
                o.status.success(),
                "create database: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            out.push(Db {
                url: crate::pg_url::with_database(&admin, &name),
                pg: Some((admin.clone(), name)),
                _dir: tempfile::tempdir()?,
            });
        }
        _ => eprintln!("{test}: MESHTABLE_TEST_DATABASE_URL not set, PostgreSQL variant skipped"),
    }
    Ok(out)
}

/// Runs `body` with the URL of every database of [`databases`], naming the
/// backend in a failure.
pub async fn on_each_database<F, Fut>(test: &str, body: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    for db in databases(test)? {
        body(db.url.clone())
            .await
            .with_context(|| format!("on {}", db.backend()))?;
    }
    Ok(())
}
