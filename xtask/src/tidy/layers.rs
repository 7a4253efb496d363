//! Who may know what: the data plane knows nothing about deployments (a shift, a test-listener
//! switch and a rollback are all just a new `RouteTable`), and the control plane's HTTP handlers
//! read the store but never write it (every change is a message to the engine loop).

use syn::visit::{self, Visit};

use super::{Error, Finding, Package, Source};

/// The data plane.
pub const DATA_PLANE: &str = "proxy";

/// Crates that know about deployments, files or the control plane's state.
const DEPLOYMENT_CRATES: &[&str] =
    &["rollout", "pipeline", "alarms", "spec", "store", "runtime", "control", "ci", "build"];

/// The control plane's HTTP handlers.
pub const HTTP_HANDLERS: &str = "crates/control/src/http.rs";

/// The data plane's dependencies on crates that know about deployments.
pub fn check_data_plane(package: &Package) -> Vec<Finding> {
    package
        .dependencies
        .iter()
        .filter(|d| DEPLOYMENT_CRATES.contains(&d.as_str()))
        .map(|d| Finding {
            file: package.dir.join("Cargo.toml"),
            line: 1,
            message: format!(
                "the data plane (`{}`) may not depend on `{d}`: it knows nothing about \
                 deployments, only route tables (`routes`); let the control plane turn what \
                 `{d}` knows into a table",
                package.name
            ),
        })
        .collect()
}

/// Writes in the HTTP handlers: calls of `.transaction(…)`, the store's only way to write.
pub fn check_http_handlers(source: &Source) -> Result<Vec<Finding>, Error> {
    let file = super::parse(source)?;
    let mut calls = TransactionCalls { lines: Vec::new() };
    calls.visit_file(&file);
    Ok(calls
        .lines
        .into_iter()
        .map(|line| Finding {
            file: source.path.clone(),
            line,
            message: "an HTTP handler writes the store; send the change to the engine loop as a \
                      message (`engine::Msg`) instead, so that it is handled in turn with every \
                      other change"
                .to_string(),
        })
        .collect())
}

struct TransactionCalls {
    lines: Vec<usize>,
}

impl<'ast> Visit<'ast> for TransactionCalls {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !super::is_test_only(super::purity::item_attrs(item)) {
            visit::visit_item(self, item);
        }
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        if call.method == "transaction" {
            self.lines.push(call.method.span().start().line);
        }
        visit::visit_expr_method_call(self, call);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn the_data_plane_may_not_depend_on_a_crate_that_knows_deployments() {
        let package = Package {
            name: "proxy".into(),
            dir: PathBuf::from("crates/proxy"),
            dependencies: vec!["routes".into(), "tokio".into(), "rollout".into()],
        };
        let found: Vec<String> = check_data_plane(&package).iter().map(|f| f.to_string()).collect();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with(
            "crates/proxy/Cargo.toml:1: the data plane (`proxy`) may not depend on `rollout`"
        ));
    }

    #[test]
    fn an_http_handler_that_writes_the_store_is_found() {
        let source = Source {
            path: PathBuf::from(HTTP_HANDLERS),
            text: "async fn read(state: State) { state.store.read(|tx| tx.get()); }\n\
                   async fn write(state: State) {\n    state.store.transaction(|tx| tx.put());\n}\n\
                   #[cfg(test)]\nmod tests { fn setup(s: Store) { s.transaction(|tx| tx.put()); } }\n"
                .into(),
        };
        let found: Vec<String> =
            check_http_handlers(&source).unwrap().iter().map(|f| f.to_string()).collect();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("crates/control/src/http.rs:3: an HTTP handler writes the store"),
            "{found:#?}"
        );
    }
}
