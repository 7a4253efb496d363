//! Serde adapters for the `model` types inside the reconciler's state (`model` has no serde: the
//! crates at process boundaries convert). Enums travel by their ECS names, so a persisted state
//! reads like the API; `Timestamp` has its own serde (milliseconds).

use model::{DesiredStatus, RuntimeKind, TaskHealth, TaskSetStatus, TaskStatus};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A model type with a serde-friendly stand-in.
pub(crate) trait Wire: Sized {
    type Repr: Serialize + DeserializeOwned;
    fn to_repr(&self) -> Self::Repr;
    fn from_repr(repr: Self::Repr) -> Result<Self, String>;
}

macro_rules! wire_by_name {
    ($ty:ty, $what:literal) => {
        impl Wire for $ty {
            type Repr = String;
            fn to_repr(&self) -> String {
                self.as_str().to_string()
            }
            fn from_repr(repr: String) -> Result<Self, String> {
                <$ty>::parse(&repr).ok_or_else(|| format!("unknown {} `{repr}`", $what))
            }
        }
    };
}

wire_by_name!(TaskStatus, "task status");
wire_by_name!(DesiredStatus, "desired status");
wire_by_name!(TaskSetStatus, "task set status");
wire_by_name!(TaskHealth, "task health");
wire_by_name!(RuntimeKind, "runtime");
wire_by_name!(model::LifecycleEvent, "lifecycle event");

/// `#[serde(with = "wire::one")]`.
pub(crate) mod one {
    use super::*;

    pub(crate) fn serialize<T: Wire, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        value.to_repr().serialize(s)
    }

    pub(crate) fn deserialize<'de, T: Wire, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::from_repr(T::Repr::deserialize(d)?).map_err(D::Error::custom)
    }
}
