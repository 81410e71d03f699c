//! `icebreaker stun HOST[:PORT]`: the classic STUN test client. Sends one Binding request and
//! prints the reflexive (public) address, the server's SOFTWARE and the round-trip time.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::turn::{ClientOptions, TlsOptions, Transport, TurnClient, TurnError};
use super::{fmt_ms, parse_secs, resolve_server, DEFAULT_PORT, DEFAULT_TLS_PORT};

/// SOFTWARE attribute of our Binding requests.
pub const STUN_CLIENT_SOFTWARE: &str = "icebreaker-stun-client";
/// Binding requests are padded to this size so that servers that trim responses to requests
/// smaller than the response (amplification protection) still send their full answer.
pub const MIN_REQUEST_LEN: usize = 100;

/// Send a STUN Binding request and print the public (reflexive) address.
#[derive(clap::Args, Debug, Clone)]
pub struct StunArgs {
    /// STUN server as HOST[:PORT] (default port 3478, 5349 with --tls)
    pub server: String,
    /// Use TCP instead of UDP
    #[arg(long, conflicts_with = "tls")]
    pub tcp: bool,
    /// Use TLS over TCP
    #[arg(long)]
    pub tls: bool,
    /// With --tls: accept any server certificate (testing only)
    #[arg(long, requires = "tls", conflicts_with = "ca")]
    pub insecure: bool,
    /// With --tls: trust the CA certificate(s) in this PEM file instead of the system bundle
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca: Option<PathBuf>,
    /// Give up after this many seconds
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,
}

impl StunArgs {
    /// Arguments for `server` with every option at its default.
    pub fn new(server: impl Into<String>) -> Self {
        StunArgs {
            server: server.into(),
            tcp: false,
            tls: false,
            insecure: false,
            ca: None,
            timeout: Duration::from_secs(10),
        }
    }

    fn transport(&self) -> Transport {
        if self.tls {
            Transport::Tls
        } else if self.tcp {
            Transport::Tcp
        } else {
            Transport::Udp
        }
    }
}

/// Run the STUN client; prints the result to stdout.
pub async fn run(args: StunArgs) -> anyhow::Result<()> {
    let transport = args.transport();
    let default_port = if args.tls {
        DEFAULT_TLS_PORT
    } else {
        DEFAULT_PORT
    };
    let target = resolve_server(&args.server, default_port).await?;
    let opts = ClientOptions {
        transport,
        software: Some(STUN_CLIENT_SOFTWARE.to_owned()),
        fingerprint: true,
        tls: TlsOptions {
            server_name: Some(target.host.clone()),
            ca_file: args.ca.clone(),
            insecure: args.insecure,
        },
        timeout: args.timeout,
        ..ClientOptions::default()
    };
    let mut client = TurnClient::connect(target.addr, opts)
        .await
        .with_context(|| format!("cannot reach {} over {transport}", target.addr))?;
    let resp = match client.binding_padded(MIN_REQUEST_LEN).await {
        // A server that does not understand PADDING (comprehension-required) answers 420:
        // ask again without it.
        Err(TurnError::ErrorResponse { code: 420, .. }) => client.binding().await,
        r => r,
    }
    .with_context(|| format!("STUN Binding to {} over {transport} failed", target.addr))?;

    let (mapped, which) = match (resp.xor_mapped, resp.mapped) {
        (Some(a), _) => (a, "XOR-MAPPED-ADDRESS"),
        (None, Some(a)) => (a, "MAPPED-ADDRESS"),
        (None, None) => anyhow::bail!(
            "the Binding response from {} carries neither XOR-MAPPED-ADDRESS nor MAPPED-ADDRESS",
            target.addr
        ),
    };
    let server_label = if target.host == target.addr.ip().to_string() {
        format!("{} ({transport})", target.addr)
    } else {
        format!("{} ({}, {transport})", target.addr, target.host)
    };
    println!("server:    {server_label}");
    println!("mapped:    {mapped} ({which})");
    println!("local:     {}", client.local_addr());
    println!(
        "software:  {}",
        resp.software.as_deref().unwrap_or("(not sent)")
    );
    let retrans = if resp.transmissions > 1 {
        format!(" ({} transmissions)", resp.transmissions)
    } else {
        String::new()
    };
    println!("rtt:       {}{retrans}", fmt_ms(resp.rtt));
    if let Some(origin) = resp.response_origin {
        println!("origin:    {origin} (RESPONSE-ORIGIN)");
    }
    if let Some(other) = resp.other_address {
        println!("other:     {other} (OTHER-ADDRESS)");
    }
    if mapped == client.local_addr() {
        println!("nat:       none (mapped address equals the local address)");
    } else if mapped.ip() == client.local_addr().ip() {
        println!(
            "nat:       port changed ({} -> {})",
            client.local_addr().port(),
            mapped.port()
        );
    } else {
        println!(
            "nat:       yes (local {} -> public {})",
            client.local_addr(),
            mapped
        );
    }
    Ok(())
}
