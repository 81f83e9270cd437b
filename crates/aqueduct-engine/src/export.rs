//! Tables for the warehouse: the store's resources through SQL on FHIR views, written as CSV
//! or Parquet files partitioned by view, organization and source (connection):
//!
//! ```text
//! OUT/aqueduct-export.json                        the manifest (what each file was made from)
//! OUT/{view}/organization={org}/source={connection}/data.{csv|parquet}
//! ```
//!
//! (Hive-style directories, so `read_parquet('OUT/patient/*/*/data.parquet',
//! hive_partitioning = true)` in DuckDB gives `organization` and `source` columns.)
//!
//! Incremental: a partition's fingerprint is a SHA-256 over the view's definition, the form
//! (raw or clean), the format, and the logical id and content hash of every live resource of
//! the view's type in that source (plus, for the clean form, the stamps of their normalized
//! rows). A partition whose fingerprint is the one in the manifest, and whose file is still
//! there, is not rewritten; the fingerprint pass reads only the store's keys and hashes per
//! page. A partition that changed is written to a temporary file and renamed over the old one,
//! so a reader never sees half a file; the manifest is replaced the same way, last.
//!
//! Memory is bounded by one page of resources and one batch of rows per writer, whatever the
//! store holds. A resource a view cannot turn into rows (not JSON, a column given two values,
//! a value of the wrong type) is counted and named in the report, never silently dropped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use aqueduct_core::{
    ConnectionRef, ParseStatus, Store, StoreError, StoredNormalized, StoredResource,
};
use aqueduct_views::catalog::NamedView;
use aqueduct_views::csv::CsvWriter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The manifest's file name in the output directory.
pub const MANIFEST: &str = "aqueduct-export.json";
/// Resources read from the store per page.
const PAGE: u32 = 500;
/// How many failing resources a report names per partition (all are counted).
const NAMED_FAILURES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    /// Parquet, Snappy-compressed (only with the `parquet` feature).
    Parquet,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }
}

/// Which form of each resource the views read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The bytes exactly as the source sent them.
    Raw,
    /// The clean view the FHIR facade serves: facade ids (`{connection}.{id}`), references
    /// rewritten, the normalized coding, unit and status beside the source's.
    Clean,
}

/// Renders the clean form of a resource (the facade's renderer, passed in by the caller so
/// that the engine does not depend on the server): appends JSON text to `out`, false when
/// the resource cannot be shown.
pub type CleanRenderer =
    dyn Fn(&StoredResource, Option<&str>, &[StoredNormalized], &mut String) -> bool + Send + Sync;

pub struct ExportOptions<'a> {
    pub organization: String,
    pub format: Format,
    pub form: Form,
    pub out: PathBuf,
    /// Needed for [`Form::Clean`].
    pub clean: Option<&'a CleanRenderer>,
}

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("reading the store")]
    Store(#[from] StoreError),
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the export manifest is not readable; remove it to export everything again", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: writing Parquet", path.display())]
    #[cfg(feature = "parquet")]
    Parquet {
        path: PathBuf,
        #[source]
        source: aqueduct_views::parquet::ParquetWriteError,
    },
    #[error("this build has no Parquet writer: build aqueduct with `--features parquet`")]
    NoParquet,
    #[error("the clean form needs the clean renderer")]
    NoRenderer,
    #[error("organization {0:?} has no connections in the store")]
    NoConnections(String),
}

/// What the manifest remembers of one partition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionState {
    pub fingerprint: String,
    pub rows: u64,
    pub resources: u64,
    pub failed: u64,
    pub bytes: u64,
    pub written_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    /// By partition path relative to the output directory (`patient/organization=a/source=b`).
    partitions: BTreeMap<String, PartitionState>,
}

/// One partition of an export.
#[derive(Debug, Clone)]
pub struct PartitionReport {
    pub view: String,
    pub connection: String,
    pub path: PathBuf,
    /// False when the partition had not changed and its file was kept.
    pub written: bool,
    pub state: PartitionState,
    /// Some of the resources that failed, with why (`Type/id: reason`).
    pub failures: Vec<String>,
}

#[derive(Debug, Default)]
pub struct ExportReport {
    pub partitions: Vec<PartitionReport>,
    pub seconds: f64,
}

