//! `sg-agent import-aws FILE`: AWS `describe-security-groups` (or
//! `describe-security-group-rules`) JSON, with its instances documents, → a native document.

use std::path::PathBuf;

use super::{CliError, invalid_in, print_warnings, read_inputs};
use crate::policy::{self, aws, native};

#[derive(Debug, clap::Args)]
pub struct Args {
    file: PathBuf,
    /// Instances documents to include: native `instances` (and `prefix_lists`), or
    /// `aws ec2 describe-instances` output; may be given more than once.
    #[arg(long)]
    instances: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let (document, instances) = read_inputs(&args.file, &args.instances)?;
    let json = native::parse_json(&document).map_err(invalid_in(&args.file, &args.instances))?;
    if !aws::is_aws(&json) {
        return Err(invalid_in(&args.file, &args.instances)(policy::Invalid::one(
            "",
            "not an AWS document (no SecurityGroups or SecurityGroupRules key)",
        )));
    }
    let doc = policy::load_all(&document, &instances).map_err(invalid_in(&args.file, &args.instances))?;
    print_warnings(&doc.warnings, &args.file, &args.instances);
    let text = native::write_document(&doc);
    // The result must be a valid document on its own (references resolve).
    policy::load(&text, None).map_err(invalid_in(&args.file, &args.instances))?;
    println!("{text}");
    Ok(())
}
