//! `switchboard export` and `import`: the store as JSON Lines, one [`Record`] per line,
//! streamed both ways (memory stays flat however large the store).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use crate::store::Store;
use crate::store::records::{FORMAT, FORMAT_VERSION, Record};

/// Records per kind.
pub type Counts = BTreeMap<&'static str, u64>;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("line {line}: {message}")]
    Line { line: u64, message: String },
    #[error("writing: {0}")]
    Write(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("import needs an empty data directory; this one holds {0} records")]
    NotEmpty(u64),
}

/// Writes every record as one JSON line; `tick` is called per record.
pub async fn export(
    store: &dyn Store,
    out: &mut (dyn Write + Send),
    tick: &mut (dyn FnMut(&Record) + Send),
) -> Result<Counts, TransferError> {
    let mut counts = Counts::new();
    let mut write_error = None;
    let result = store
        .records(&mut |r| {
            let line = serde_json::to_vec(&r).expect("records always serialise");
            if let Err(e) = out.write_all(&line).and_then(|()| out.write_all(b"\n")) {
                // Stop the walk; the error is reported below.
                write_error = Some(e);
                return Err(crate::store::StoreError::Io("output closed".into()));
            }
            *counts.entry(r.kind()).or_default() += 1;
            tick(&r);
            Ok(())
        })
        .await;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    result?;
    out.flush()?;
    Ok(counts)
}

/// Records per write while importing.
const CHUNK: usize = 2_000;

/// Reads an export into an empty store. The first line must be the header. `progress` gets
/// the bytes read so far.
pub async fn import(
    store: &dyn Store,
    input: &mut dyn BufRead,
    progress: &mut dyn FnMut(u64),
) -> Result<Counts, TransferError> {
    let held: u64 = store.stats().await?.records.values().sum();
    if held > 0 {
        return Err(TransferError::NotEmpty(held));
    }
    let mut counts = Counts::new();
    let mut chunk = Vec::with_capacity(CHUNK);
    let (mut line_no, mut bytes) = (0u64, 0u64);
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = input.read_line(&mut buf).map_err(|e| TransferError::Line {
            line: line_no + 1,
            message: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        bytes += n as u64;
        let text = buf.trim_end();
        if text.is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(text).map_err(|e| TransferError::Line {
            line: line_no,
            message: format!("not a Switchboard record: {e}"),
        })?;
        let problem = match (&record, line_no) {
            (
                Record::Header {
                    format, version, ..
                },
                1,
            ) => (format != FORMAT || *version > FORMAT_VERSION).then(|| {
                format!(
                    "format {format} version {version}; this build reads {FORMAT} up to version {FORMAT_VERSION}"
                )
            }),
            (_, 1) => Some(
                "the first line must be the export's header (is this a `switchboard export`?)"
                    .into(),
            ),
            (Record::Header { .. }, _) => {
                Some("a second header: two exports joined together?".into())
            }
            _ => None,
        };
        if let Some(message) = problem {
            return Err(TransferError::Line {
                line: line_no,
                message,
            });
        }
        *counts.entry(record.kind()).or_default() += 1;
        chunk.push(record);
        if chunk.len() == CHUNK {
            store.restore(std::mem::take(&mut chunk)).await?;
            progress(bytes);
        }
    }
    if line_no == 0 {
        return Err(TransferError::Line {
            line: 1,
            message: "empty input".into(),
        });
    }
    store.restore(chunk).await?;
    progress(bytes);
    Ok(counts)
}
