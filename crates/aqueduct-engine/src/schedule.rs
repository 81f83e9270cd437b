//! Schedules: each connection's `schedule` ("every 6h", "daily 02:00", UTC) fires slots. A
//! slot fires once across every process sharing the store (compare-and-set on the last slot,
//! with its refresh request queued in the same transaction), and the slots missed while
//! nothing ran collapse into one: after a day of downtime an "every 6h" connection syncs once,
//! not four times.

use aqueduct_config::Schedule;
use aqueduct_core::{ConnectionRef, RefreshRequest};
use chrono::{DateTime, Duration as ChronoDuration, NaiveTime, Utc};

use crate::{Engine, EngineError};

/// The slot to fire now, if any: the latest slot at or before `now` that is later than
/// `last` (the slot last fired). A schedule that never fired fires at once.
pub fn due_slot(
    schedule: &Schedule,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match schedule {
        Schedule::Every(every) => {
            let Some(last) = last else {
                return Some(now);
            };
            let every = ChronoDuration::from_std(*every).ok()?;
            if every <= ChronoDuration::zero() || last + every > now {
                return None;
            }
            // the latest slot on the grid last + k·every that is not in the future
            let elapsed = (now - last).num_milliseconds();
            let k = elapsed / every.num_milliseconds().max(1);
            last.checked_add_signed(ChronoDuration::milliseconds(
                every.num_milliseconds().saturating_mul(k),
            ))
        }
        Schedule::DailyAt { hour, minute } => {
            let at = NaiveTime::from_hms_opt(u32::from(*hour), u32::from(*minute), 0)?;
            let today = now.date_naive().and_time(at).and_utc();
            let latest = if today <= now {
                today
            } else {
                today - ChronoDuration::days(1)
            };
            match last {
                Some(l) if l >= latest => None,
                _ => Some(latest),
            }
        }
    }
}

impl Engine {
    /// Fires every configured schedule that is due, queueing one whole-connection refresh
    /// request per slot. Returns the ids of the requests this process queued.
    pub async fn fire_due_schedules(&self) -> Result<Vec<i64>, EngineError> {
        let mut fired = Vec::new();
        for (org, o) in &self.config.organizations {
            for (name, c) in &o.connections {
                let Some(schedule) = &c.schedule else {
                    continue;
                };
                let conn = ConnectionRef::new(org.clone(), name.clone());
                let last = self.store.schedule_last_due(&conn).await?;
                let Some(due) = due_slot(schedule, last, Utc::now()) else {
                    continue;
                };
                let request = RefreshRequest {
                    patient_key: None,
                    connection: Some(name.clone()),
                    reason: format!("schedule:{schedule}"),
                    source: format!("schedule:{}", due.to_rfc3339()),
                };
                if let Some(id) = self.store.fire_schedule(&conn, last, due, &request).await? {
                    tracing::info!(connection = %conn, request = id, "schedule fired");
                    fired.push(id);
                }
            }
        }
        Ok(fired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }

    #[test]
    fn every_fires_at_once_then_on_its_grid_and_missed_slots_collapse() {
        let six = Schedule::Every(std::time::Duration::from_secs(6 * 3600));
        let now = t("2026-12-01T10:00:00Z");
        assert_eq!(due_slot(&six, None, now), Some(now), "never fired: now");
        assert_eq!(due_slot(&six, Some(t("2026-12-01T06:00:00Z")), now), None);
        assert_eq!(
            due_slot(&six, Some(t("2026-12-01T04:00:00Z")), now),
            Some(t("2026-12-01T10:00:00Z"))
        );
        // a day and a half of downtime: one slot, the latest
        assert_eq!(
            due_slot(&six, Some(t("2026-11-29T23:00:00Z")), now),
            Some(t("2026-12-01T05:00:00Z"))
        );
    }

    #[test]
    fn daily_fires_the_latest_passed_time_once() {
        let two = Schedule::DailyAt { hour: 2, minute: 0 };
        let now = t("2026-12-01T10:00:00Z");
        assert_eq!(due_slot(&two, None, now), Some(t("2026-12-01T02:00:00Z")));
        assert_eq!(due_slot(&two, Some(t("2026-12-01T02:00:00Z")), now), None);
        assert_eq!(
            due_slot(&two, Some(t("2026-11-27T02:00:00Z")), now),
            Some(t("2026-12-01T02:00:00Z")),
            "four missed days: once"
        );
        let early = t("2026-12-01T01:00:00Z");
        assert_eq!(
            due_slot(&two, Some(t("2026-11-30T02:00:00Z")), early),
            None,
            "today's 02:00 has not come yet"
        );
    }
}
