//! Timestamp values of sync canaries (`cilium/synced/...`) and the heartbeat
//! (`cilium/.heartbeat`): RFC 3339 text.

use bytes::Bytes;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::CodecError;

/// A time as Go's `time.Now().UTC().Format(time.RFC3339)` writes it: UTC, whole seconds
/// (`2026-01-10T12:00:00Z`). Formatted by hand because it cannot fail that way, unlike
/// `time`'s formatter for years outside 0..=9999.
pub fn encode_timestamp(t: OffsetDateTime) -> Bytes {
    let t = t.to_offset(UtcOffset::UTC);
    Bytes::from(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// Parses an RFC 3339 timestamp (any offset, fractional seconds allowed, as Go accepts).
pub fn decode_timestamp(bytes: &[u8]) -> Result<OffsetDateTime, CodecError> {
    let text = std::str::from_utf8(bytes).map_err(|source| CodecError::Utf8 {
        what: "timestamp",
        source,
    })?;
    OffsetDateTime::parse(text, &Rfc3339).map_err(|source| CodecError::Timestamp {
        what: "RFC 3339",
        value: text.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let t = datetime!(2026-01-10 12:00:00 UTC);
        assert_eq!(encode_timestamp(t), "2026-01-10T12:00:00Z".as_bytes());
        assert_eq!(decode_timestamp(&encode_timestamp(t)).unwrap(), t);
    }

    #[test]
    fn timestamps_are_written_in_utc_whole_seconds() {
        let t = datetime!(2026-01-10 13:00:05.75 +01:00);
        assert_eq!(encode_timestamp(t), "2026-01-10T12:00:05Z".as_bytes());
        assert_eq!(
            decode_timestamp(&encode_timestamp(t)).unwrap(),
            t.replace_millisecond(0).unwrap()
        );
    }

    #[test]
    fn go_timestamps_decode() {
        assert_eq!(
            decode_timestamp(b"2026-01-10T13:00:05.123456789+01:00").unwrap(),
            datetime!(2026-01-10 12:00:05.123456789 UTC)
        );
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        for bad in [
            &b""[..],
            b"yesterday",
            b"2026-01-10",
            b"2026-13-10T00:00:00Z",
        ] {
            assert!(
                matches!(decode_timestamp(bad), Err(CodecError::Timestamp { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            decode_timestamp(b"\xff"),
            Err(CodecError::Utf8 { .. })
        ));
    }
}
