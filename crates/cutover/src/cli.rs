//! Command-line interface: argument definitions and what each command does.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use control::api::*;

use crate::client::Client;
use crate::render;

#[derive(Parser, Debug)]
#[command(
    name = "cutover",
    version,
    about = "Blue/green releases on one machine: CodeDeploy, ECS and an ALB in one program"
)]
pub struct Args {
    /// The control plane's API; by default the one recorded in the data directory, else
    /// http://127.0.0.1:7400.
    #[arg(long, global = true, env = "CUTOVER_API")]
    api: Option<String>,
    /// API token (needed when the API listens beyond loopback).
    #[arg(long, global = true, env = "CUTOVER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Trust the CA certificates in this PEM file for an HTTPS API (as well as the system's).
    #[arg(long, global = true, env = "CUTOVER_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Where cutover keeps its state.
    #[arg(long, global = true, env = "CUTOVER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Output format of read commands.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

// One value per process, parsed once: `up`'s many flags cost nothing worth boxing them for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Start the control plane, the load balancer and the runtimes (foreground; Ctrl-C stops the
    /// control plane only: the load balancer and the tasks keep serving).
    Up {
        /// Address of the HTTP API. Beyond loopback, a token is required.
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: SocketAddr,
        /// Admin address of the load balancer, if one must be started.
        #[arg(long, default_value = "127.0.0.1:7401")]
        lb_admin: SocketAddr,
        /// Worker threads of the load balancer.
        #[arg(long, default_value_t = 2)]
        lb_threads: usize,
        /// Registry credentials for Docker image pulls: a JSON file
        /// `[{"server": …, "username": …, "password": …}]`.
        #[arg(long, env = "CUTOVER_REGISTRY_CREDENTIALS")]
        registry_credentials: Option<PathBuf>,
        /// Serve the API over HTTPS with this PEM certificate chain (with --tls-key).
        #[arg(long, env = "CUTOVER_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, env = "CUTOVER_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Listen beyond loopback over plain HTTP anyway, where tokens cross the network in
        /// clear text (for a TLS-terminating proxy in front of cutover, say).
        #[arg(long)]
        allow_plaintext_beyond_loopback: bool,
        #[command(flatten)]
        oidc: OidcFlags,
        /// The address people open the web console at, when not this API's own: behind a
        /// reverse proxy or a DNS name (`https://cutover.example.com`; http only on loopback).
        /// Single sign-on's redirect URI is then `URL/login/callback`, and the console's cookies
        /// are `Secure` when it is https.
        #[arg(long, env = "CUTOVER_CONSOLE_URL", value_parser = control::access::console_sso::ConsoleUrl::parse)]
        console_url: Option<control::access::console_sso::ConsoleUrl>,
        /// A registry every node of the swarm reaches (HOST:PORT): a `runtime: swarm` service
        /// with a load balancer is served by one on every node (docs/swarm.md), run from an
        /// image cutover makes from its own executable and pushes there, by digest.
        #[arg(long, env = "CUTOVER_SWARM_REGISTRY")]
        swarm_registry: Option<String>,
        /// The image the swarm's nodes run their load balancer from instead (holding
        /// `/cutover`; `cutover swarm-lb-image` makes one), in a registry every node reaches.
        #[arg(long, env = "CUTOVER_SWARM_LB_IMAGE")]
        swarm_lb_image: Option<String>,
        /// The admin port of the load balancer on every node of the swarm, published on each
        /// node's address; it answers only the installation's token.
        #[arg(long, env = "CUTOVER_SWARM_LB_ADMIN_PORT", default_value_t = 7402)]
        swarm_lb_admin_port: u16,
    },
    /// Stop everything `cutover up` started: tasks, load balancer, control plane.
    Down,
    /// Run the load balancer (data plane) alone; `cutover up` starts it for you.
    Lb {
        /// Address of the admin API (routing table, metrics); on loopback unless it has a token.
        #[arg(long)]
        admin: SocketAddr,
        /// A file holding the admin API's token: every admin request must then carry
        /// `Authorization: Bearer <token>`, and the admin API may listen beyond loopback (the
        /// data plane on every node of a Swarm cluster reads it from a Swarm secret).
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Where the routing table is kept, so a restarted load balancer serves the last one.
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// Worker threads serving client connections.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Make the image the swarm's nodes run their load balancer from (this executable and the
    /// libraries it links, FROM scratch), push it to a registry and print its digest reference,
    /// for `cutover up --swarm-lb-image`; `cutover up --swarm-registry` does this itself.
    SwarmLbImage {
        /// A registry every node of the swarm reaches (HOST:PORT).
        #[arg(long, env = "CUTOVER_SWARM_REGISTRY")]
        registry: String,
    },
    /// Show what is running.
    Status,
    /// Apply cutover.yaml: print the plan, then make it so. What the file no longer declares is
    /// deleted (hosted repositories are kept: `cutover repos delete`).
    Apply {
        /// The cutover.yaml to apply.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Only print the plan.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check files (taskdef.json, appspec.yaml, cutover.yaml) without changing anything.
    Validate {
        /// Files to check; the kind is told from the content, then from the name.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Start a blue/green deployment in a deployment group.
    Deploy {
        /// `application/group`.
        #[arg(long)]
        group: String,
        /// A task definition to register and deploy (replaces the AppSpec's TaskDefinition).
        #[arg(long)]
        task_definition: Option<PathBuf>,
        /// The AppSpec (YAML or JSON), as CodeDeploy takes it.
        #[arg(long)]
        appspec: PathBuf,
        /// Use this deployment config instead of the group's.
        #[arg(long)]
        config: Option<String>,
        /// Shown with the deployment in lists.
        #[arg(long)]
        description: Option<String>,
        /// Show progress and exit 0 only if the deployment succeeds.
        #[arg(long)]
        wait: bool,
        /// Deploy even if one of the group's alarms is in ALARM; this deployment then ignores the
        /// group's alarms (CodeDeploy's overrideAlarmConfiguration).
        #[arg(long)]
        ignore_alarms: bool,
    },
    /// Deployments: list, inspect, watch, stop, continue, roll back.
    #[command(subcommand)]
    Deployments(DeploymentsCommand),
    /// Services: desired and running counts, task sets, the task definition each runs.
    #[command(subcommand)]
    Services(ServicesCommand),
    /// Tasks: where each one listens, its health and why it stopped.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// A task's output (stdout and stderr of its containers).
    Logs {
        /// The task's id (`cutover tasks list`).
        task: String,
        /// Keep printing new output until interrupted.
        #[arg(long, short)]
        follow: bool,
    },
    /// Certificates obtained over ACME for HTTPS listeners with `acme`: names, expiry, next
    /// renewal, failures and the last error.
    Certificates,
    /// Target groups: targets with their health (ALB's states and reasons), registering by hand.
    #[command(subcommand, name = "target-groups")]
    TargetGroups(TargetGroupsCommand),
    /// Task definitions: revisions by family, as ECS registers them.
    #[command(subcommand, name = "task-definitions")]
    TaskDefinitions(TaskDefinitionsCommand),
    /// Deployment configs (CodeDeployDefault.* and your own) and their exact schedules.
    #[command(subcommand, name = "deployment-configs")]
    DeploymentConfigs(DeploymentConfigsCommand),
    /// Report a lifecycle hook's result (PutLifecycleEventHookExecutionStatus).
    #[command(subcommand)]
    Hooks(HooksCommand),
    /// CloudWatch-style alarms: state, reason with the datapoints, history.
    #[command(subcommand)]
    Alarms(AlarmsCommand),
    /// Git repositories hosted by cutover (`git push` starts their pipelines).
    #[command(subcommand)]
    Repos(ReposCommand),
    /// Pipelines: source → build → deploy, and their executions.
    #[command(subcommand)]
    Pipelines(PipelinesCommand),
    /// Manual approval actions.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Builds run by pipelines (buildspec.yml).
    #[command(subcommand)]
    Builds(BuildsCommand),
    /// Named API credentials: create (the secret is shown once), list, revoke.
    #[command(subcommand)]
    Tokens(crate::access::TokensCommand),
    /// Sign in through the API's OpenID provider (single sign-on) in a browser; the session is
    /// kept in ~/.config/cutover/sessions.json (mode 0600) and used when no token is given.
    Login(crate::login::LoginArgs),
    /// The audit trail: every change and every refused request, with who, from where and what
    /// came of it.
    Audit(crate::access::AuditArgs),
    /// Query a metric (load-balancer metrics per target group, metric-filter counts per service).
    Metrics {
        /// e.g. RequestCount, HTTPCode_Target_5XX_Count, TargetResponseTime, or a filter's metric.
        metric: String,
        /// The target group of a load-balancer metric.
        #[arg(long)]
        target_group: Option<String>,
        /// The service of a metric filter's metric.
        #[arg(long)]
        service: Option<String>,
        /// Sum, Average, Minimum, Maximum, SampleCount or a percentile such as p99.
        #[arg(long, default_value = "Sum")]
        statistic: String,
        /// Period in seconds.
        #[arg(long, default_value_t = 1)]
        period: u32,
        /// How far back, in seconds.
        #[arg(long, default_value_t = 60)]
        since: u64,
    },
}

#[derive(Subcommand, Debug)]
enum ReposCommand {
    /// Host a git repository; prints the remote to add (`git remote add cutover URL`).
    Create { name: String },
    /// Every hosted repository with its clone URL.
    List,
    /// One repository's clone URL.
    Get { name: String },
    /// Delete a hosted repository and its git data (refused while a pipeline builds from it).
    /// `apply` never deletes repositories: they hold the only copy of what was pushed.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
enum PipelinesCommand {
    /// Every pipeline, with its latest execution.
    List,
    /// One pipeline: its source, branch, stages and latest execution.
    Get { name: String },
    /// Recent executions: commit, who pushed, status.
    Executions { name: String },
    /// One execution, stage by stage, with timings and the deployment it started.
    Execution { name: String, id: String },
    /// Run the pipeline on its source's current head (or a given commit).
    Start {
        name: String,
        /// A commit of the source repository to run on instead of the head.
        #[arg(long)]
        commit: Option<String>,
    },
    /// Stop an execution (also stops and rolls back its running deployment).
    Stop {
        name: String,
        id: String,
        /// Do not wait for running actions: mark them Abandoned at once.
        #[arg(long)]
        abandon: bool,
    },
    /// Retry the failed stage of an execution.
    Retry {
        name: String,
        id: String,
        /// The failed stage to run again.
        #[arg(long)]
        stage: String,
        /// Run only the stage's failed actions, or all of them (CodePipeline's retry modes).
        #[arg(long, value_parser = ["FAILED_ACTIONS", "ALL_ACTIONS"], default_value = "FAILED_ACTIONS")]
        mode: String,
    },
}

#[derive(Subcommand, Debug)]
enum ApprovalsCommand {
    /// Approve the approval action an execution waits on; the pipeline goes on.
    Approve {
        /// The pipeline execution's id.
        execution: String,
        /// Kept with the decision in the execution's history.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Reject it; the stage fails.
    Reject {
        /// The pipeline execution's id.
        execution: String,
        /// Kept with the decision in the execution's history.
        #[arg(long, default_value = "")]
        comment: String,
    },
}

#[derive(Subcommand, Debug)]
enum BuildsCommand {
    /// One build: its phases with their status and duration.
    Get { id: String },
    /// A build's output.
    Logs {
        id: String,
        /// Keep printing new output until the build ends.
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AlarmsCommand {
    /// Every alarm with its state.
    List,
    /// One alarm: its state and the reason, with the datapoints that decided it.
    Get { name: String },
    /// One alarm's state changes, oldest first, with their reasons.
    History { name: String },
}

#[derive(Subcommand, Debug)]
enum DeploymentsCommand {
    /// Recent deployments, newest first.
    List {
        /// Only this deployment group's (`application/group`).
        #[arg(long)]
        group: Option<String>,
        /// How many at most.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One deployment: its lifecycle events, traffic split and outcome.
    Get { id: String },
    /// Follow a deployment live until it ends.
    Watch { id: String },
    /// Stop a deployment; rolls back if the group's auto-rollback includes
    /// DEPLOYMENT_STOP_ON_REQUEST, unless told otherwise.
    Stop {
        id: String,
        /// Roll back whatever the group's setting.
        #[arg(long, conflicts_with = "no_rollback")]
        rollback: bool,
        /// Leave traffic where it is; `deployments rollback` can still roll back later.
        #[arg(long)]
        no_rollback: bool,
    },
    /// Continue a deployment waiting in its ready wait (READY_WAIT) or end its termination wait
    /// early (TERMINATION_WAIT).
    Continue {
        id: String,
        /// Which wait to end; by default the one the deployment is in.
        #[arg(long, value_parser = ["READY_WAIT", "TERMINATION_WAIT"])]
        wait: Option<String>,
    },
    /// Put all traffic back on blue and stop green.
    Rollback { id: String },
}

#[derive(Subcommand, Debug)]
enum ServicesCommand {
    /// Every service with its desired and running counts.
    List,
    /// One service: its task sets, target groups and deployment group.
    Get { name: String },
}

#[derive(Subcommand, Debug)]
enum TasksCommand {
    /// Running tasks (all of them with `--all`).
    List {
        /// Only this service's tasks.
        #[arg(long)]
        service: Option<String>,
        /// Include stopped tasks.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TargetGroupsCommand {
    /// Every target group: how many targets are healthy, its health check and deregistration delay.
    List,
    /// One target group: each target's state and the reason for it.
    Get { name: String },
    /// Register an IP target by hand (as ALB's `ip` targets).
    Register {
        name: String,
        /// `ip:port`.
        addr: String,
    },
    /// Deregister a target: no new requests; it drains for the deregistration delay.
    Deregister {
        name: String,
        /// `ip:port`.
        addr: String,
    },
}

#[derive(Subcommand, Debug)]
enum TaskDefinitionsCommand {
    /// Every revision with its status (ACTIVE or INACTIVE).
    List,
    /// One revision as ECS JSON.
    Get {
        /// `family:revision`, `family` (latest) or an ARN.
        id: String,
    },
    /// Register a taskdef.json as the family's next revision.
    Register { file: PathBuf },
    /// Mark a revision INACTIVE: running tasks keep it, new deployments cannot use it.
    Deregister {
        /// `family:revision` or an ARN.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum DeploymentConfigsCommand {
    /// The predefined CodeDeployDefault.ECS* configs and your own.
    List,
    /// Print the exact traffic-shift schedule of a config before anyone runs it.
    Preview {
        name: String,
        /// Include a deployment group's test listener, waits and hooks.
        #[arg(long)]
        group: Option<String>,
        /// Read the config (and the group) from this cutover.yaml instead of the running
        /// control plane; predefined configs need neither.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum HooksCommand {
    /// Report a hook's result before the hook ends; a command hook finds both ids in
    /// `$CUTOVER_DEPLOYMENT_ID` and `$CUTOVER_HOOK_EXECUTION_ID`, and uses its own
    /// `$CUTOVER_HOOK_TOKEN` and `$CUTOVER_API_URL` unless --token or --api are given.
    Report {
        deployment: String,
        /// The hook execution's id.
        execution: String,
        #[arg(long, value_parser = ["Succeeded", "Failed"])]
        status: String,
        /// Why; shown in the deployment's lifecycle event.
        #[arg(long)]
        message: Option<String>,
    },
}

pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("cutover");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/cutover"),
        None => PathBuf::from(".cutover"),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUTOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: `cutover up > up.log` must not fill the file with escapes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
}

/// Why `cutover up` cannot start with these flags, before anything is started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpFlagsError {
    #[error(
        "--lb-admin {0}: the load balancer's admin API has no authentication and must listen on \
         loopback; use e.g. --lb-admin 127.0.0.1:{port}",
        port = .0.port()
    )]
    AdminNotLoopback(SocketAddr),
    #[error("--lb-threads 0: the load balancer needs at least one worker thread")]
    NoThreads,
    #[error(
        "--listen {0}: beyond loopback the API needs TLS, or its tokens cross the network in \
         clear text: give --tls-cert and --tls-key (docs/access.md), or --allow-plaintext-beyond-loopback \
         if something in front of cutover terminates TLS"
    )]
    PlaintextBeyondLoopback(SocketAddr),
}

/// What `cutover up` is told about where and how to serve.
pub struct UpFlags {
    pub listen: SocketAddr,
    pub lb_admin: SocketAddr,
    pub lb_threads: usize,
    pub tls: bool,
    pub allow_plaintext_beyond_loopback: bool,
}

/// Checks `cutover up`'s flags, so that a bad one is refused at once and on the terminal.
pub fn check_up_flags(flags: &UpFlags) -> Result<(), UpFlagsError> {
    if !flags.lb_admin.ip().is_loopback() {
        return Err(UpFlagsError::AdminNotLoopback(flags.lb_admin));
    }
    if flags.lb_threads == 0 {
        return Err(UpFlagsError::NoThreads);
    }
    if !flags.listen.ip().is_loopback() && !flags.tls && !flags.allow_plaintext_beyond_loopback {
        return Err(UpFlagsError::PlaintextBeyondLoopback(flags.listen));
    }
    Ok(())
}

/// The API's certificate and key, loaded as the data plane loads a listener's.
fn api_tls(cert: Option<PathBuf>, key: Option<PathBuf>) -> anyhow::Result<Option<control::ApiTls>> {
    let (Some(cert), Some(key)) = (cert, key) else { return Ok(None) };
    let config = routes::TlsConfig {
        certificate_file: cert.display().to_string(),
        key_file: key.display().to_string(),
        // One certificate for the API: no SNI choice.
        certificates: Vec::new(),
        acme: None,
    };
    let acceptor = proxy::tls_acceptor(&config).context("--tls-cert/--tls-key")?;
    Ok(Some(control::ApiTls(acceptor)))
}

/// `cutover lb`: the data plane alone, its admin token (if any) read from a file.
fn lb(
    admin: SocketAddr,
    admin_token_file: Option<PathBuf>,
    state_file: Option<PathBuf>,
    threads: usize,
) -> anyhow::Result<ExitCode> {
    control::data_dir::private_by_default();
    init_tracing();
    let admin_token = admin_token_file
        .map(|path| {
            std::fs::read_to_string(&path)
                .map(|text| text.trim().to_string())
                .with_context(|| format!("reading the admin token {}", path.display()))
        })
        .transpose()?;
    proxy::run_blocking(proxy::ProxyConfig {
        admin_addr: admin,
        admin_token,
        state_file,
        worker_threads: threads,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The load balancer on every node of the swarm, from `up`'s flags: an image given overrides
/// the one made for the registry.
fn swarm_lb(
    image: Option<String>,
    registry: Option<String>,
    admin_port: u16,
    threads: usize,
) -> control::fleet::FleetConfig {
    use control::fleet::LbImage;
    let image = match (image, registry) {
        (Some(image), _) => LbImage::Given(image),
        (None, Some(registry)) => LbImage::Publish { registry },
        (None, None) => LbImage::Unnamed,
    };
    control::fleet::FleetConfig {
        image,
        admin_port,
        threads,
        network: runtime::swarm::DEFAULT_OVERLAY.to_string(),
    }
}

/// `cutover swarm-lb-image`: prints the digest reference of the nodes' load-balancer image.
fn swarm_lb_image(data_dir: &Path, registry: &str) -> anyhow::Result<ExitCode> {
    control::data_dir::private_by_default();
    let image = tokio::runtime::Runtime::new()?.block_on(async {
        let swarm = runtime::SwarmRuntime::connect(data_dir.join("docker")).await?;
        swarm.publish_data_plane_image(registry).await
    })?;
    println!("{image}");
    Ok(ExitCode::SUCCESS)
}

/// Whether a command serves (`up`, `lb`) rather than answers and exits.
pub fn is_server(args: &Args) -> bool {
    matches!(args.command, Command::Up { .. } | Command::Lb { .. })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let (client, token) = connect(&args, &data_dir)?;
    let json = args.output == Output::Json;
    match args.command {
        Command::Up {
            listen,
            lb_admin,
            lb_threads,
            registry_credentials,
            tls_cert,
            tls_key,
            allow_plaintext_beyond_loopback,
            oidc,
            console_url,
            swarm_registry,
            swarm_lb_image,
            swarm_lb_admin_port,
        } => {
            check_up_flags(&UpFlags {
                listen,
                lb_admin,
                lb_threads,
                tls: tls_cert.is_some(),
                allow_plaintext_beyond_loopback,
            })?;
            let tls = api_tls(tls_cert, tls_key)?;
            let oidc = oidc.config()?;
            control::data_dir::private_by_default();
            init_tracing();
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(control::serve(control::ServerConfig {
                data_dir,
                listen,
                token,
                tls,
                lb_admin,
                lb_threads,
                registry_credentials,
                oidc,
                console_url,
                console: Some(console::router),
                swarm_lb: Some(swarm_lb(
                    swarm_lb_image,
                    swarm_registry,
                    swarm_lb_admin_port,
                    lb_threads,
                )),
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lb { admin, admin_token_file, state_file, threads } => {
            lb(admin, admin_token_file, state_file, threads)
        }
        Command::Down => down(&client, &data_dir),
        Command::SwarmLbImage { registry } => swarm_lb_image(&data_dir, &registry),
        Command::Status => {
            let status: StatusView = client.get("/v1/status")?;
            render::print(json, &status, render::status)
        }
        Command::Apply { file, dry_run } => apply(&client, &file, dry_run, json),
        Command::Validate { files } => validate(&files),
        Command::Deploy {
            group,
            task_definition,
            appspec,
            config,
            description,
            wait,
            ignore_alarms,
        } => {
            let request = CreateDeploymentRequest {
                group,
                task_definition: task_definition.as_deref().map(upload).transpose()?,
                appspec: upload(&appspec)?,
                description,
                deployment_config: config,
                ignore_alarms,
            };
            deploy(&client, &request, wait, json)
        }
        Command::Deployments(command) => deployments(&client, command, json),
        Command::Services(command) => services(&client, command, json),
        Command::Tasks(TasksCommand::List { service, all }) => {
            let mut path = format!("/v1/tasks?all={all}");
            if let Some(service) = service {
                path.push_str(&format!("&service={service}"));
            }
            let tasks: Vec<TaskView> = client.get(&path)?;
            render::print(json, &tasks, render::tasks)
        }
        Command::Logs { task, follow } => logs(&client, &task, follow),
        Command::TargetGroups(command) => target_groups(&client, command, json),
        Command::TaskDefinitions(command) => task_definitions(&client, command, json),
        Command::DeploymentConfigs(command) => deployment_configs(&client, command, json),
        Command::Repos(command) => repos(&client, command, json),
        Command::Pipelines(command) => pipelines(&client, command, json),
        Command::Approvals(command) => approvals(&client, command, json),
        Command::Builds(command) => builds(&client, command, json),
        Command::Alarms(command) => alarms(&client, command, json),
        Command::Tokens(command) => crate::access::tokens(&client, command, json),
        Command::Audit(args) => crate::access::audit(&client, args, json),
        Command::Login(args) => crate::login::login(&client, args),
        Command::Certificates => certificates(&client, json),
        Command::Metrics { metric, target_group, service, statistic, period, since } => {
            let mut path = format!(
                "/v1/metrics/query?metric={metric}&statistic={statistic}&period={period}&since={since}"
            );
            if let Some(tg) = target_group {
                path.push_str(&format!("&target_group={tg}"));
            }
            if let Some(service) = service {
                path.push_str(&format!("&service={service}"));
            }
            let view: MetricQueryView = client.get(&path)?;
            render::print(json, &view, render::metric)
        }
        Command::Hooks(command) => hooks(&client, command),
    }
}

fn hooks(client: &Client, command: HooksCommand) -> anyhow::Result<ExitCode> {
    let HooksCommand::Report { deployment, execution, status, message } = command;
    let _: serde_json::Value = client.put(
        &format!("/v1/deployments/{deployment}/lifecycle-hooks/{execution}"),
        &HookStatusRequest { status, message },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The API client, and the token it sends: from the flags, else the data directory, else (in a
/// command hook, which has no API token and no data directory) the hook's own token and the
/// API's URL from its environment, so that `cutover hooks report` there works as it is.
/// Single sign-on for `cutover login` (the API's side).
#[derive(clap::Args, Debug)]
struct OidcFlags {
    /// The OpenID provider's issuer URL (https, or http on loopback); people then sign in with
    /// `cutover login`.
    #[arg(long, env = "CUTOVER_OIDC_ISSUER", requires = "oidc_client_id")]
    oidc_issuer: Option<String>,
    /// The client id cutover is registered with at the provider.
    #[arg(long, env = "CUTOVER_OIDC_CLIENT_ID", requires = "oidc_issuer")]
    oidc_client_id: Option<String>,
    /// A file holding the client's secret, for a confidential client (none: a public client,
    /// PKCE alone).
    #[arg(long, env = "CUTOVER_OIDC_CLIENT_SECRET_FILE")]
    oidc_client_secret_file: Option<PathBuf>,
    /// A provider group and the role its members get: GROUP=ROLE or GROUP=ROLE:SCOPE,SCOPE
    /// (repeat it; e.g. deployers=deployer:web/*,web). CUTOVER_OIDC_GROUPS takes them separated
    /// by `;`. Given, they replace cutover.yaml's access.oidc.groups.
    #[arg(long = "oidc-group", env = "CUTOVER_OIDC_GROUPS", value_delimiter = ';')]
    oidc_groups: Vec<String>,
    /// The ID token's claim that lists the user's groups.
    #[arg(long, default_value = "groups")]
    oidc_groups_claim: String,
    /// The scopes asked for.
    #[arg(long, default_value = "openid profile email groups")]
    oidc_scopes: String,
    /// How long a session lasts (then `cutover login` again).
    #[arg(long, default_value = "12h")]
    oidc_session: String,
}

impl OidcFlags {
    fn config(self) -> anyhow::Result<Option<control::access::oidc::OidcConfig>> {
        use control::access::oidc;
        let (Some(issuer), Some(client_id)) = (self.oidc_issuer, self.oidc_client_id) else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(&issuer)
            .with_context(|| format!("--oidc-issuer {issuer}: not a URL"))?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if url.scheme() != "https" && !loopback {
            bail!("--oidc-issuer {issuer}: use https (plain http only on loopback)");
        }
        let groups = self
            .oidc_groups
            .iter()
            .map(|text| oidc::parse_group_mapping(text))
            .collect::<Result<Vec<_>, _>>()?;
        let session = model::parse_duration(&self.oidc_session)
            .map_err(|err| anyhow::anyhow!("--oidc-session {}: {err}", self.oidc_session))?;
        let client_secret = match self.oidc_client_secret_file {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("--oidc-client-secret-file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(Some(oidc::OidcConfig {
            issuer: issuer.trim_end_matches('/').to_string(),
            client_id,
            client_secret,
            groups_claim: self.oidc_groups_claim,
            scopes: self.oidc_scopes,
            groups,
            session_ms: session.as_millis() as u64,
        }))
    }
}

fn connect(args: &Args, data_dir: &Path) -> anyhow::Result<(Client, Option<String>)> {
    let in_hook = |name: &str| match args.command {
        Command::Hooks(_) => std::env::var(name).ok().filter(|value| !value.is_empty()),
        _ => None,
    };
    let api = args.api.clone().or_else(|| in_hook("CUTOVER_API_URL")).unwrap_or_else(|| {
        std::fs::read_to_string(control::api_record_path(data_dir))
            .ok()
            .and_then(|text| serde_json::from_str::<control::ApiRecord>(&text).ok())
            .map(|record| record.url)
            .unwrap_or_else(|| "http://127.0.0.1:7400".to_string())
    });
    let token = args
        .token
        .clone()
        .or_else(|| in_hook("CUTOVER_HOOK_TOKEN"))
        .or_else(|| std::fs::read_to_string(data_dir.join("token")).ok());
    let session = match token {
        Some(_) => None,
        None => crate::login::session_secret(&api),
    };
    let ca_certs = match &args.ca_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("--ca-cert {}: cannot read it", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).ok().filter(|c| !c.is_empty());
            certs.with_context(|| {
                format!(
                    "--ca-cert {}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
                    path.display()
                )
            })?
        }
        None => Vec::new(),
    };
    if let Some(secret) = session {
        return Ok((Client::new(api, Some(secret), ca_certs)?.with_session(), None));
    }
    Ok((Client::new(api, token.clone(), ca_certs)?, token))
}

fn deploy(
    client: &Client,
    request: &CreateDeploymentRequest,
    wait: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let view: DeploymentView = client.post("/v1/deployments", request)?;
    if json && !wait {
        return render::print(true, &view, render::deployment);
    }
    println!(
        "deployment {} created in {}/{} ({})",
        view.id, view.application, view.deployment_group, view.routing
    );
    if wait {
        return render::watch(client, &view.id, json);
    }
    println!("follow it with: cutover deployments watch {}", view.id);
    Ok(ExitCode::SUCCESS)
}

fn services(client: &Client, command: ServicesCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        ServicesCommand::List => {
            let services: Vec<ServiceView> = client.get("/v1/services")?;
            render::print(json, &services, render::services)
        }
        ServicesCommand::Get { name } => {
            let service: ServiceView = client.get(&format!("/v1/services/{name}"))?;
            render::print(json, &service, render::service)
        }
    }
}

fn logs(client: &Client, task: &str, follow: bool) -> anyhow::Result<ExitCode> {
    if !runtime::valid_task_id(task) {
        bail!(
            "`{task}` is not a task id (1 to 128 of A-Z a-z 0-9 _ . -, not starting with \
             `.`); `cutover tasks list --all` shows them"
        );
    }
    let mut response = client.get_text(&format!("/v1/tasks/{task}/logs?follow={follow}"))?;
    std::io::copy(&mut response, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

fn deployment_configs(
    client: &Client,
    command: DeploymentConfigsCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        DeploymentConfigsCommand::List => {
            let configs: Vec<DeploymentConfigView> = client.get("/v1/deployment-configs")?;
            render::print(json, &configs, render::deployment_configs)
        }
        DeploymentConfigsCommand::Preview { name, group, file } => {
            if let Some(preview) = offline_preview(&name, group.as_deref(), file.as_deref())? {
                return render::print(json, &preview, render::preview);
            }
            let mut path = format!("/v1/deployment-configs/{name}/preview");
            if let Some(group) = group {
                path.push_str(&format!("?group={group}"));
            }
            let preview: PreviewView = client.get(&path)?;
            render::print(json, &preview, render::preview)
        }
    }
}

fn approvals(client: &Client, command: ApprovalsCommand, json: bool) -> anyhow::Result<ExitCode> {
    let (execution, comment, approved) = match command {
        ApprovalsCommand::Approve { execution, comment } => (execution, comment, true),
        ApprovalsCommand::Reject { execution, comment } => (execution, comment, false),
    };
    let verb = if approved { "approve" } else { "reject" };
    let body = pipelines::api::ApprovalDecision { comment, ..Default::default() };
    let answer: serde_json::Value =
        client.post(&format!("/v1/approvals/{execution}/{verb}"), &body)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("{}", render::approval_decided(approved, &execution));
    }
    Ok(ExitCode::SUCCESS)
}

fn builds(client: &Client, command: BuildsCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        BuildsCommand::Get { id } => {
            let build: pipelines::api::Build = client.get(&format!("/v1/builds/{id}"))?;
            render::print(json, &build, render::build)
        }
        BuildsCommand::Logs { id, follow } => {
            let mut response = client.get_text(&format!("/v1/builds/{id}/logs?follow={follow}"))?;
            std::io::copy(&mut response, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn alarms(client: &Client, command: AlarmsCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        AlarmsCommand::List => {
            let alarms: Vec<AlarmView> = client.get("/v1/alarms")?;
            render::print(json, &alarms, render::alarms)
        }
        AlarmsCommand::Get { name } => {
            let alarms: Vec<AlarmView> = client.get(&format!("/v1/alarms/{name}"))?;
            render::print(json, &alarms, render::alarm_details)
        }
        AlarmsCommand::History { name } => {
            let alarms: Vec<AlarmView> = client.get(&format!("/v1/alarms/{name}"))?;
            render::print(json, &alarms, render::alarm_history)
        }
    }
}

/// Reads a file for the API, with the directory it came from.
fn upload(path: &Path) -> anyhow::Result<FileUpload> {
    let name = path.display().to_string();
    let text = read_text(path, &name)?;
    let base_dir = path
        .parent()
        .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
        .and_then(|p| p.canonicalize().ok())
        .map(|p| p.display().to_string());
    Ok(FileUpload { name, text, base_dir })
}

/// A file's text, refused with a positioned error when it is over the size limit (its real size,
/// from the disk, before reading) or not UTF-8.
fn read_text(path: &Path, name: &str) -> anyhow::Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    config::check_file_size(name, len).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    // Read one byte past the limit all the same: the file may grow between the two.
    let mut bytes = Vec::new();
    file.take(config::FILE_SIZE_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    let text =
        config::text_from_bytes(name, &bytes).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    Ok(text.to_string())
}

fn apply(client: &Client, file: &Path, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let upload_file = upload(file)?;
    // Send the task definitions the file refers to by path, so the server validates everything.
    let mut referenced = std::collections::BTreeMap::new();
    let base = file.parent().unwrap_or(Path::new("."));
    let is_file = |task_definition: &str| base.join(task_definition).is_file();
    for task_definition in
        config::task_definition_files(&upload_file.name, &upload_file.text, is_file)
    {
        let task_definition_file = upload(&base.join(&task_definition))?;
        referenced.insert(task_definition, task_definition_file);
    }
    let request = ApplyRequest { file: upload_file, referenced, dry_run };
    let response: ApplyResponse = client.post("/v1/apply", &request)?;
    render::print(json, &response, render::apply)
}

fn validate(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in files {
        let file = match upload(path) {
            Ok(file) => file,
            Err(err) => {
                eprintln!("{}: {err:#}", path.display());
                failed = true;
                continue;
            }
        };
        // buildspec.yml is validated by the build runner's own parser (spec cannot depend on it).
        let result = match config::detect_kind(&file.name, &file.text) {
            Some(config::FileKind::Buildspec) => {
                builder::parse_buildspec(&file.name, &file.text).map(|parsed| parsed.notes)
            }
            Some(config::FileKind::CutoverFile) => config::validate(&file.name, &file.text)
                .and_then(|notes| check_referenced_files(path, &file, notes)),
            _ => config::validate(&file.name, &file.text),
        };
        match result {
            Ok(notes) => {
                for note in notes {
                    println!("{note}");
                }
                println!("{}: ok", path.display());
            }
            Err(errors) => {
                eprintln!("{errors}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The files a valid cutover.yaml names must be there, and the task definitions among them
/// valid: `notes` with theirs added, or every error (a missing file at the field that names it,
/// a bad task definition in its own file).
fn check_referenced_files(
    path: &Path,
    file: &FileUpload,
    mut notes: Vec<config::Diagnostic>,
) -> Result<Vec<config::Diagnostic>, config::Errors> {
    let base = path.parent().unwrap_or(Path::new(""));
    let mut errors = Vec::new();
    for reference in config::file_references(&file.text) {
        let target = base.join(&reference.path);
        if !target.is_file() {
            errors.push(reference.missing(&file.name, &target.display().to_string()));
            continue;
        }
        if reference.kind != config::ReferenceKind::TaskDefinition {
            continue;
        }
        let name = target.display().to_string();
        let parsed = match read_text(&target, &name) {
            Ok(text) => config::parse_task_definition(&name, &text).map(|parsed| parsed.notes),
            Err(err) => {
                Err(config::Errors::one(reference.unreadable(&file.name, &format!("{err:#}"))))
            }
        };
        match parsed {
            Ok(more) => notes.extend(more),
            Err(more) => errors.extend(more.0),
        }
    }
    if errors.is_empty() { Ok(notes) } else { Err(config::Errors(errors)) }
}

fn down(client: &Client, data_dir: &Path) -> anyhow::Result<ExitCode> {
    match client.post::<_, serde_json::Value>("/v1/shutdown", &serde_json::json!({})) {
        Ok(_) => {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while std::time::Instant::now() < deadline {
                match client.get::<StatusView>("/v1/status") {
                    Err(err) if err.is_unreachable() => {
                        println!("cutover is down: tasks stopped, load balancer stopped");
                        return Ok(ExitCode::SUCCESS);
                    }
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            bail!("cutover did not stop within 120s")
        }
        // Only when nothing answers and no `cutover up` holds the data directory is the control
        // plane gone (killed): then stop what it left behind directly. Any answer, a refused token included, comes from a running control
        // plane that owns the tasks and the load balancer: touch nothing.
        Err(err) if err.is_unreachable() => {
            // The lock file and the runtimes' state below are created under the data directory:
            // as private as `cutover up` keeps it, whatever the shell's umask.
            control::data_dir::private_by_default();
            // Nothing answers where we asked; the data directory says whether its control plane
            // is gone or was only looked for at the wrong address (a stale CUTOVER_API).
            let Some(_lock) = control::try_lock_data_dir(data_dir)? else {
                bail!("{}", running_elsewhere(data_dir, &err));
            };
            println!("the control plane is not running ({err:#}); stopping what it left behind");
            let stopped = tokio::runtime::Runtime::new()?.block_on(stop_orphaned_tasks(data_dir));
            println!("{stopped} task(s) stopped");
            if let Some(record) = control::lb::read_record(data_dir) {
                control::stop_pid(record.pid);
                println!("load balancer (pid {}) stopped", record.pid);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => bail!("{err}; nothing was stopped"),
    }
}

/// Why `cutover down` stopped nothing: the data directory's `cutover up` runs, but not where it
/// was asked to stop.
fn running_elsewhere(data_dir: &Path, err: &impl std::fmt::Display) -> String {
    let recorded = std::fs::read_to_string(control::api_record_path(data_dir))
        .ok()
        .and_then(|text| serde_json::from_str::<control::ApiRecord>(&text).ok());
    let (at, retry) = match recorded {
        Some(record) => (
            format!(" (pid {}, API {})", record.pid, record.url),
            format!("`cutover down --api {}`", record.url),
        ),
        None => (String::new(), "`cutover down --api URL` with its address".to_string()),
    };
    format!(
        "{err:#}; but a `cutover up` is running for {}{at}, so nothing was stopped: run {retry}, \
         or unset CUTOVER_API to use the address it recorded",
        data_dir.display()
    )
}

/// The preview that needs no control plane: from `file` when given, else of a predefined
/// config without a group. `None`: ask the control plane.
fn offline_preview(
    name: &str,
    group: Option<&str>,
    file: Option<&Path>,
) -> anyhow::Result<Option<PreviewView>> {
    if let Some(path) = file {
        let upload = upload(path)?;
        return Ok(Some(control::preview::preview_file(name, group, &upload.name, &upload.text)?));
    }
    Ok(group.is_none().then(|| control::preview::preview_predefined(name)).flatten())
}

/// Stops every task the runtimes of `data_dir` still own.
async fn stop_orphaned_tasks(data_dir: &Path) -> usize {
    let mut runtimes: Vec<Box<dyn runtime::Runtime>> = Vec::new();
    if let Ok(process) = runtime::ProcessRuntime::new(data_dir.join("tasks")) {
        runtimes.push(Box::new(process));
    }
    if data_dir.join("docker").exists()
        && let Ok(docker) = runtime::DockerRuntime::connect(data_dir.join("docker")).await
    {
        runtimes.push(Box::new(docker));
    }
    if data_dir.join("docker").exists()
        && let Ok(swarm) = runtime::SwarmRuntime::connect(data_dir.join("docker")).await
    {
        // The load balancers on the swarm's nodes go with the control plane's own.
        if let Err(err) = swarm.remove_data_plane().await {
            println!("the load balancers of the swarm's nodes are left running: {err}");
        }
        runtimes.push(Box::new(swarm));
    }
    let mut stopped = 0;
    for rt in &runtimes {
        for handle in rt.list_owned().await.unwrap_or_default() {
            if rt.stop(&handle).await.is_ok() {
                let _ = rt.remove(&handle).await;
                stopped += 1;
            }
        }
    }
    stopped
}

fn deployments(
    client: &Client,
    command: DeploymentsCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        DeploymentsCommand::List { group, limit } => {
            let mut path = format!("/v1/deployments?limit={limit}");
            if let Some(group) = group {
                path.push_str(&format!("&group={group}"));
            }
            let list: Vec<DeploymentView> = client.get(&path)?;
            render::print(json, &list, render::deployments)
        }
        DeploymentsCommand::Get { id } => {
            let view: DeploymentView = client.get(&format!("/v1/deployments/{id}"))?;
            render::print(json, &view, render::deployment)
        }
        DeploymentsCommand::Watch { id } => render::watch(client, &id, json),
        DeploymentsCommand::Stop { id, rollback, no_rollback } => {
            let rollback = if rollback {
                Some(true)
            } else if no_rollback {
                Some(false)
            } else {
                None
            };
            let view: DeploymentView =
                client.post(&format!("/v1/deployments/{id}/stop"), &StopRequest { rollback })?;
            render::print(json, &view, render::deployment)
        }
        DeploymentsCommand::Continue { id, wait } => {
            let wait = match wait {
                Some(wait) => wait,
                None => {
                    let view: DeploymentView = client.get(&format!("/v1/deployments/{id}"))?;
                    if view.status == "Baking" {
                        "TERMINATION_WAIT".into()
                    } else {
                        "READY_WAIT".into()
                    }
                }
            };
            let view: DeploymentView = client
                .post(&format!("/v1/deployments/{id}/continue"), &ContinueRequest { wait })?;
            render::print(json, &view, render::deployment)
        }
        DeploymentsCommand::Rollback { id } => {
            let view: DeploymentView =
                client.post(&format!("/v1/deployments/{id}/rollback"), &serde_json::json!({}))?;
            render::print(json, &view, render::deployment)
        }
    }
}

fn certificates(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let list: Vec<control::certificates::CertificateStatus> = client.get("/v1/certificates")?;
    render::print(json, &list, render::certificates)
}

fn target_groups(
    client: &Client,
    command: TargetGroupsCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        TargetGroupsCommand::List => {
            let list: Vec<TargetGroupView> = client.get("/v1/target-groups")?;
            render::print(json, &list, render::target_groups)
        }
        TargetGroupsCommand::Get { name } => {
            let view: TargetGroupView = client.get(&format!("/v1/target-groups/{name}"))?;
            render::print(json, &view, render::target_group)
        }
        TargetGroupsCommand::Register { name, addr } => {
            let _: serde_json::Value = client.post(
                &format!("/v1/target-groups/{name}/targets"),
                &RegisterTargetRequest { addr: addr.clone() },
            )?;
            println!("registered {addr} in {name}");
            Ok(ExitCode::SUCCESS)
        }
        TargetGroupsCommand::Deregister { name, addr } => {
            let _: serde_json::Value = client.delete(
                &format!("/v1/target-groups/{name}/targets"),
                &RegisterTargetRequest { addr: addr.clone() },
            )?;
            println!(
                "deregistered {addr} from {name}; it drains for the group's deregistration delay"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn task_definitions(
    client: &Client,
    command: TaskDefinitionsCommand,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        TaskDefinitionsCommand::List => {
            let list: Vec<TaskDefinitionView> = client.get("/v1/task-definitions")?;
            render::print(json, &list, render::task_definitions)
        }
        TaskDefinitionsCommand::Get { id } => {
            let view: TaskDefinitionView = client
                .get(&format!("/v1/task-definitions/{}", id.rsplit('/').next().unwrap_or(&id)))?;
            render::print(json, &view, |v| {
                serde_json::to_string_pretty(&v.body).unwrap_or_default()
            })
        }
        TaskDefinitionsCommand::Register { file } => {
            let answer: serde_json::Value = client.post(
                "/v1/task-definitions",
                &RegisterTaskDefinitionRequest { file: upload(&file)? },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("registered {}", answer["arn"].as_str().unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskDefinitionsCommand::Deregister { id } => {
            let _: serde_json::Value =
                client.delete(&format!("/v1/task-definitions/{id}"), &serde_json::json!({}))?;
            println!("{id} is INACTIVE: running tasks keep running; no new task can use it");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn repos(client: &Client, command: ReposCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        ReposCommand::Create { name } => {
            let repo: pipelines::api::Repository =
                client.post("/v1/repos", &serde_json::json!({ "name": name }))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&repo)?);
            } else {
                println!(
                    "repository {} is ready; add it as a remote:\n  git remote add cutover {}",
                    repo.name, repo.clone_url
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ReposCommand::List => {
            let list: Vec<pipelines::api::Repository> = client.get("/v1/repos")?;
            render::print(json, &list, render::repositories)
        }
        ReposCommand::Get { name } => {
            let repo: pipelines::api::Repository = client.get(&format!("/v1/repos/{name}"))?;
            // One object in JSON, as every `get`; the text form shares the list's table.
            render::print(json, &repo, |repo| render::repositories(&vec![repo.clone()]))
        }
        ReposCommand::Delete { name } => {
            let answer: serde_json::Value =
                client.delete(&format!("/v1/repos/{name}"), &serde_json::json!({}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("repository {name} deleted, with its git data");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn pipelines(client: &Client, command: PipelinesCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        PipelinesCommand::List => {
            let list: Vec<pipelines::api::PipelineSummary> = client.get("/v1/pipelines")?;
            render::print(json, &list, render::pipelines)
        }
        PipelinesCommand::Get { name } => {
            let pipeline: pipelines::api::PipelineSummary =
                client.get(&format!("/v1/pipelines/{name}"))?;
            render::print(json, &pipeline, |pipeline| render::pipelines(&vec![pipeline.clone()]))
        }
        PipelinesCommand::Executions { name } => {
            let list: Vec<pipelines::api::ExecutionSummary> =
                client.get(&format!("/v1/pipelines/{name}/executions"))?;
            render::print(json, &list, render::executions)
        }
        PipelinesCommand::Execution { name, id } => {
            let execution: pipelines::api::Execution =
                client.get(&format!("/v1/pipelines/{name}/executions/{id}"))?;
            render::print(json, &execution, render::execution)
        }
        PipelinesCommand::Start { name, commit } => {
            let answer: serde_json::Value = client.post(
                &format!("/v1/pipelines/{name}/start"),
                &pipelines::api::StartPipeline { commit },
            )?;
            println!(
                "{}",
                if json {
                    serde_json::to_string_pretty(&answer)?
                } else {
                    format!("started: {answer}")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        PipelinesCommand::Stop { name, id, abandon } => {
            let body = pipelines::api::StopExecution { abandon, reason: None };
            let answer: serde_json::Value =
                client.post(&format!("/v1/pipelines/{name}/executions/{id}/stop"), &body)?;
            println!(
                "{}",
                if json {
                    serde_json::to_string_pretty(&answer)?
                } else {
                    format!("stopping {id}")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        PipelinesCommand::Retry { name, id, stage, mode } => {
            let body = pipelines::api::RetryExecution { stage, mode: Some(mode) };
            let answer: serde_json::Value =
                client.post(&format!("/v1/pipelines/{name}/executions/{id}/retry"), &body)?;
            println!(
                "{}",
                if json {
                    serde_json::to_string_pretty(&answer)?
                } else {
                    format!("retrying {id}")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc_flags(issuer: &str, groups: &[&str]) -> OidcFlags {
        OidcFlags {
            oidc_issuer: Some(issuer.into()),
            oidc_client_id: Some("cutover".into()),
            oidc_client_secret_file: None,
            oidc_groups: groups.iter().map(|g| g.to_string()).collect(),
            oidc_groups_claim: "groups".into(),
            oidc_scopes: "openid groups".into(),
            oidc_session: "12h".into(),
        }
    }

    /// As `main` prints an error: the message and its causes, once each.
    fn printed(err: anyhow::Error) -> String {
        format!("{err:#}")
    }

    #[test]
    fn single_sign_on_flags_that_cannot_work_are_refused_saying_which_and_why_once() {
        let err = oidc_flags("http://127.0.0.1:9", &["ops=root"]).config().unwrap_err();
        assert_eq!(
            printed(err),
            "--oidc-group `ops=root`: no role `root`; the roles are viewer, deployer and admin \
             (`docs/access.md`)"
        );
        let err = oidc_flags("http://id.example.com", &["ops=admin"]).config().unwrap_err();
        assert_eq!(
            printed(err),
            "--oidc-issuer http://id.example.com: use https (plain http only on loopback)"
        );
        // Without --oidc-group, cutover.yaml's access.oidc.groups map groups to roles.
        let from_the_file = oidc_flags("https://id.example.com", &[]).config().unwrap().unwrap();
        assert!(from_the_file.groups.is_empty());
        let config = oidc_flags("https://id.example.com/", &["deployers=deployer:web/*"]);
        let config = config.config().unwrap().unwrap();
        assert_eq!(config.issuer, "https://id.example.com");
        assert_eq!(config.session_ms, 12 * 3_600_000);
    }
}
