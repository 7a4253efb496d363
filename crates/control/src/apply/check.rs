//! Whether the data plane must check the routing table an `apply` leads to before it is stored.
//!
//! Its check exists for what only the data plane can know: that a new listener's address can be
//! bound, and that certificates load (they are read from disk, which may have changed since the
//! table was last checked). Everything else about a table — rules, actions, target groups,
//! targets — is a pure function of the table, which the control plane runs itself: a table that
//! changes only those is refused with the data plane's own message, or stored and pushed without
//! a round trip that, at 10,000 targets, sent and parsed the whole table once more.

use std::collections::BTreeSet;

use routes::RouteTable;

/// Whether the data plane must check `candidate` first, given the table it serves (`None`
/// when it serves none the control plane knows of) and the load balancers the swarm's nodes
/// serve (`cluster`). It must for a listener on an address not served yet, for any listener
/// with TLS, and whenever nodes serve load balancers (each node's own listeners are its own to
/// check: the engine does not follow what every node serves).
pub(super) fn needs_data_plane(
    served: Option<&RouteTable>,
    candidate: &RouteTable,
    cluster: &BTreeSet<String>,
) -> bool {
    let Some(served) = served else { return true };
    if !cluster.is_empty() {
        return true;
    }
    let served_binds: BTreeSet<_> = served.listeners.values().map(|l| l.bind).collect();
    candidate.listeners.values().any(|l| l.tls.is_some() || !served_binds.contains(&l.bind))
}

/// Refuses `candidate` as the data plane's `POST /v1/routes/validate` would for what is
/// checked without touching the machine, with the same message.
pub(super) fn validate(candidate: &RouteTable) -> Result<(), String> {
    proxy::validate_table(candidate)
        .map_err(|invalid| format!("{}: {invalid}", reqwest::StatusCode::BAD_REQUEST))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(listeners: &[(&str, &str, bool)]) -> RouteTable {
        let mut json = serde_json::json!({ "version": 0, "listeners": {}, "target_groups": {} });
        for (name, bind, tls) in listeners {
            let mut listener = serde_json::json!({
                "bind": bind,
                "action": { "type": "fixed_response", "status_code": 404 },
            });
            if *tls {
                listener["tls"] =
                    serde_json::json!({ "certificate_file": "c.pem", "key_file": "k.pem" });
            }
            json["listeners"][name] = listener;
        }
        serde_json::from_value(json).unwrap()
    }

    fn no_cluster() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn a_change_of_rules_or_targets_only_needs_no_check_by_the_data_plane() {
        let served = table(&[("web/http", "127.0.0.1:8080", false)]);
        let mut candidate = served.clone();
        candidate.listeners.get_mut("web/http").unwrap().action = serde_json::from_value(
            serde_json::json!({ "type": "fixed_response", "status_code": 503 }),
        )
        .unwrap();
        assert!(!needs_data_plane(Some(&served), &candidate, &no_cluster()));
        // A listener renamed keeps its address: the data plane binds nothing new.
        let renamed = table(&[("web/plain", "127.0.0.1:8080", false)]);
        assert!(!needs_data_plane(Some(&served), &renamed, &no_cluster()));
    }

    #[test]
    fn a_listener_on_an_address_not_served_yet_needs_the_data_plane() {
        let served = table(&[("web/http", "127.0.0.1:8080", false)]);
        let added =
            table(&[("web/http", "127.0.0.1:8080", false), ("web/test", "127.0.0.1:8081", false)]);
        assert!(needs_data_plane(Some(&served), &added, &no_cluster()));
        let moved = table(&[("web/http", "127.0.0.1:9090", false)]);
        assert!(needs_data_plane(Some(&served), &moved, &no_cluster()));
        assert!(needs_data_plane(None, &served, &no_cluster()), "nothing known to be served");
    }

    #[test]
    fn a_tls_listener_needs_the_data_plane_as_its_certificates_may_have_changed_on_disk() {
        let served = table(&[("web/https", "127.0.0.1:8443", true)]);
        assert!(needs_data_plane(Some(&served), &served.clone(), &no_cluster()));
    }

    #[test]
    fn a_table_with_load_balancers_on_the_swarm_nodes_needs_the_data_plane() {
        let served = table(&[("web/http", "127.0.0.1:8080", false)]);
        let cluster = BTreeSet::from(["edge".to_string()]);
        assert!(needs_data_plane(Some(&served), &served.clone(), &cluster));
    }

    #[test]
    fn a_table_the_data_plane_would_refuse_is_refused_with_its_message() {
        let mut candidate = table(&[("web/http", "127.0.0.1:8080", false)]);
        candidate.listeners.get_mut("web/http").unwrap().action = serde_json::from_value(
            serde_json::json!({ "type": "forward", "target_groups": [{ "name": "gone", "weight": 1 }] }),
        )
        .unwrap();
        assert_eq!(
            validate(&candidate).unwrap_err(),
            "400 Bad Request: listener `web/http`: forward references target group `gone`, which is not in target_groups"
        );
    }
}
