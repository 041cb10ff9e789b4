//! `sg-agent export-aws FILE`: a native document → `aws ec2 describe-security-groups` JSON (on
//! stdout) and the instances document it needs (`--instances-out`), so that `import-aws` (or
//! `check`/`run`/`apply` with `--instances`) of the two enforces exactly what FILE does.

use std::path::PathBuf;

use super::{CliError, invalid_in, print_warnings, read};
use crate::policy::{self, export};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A native document.
    file: PathBuf,
    /// Where to write the instances document (`instances` and `prefix_lists`) the AWS groups
    /// need; required when the document has either.
    #[arg(long)]
    instances_out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let text = read(&args.file)?;
    let doc = policy::load(&text, None).map_err(invalid_in(&args.file, &[]))?;
    print_warnings(&doc.warnings, &args.file, &[]);
    let (aws, instances) = export::to_aws(&doc);
    match &args.instances_out {
        Some(path) => {
            std::fs::write(path, instances + "\n").map_err(|e| CliError::Write { path: path.clone(), source: e })?
        }
        None if !doc.instances.is_empty() || !doc.prefix_lists.is_empty() => {
            return Err(CliError::Usage(format!(
                "{} has instances or prefix lists, which AWS's group listing does not hold: give --instances-out FILE",
                args.file.display()
            )));
        }
        None => {}
    }
    if export::loses_node_services(&doc) {
        eprintln!(
            "warning: {}: node_services has no AWS form (EC2's service addresses are fixed); the exported files use \
             EC2's",
            args.file.display()
        );
    }
    println!("{aws}");
    Ok(())
}
