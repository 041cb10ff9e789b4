//! `sg-agent import-aws FILE`: AWS `describe-security-groups` JSON → a native document.

use std::path::PathBuf;

use super::{CliError, read_pair};
use crate::policy::{self, aws, json::Problems, native};

#[derive(Debug, clap::Args)]
pub struct Args {
    file: PathBuf,
    /// Native document with `instances` (and `prefix_lists`) to include.
    #[arg(long)]
    instances: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let (document, instances) = read_pair(&args.file, args.instances.as_deref())?;
    let invalid_in = |file: &PathBuf| {
        let file = file.clone();
        move |invalid| CliError::Invalid { file, invalid }
    };
    let json = native::parse_json(&document).map_err(invalid_in(&args.file))?;
    if !aws::is_aws(&json) {
        return Err(CliError::Invalid {
            file: args.file,
            invalid: policy::Invalid::one("", "not an AWS describe-security-groups document (no SecurityGroups key)"),
        });
    }
    let groups = aws::convert_groups(&json).map_err(invalid_in(&args.file))?;
    let (lists, insts) = match (&args.instances, instances) {
        (Some(file), Some(text)) => {
            let doc = native::parse_json(&text).map_err(invalid_in(file))?;
            let mut p = Problems::default();
            let (l, i) = aws::read_instances_document(&mut p, &doc);
            if !p.is_empty() {
                return Err(CliError::Invalid { file: file.clone(), invalid: policy::Invalid { problems: p.list } });
            }
            (l.into_iter().map(|x| x.list).collect(), i.into_iter().map(|x| x.instance).collect())
        }
        _ => (Vec::new(), Vec::new()),
    };
    let text = native::write_document(&groups, &lists, &insts);
    // The result must be a valid document on its own (references resolve).
    policy::load(&text, None).map_err(invalid_in(&args.file))?;
    println!("{text}");
    Ok(())
}
