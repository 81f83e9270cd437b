//! Bodies of the fuzz targets in `fuzz/` (the manifest, NDJSON streaming), public so that
//! `tests/fuzz_corpus.rs` replays the committed corpus and a proptest drives them without a
//! fuzzer. Each asserts the properties that must hold for any network input.

use chrono::{TimeZone, Utc};
use url::Url;

use crate::manifest::{FileKind, parse_manifest};
use crate::ndjson::{LineSource, LineSplitter, deleted_entries, is_blank, parse_line};

/// What an input reached, summed over a corpus.
#[derive(Debug, Default, Clone, Copy)]
pub struct Exercised {
    pub manifests: usize,
    pub files: usize,
    pub unusable: usize,
    pub lines: usize,
    pub blank: usize,
    pub resources: usize,
    pub flagged: usize,
    pub deletes: usize,
    pub unterminated: usize,
}

impl Exercised {
    pub fn add(&mut self, o: &Exercised) {
        self.manifests += o.manifests;
        self.files += o.files;
        self.unusable += o.unusable;
        self.lines += o.lines;
        self.blank += o.blank;
        self.resources += o.resources;
        self.flagged += o.flagged;
        self.deletes += o.deletes;
        self.unterminated += o.unterminated;
    }
}

/// A manifest body: parsed or refused, never a panic; every file it yields has an http(s) URL.
pub fn manifest(data: &[u8]) -> Exercised {
    let mut ex = Exercised::default();
    let Ok(base) = Url::parse("https://ehr.example/fhir/bulkstatus/job-1") else {
        return ex;
    };
    if let Ok(m) = parse_manifest(data, &base) {
        ex.manifests += 1;
        ex.unusable += m.unusable.len();
        for f in &m.files {
            let u = Url::parse(&f.url);
            assert!(
                u.as_ref()
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
                "a file URL that is not http(s): {}",
                f.url
            );
            assert!(!f.resource_type.is_empty());
            if f.kind == FileKind::Output {
                ex.files += 1;
            }
        }
    }
    ex
}

fn lines_of(data: &[u8], cuts: &[usize]) -> Vec<(u64, Vec<u8>, u64, bool)> {
    let mut s = LineSplitter::new();
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        let c = c.clamp(at, data.len());
        let _ = s.push::<()>(&data[at..c], |l| {
            out.push((l.number, l.bytes.to_vec(), l.end_offset, l.terminated));
            Ok(())
        });
        at = c;
    }
    let _ = s.finish::<()>(|l| {
        out.push((l.number, l.bytes.to_vec(), l.end_offset, l.terminated));
        Ok(())
    });
    out
}

/// An NDJSON body: the first byte chooses chunk boundaries; the lines must not depend on
/// them, be numbered 1.. with growing offsets, and each line must become a raw resource with
/// its exact bytes and a deterministic key (or a deleted-entry verdict), never a panic.
pub fn ndjson(data: &[u8]) -> Exercised {
    let mut ex = Exercised::default();
    let step = usize::from(data.first().copied().unwrap_or(7)).max(1);
    let cuts: Vec<usize> = (1..)
        .map(|i| i * step)
        .take_while(|c| *c < data.len())
        .collect();
    let whole = lines_of(data, &[]);
    let chunked = lines_of(data, &cuts);
    assert_eq!(whole, chunked, "lines depend on chunk boundaries");
    let mut prev = 0u64;
    for (i, (n, bytes, end, terminated)) in whole.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "line numbers");
        assert!(*end >= prev && *end <= data.len() as u64, "offsets");
        prev = *end;
        ex.lines += 1;
        if !terminated {
            ex.unterminated += 1;
            assert_eq!(i + 1, whole.len(), "only the last line may lack a newline");
        }
        if is_blank(bytes) {
            ex.blank += 1;
            continue;
        }
        let src = LineSource {
            url: "https://ehr.example/files/1.ndjson",
            file_type: "Observation",
            fetched_at: Utc.timestamp_opt(0, 0).single().unwrap_or_else(Utc::now),
        };
        let p = parse_line(bytes, &src);
        assert_eq!(
            &p.resource.bytes, bytes,
            "stored bytes differ from the line"
        );
        assert!(!p.resource.resource_type.is_empty() && !p.resource.logical_id.trim().is_empty());
        let again = parse_line(bytes, &src);
        assert_eq!(
            (&again.resource.resource_type, &again.resource.logical_id),
            (&p.resource.resource_type, &p.resource.logical_id),
            "keys are not deterministic"
        );
        match p.problem {
            Some(_) => ex.flagged += 1,
            None => ex.resources += 1,
        }
        if let Ok(d) = deleted_entries(bytes) {
            ex.deletes += d.len();
        }
    }
    // resuming after any line gives the rest of the lines, same numbers and offsets
    if let Some(mid) = whole.get(whole.len() / 2).filter(|l| l.3) {
        let (n, _, off, _) = mid;
        let mut s = LineSplitter::resume(*n, *off);
        let mut rest = Vec::new();
        let from = usize::try_from(*off).unwrap_or(data.len()).min(data.len());
        let _ = s.push::<()>(&data[from..], |l| {
            rest.push((l.number, l.bytes.to_vec(), l.end_offset, l.terminated));
            Ok(())
        });
        let _ = s.finish::<()>(|l| {
            rest.push((l.number, l.bytes.to_vec(), l.end_offset, l.terminated));
            Ok(())
        });
        let tail: Vec<_> = whole.iter().filter(|l| l.0 > *n).cloned().collect();
        assert_eq!(rest, tail, "a resumed read differs");
    }
    ex
}