impl ExportReport {
    pub fn rows_written(&self) -> u64 {
        self.partitions
            .iter()
            .filter(|p| p.written)
            .map(|p| p.state.rows)
            .sum()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn load_manifest(path: &Path) -> Result<Manifest, ExportError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| ExportError::Manifest {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest {
            version: 1,
            partitions: BTreeMap::new(),
        }),
        Err(e) => Err(io(path)(e)),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Runs the views over every connection of the organization.
pub async fn export(
    store: &dyn Store,
    views: &[NamedView],
    opts: &ExportOptions<'_>,
) -> Result<ExportReport, ExportError> {
    let started = Instant::now();
    if opts.form == Form::Clean && opts.clean.is_none() {
        return Err(ExportError::NoRenderer);
    }
    if opts.format == Format::Parquet && !cfg!(feature = "parquet") {
        return Err(ExportError::NoParquet);
    }
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let manifest_path = opts.out.join(MANIFEST);
    let mut manifest = load_manifest(&manifest_path)?;
    let connections = store.list_connections(&opts.organization).await?;
    if connections.is_empty() {
        return Err(ExportError::NoConnections(opts.organization.clone()));
    }
    let mut report = ExportReport::default();
    for conn_rec in &connections {
        let conn = ConnectionRef::new(&opts.organization, &conn_rec.name);
        // one fingerprint pass per resource type, shared by the views of that type
        let mut type_prints: BTreeMap<String, String> = BTreeMap::new();
        for v in views {
            let rtype = v.view.resource().to_string();
            let source_print = match type_prints.get(&rtype) {
                Some(p) => p.clone(),
                None => {
                    let p = fingerprint_sources(store, &conn, &rtype, opts.form).await?;
                    type_prints.insert(rtype.clone(), p.clone());
                    p
                }
            };
            let mut h = Sha256::new();
            h.update(v.definition.to_string().as_bytes());
            h.update(format!("{:?}|{:?}|", opts.form, opts.format).as_bytes());
            h.update(source_print.as_bytes());
            let fingerprint = hex::encode(h.finalize());
            let rel = format!(
                "{}/organization={}/source={}",
                v.name, opts.organization, conn_rec.name
            );
            let dir = opts.out.join(&rel);
            let file = dir.join(format!("data.{}", opts.format.extension()));
            if let Some(prev) = manifest.partitions.get(&rel)
                && prev.fingerprint == fingerprint
                && file.exists()
            {
                report.partitions.push(PartitionReport {
                    view: v.name.clone(),
                    connection: conn_rec.name.clone(),
                    path: file,
                    written: false,
                    state: prev.clone(),
                    failures: Vec::new(),
                });
                continue;
            }
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let base = Some(conn_rec.base_url.as_str()).filter(|b| !b.is_empty());
            let (mut state, failures) = write_partition(store, &conn, v, opts, base, &file).await?;
            state.fingerprint = fingerprint;
            manifest.partitions.insert(rel, state.clone());
            report.partitions.push(PartitionReport {
                view: v.name.clone(),
                connection: conn_rec.name.clone(),
                path: file,
                written: true,
                state,
                failures,
            });
        }
    }
    let text = serde_json::to_vec_pretty(&manifest).map_err(|source| ExportError::Manifest {
        path: manifest_path.clone(),
        source,
    })?;
    write_atomically(&manifest_path, &text)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// SHA-256 over the keys and content hashes of a source's live resources of one type (and
/// for the clean form, the stamps of their normalized rows).
async fn fingerprint_sources(
    store: &dyn Store,
    conn: &ConnectionRef,
    resource_type: &str,
    form: Form,
) -> Result<String, ExportError> {
    let mut h = Sha256::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_resources(conn, resource_type, after.as_deref(), PAGE, false)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.logical_id.clone());
        for r in &page {
            h.update(r.logical_id.as_bytes());
            h.update(b"\0");
            h.update(r.content_hash.as_bytes());
            h.update(b"\n");
        }
        if form == Form::Clean {
            let ids: Vec<String> = page.iter().map(|r| r.logical_id.clone()).collect();
            let stamps = store.normalized_stamps(conn, resource_type, &ids).await?;
            for id in &ids {
                if let Some(s) = stamps.get(id) {
                    h.update(format!("{id}\0{}\0{}\n", s.content_hash, s.rules_version).as_bytes());
                }
            }
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    Ok(hex::encode(h.finalize()))
}

enum Table {
    Csv(CsvWriter<BufWriter<File>>),
    #[cfg(feature = "parquet")]
    Parquet(Box<aqueduct_views::parquet::ParquetWriter<BufWriter<File>>>),
}

impl Table {
    fn create(path: &Path, v: &NamedView, format: Format) -> Result<Table, ExportError> {
        let f = BufWriter::new(File::create(path).map_err(io(path))?);
        match format {
            Format::Csv => Ok(Table::Csv(
                CsvWriter::new(f, v.view.columns()).map_err(io(path))?,
            )),
            #[cfg(feature = "parquet")]
            Format::Parquet => {
                let w = aqueduct_views::parquet::ParquetWriter::new(f, &v.name, v.view.columns())
                    .map_err(|source| ExportError::Parquet {
                    path: path.to_path_buf(),
                    source,
                })?;
                Ok(Table::Parquet(Box::new(w)))
            }
            #[cfg(not(feature = "parquet"))]
            Format::Parquet => Err(ExportError::NoParquet),
        }
    }

    fn write(&mut self, path: &Path, row: aqueduct_views::Row) -> Result<(), ExportError> {
        match self {
            Table::Csv(w) => w.write_row(&row).map_err(io(path)),
            #[cfg(feature = "parquet")]
            Table::Parquet(w) => w.write_row(row).map_err(|source| ExportError::Parquet {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn finish(self, path: &Path) -> Result<(), ExportError> {
        let mut out = match self {
            Table::Csv(w) => w.finish().map_err(io(path))?,
            #[cfg(feature = "parquet")]
            Table::Parquet(w) => w.finish().map_err(|source| ExportError::Parquet {
                path: path.to_path_buf(),
                source,
            })?,
        };
        out.flush().map_err(io(path))?;
        out.into_inner()
            .map_err(|e| io(path)(e.into_error()))?
            .sync_all()
            .map_err(io(path))
    }
}

async fn write_partition(
    store: &dyn Store,
    conn: &ConnectionRef,
    v: &NamedView,
    opts: &ExportOptions<'_>,
    base: Option<&str>,
    file: &Path,
) -> Result<(PartitionState, Vec<String>), ExportError> {
    let tmp = file.with_extension("partial");
    let mut table = Table::create(&tmp, v, opts.format)?;
    let (mut rows, mut resources, mut failed) = (0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    let mut fail = |r: &StoredResource, why: String, failed: &mut u64| {
        *failed += 1;
        if failures.len() < NAMED_FAILURES {
            failures.push(format!("{}/{}: {why}", r.resource_type, r.logical_id));
        }
    };
    let rtype = v.view.resource();
    let mut after: Option<String> = None;
    let mut text = String::new();
    let mut out_rows = Vec::new();
    loop {
        let page = store
            .list_resources(conn, rtype, after.as_deref(), PAGE, false)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.logical_id.clone());
        let mut normalized: BTreeMap<String, Vec<StoredNormalized>> = BTreeMap::new();
        if opts.form == Form::Clean {
            let ids: Vec<String> = page.iter().map(|r| r.logical_id.clone()).collect();
            for n in store.normalized_of(conn, rtype, &ids).await? {
                normalized.entry(n.logical_id.clone()).or_default().push(n);
            }
        }
        for r in &page {
            resources += 1;
            if let ParseStatus::InvalidJson(why) = &r.parse_status {
                fail(r, format!("not JSON ({why})"), &mut failed);
                continue;
            }
            let parsed = match (opts.form, opts.clean) {
                (Form::Clean, Some(render)) => {
                    text.clear();
                    let rows_of = normalized
                        .get(r.logical_id.as_str())
                        .map_or(&[][..], Vec::as_slice);
                    if !render(r, base, rows_of, &mut text) {
                        fail(r, "the clean form cannot be rendered".into(), &mut failed);
                        continue;
                    }
                    serde_json::from_str::<serde_json::Value>(&text)
                }
                _ => serde_json::from_slice::<serde_json::Value>(&r.bytes),
            };
            let resource = match parsed {
                Ok(v) => v,
                Err(e) => {
                    fail(r, format!("not JSON ({e})"), &mut failed);
                    continue;
                }
            };
            out_rows.clear();
            if let Err(e) = v.view.rows_into(&resource, &mut out_rows) {
                fail(r, error_chain(&e), &mut failed);
                continue;
            }
            for row in out_rows.drain(..) {
                table.write(&tmp, row)?;
                rows += 1;
            }
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    table.finish(&tmp)?;
    std::fs::rename(&tmp, file).map_err(io(file))?;
    let bytes = std::fs::metadata(file).map_err(io(file))?.len();
    Ok((
        PartitionState {
            fingerprint: String::new(),
            rows,
            resources,
            failed,
            bytes,
            written_at: chrono::Utc::now().to_rfc3339(),
        },
        failures,
    ))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
