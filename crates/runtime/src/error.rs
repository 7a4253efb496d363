//! Errors of the runtimes; each message says what to fix.

use std::path::PathBuf;

/// Why a runtime operation failed. Messages are meant for the user of `cutover` and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("task {task_id}: invalid task: {detail}")]
    InvalidSpec { task_id: String, detail: String },

    #[error(
        "image directory {image} of container {container} does not exist; build it or fix `image` in the task definition"
    )]
    ImageNotFound { container: String, image: String },

    #[error(
        "image `{image}` of container {container} is not an absolute directory path; the process runtime runs programs from a local directory, so `image` must name one (relative paths are resolved by the control plane)"
    )]
    ImageNotADirectory { container: String, image: String },

    #[error("container {container}: {detail}; fix `entryPoint`/`command` in the task definition")]
    ProgramNotFound { container: String, detail: String },

    #[error(
        "working directory {path} of container {container} does not exist; create it in the image or fix `workingDirectory` in the task definition"
    )]
    WorkingDirectoryNotFound { container: String, path: PathBuf },

    #[error("could not start container {container} ({program}): {source}")]
    Spawn {
        container: String,
        program: String,
        #[source]
        source: std::io::Error,
    },

    #[error("task {task_id} did not start: {reason}")]
    StartFailed { task_id: String, reason: String },

    #[error(
        "no free address left in {range} for task {task_id}; stop and remove finished tasks, or configure a larger range"
    )]
    NoFreeAddress { task_id: String, range: String },

    #[error("a task with id {task_id} already exists; task ids must be unique")]
    AlreadyExists { task_id: String },

    #[error(
        "task {task_id}: its record cannot be read ({detail}); remove the task's directory under the state directory once its processes are gone"
    )]
    BadRecord { task_id: String, detail: String },

    #[error("task {task_id} is still running; stop it before removing it")]
    StillRunning { task_id: String },

    #[error("{what} {path}: {source}; check that the state directory is writable and not full")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "cannot reach the Docker Engine at {host}: {detail}; start dockerd or set DOCKER_HOST to its socket (e.g. unix:///var/run/docker.sock or tcp://host:2375)"
    )]
    EngineUnreachable { host: String, detail: String },

    #[error("Docker Engine: {what}: {message}")]
    Engine { what: String, message: String },

    #[error(
        "the Docker Engine at {host} is not a Swarm manager (swarm: {state}); the swarm runtime needs one: run `docker swarm init` (or `scripts/cluster up` for a local test cluster) and restart `cutover up`, or set DOCKER_HOST to a manager"
    )]
    NotSwarmManager { host: String, state: String },

    #[error(
        "image {image} of container {container} cannot be resolved to a registry digest ({message}); every Swarm node pulls the image, so push it to a registry the nodes reach and name it there (REGISTRY/NAME:TAG or REGISTRY/NAME@sha256:…)"
    )]
    ImageNotInRegistry { container: String, image: String, message: String },

    #[error(
        "cannot publish the image of the swarm nodes' load balancer to registry {registry}: {message}; check that the registry answers this machine's Docker Engine (and is trusted by every node's), or build the image yourself and pass it with `cutover up --swarm-lb-image`"
    )]
    DataPlaneImage { registry: String, message: String },

    #[error(
        "image {image} of container {container} is not in the local Docker Engine and pulling it failed: {message}; build or push the image, or fix `image` in the task definition"
    )]
    ImagePull { container: String, image: String, message: String },
}

impl RuntimeError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io { what, path: path.into(), source }
    }
}
