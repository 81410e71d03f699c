//! The `icebreaker` command line.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use icebreaker::config::{Config, LoadError, LogFormat, ServeArgs, Severity};
use icebreaker::credentials;

#[derive(Parser)]
#[command(
    name = "icebreaker",
    version,
    about = "STUN/TURN/WebRTC server in one binary",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the STUN/TURN server
    Serve(Box<ServeArgs>),
    /// Send a STUN Binding request and print the reflexive (public) address
    Stun(icebreaker::client::stun::StunArgs),
    /// Allocate a TURN relay and check it end to end
    TurnCheck(icebreaker::client::turn_check::TurnCheckArgs),
    /// Print time-limited TURN REST credentials for a shared secret
    Credentials(CredentialsArgs),
    /// Load generators: TURN relay throughput, STUN Binding rate, null-relay ceiling, signaling
    Bench(icebreaker::bench::BenchArgs),
    /// Configuration tools
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load the configuration (file, environment, flags) and explain every mistake; exits 1 on errors
    Check(Box<ServeArgs>),
}

#[derive(Args)]
struct CredentialsArgs {
    /// Shared secret (one of the server's turn_secrets)
    #[arg(
        long,
        env = "ICEBREAKER_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    secret: String,
    /// User name to embed in the credentials
    #[arg(long, value_name = "USER")]
    user: String,
    /// Validity in seconds
    #[arg(long, default_value_t = icebreaker::config::DEFAULT_CREDENTIAL_TTL, value_name = "SECS")]
    ttl: u32,
    /// TURN URI to include (repeatable) [default: turn:127.0.0.1:3478?transport=udp and ?transport=tcp]
    #[arg(long = "uri", value_name = "URI")]
    uris: Vec<String>,
    /// Print only the JSON block
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Stun(args) => run_client(icebreaker::client::stun::run(args)),
        Command::TurnCheck(args) => run_client(icebreaker::client::turn_check::run(args)),
        Command::Credentials(args) => print_credentials(&args),
        Command::Bench(args) => icebreaker::bench::run(args),
        Command::Config {
            command: ConfigCommand::Check(args),
        } => return config_check(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            print_load_error(&e, &mut std::io::stderr());
            eprintln!("hint: `icebreaker config check` explains the configuration");
            return Ok(ExitCode::FAILURE);
        }
    };
    let problems = config.check();
    if problems.iter().any(|p| p.is_error()) {
        eprintln!("error: the configuration has mistakes, not starting:");
        for (i, p) in problems.iter().enumerate() {
            eprintln!("  {}. {p}", i + 1);
        }
        return Ok(ExitCode::FAILURE);
    }
    init_tracing(&config.log, config.log_format)?;
    for p in &problems {
        tracing::warn!("configuration: {}", p.message);
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "icebreaker starting");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // SIGHUP and /admin/reload read the flags, environment and file again.
    let args = args.clone();
    let load = Box::new(move || Config::load(&args).map_err(|e| e.to_string()));
    runtime.block_on(icebreaker::serve::run(config, load))?;
    Ok(ExitCode::SUCCESS)
}

/// Run a client subcommand: logs go to stderr (RUST_LOG, default `warn`), results to stdout.
fn run_client(
    fut: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<ExitCode> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "warn".to_string());
    init_tracing(&filter, LogFormat::Text)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(fut)?;
    Ok(ExitCode::SUCCESS)
}

fn print_load_error(e: &anyhow::Error, out: &mut dyn std::io::Write) {
    match e.downcast_ref::<LoadError>() {
        Some(le) => {
            for (i, p) in le.problems.iter().enumerate() {
                let _ = writeln!(out, "{}. error: {p}", i + 1);
            }
        }
        None => {
            let _ = writeln!(out, "1. error: {e:#}");
        }
    }
}

