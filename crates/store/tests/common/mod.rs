//! Runs one test body against every backend: SQLite always (a fresh file in
//! a temporary directory), and PostgreSQL when `MESHTABLE_TEST_DATABASE_URL`
//! is set (a fresh database per test, created and dropped around it).

use std::future::Future;
use std::io::Write;
use std::sync::Once;

use anyhow::Context;
use meshtable_store::{Backend, Store};
use sea_orm::{ConnectionTrait, Database};

mod pg_url;
pub use pg_url::with_database;

/// The variable naming a PostgreSQL server for the PostgreSQL variants.
pub const PG_ENV: &str = "MESHTABLE_TEST_DATABASE_URL";

/// Runs `body` on a fresh, connected store of every backend (see
/// [`each_database`]).
pub async fn each_backend<F, Fut>(test: &str, body: F) -> anyhow::Result<()>
where
    F: Fn(Store) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let body = std::sync::Arc::new(body);
    each_database(test, move |url, backend| {
        let body = body.clone();
        async move {
            let store = Store::connect(&url).await.context("connect")?;
            anyhow::ensure!(
                store.backend() == backend,
                "connected to {:?}",
                store.backend()
            );
            let r = run(body(store.clone())).await;
            store.close().await?;
            r
        }
    })
    .await
}

/// Runs `body` with the URL of a fresh, empty database: a SQLite file whose
/// directory does not exist yet, then a PostgreSQL database if [`PG_ENV`] is
/// set. A failure or panic names the backend; the PostgreSQL database is
/// dropped either way.
pub async fn each_database<F, Fut>(test: &str, body: F) -> anyhow::Result<()>
where
    F: Fn(String, Backend) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/nested/dir/meshtable.db", dir.path().display());
    run(body(url, Backend::Sqlite))
        .await
        .with_context(|| format!("{test} on sqlite"))?;

    let Ok(admin_url) = std::env::var(PG_ENV) else {
        static SKIPPED: Once = Once::new();
        SKIPPED.call_once(|| {
            // Straight to stderr: the test harness captures eprintln!.
            let _ = writeln!(
                std::io::stderr(),
                "meshtable-store tests: {PG_ENV} not set, PostgreSQL variants skipped"
            );
        });
        return Ok(());
    };
    let name = format!("meshtable_t_{:016x}", rand::random::<u64>());
    let admin = Database::connect(admin_url.as_str())
        .await
        .context("postgres admin connect")?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .context("create test database")?;
    let result = run(body(with_database(&admin_url, &name), Backend::Postgres))
        .await
        .with_context(|| format!("{test} on postgres"));
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .context("drop test database")?;
    admin.close().await?;
    result
}

/// Runs a body as its own task, so that a panic (a failed assert) comes back
/// as an error and the caller can still clean up.
async fn run<Fut>(fut: Fut) -> anyhow::Result<()>
where
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    match tokio::spawn(fut).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".to_owned());
            Err(anyhow::anyhow!("panicked: {msg}"))
        }
        Err(e) => Err(e.into()),
    }
}
