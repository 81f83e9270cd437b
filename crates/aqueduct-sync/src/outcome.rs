//! The outcome rule, written once. Every decision about whether data is whole goes through
//! here; the syncer only gathers the facts.
//!
//! A run is `complete` only when every planned type was answered to its last page, every
//! same-server reference was resolved, every attachment allowed was fetched, and no gap below
//! applies. Anything else is `partial`, each gap named (type, patient, reason, example
//! request), or `failed` when the run could not go on at all. Clauses:
//!
//! 1. The run stopped as a whole (re-authorization needed, store failure, the population or
//!    the endpoints could not be listed, stopped by a shutdown) → failed. So is a run the
//!    server answered not once while it has gaps other than its deadline (unreachable,
//!    refusing connections, no token to be had, stalled from the first byte): nothing was
//!    read, so nothing is partial.
//! 2. Any gap → partial: a search not read to its last page (errors after retries, loops,
//!    broken or foreign next links, runaway paging, responses refused for size or redirect),
//!    a 200 page carrying an error outcome, data suppressed for lack of authorization, a
//!    same-server reference that could not be read, an allowed attachment not fetched, a
//!    first sync that brought no Patient, a type forbidden or outside the granted scopes, a
//!    run deadline reached.
//! 3. A type the server neither lists nor has returned, and refuses when asked, is "not
//!    offered": reported, not a gap. A type it lists, or returned before, and then refuses is
//!    a gap (not-supported).
//! 4. Informational outcomes ("this response includes information available to the
//!    authorized user...") are noted, never gaps.
//! 5. Only a type read completely may tombstone; a type with any gap never does.
//! 6. A Bulk Data file is whole only when it was read to its end, its last line was not cut
//!    off, none of its lines failed to be a resource (those are stored flagged, and are a
//!    gap), and it held at least the resources its manifest entry counted. Files the server
//!    let expire and that a new kick-off did not bring again are a gap too.

use aqueduct_core::RunOutcome;

use crate::report::{MissingReason, PartialType};

/// Clauses 1 and 2: the run's outcome from its failure (if any) and its gaps.
pub fn run_outcome(failure: Option<&str>, gaps: &[PartialType]) -> RunOutcome {
    if failure.is_some() {
        RunOutcome::Failed
    } else if gaps.is_empty() {
        RunOutcome::Complete
    } else {
        RunOutcome::Partial
    }
}

/// Clause 1's second half: the failure of a run the server answered not once, while it has
/// gaps for other reasons than its deadline (unreachable, refusing connections, every token
/// request failing, stalled from the first byte). A run whose deadline passed before it got
/// an answer stays partial: its gaps say why.
pub fn nothing_answered(answered: u64, gaps: &[PartialType]) -> Option<String> {
    let first = gaps
        .iter()
        .find(|g| g.reason != MissingReason::DeadlineReached)?;
    (answered == 0).then(|| {
        format!(
            "the server answered none of the run's requests: nothing was read ({} gap(s), the \
             first: {} of patient {}: {})",
            gaps.len(),
            first.resource_type,
            first.patient_id,
            first.detail
        )
    })
}

/// What a type whose every search was refused is (clause 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not offered by the server: reported, not a gap.
    NotOffered,
    /// Offered (listed, or returned before) and refused: a gap.
    Gap(MissingReason),
}

pub fn refused_type(listed_by_server: bool, returned_before: bool) -> Refusal {
    if listed_by_server || returned_before {
        Refusal::Gap(MissingReason::NotSupported)
    } else {
        Refusal::NotOffered
    }
}

/// One issue of an OperationOutcome: (severity, code).
pub type Issue<'a> = (Option<&'a str>, Option<&'a str>);

/// What an OperationOutcome found in a 200 page, or in a refusal, means (clauses 2 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeMeaning {
    /// Informational or a warning: noted.
    Note,
    /// Data was left out: a gap with this reason.
    Gap(MissingReason),
}

