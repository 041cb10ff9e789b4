//! `sg-agent fleet status`: what every node enforces, against the store's objects.

use std::time::SystemTime;

use super::CliError;
use crate::{
    cli::store_args::StoreArgs,
    clock,
    store::nodes::{self, Standing},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let options = args.store.required()?;
    let client = options.connect().await?;
    let status = nodes::fleet_status(&client, &options).await?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
        return Ok(());
    }
    out!(
        "store {} prefix {}: revision {}, {} objects (last written at revision {})",
        status.store,
        status.prefix,
        status.revision,
        status.objects,
        status.objects_revision
    );
    if status.nodes.is_empty() {
        out!("no node has registered");
        return Ok(());
    }
    let now = clock::unix_seconds(SystemTime::now());
    out!(
        "{:<20} {:<8} {:>9} {:>10} {:>10}  {:<8} {:<9} detail",
        "node",
        "lease",
        "revision",
        "generation",
        "updated",
        "version",
        "standing"
    );
    for n in &status.nodes {
        let (revision, generation, updated, version) = match &n.state {
            Some(s) => (
                s.revision.to_string(),
                s.generation.map_or("-".to_owned(), |g| g.to_string()),
                format!("{} ago", clock::age(std::time::Duration::from_secs(now.saturating_sub(s.unix_time)))),
                s.version.clone(),
            ),
            None => ("-".to_owned(), "-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        let standing = match n.standing {
            Standing::Current => "current",
            Standing::Behind => "BEHIND",
            Standing::Invalid => "INVALID",
            Standing::Unknown => "unknown",
        };
        out!(
            "{:<20} {:<8} {revision:>9} {generation:>10} {updated:>10}  {version:<8} {standing:<9} {}",
            n.node,
            if n.alive { "alive" } else { "EXPIRED" },
            n.detail
        );
    }
    Ok(())
}
