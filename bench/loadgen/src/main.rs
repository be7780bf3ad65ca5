//! `loadgen`: measures claude-agent-http against fake-anthropic for
//! `bench/run.sh`, and writes the results into `bench/RESULTS.md`.

mod measure;
mod proc;
mod relay;
mod report;
mod sse;
mod stats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

const USAGE: &str = "usage:
  loadgen measure --service URL --fake URL --backend memory|sqlite|postgresql --out FILE.json
                  [--service-pid PID] [--service-log FILE] [--fake-pid PID] [--clk-tck 100]
                  [--warmup 40] [--requests 400] [--stream-requests 300] [--rotate 20]
                  [--concurrency 32] [--duration 15 (0: no turns/s run)] [--label NAME]
                  [--service-acked URL (a relay in front of the service)]
  loadgen relay --listen 127.0.0.1:0 --upstream http://HOST:PORT
  loadgen report --results-md bench/RESULTS.md --date D --revision R --command C --settings S
                  FILE.json...";

struct Args {
    flags: HashMap<String, String>,
    positional: Vec<String>,
}

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> Result<Args> {
        let mut flags = HashMap::new();
        let mut positional = Vec::new();
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            if let Some(name) = arg.strip_prefix("--") {
                let (name, value) = match name.split_once('=') {
                    Some((n, v)) => (n.to_owned(), v.to_owned()),
                    None => (
                        name.to_owned(),
                        args.next()
                            .ok_or_else(|| anyhow!("--{name} needs a value"))?,
                    ),
                };
                flags.insert(name, value);
            } else {
                positional.push(arg);
            }
        }
        Ok(Args { flags, positional })
    }

    fn required(&self, name: &str) -> Result<String> {
        self.flags
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("--{name} is required"))
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.flags.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow!("--{name}: not a number: {v}")),
        }
    }

    fn pid(&self, name: &str) -> Result<Option<u32>> {
        self.flags
            .get(name)
            .map(|v| v.parse().map_err(|_| anyhow!("--{name}: not a pid: {v}")))
            .transpose()
    }
}

fn measure(args: &Args) -> Result<()> {
    let opts = measure::Options {
        service: args.required("service")?,
        fake: args.required("fake")?,
        service_acked: args.flags.get("service-acked").cloned(),
        backend: args.required("backend")?,
        label: args
            .flags
            .get("label")
            .or_else(|| args.flags.get("backend"))
            .cloned()
            .unwrap_or_default(),
        service_pid: args.pid("service-pid")?,
        service_log: args.flags.get("service-log").map(PathBuf::from),
        fake_pid: args.pid("fake-pid")?,
        clk_tck: args.number("clk-tck", 100.0)?,
        warmup: args.number("warmup", 40)?,
        requests: args.number("requests", 400)?,
        stream_requests: args.number("stream-requests", 300)?,
        rotate: args.number("rotate", 20)?,
        concurrency: args.number("concurrency", 32)?,
        duration: Duration::from_secs_f64(args.number("duration", 15.0)?),
    };
    if opts.rotate == 0 || opts.concurrency == 0 || opts.requests == 0 {
        bail!("--rotate, --concurrency and --requests must be positive");
    }
    let out = PathBuf::from(args.required("out")?);
    let results = measure::run(&opts)?;
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(&out, json).with_context(|| format!("writing {}", out.display()))?;
    let c = &results.chat;
    let t = &results.throughput;
    eprintln!(
        "[{}] chat p50 {:.3} ms vs direct {:.3} ms (overhead {:.3} ms); first delta p50 {:.3} vs {:.3} ms; {:.0} turns/s, {} failed",
        results.label,
        c.service.p50,
        c.direct.p50,
        c.service.p50 - c.direct.p50,
        results.stream.service_first.p50,
        results.stream.direct_first.p50,
        t.turns_per_s,
        t.errors.values().sum::<usize>()
    );
    Ok(())
}

fn report(args: &Args) -> Result<()> {
    let mut results = Vec::new();
    for path in &args.positional {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        results.push(serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?);
    }
    let info = report::RunInfo {
        date: args.required("date")?,
        revision: args.required("revision")?,
        command: args.required("command")?,
        settings: args.required("settings")?,
    };
    let section = report::section(&results, &info, &report::Machine::detect());
    report::write(&PathBuf::from(args.required("results-md")?), &section)
}

fn relay(args: &Args) -> Result<()> {
    let listen = args.required("listen")?;
    let upstream = args.required("upstream")?;
    let upstream = upstream
        .strip_prefix("http://")
        .unwrap_or(&upstream)
        .trim_end_matches('/');
    relay::run(
        listen
            .parse()
            .map_err(|_| anyhow!("--listen: not host:port: {listen}"))?,
        upstream
            .parse()
            .map_err(|_| anyhow!("--upstream: not http://host:port: {upstream}"))?,
    )
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let command = argv.next();
    let outcome = Args::parse(argv).and_then(|args| match command.as_deref() {
        Some("measure") => measure(&args),
        Some("report") => report(&args),
        Some("relay") => relay(&args),
        _ => bail!("unknown command"),
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}\n\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}