pub fn outcome_meaning<'a>(issues: impl IntoIterator<Item = Issue<'a>>) -> OutcomeMeaning {
    let mut meaning = OutcomeMeaning::Note;
    for (severity, code) in issues {
        if code.is_some_and(|c| c.eq_ignore_ascii_case("suppressed")) {
            return OutcomeMeaning::Gap(MissingReason::AuthorizationSuppressed);
        }
        if severity
            .is_some_and(|s| s.eq_ignore_ascii_case("error") || s.eq_ignore_ascii_case("fatal"))
        {
            meaning = OutcomeMeaning::Gap(MissingReason::ErrorOutcome);
        }
    }
    meaning
}

/// Clause 2, the empty record: a first sync of a patient that brought no Patient resource
/// (or nothing at all) is a gap.
pub fn empty_record(first_sync: bool, got_patient: bool) -> Option<MissingReason> {
    (first_sync && !got_patient).then_some(MissingReason::EmptyRecord)
}

/// Clause 5: a type may tombstone what it no longer returned only when it was read
/// completely, fresh (not resumed), and nothing about it is a gap.
pub fn may_tombstone(read_completely: bool, resumed: bool, has_gap: bool) -> bool {
    read_completely && !resumed && !has_gap
}

/// What one Bulk Data file read tells (clause 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BulkFileRead {
    /// The body was received to its end (no transport error, no 4xx/5xx).
    pub read_to_end: bool,
    /// The last line had no newline and was not a whole resource.
    pub ended_mid_line: bool,
    /// Lines that were not resources (not JSON, no type or id), stored flagged.
    pub malformed_lines: u64,
    /// Resources the manifest said the file holds, when it said.
    pub declared: Option<u64>,
    /// Resources read whole.
    pub resources: u64,
}