fn config_check(args: &ServeArgs) -> ExitCode {
    let source = match &args.config {
        Some(p) => format!("{} with flags and environment", p.display()),
        None => "flags, environment and defaults (no --config file)".to_string(),
    };
    println!("checking configuration from {source}");
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            print_load_error(&e, &mut std::io::stdout());
            println!("the configuration cannot be read; fix the values above");
            return ExitCode::FAILURE;
        }
    };
    let problems = config.check();
    for (i, p) in problems.iter().enumerate() {
        println!("{}. {p}", i + 1);
    }
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let warnings = problems.len() - errors;
    match (errors, warnings) {
        (0, 0) => println!("configuration OK"),
        (0, w) => println!("configuration OK with {w} warning(s)"),
        (e, w) => println!("{e} error(s), {w} warning(s): the server would refuse to start"),
    }
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_credentials(args: &CredentialsArgs) -> anyhow::Result<ExitCode> {
    if args.secret.is_empty() {
        bail!("--secret is empty; give one of the server's turn_secrets");
    }
    if args.user.is_empty() {
        bail!("--user is empty; give the name to embed in the credentials");
    }
    if args.ttl == 0 {
        bail!("--ttl 0 would make credentials that are already expired; give seconds, e.g. 86400");
    }
    let creds =
        credentials::rest_credentials(&args.secret, &args.user, args.ttl, credentials::now_unix());
    let uris = if args.uris.is_empty() {
        credentials::default_uris()
    } else {
        args.uris.clone()
    };
    let pretty = credentials::ice_servers_json(&creds, &uris);
    if !args.json {
        println!("username: {}", creds.username);
        println!("password: {}", creds.password);
        println!(
            "expires:  {} (unix time, in {} s)",
            creds.expires_at, creds.ttl
        );
        println!();
    }
    println!("{pretty}");
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log filter {filter:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.event_format(json_log::JsonLines).try_init(),
    };
    result.map_err(|e| anyhow!("cannot initialise logging: {e}"))
}

/// One JSON object per log line: `timestamp`, `level`, `target`, `message`, `fields`, `spans`.
mod json_log {
    use std::fmt;

    use serde::Serialize;
    use serde_json::{Map, Value};
    use tracing::field::{Field, Visit};
    use tracing::{Event, Subscriber};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
    use tracing_subscriber::registry::LookupSpan;

    pub struct JsonLines;

    /// Field order of one log line.
    #[derive(Serialize)]
    struct Line<'a> {
        timestamp: String,
        level: String,
        target: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<Value>,
        #[serde(skip_serializing_if = "Map::is_empty")]
        fields: Map<String, Value>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        spans: Vec<SpanLine<'a>>,
    }

    #[derive(Serialize)]
    struct SpanLine<'a> {
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        fields: Option<String>,
    }

    struct Fields(Map<String, Value>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0
                .insert(field.name().to_string(), format!("{value:?}").into());
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_string(), value.into());
        }
        fn record_i64(&mut self, field: &Field, value: i64) {
            self.0.insert(field.name().to_string(), value.into());
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            self.0.insert(field.name().to_string(), value.into());
        }
        fn record_bool(&mut self, field: &Field, value: bool) {
            self.0.insert(field.name().to_string(), value.into());
        }
        fn record_f64(&mut self, field: &Field, value: f64) {
            self.0.insert(field.name().to_string(), value.into());
        }
    }

    impl<S, N> FormatEvent<S, N> for JsonLines
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            let meta = event.metadata();
            let mut timestamp = String::new();
            SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
            let mut fields = Fields(Map::new());
            event.record(&mut fields);
            let message = fields.0.remove("message");
            let mut spans = Vec::new();
            if let Some(scope) = ctx.event_scope() {
                for span in scope.from_root() {
                    let ext = span.extensions();
                    let fields = ext
                        .get::<FormattedFields<N>>()
                        .map(|f| f.fields.clone())
                        .filter(|f| !f.is_empty());
                    spans.push(SpanLine {
                        name: span.name(),
                        fields,
                    });
                }
            }
            let obj = Line {
                timestamp,
                level: meta.level().to_string(),
                target: meta.target(),
                message,
                fields: fields.0,
                spans,
            };
            let line = serde_json::to_string(&obj).map_err(|_| fmt::Error)?;
            writeln!(writer, "{line}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn subcommands_parse() {
        assert!(Cli::try_parse_from(["icebreaker"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["icebreaker", "serve", "--realm", "x"]).map(|c| c.command),
            Ok(Command::Serve(_))
        ));
        assert!(matches!(
            Cli::try_parse_from(["icebreaker", "config", "check", "--user", "a:b"])
                .map(|c| c.command),
            Ok(Command::Config { .. })
        ));
        let c = Cli::try_parse_from([
            "icebreaker",
            "credentials",
            "--secret",
            "s",
            "--user",
            "u",
            "--uri",
            "turn:a",
            "--uri",
            "turns:b",
        ]);
        match c.map(|c| c.command) {
            Ok(Command::Credentials(a)) => {
                assert_eq!(a.ttl, 86_400);
                assert_eq!(a.uris, ["turn:a", "turns:b"]);
            }
            _ => panic!("credentials did not parse"),
        }
    }
}
