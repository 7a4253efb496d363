//! Serde adapters for `model::Timestamp`, which has no serde of its own: milliseconds since the
//! epoch.

use model::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `#[serde(with = "crate::wire::ts")]`
pub(crate) mod ts {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(ts.as_millis())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        u64::deserialize(d).map(Timestamp::from_millis)
    }
}

/// `#[serde(with = "crate::wire::opt_ts")]`
pub(crate) mod opt_ts {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        ts: &Option<Timestamp>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        ts.map(Timestamp::as_millis).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Timestamp>, D::Error> {
        Option::<u64>::deserialize(d).map(|it| it.map(Timestamp::from_millis))
    }
}
