//! Async driver: filter records on the async side, write them on a blocking thread fed by a
//! bounded channel (a slow disk slows the record stream down instead of filling memory).

use std::fmt::Display;
use std::path::PathBuf;

use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::imednet::model::Record;

use super::error::ExportError;
use super::filter::{FilterStats, RecordFilter};
use super::schema::ExportSchema;
use super::{ExportFormat, ExportResult, open_writer};

/// Records per channel message, and messages in flight: at most 256 records buffered (a
/// decoded record of a wide study takes ~10 KB; the network side keeps up easily).
const BATCH: usize = 64;
const CHANNEL_BATCHES: usize = 4;

enum Msg {
    Batch(Vec<Record>),
    /// Sent only after the stream ended cleanly: the writer may finish and rename.
    Finish,
}

/// A finished export plus what the caller needs for the next incremental run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportOutcome {
    #[serde(flatten)]
    pub result: ExportResult,
    /// Watermark to store: newest dateModified seen (raw API text), or the previous one.
    pub max_date_modified: Option<String>,
    pub stats: FilterStats,
}

/// Blocking side: write until `Finish`; a closed channel without it means the caller gave
/// up, so the writer is dropped (removing its temp file).
fn run_writer(
    format: ExportFormat,
    dest: PathBuf,
    schema: ExportSchema,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<ExportResult, ExportError> {
    let mut writer = open_writer(format, &dest, &schema)?;
    drop(schema);
    loop {
        match rx.blocking_recv() {
            Some(Msg::Batch(records)) => {
                for rec in &records {
                    writer.write(rec)?;
                }
            }
            Some(Msg::Finish) => return writer.finish(),
            None => return Err(ExportError::Cancelled),
        }
    }
}

/// Export a record stream. Cancel-safe: dropping the returned future closes the channel,
/// the writer thread stops at its next receive and removes the temp file; `dest` is only
/// replaced once every record was written. A stream error aborts the export the same way
/// and is returned as [`ExportError::Source`].
pub async fn export_stream<S, E>(
    format: ExportFormat,
    dest: PathBuf,
    schema: ExportSchema,
    mut filter: RecordFilter,
    records: S,
) -> Result<ExportOutcome, ExportError>
where
    S: Stream<Item = Result<Record, E>>,
    E: Display,
{
    let (tx, rx) = mpsc::channel::<Msg>(CHANNEL_BATCHES);
    let task = tokio::task::spawn_blocking(move || run_writer(format, dest, schema, rx));
    let join = |r: Result<Result<ExportResult, ExportError>, tokio::task::JoinError>| {
        r.map_err(|e| ExportError::Task(e.to_string()))?
    };

    let mut records = std::pin::pin!(records);
    let mut batch = Vec::with_capacity(BATCH);
    let mut writer_gone = false;
    while let Some(item) = records.next().await {
        // Only the message outlives this match, so `E` need not be `Send` for the future to be.
        let rec = match item {
            Ok(rec) => rec,
            Err(e) => {
                let msg = e.to_string();
                // Closing the channel without `Finish` makes the writer discard its file.
                drop(tx);
                let _ = join(task.await);
                return Err(ExportError::Source(msg));
            }
        };
        if filter.keep(&rec) {
            batch.push(rec);
        }
        if batch.len() >= BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.send(Msg::Batch(full)).await.is_err() {
                writer_gone = true;
                break;
            }
        }
    }
    if !writer_gone {
        let sent = if batch.is_empty() {
            Ok(())
        } else {
            tx.send(Msg::Batch(batch)).await
        };
        if sent.is_ok() {
            let _ = tx.send(Msg::Finish).await;
        }
    }
    drop(tx);
    // The writer's own error (e.g. disk full) explains a closed channel.
    let result = join(task.await)?;
    Ok(ExportOutcome {
        result,
        max_date_modified: filter.max_date_modified(),
        stats: filter.stats().clone(),
    })
}