/// Clause 6: the gap a Bulk Data file leaves, if any.
pub fn bulk_file_gap(read: &BulkFileRead) -> Option<MissingReason> {
    if !read.read_to_end {
        Some(MissingReason::FailedAfterRetries)
    } else if read.ended_mid_line
        || read.malformed_lines > 0
        || read.declared.is_some_and(|d| read.resources < d)
    {
        Some(MissingReason::Incomplete)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(reason: MissingReason) -> PartialType {
        PartialType {
            patient_id: "p".into(),
            resource_type: "Observation".into(),
            reason,
            detail: "GET Observation?patient=p".into(),
        }
    }

    #[test]
    fn clause_1_a_run_the_server_never_answered_fails() {
        let gaps = [gap(MissingReason::FailedAfterRetries)];
        let failure = nothing_answered(0, &gaps).unwrap();
        assert!(failure.contains("answered none"), "{failure}");
        assert!(failure.contains("GET Observation?patient=p"), "{failure}");
        assert_eq!(run_outcome(Some(&failure), &gaps), RunOutcome::Failed);
        // one answer is enough for the gaps to be a partial record, and no gap no failure
        assert_eq!(nothing_answered(1, &gaps), None);
        assert_eq!(nothing_answered(0, &[]), None);
        let late = [gap(MissingReason::DeadlineReached)];
        assert_eq!(nothing_answered(0, &late), None, "the deadline says why");
    }

    #[test]
    fn clause_1_and_2_the_run_outcome() {
        let all_gaps = [
            MissingReason::Forbidden,
            MissingReason::NotSupported,
            MissingReason::FailedAfterRetries,
            MissingReason::ScopeNotGranted,
            MissingReason::ReauthorizationNeeded,
            MissingReason::Incomplete,
            MissingReason::AuthorizationSuppressed,
            MissingReason::ErrorOutcome,
            MissingReason::RefusedResponse,
            MissingReason::ReferenceUnresolved,
            MissingReason::AttachmentNotFetched,
            MissingReason::EmptyRecord,
            MissingReason::DeadlineReached,
        ];
        assert_eq!(run_outcome(None, &[]), RunOutcome::Complete);
        for r in all_gaps {
            assert_eq!(run_outcome(None, &[gap(r)]), RunOutcome::Partial, "{r:?}");
            assert_eq!(
                run_outcome(Some("re-authorization needed"), &[gap(r)]),
                RunOutcome::Failed
            );
        }
        assert_eq!(run_outcome(Some("store error"), &[]), RunOutcome::Failed);
    }

    #[test]
    fn clause_3_refused_types() {
        let table = [
            // (listed, returned before, meaning)
            (false, false, Refusal::NotOffered),
            (true, false, Refusal::Gap(MissingReason::NotSupported)),
            (false, true, Refusal::Gap(MissingReason::NotSupported)),
            (true, true, Refusal::Gap(MissingReason::NotSupported)),
        ];
        for (listed, before, want) in table {
            assert_eq!(refused_type(listed, before), want, "{listed} {before}");
        }
    }

    #[test]
    fn clause_2_and_4_outcomes_in_pages() {
        use OutcomeMeaning::*;
        let table: &[(&[Issue<'static>], OutcomeMeaning)] = &[
            (&[(Some("information"), Some("informational"))], Note),
            (&[(Some("warning"), Some("processing"))], Note),
            (&[(None, None)], Note),
            (&[], Note),
            (
                &[(Some("error"), Some("too-costly"))],
                Gap(MissingReason::ErrorOutcome),
            ),
            (
                &[(Some("fatal"), Some("exception"))],
                Gap(MissingReason::ErrorOutcome),
            ),
            (
                &[(Some("ERROR"), Some("processing"))],
                Gap(MissingReason::ErrorOutcome),
            ),
            (
                &[(Some("warning"), Some("suppressed"))],
                Gap(MissingReason::AuthorizationSuppressed),
            ),
            (
                &[
                    (Some("error"), Some("processing")),
                    (Some("information"), Some("suppressed")),
                ],
                Gap(MissingReason::AuthorizationSuppressed),
            ),
        ];
        for (issues, want) in table {
            assert_eq!(outcome_meaning(issues.iter().copied()), *want, "{issues:?}");
        }
    }

    #[test]
    fn clause_2_empty_record() {
        assert_eq!(empty_record(true, false), Some(MissingReason::EmptyRecord));
        assert_eq!(empty_record(true, true), None);
        // a later sync may legitimately bring nothing new (incremental)
        assert_eq!(empty_record(false, false), None);
    }

    #[test]
    fn clause_6_bulk_files() {
        let whole = BulkFileRead {
            read_to_end: true,
            declared: Some(3),
            resources: 3,
            ..Default::default()
        };
        let table = [
            (whole, None),
            (
                BulkFileRead {
                    declared: None,
                    ..whole
                },
                None,
            ),
            // more than announced is not a gap (counts are advisory upward)
            (
                BulkFileRead {
                    resources: 4,
                    ..whole
                },
                None,
            ),
            (
                BulkFileRead {
                    read_to_end: false,
                    ..whole
                },
                Some(MissingReason::FailedAfterRetries),
            ),
            (
                BulkFileRead {
                    ended_mid_line: true,
                    ..whole
                },
                Some(MissingReason::Incomplete),
            ),
            (
                BulkFileRead {
                    malformed_lines: 1,
                    ..whole
                },
                Some(MissingReason::Incomplete),
            ),
            (
                BulkFileRead {
                    resources: 2,
                    ..whole
                },
                Some(MissingReason::Incomplete),
            ),
        ];
        for (read, want) in table {
            assert_eq!(bulk_file_gap(&read), want, "{read:?}");
        }
    }

    #[test]
    fn clause_5_only_complete_fresh_types_tombstone() {
        assert!(may_tombstone(true, false, false));
        assert!(!may_tombstone(false, false, false));
        assert!(!may_tombstone(true, true, false));
        assert!(!may_tombstone(true, false, true));
    }
}
