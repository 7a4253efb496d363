//! ECS's statuses of tasks and task sets, the health of a task, and the kind of runtime a service
//! runs on. Typed here and converted to their ECS names only where they leave the process (the
//! store's rows, the HTTP API).

use std::fmt;

/// Declares a fieldless enum with its ECS names, `as_str`, `parse` and `Display`.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|it| it.as_str() == text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// A task's `lastStatus`, with ECS's names.
    TaskStatus {
        /// Asked of its runtime; not running yet.
        Provisioning => "PROVISIONING",
        Running => "RUNNING",
        /// Out of its target group, draining; stopped when the drain is over.
        Deactivating => "DEACTIVATING",
        /// Being stopped by its runtime.
        Stopping => "STOPPING",
        Stopped => "STOPPED",
    }
);

named_enum!(
    /// A task's `desiredStatus`.
    DesiredStatus {
        Running => "RUNNING",
        Stopped => "STOPPED",
    }
);

named_enum!(
    /// A task set's status, as on ECS.
    TaskSetStatus {
        /// Serves production when no deployment is active.
        Primary => "PRIMARY",
        /// A deployment's green, not yet primary.
        Active => "ACTIVE",
        /// Going away: desired count 0, deleted once its tasks stopped.
        Draining => "DRAINING",
    }
);

named_enum!(
    /// A task's health, as ECS reports it.
    TaskHealth {
        Healthy => "HEALTHY",
        Unhealthy => "UNHEALTHY",
        Unknown => "UNKNOWN",
    }
);

named_enum!(
    /// Where a service's tasks run.
    RuntimeKind {
        /// Each task a local process (the default).
        Process => "process",
        Docker => "docker",
        /// Each task a Docker Swarm service of one replica, on a multi-node swarm.
        Swarm => "swarm",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_parses_back_from_its_name_and_unknown_names_are_refused() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(status.as_str()), Some(*status));
        }
        for status in TaskSetStatus::ALL {
            assert_eq!(TaskSetStatus::parse(status.as_str()), Some(*status));
        }
        assert_eq!(TaskHealth::parse("HEALTHY"), Some(TaskHealth::Healthy));
        assert_eq!(RuntimeKind::parse("docker"), Some(RuntimeKind::Docker));
        assert_eq!(RuntimeKind::parse("swarm"), Some(RuntimeKind::Swarm));
        assert_eq!(DesiredStatus::parse("running"), None);
        assert_eq!(TaskStatus::parse("DRAINING"), None);
    }
}
