//! `sg-agent fleet apply FILE`: write a document into the store (see [`crate::store::write`]).

use std::path::PathBuf;

use super::CliError;
use crate::{
    cli::{read_inputs, store_args::StoreArgs},
    policy::{self, native},
    store::{
        self, StoreError,
        content::Content,
        write::{self, Limits},
    },
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A native document (whole, or only the objects to add or change), or AWS
    /// describe-security-groups JSON with --instances.
    file: PathBuf,
    /// With an AWS document: a native document holding `instances` (and `prefix_lists`), or
    /// `aws ec2 describe-instances` output; may be given more than once.
    #[arg(long)]
    instances: Vec<PathBuf>,
    /// Delete the store's objects that FILE does not have (FILE is then the whole document).
    #[arg(long)]
    prune: bool,
    /// Validate and print the transactions; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// etcd's --max-txn-ops (operations per transaction).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(2..))]
    max_txn_ops: u32,
    /// etcd's --max-request-bytes.
    #[arg(long, default_value_t = Limits::default().bytes, value_parser = parse_bytes)]
    max_request_bytes: usize,
    #[command(flatten)]
    store: StoreArgs,
}

fn parse_bytes(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 16 << 10 => Ok(n),
        _ => Err("a number of bytes, at least 16384".to_owned()),
    }
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let options = args.store.required()?;
    let (document, instances) = read_inputs(&args.file, &args.instances)?;
    let invalid_file =
        |invalid| CliError::Invalid { file: args.file.clone(), instances: args.instances.clone(), invalid };
    let file = if !instances.is_empty() || policy::aws::is_aws(&native::parse_json(&document).map_err(invalid_file)?) {
        // AWS input: converted as `import-aws` does, then written as native objects.
        let doc = policy::load_all(&document, &instances).map_err(invalid_file)?;
        let text = native::write_document(&doc);
        Content::of_document(&text).map_err(invalid_file)?
    } else {
        Content::of_document(&document).map_err(invalid_file)?
    };
    let tls = options.tls.is_some();
    let mut client = options.connect().await?;
    let base = store::snapshot(&client, &options.layout, tls).await?;
    let target = write::merge(&base.content, &file, args.prune);
    target.validate(&options.layout).map_err(|invalid| StoreError::Invalid {
        context: format!(
            "{} {} the store's content at revision {} would not be a valid document; nothing was written",
            args.file.display(),
            if args.prune { "replacing" } else { "with" },
            base.revision
        ),
        invalid,
    })?;
    let limits = Limits { ops: args.max_txn_ops as usize, bytes: args.max_request_bytes };
    let plan = write::plan(&options.layout, &base.content, &target, limits)?;
    let summary = format!(
        "{} added, {} changed, {} deleted in {} transaction{}",
        plan.added,
        plan.changed,
        plan.deleted,
        plan.transactions.len(),
        if plan.transactions.len() == 1 { "" } else { "s" }
    );
    if plan.is_empty() {
        out!("the store already holds this at revision {}; nothing written", base.revision);
        return Ok(());
    }
    if args.dry_run {
        out!("against revision {}: {summary} (dry run: nothing written)", base.revision);
        for (i, txn) in plan.transactions.iter().enumerate() {
            out!("transaction {}:", i + 1);
            for op in txn {
                out!("  {} {}", if op.value.is_some() { "put   " } else { "delete" }, op.key);
            }
        }
        return Ok(());
    }
    let written = write::execute(&mut client, &options, &base, &plan).await?;
    out!("revision {}: {summary}", written.revision);
    Ok(())
}
