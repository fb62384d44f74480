//! `weft:plugin/clock`: host time and time-zone conversion.

use chrono::{Datelike, LocalResult, NaiveDate, TimeZone, Timelike};
use chrono_tz::Tz;

use super::{invalid, weft};
use crate::runtime::bindings::types::CapabilityError;
use crate::runtime::host::HostState;
use weft::clock::LocalTime;

fn tz(name: &str) -> Result<Tz, CapabilityError> {
    name.parse::<Tz>()
        .map_err(|_| invalid(format!("unknown time zone `{name}`")))
}

/// Converts `ts` (Unix ms) to local time in `tz_name`.
pub(crate) fn to_local(ts: i64, tz_name: &str) -> Result<LocalTime, CapabilityError> {
    let zone = tz(tz_name)?;
    let dt = match zone.timestamp_millis_opt(ts) {
        LocalResult::Single(d) => d,
        _ => return Err(invalid(format!("timestamp {ts} is out of range"))),
    };
    Ok(LocalTime {
        year: dt.year(),
        month: dt.month() as u8,
        day: dt.day() as u8,
        hour: dt.hour() as u8,
        minute: dt.minute() as u8,
        second: dt.second() as u8,
        weekday: dt.weekday().num_days_from_sunday() as u8,
    })
}

/// Converts a local time in `tz_name` to Unix ms; a skipped time resolves forward.
pub(crate) fn from_local(l: &LocalTime, tz_name: &str) -> Result<i64, CapabilityError> {
    let zone = tz(tz_name)?;
    let naive = NaiveDate::from_ymd_opt(l.year, l.month.into(), l.day.into())
        .and_then(|d| d.and_hms_opt(l.hour.into(), l.minute.into(), l.second.into()))
        .ok_or_else(|| invalid("local time is not a valid calendar date and time"))?;
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(d) => Ok(d.timestamp_millis()),
        LocalResult::Ambiguous(first, _) => Ok(first.timestamp_millis()),
        LocalResult::None => {
            // In a DST gap: step forward minute by minute to the first valid instant.
            let mut probe = naive;
            for _ in 0..180 {
                probe += chrono::Duration::minutes(1);
                if let LocalResult::Single(d) | LocalResult::Ambiguous(d, _) =
                    zone.from_local_datetime(&probe)
                {
                    return Ok(d.timestamp_millis());
                }
            }
            Err(invalid("local time cannot be resolved in this time zone"))
        }
    }
}

impl weft::clock::Host for HostState {
    fn now(&mut self) -> wasmtime::Result<i64> {
        self.enter()?;
        Ok(self.services.clock.now_ms())
    }

    fn to_local(
        &mut self,
        ts: i64,
        tz: String,
    ) -> wasmtime::Result<Result<LocalTime, CapabilityError>> {
        self.enter()?;
        Ok(to_local(ts, &tz))
    }

    fn from_local(
        &mut self,
        local: LocalTime,
        tz: String,
    ) -> wasmtime::Result<Result<i64, CapabilityError>> {
        self.enter()?;
        Ok(from_local(&local, &tz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_ho_chi_minh_local_time() {
        // 2026-11-22T02:00:00Z is 09:00 in Asia/Ho_Chi_Minh (UTC+7), a Sunday.
        let l = to_local(1_795_312_800_000, "Asia/Ho_Chi_Minh").unwrap();
        assert_eq!(
            (l.year, l.month, l.day, l.hour, l.minute),
            (2026, 11, 22, 9, 0)
        );
        assert_eq!(l.weekday, 0);
        assert_eq!(
            from_local(&l, "Asia/Ho_Chi_Minh").unwrap(),
            1_795_312_800_000
        );
    }

    #[test]
    fn rejects_unknown_time_zone_by_name() {
        let e = to_local(0, "Mars/Olympus").unwrap_err();
        assert!(matches!(e, CapabilityError::Invalid(m) if m.contains("Mars/Olympus")));
    }
}
