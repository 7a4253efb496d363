//! Which of the control plane's types are stored as versioned documents (`store::Document`), under
//! which kind, at which version.
//!
//! Changing the serde shape of one of these types means bumping its version here and writing the
//! upgrade step from the previous one, with the old JSON checked in under `documents/v<N>/` and
//! loaded by the tests below: a deployment group or a service written by the cutover before an
//! upgrade must read the same after it.

use serde::{Deserialize, Serialize};
use store::Document;

use crate::declared::*;
use crate::monitor::{AlarmDoc, MetricFilterDoc};

macro_rules! documents {
    ($($ty:ty => $kind:expr, version $version:literal;)*) => {
        $(impl Document for $ty {
            const KIND: &'static str = $kind;
            const VERSION: u32 = $version;
        })*
    };
}

documents! {
    LoadBalancerDoc => KIND_LOAD_BALANCER, version 1;
    TargetGroupDoc => KIND_TARGET_GROUP, version 1;
    ServiceDoc => KIND_SERVICE, version 1;
    DeploymentConfigDoc => KIND_DEPLOYMENT_CONFIG, version 1;
    DeploymentGroupDoc => KIND_DEPLOYMENT_GROUP, version 1;
    HookDoc => KIND_HOOK, version 1;
    AlarmDoc => KIND_ALARM, version 1;
    MetricFilterDoc => KIND_METRIC_FILTER, version 1;
    RoleDoc => KIND_ROLE, version 1;
    GroupDoc => KIND_OIDC_GROUP, version 1;
    GroupState => KIND_GROUP_STATE, version 1;
    AlarmStateDoc => KIND_ALARM_STATE, version 1;
}

/// An alarm instance's state and history as stored: `alarms::Alarm` is another crate's type, so
/// it is stored through this wrapper, which reads and writes the same JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlarmStateDoc(pub alarms::Alarm);

impl std::ops::Deref for AlarmStateDoc {
    type Target = alarms::Alarm;
    fn deref(&self) -> &alarms::Alarm {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use store::{DocumentRow, DocumentStore, Store};

    use super::*;

    /// Documents as the cutover before versioned documents wrote them (version 0), taken from the
    /// database of a real `cutover up` after `apply` of the quickstart with alarms and a metric
    /// filter: `(kind, name, body)`.
    const VERSION_0: &[(&str, &str, &str)] = &[
        (
            "alarm",
            "application-error-alarm",
            include_str!("documents/v0/alarm.application-error-alarm.json"),
        ),
        ("alarm", "http-error-alarm", include_str!("documents/v0/alarm.http-error-alarm.json")),
        (
            "alarm_state",
            "application-error-alarm",
            include_str!("documents/v0/alarm_state.application-error-alarm.json"),
        ),
        (
            "deployment_config",
            "quick-canary",
            include_str!("documents/v0/deployment_config.quick-canary.json"),
        ),
        (
            "deployment_group",
            "web/web-prod",
            include_str!("documents/v0/deployment_group.web.web-prod.json"),
        ),
        ("group_state", "web/web-prod", include_str!("documents/v0/group_state.web.web-prod.json")),
        ("hook", "smoke-test", include_str!("documents/v0/hook.smoke-test.json")),
        ("load_balancer", "web", include_str!("documents/v0/load_balancer.web.json")),
        (
            "metric_filter",
            "application-log-errors",
            include_str!("documents/v0/metric_filter.application-log-errors.json"),
        ),
        ("service", "web", include_str!("documents/v0/service.web.json")),
        ("target_group", "web-blue", include_str!("documents/v0/target_group.web-blue.json")),
        ("target_group", "web-green", include_str!("documents/v0/target_group.web-green.json")),
    ];

    fn store_with(version: i64, kind: &str) -> Store {
        let store = Store::open_in_memory().unwrap();
        store
            .transaction(|tx| {
                for (k, name, body) in VERSION_0.iter().filter(|(k, ..)| *k == kind) {
                    let row = DocumentRow {
                        name: name.to_string(),
                        version,
                        body: body.trim_end().to_string(),
                    };
                    tx.put_document_row(k, &row, 1)?;
                }
                Ok(())
            })
            .unwrap();
        store
    }

    /// Every version-0 document of `T`'s kind loads, and writes back as the same JSON: nothing
    /// of what the older cutover stored is lost or changed on the way.
    fn version_0_loads<T: Document>() {
        let store = store_with(0, T::KIND);
        let fixtures: Vec<_> = VERSION_0.iter().filter(|(k, ..)| *k == T::KIND).collect();
        assert!(!fixtures.is_empty(), "no version-0 fixture of {}", T::KIND);
        let loaded = store.read(|tx| tx.doc_list::<T>()).unwrap();
        assert_eq!(loaded.len(), fixtures.len());
        for ((name, doc), (_, fixture_name, body)) in loaded.iter().zip(fixtures) {
            assert_eq!(name, fixture_name);
            assert_eq!(serde_json::to_string(doc).unwrap(), body.trim_end(), "{} {name}", T::KIND);
        }
    }

    /// A document of `T`'s kind from a newer cutover is refused, by `doc_get` and `doc_list`.
    fn newer_version_is_refused<T: Document + std::fmt::Debug>() {
        let newer = i64::from(T::VERSION) + 1;
        let store = store_with(newer, T::KIND);
        let (_, name, _) = VERSION_0.iter().find(|(k, ..)| *k == T::KIND).unwrap();
        let expected = format!(
            "{} {name} was written by a newer cutover (document version {newer}, this build reads up to {}); upgrade cutover, or run the version that wrote it",
            T::KIND,
            T::VERSION
        );
        let err = store.read(|tx| tx.doc_get::<T>(name)).unwrap_err();
        assert_eq!(err.to_string(), expected);
        assert!(store.read(|tx| tx.doc_list::<T>()).is_err());
    }

    macro_rules! per_kind {
        ($($test:ident: $ty:ty;)*) => {
            $(mod $test {
                use super::*;

                #[test]
                fn loads_what_the_cutover_before_versions_wrote() {
                    version_0_loads::<$ty>();
                }

                #[test]
                fn refuses_a_document_from_a_newer_cutover() {
                    newer_version_is_refused::<$ty>();
                }
            })*
        };
    }

    per_kind! {
        load_balancer: LoadBalancerDoc;
        target_group: TargetGroupDoc;
        service: ServiceDoc;
        deployment_config: DeploymentConfigDoc;
        deployment_group: DeploymentGroupDoc;
        hook: HookDoc;
        alarm: AlarmDoc;
        metric_filter: MetricFilterDoc;
        group_state: GroupState;
        alarm_state: AlarmStateDoc;
    }

    #[test]
    fn state_docs_read_through_the_versioned_store() {
        let store = store_with(i64::from(ServiceDoc::VERSION) + 1, KIND_SERVICE);
        let err =
            store.read(|tx| crate::state::doc::<ServiceDoc>(tx, KIND_SERVICE, "web")).unwrap_err();
        assert!(
            matches!(err, store::Error::Document(store::DocumentError::TooNew { .. })),
            "{err}"
        );
        let err = store.read(|tx| crate::state::docs::<ServiceDoc>(tx, KIND_SERVICE)).unwrap_err();
        assert!(
            matches!(err, store::Error::Document(store::DocumentError::TooNew { .. })),
            "{err}"
        );
    }
}
