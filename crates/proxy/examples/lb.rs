//! Runs the data plane alone, as `cutover lb` does: `lb --admin ADDR [--state-file PATH]
//! [--threads N]`. It builds in seconds where the whole `cutover` binary takes minutes, which is
//! what A/B measurements of a data-plane change want (`cargo xtask bench-lb --lb example`).

fn main() -> anyhow::Result<()> {
    let mut admin = "127.0.0.1:9901".to_string();
    let mut state_file = None;
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--admin" => admin = value()?,
            "--state-file" => state_file = Some(value()?.into()),
            "--threads" => threads = value()?.parse()?,
            "lb" => {}
            other => {
                anyhow::bail!("unknown argument {other}; use --admin, --state-file, --threads")
            }
        }
    }
    proxy::run_blocking(proxy::ProxyConfig {
        admin_addr: admin.parse()?,
        state_file,
        worker_threads: threads,
        admin_token: None,
    })
}
