//! Serde adapters for the `model` types inside a `Rollout` snapshot.
//!
//! `model` has no serde but for `Timestamp` ("the crates at process boundaries convert by hand"),
//! and the snapshot the control plane persists after every step is such a boundary. Each model
//! type gets a plain representation (enums by their CodeDeploy names, timestamps as `model` writes
//! them: milliseconds), and the modules below are used as `#[serde(with = "crate::wire::one")]`
//! and friends.

use std::collections::BTreeMap;
use std::time::Duration;

use model::{
    DeploymentStatus, ErrorCode, LifecycleEvent, LifecycleEventStatus, MirrorPhase, Timestamp,
    TrafficRouting,
};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name in a snapshot that this build does not know (written by a newer cutover, or edited).
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown {what} `{name}` in a stored deployment; it was written by another cutover version"
)]
pub(crate) struct UnknownName {
    what: &'static str,
    name: String,
}

/// A model type with a serde-friendly stand-in.
pub(crate) trait Wire: Sized {
    type Repr: Serialize + DeserializeOwned;
    fn to_repr(&self) -> Self::Repr;
    fn from_repr(repr: Self::Repr) -> Result<Self, UnknownName>;
}

/// `Timestamp` has its own serde (milliseconds, in `model`); this lets the snapshot's
/// `#[serde(with = "wire::one")]` fields hold timestamps like the other model types.
impl Wire for Timestamp {
    type Repr = Timestamp;
    fn to_repr(&self) -> Timestamp {
        *self
    }
    fn from_repr(repr: Timestamp) -> Result<Self, UnknownName> {
        Ok(repr)
    }
}

/// Enums travel by the names CodeDeploy uses, so a snapshot reads like the API.
macro_rules! wire_by_name {
    ($ty:ty, $what:literal) => {
        impl Wire for $ty {
            type Repr = String;
            fn to_repr(&self) -> String {
                self.as_str().to_string()
            }
            fn from_repr(repr: String) -> Result<Self, UnknownName> {
                <$ty>::parse(&repr).ok_or(UnknownName { what: $what, name: repr })
            }
        }
    };
}

wire_by_name!(LifecycleEvent, "lifecycle event");
wire_by_name!(LifecycleEventStatus, "lifecycle event status");
wire_by_name!(DeploymentStatus, "deployment status");
wire_by_name!(ErrorCode, "error code");

#[derive(Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum RoutingRepr {
    AllAtOnce,
    Canary { percent: u8, interval: Duration },
    Linear { percent: u8, interval: Duration },
}

impl Wire for TrafficRouting {
    type Repr = RoutingRepr;
    fn to_repr(&self) -> RoutingRepr {
        match *self {
            TrafficRouting::AllAtOnce => RoutingRepr::AllAtOnce,
            TrafficRouting::Canary { percent, interval } => {
                RoutingRepr::Canary { percent, interval }
            }
            TrafficRouting::Linear { percent, interval } => {
                RoutingRepr::Linear { percent, interval }
            }
        }
    }
    fn from_repr(repr: RoutingRepr) -> Result<Self, UnknownName> {
        Ok(match repr {
            RoutingRepr::AllAtOnce => TrafficRouting::AllAtOnce,
            RoutingRepr::Canary { percent, interval } => {
                TrafficRouting::Canary { percent, interval }
            }
            RoutingRepr::Linear { percent, interval } => {
                TrafficRouting::Linear { percent, interval }
            }
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct MirrorRepr {
    percent: u8,
    duration: Duration,
}

impl Wire for MirrorPhase {
    type Repr = MirrorRepr;
    fn to_repr(&self) -> MirrorRepr {
        MirrorRepr { percent: self.percent, duration: self.duration }
    }
    fn from_repr(repr: MirrorRepr) -> Result<Self, UnknownName> {
        Ok(MirrorPhase { percent: repr.percent, duration: repr.duration })
    }
}

/// `Outcome::error`: a code and its message.
impl<A: Wire> Wire for (A, String) {
    type Repr = (A::Repr, String);
    fn to_repr(&self) -> Self::Repr {
        (self.0.to_repr(), self.1.clone())
    }
    fn from_repr(repr: Self::Repr) -> Result<Self, UnknownName> {
        Ok((A::from_repr(repr.0)?, repr.1))
    }
}

/// A field of a `Wire` type.
pub(crate) mod one {
    use super::*;

    pub(crate) fn serialize<T: Wire, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        value.to_repr().serialize(s)
    }

    pub(crate) fn deserialize<'de, T: Wire, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::from_repr(T::Repr::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// An `Option` of a `Wire` type.
pub(crate) mod opt {
    use super::*;

    pub(crate) fn serialize<T: Wire, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        value.as_ref().map(Wire::to_repr).serialize(s)
    }

    pub(crate) fn deserialize<'de, T: Wire, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<T::Repr>::deserialize(d)?.map(T::from_repr).transpose().map_err(D::Error::custom)
    }
}

/// A map keyed by a `Wire` type (the hooks, keyed by lifecycle event).
pub(crate) mod map {
    use super::*;

    pub(crate) fn serialize<K, V, S>(value: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        K: Wire,
        K::Repr: Ord,
        V: Serialize,
        S: Serializer,
    {
        value.iter().map(|(k, v)| (k.to_repr(), v)).collect::<BTreeMap<_, _>>().serialize(s)
    }

    pub(crate) fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Wire + Ord,
        K::Repr: Ord,
        V: DeserializeOwned,
        D: Deserializer<'de>,
    {
        BTreeMap::<K::Repr, V>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| Ok((K::from_repr(k).map_err(D::Error::custom)?, v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Stored {
        #[serde(with = "one")]
        status: DeploymentStatus,
    }

    #[test]
    fn a_name_this_build_does_not_know_is_refused_naming_it() {
        let known = serde_json::from_str::<Stored>(r#"{"status":"Succeeded"}"#).unwrap();
        assert_eq!(known.status, DeploymentStatus::Succeeded);
        let err = serde_json::from_str::<Stored>(r#"{"status":"Hibernating"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown deployment status `Hibernating` in a stored deployment; it was written by another cutover version at line 1 column 24"
        );
    }
}
