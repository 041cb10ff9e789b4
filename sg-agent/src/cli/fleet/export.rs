//! `sg-agent fleet export`: the store's objects as one native document.

use super::CliError;
use crate::{
    cli::store_args::StoreArgs,
    policy::json::Json,
    store::{self, StoreError, content},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let options = args.store.required()?;
    let client = options.connect().await?;
    let snapshot = store::snapshot(&client, &options.layout, options.tls.is_some()).await?;
    let context = |what: &str| format!("the store's content at revision {} {what}", snapshot.revision);
    let assembled = snapshot
        .content
        .assemble(&options.layout)
        .map_err(|invalid| StoreError::Invalid { context: context("has objects that are not usable"), invalid })?;
    if let Err(invalid) = snapshot.content.validate(&options.layout) {
        eprintln!(
            "warning: {}:\n{invalid}",
            context("is not a valid document (agents keep their last good generation)")
        );
    }
    let json = Json::parse(&assembled.text).map_err(|e| StoreError::Usage(format!("assembling the document: {e}")))?;
    out!("{}", content::pretty_json(&json));
    eprintln!("store revision {}: {} objects", snapshot.revision, snapshot.content.len());
    Ok(())
}
