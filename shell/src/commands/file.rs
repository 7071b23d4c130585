//! `essaim secret ...` and `essaim config ...`: create, list, inspect and remove the data the
//! swarm gives services as files. The two kinds take the same commands; the leader seals a
//! secret's data, and no answer ever carries it back.

use std::io::Read;

use essaim_core::model::{FileKind, FileSpec, MAX_FILE_DATA};

use super::Failures;
use crate::cli::{FileCommand, FileCreateArgs, FileInspectArgs, FileLsArgs, FileRmArgs, Format};
use crate::client::Client;
use crate::render::{self, Output};

/// # Errors
/// The daemon could not be reached, the leader refused, the data could not be read, or (with
/// several NAME arguments) at least one of them failed.
pub async fn run(
    kind: FileKind,
    command: FileCommand,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    match command {
        FileCommand::Create(args) => create(kind, args, client, output).await,
        FileCommand::Ls(args) => ls(kind, args, client, output).await,
        FileCommand::Inspect(args) => inspect(kind, args, client, output).await,
        FileCommand::Rm(args) => rm(kind, args, client, output).await,
    }
}

async fn create(
    kind: FileKind,
    args: FileCreateArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let data = read_data(kind, &args.file)?;
    let spec = FileSpec {
        name: args.name,
        labels: args.label.into_iter().collect(),
    };
    let view = client.file_create(kind, spec, data).await?;
    output.print(&format!("{}\n", view.id))?;
    Ok(())
}

/// The data of `secret create NAME FILE`: the file's, or standard input's for `-`.
///
/// # Errors
/// It cannot be read, is empty, or is larger than a secret or config may be.
pub fn read_data(kind: FileKind, file: &str) -> anyhow::Result<Vec<u8>> {
    read_file_data(kind, file).map_err(|e| anyhow::anyhow!("{kind} create: {e}"))
}

/// The data of a file for a secret or config, with the checks of [`read_data`], its errors
/// in words that name the file (a compose file's reader says where the file was named).
///
/// # Errors
/// See [`read_data`].
pub fn read_file_data(kind: FileKind, file: &str) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    let limit = MAX_FILE_DATA as u64 + 1;
    let read = if file == "-" {
        std::io::stdin().take(limit).read_to_end(&mut data)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut data))
    };
    let source = if file == "-" {
        "standard input".to_string()
    } else {
        file.to_string()
    };
    read.map_err(|e| format!("cannot read {source}: {e}"))?;
    check_data(kind, &source, &data)?;
    Ok(data)
}

/// What the leader would refuse of a secret's or config's data, said before anything is
/// sent: none, or too much. `source` names where it came from.
///
/// # Errors
/// The data is empty or larger than [`MAX_FILE_DATA`].
pub fn check_data(kind: FileKind, source: &str, data: &[u8]) -> Result<(), String> {
    if data.is_empty() {
        return Err(format!("{source} is empty: a {kind} needs data"));
    }
    if data.len() > MAX_FILE_DATA {
        return Err(format!(
            "{source} holds more than the {MAX_FILE_DATA} bytes a {kind} may"
        ));
    }
    Ok(())
}

async fn ls(
    kind: FileKind,
    args: FileLsArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let files = client.file_list(kind).await?;
    let text = if args.quiet {
        render::ids(files.iter().map(|view| view.id.as_str()))
    } else {
        match args.format {
            Format::Json => render::json(&files)?,
            Format::Table => render::file_table(&files),
        }
    };
    output.print(&text)?;
    Ok(())
}

async fn inspect(
    kind: FileKind,
    args: FileInspectArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let mut failures = Failures::default();
    let mut views = Vec::new();
    for name in &args.names {
        match client.file_inspect(kind, name).await {
            Ok(view) => views.push(view),
            Err(error) => failures.report(output, error.into()),
        }
    }
    let pretty = args.pretty || args.format == Format::Table;
    let text = super::inspected(&views, pretty, render::file_pretty)?;
    output.print(&text)?;
    failures.finish()
}

async fn rm(
    kind: FileKind,
    args: FileRmArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let mut failures = Failures::default();
    for name in &args.names {
        match client.file_remove(kind, name).await {
            Ok(()) => output.print(&format!("{name}\n"))?,
            Err(error) => failures.report(output, error.into()),
        }
    }
    failures.finish()
}
