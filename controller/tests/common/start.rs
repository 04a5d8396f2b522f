//! Starting a controller in a test. Included by path.

use std::time::Duration;

use anyhow::{Context, Result};
use meshtable::config::{Config, Layer};
use meshtable::serve::{Controller, Listeners};

/// The controller `layer` configures, started within 30 s (its listeners
/// bound, migrations run, ingest subscribed).
pub async fn start_controller(layer: &Layer) -> Result<Controller> {
    let config = Config::resolve(layer, None)?;
    tokio::time::timeout(
        Duration::from_secs(30),
        Controller::start(&config, Listeners::bind(&config)?),
    )
    .await
    .context("controller did not get ready")?
    .map_err(Into::into)
}
