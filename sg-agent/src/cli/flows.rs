//! `sg-agent flows`: stream flow-log records from the running agent.

use tokio::io::AsyncBufReadExt as _;

use super::{CliError, Location, accepted};
use crate::{
    control::{self, ClientError, Request, Response},
    flows::FlowRecord,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// json: one JSON object per line; text: the space-separated default format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<usize>,
    #[command(flatten)]
    location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Json,
    Text,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let stream = control::send(&args.location.socket, &Request::Flows).await?;
    let mut lines = stream.lines();
    let first = lines.next_line().await.map_err(ClientError::Io)?.ok_or(ClientError::NoAnswer)?;
    let response: Response = serde_json::from_str(&first).map_err(|e| ClientError::Garbled(e.to_string()))?;
    accepted(response)?;
    let mut printed = 0usize;
    while args.count.is_none_or(|c| printed < c) {
        let Some(line) = lines.next_line().await.map_err(ClientError::Io)? else {
            return Err(ClientError::NoAnswer.into());
        };
        match args.format {
            Format::Json => println!("{line}"),
            Format::Text => match serde_json::from_str::<FlowRecord>(&line) {
                Ok(record) => println!("{}", record.default_format()),
                Err(_) => continue,
            },
        }
        printed += 1;
    }
    Ok(())
}
