//! The one environment every program cutover starts begins with: tasks, health checks, hooks and
//! builds. Only the variables a program needs to find its tools and speak the user's language
//! pass from `cutover up` to its children; everything else (API tokens, webhook secrets, cloud
//! credentials) is withheld, so a child can neither print nor leak it.

/// Variables of `cutover up`'s own environment that every child inherits.
pub const HOST_VARIABLES: &[&str] =
    &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];

/// `PATH` for a child when `cutover up` has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// [`HOST_VARIABLES`] and `also` (e.g. `DOCKER_HOST` for a build) from this process's
/// environment, with `PATH` always set.
pub fn host_env(also: &[&str]) -> Vec<(String, String)> {
    host_env_from(also, |name| std::env::var(name).ok())
}

/// [`host_env`] over any lookup, so the choice is testable without touching the process.
pub fn host_env_from(
    also: &[&str],
    lookup: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = HOST_VARIABLES
        .iter()
        .chain(also)
        .filter_map(|name| Some((name.to_string(), lookup(name)?)))
        .collect();
    if !env.iter().any(|(name, _)| name == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_variables_pass_and_path_is_always_set() {
        let outside = |name: &str| match name {
            "HOME" => Some("/home/u".to_string()),
            "DOCKER_HOST" => Some("unix:///d.sock".to_string()),
            "CUTOVER_TOKEN" | "WEB_HOOK_SECRET" => Some("s3cr3t".to_string()),
            _ => None,
        };
        assert_eq!(
            host_env_from(&["DOCKER_HOST"], outside),
            vec![
                ("HOME".to_string(), "/home/u".to_string()),
                ("DOCKER_HOST".to_string(), "unix:///d.sock".to_string()),
                ("PATH".to_string(), DEFAULT_PATH.to_string()),
            ]
        );
        assert_eq!(host_env_from(&[], outside).len(), 2, "no secret passes");
    }
}
