//! The `etcd-monitor ctl` command line: etcdctl-parity commands with the collector's endpoint,
//! TLS and auth flags, `-w simple|json` output shaped like etcdctl 3.4's, `--dry-run` on every
//! mutating command, and the exit codes of [`super::exit`].

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use etcd_client::{
    AlarmAction, AlarmType, Client, CompactionOptions, Compare, CompareOp, DeleteOptions,
    EventType, GetOptions, LeaseTimeToLiveOptions, MemberAddOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use serde_json::{Map, Value, json};

use super::{
    conn::{any_client, member_client},
    exit,
    json::{base64, flat_header, get as get_json, header, kv as kv_json, member as member_json},
    safe::{self, DefragOptions, Fragmentation, OpError, Progress, RecoverOptions},
    snapshot,
};
use crate::{
    model::config::ClusterConfig, model::config::DEFAULT_CLUSTER,
    model::config::DEFAULT_DIAL_TIMEOUT, model::config::DEFAULT_ENDPOINT,
    model::config::duration_default, model::time::parse_duration,
    sources::etcd::endpoint::RawCluster, sources::etcd::endpoint::validate_cluster,
};

/// `--command-timeout` default.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// etcdctl's simple lines.
    Simple,
    /// etcdctl's JSON (protobuf field names, base64 keys and values).
    Json,
}

/// `etcd-monitor ctl`: operate an etcd cluster (etcdctl parity plus safe rolling defrag and
/// NOSPACE recovery). Exit codes: 0 ok, 1 etcd error, 2 usage, 3 txn compare failed,
/// 4 refused by a safety check, 5 snapshot verification failed.
#[derive(Debug, Parser)]
#[command(name = "etcd-monitor ctl", version)]
pub struct CtlCli {
    /// etcd client URLs, comma-separated (`http://HOST:PORT`, `https://HOST:PORT`, or
    /// `HOST:PORT`). Default http://127.0.0.1:2379.
    #[arg(long, env = "ENDPOINTS", value_delimiter = ',', global = true)]
    pub endpoints: Option<Vec<String>>,

    /// Timeout for connecting to a member (e.g. `5s`, `500ms`).
    #[arg(long, env = "DIAL_TIMEOUT", global = true, default_value = duration_default!(DEFAULT_DIAL_TIMEOUT), value_parser = parse_duration)]
    pub dial_timeout: Duration,

    /// Timeout of each request (defragment and snapshot have their own, longer ones).
    #[arg(long, env = "COMMAND_TIMEOUT", global = true, default_value = duration_default!(DEFAULT_COMMAND_TIMEOUT), value_parser = parse_duration)]
    pub command_timeout: Duration,

    /// Client certificate (PEM) presented to etcd.
    #[arg(long, env = "CERT_FILE", global = true)]
    pub cert_file: Option<PathBuf>,

    /// Private key (PEM) of --cert-file.
    #[arg(long, env = "KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,

    /// CA bundle (PEM) that signed the etcd members' server certificates.
    #[arg(long, env = "CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,

    /// Use TLS but do not verify the members' server certificates.
    #[arg(long, env = "INSECURE_SKIP_TLS", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true", global = true)]
    pub insecure_skip_tls: bool,

    /// etcd user name (auth enabled clusters).
    #[arg(long, env = "ETCD_USERNAME", global = true)]
    pub username: Option<String>,

    /// Password of --username.
    #[arg(long, env = "ETCD_PASSWORD", hide_env_values = true, global = true)]
    pub password: Option<String>,

    /// Output format.
    #[arg(short = 'w', long = "write-out", value_enum, default_value_t = Output::Simple, global = true)]
    pub write_out: Output,

    /// The operation.
    #[command(subcommand)]
    pub command: Command,
}

/// A key or range: `KEY [RANGE_END]`, `--prefix`, `--from-key`.
#[derive(Debug, Args)]
pub struct Range {
    /// The key.
    pub key: String,
    /// End of the range [KEY, RANGE_END).
    pub range_end: Option<String>,
    /// Every key starting with KEY.
    #[arg(long)]
    pub prefix: bool,
    /// Every key >= KEY.
    #[arg(long)]
    pub from_key: bool,
}

/// What a [`Range`] covers beyond its key.
enum Extent<'a> {
    /// The key alone.
    Key,
    /// `[KEY, RANGE_END)`.
    End(&'a str),
    /// Every key starting with KEY.
    Prefix,
    /// Every key >= KEY.
    FromKey,
}

impl Range {
    /// The one extent RANGE_END, `--prefix` and `--from-key` ask for; more than one is a usage
    /// error.
    fn extent(&self) -> Result<Extent<'_>, CtlError> {
        match (&self.range_end, self.prefix, self.from_key) {
            (Some(end), false, false) => Ok(Extent::End(end)),
            (None, true, false) => Ok(Extent::Prefix),
            (None, false, true) => Ok(Extent::FromKey),
            (None, false, false) => Ok(Extent::Key),
            _ => Err(CtlError::usage(
                "use only one of RANGE_END, --prefix, --from-key",
            )),
        }
    }
}

/// The operations.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reads keys.
    Get {
        #[command(flatten)]
        range: Range,
        /// Read at this revision.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// At most this many keys.
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Keys without values.
        #[arg(long)]
        keys_only: bool,
        /// Only the count.
        #[arg(long)]
        count_only: bool,
    },
    /// Writes a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Attach to this lease (hex ID).
        #[arg(long)]
        lease: Option<String>,
        /// Print the previous key-value.
        #[arg(long)]
        prev_kv: bool,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Deletes keys.
    Del {
        #[command(flatten)]
        range: Range,
        /// Print the deleted key-values.
        #[arg(long)]
        prev_kv: bool,
        /// Print the plan (and how many keys match); change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare-and-swap transaction. Comparisons are `KEY=VALUE`, `KEY!=VALUE`, `KEY<VALUE`,
    /// `KEY>VALUE` (the first operator in the argument splits it); all must hold for the
    /// `--then-*` operations to run, otherwise the `--else-*` ones run and the exit code is 3.
    Txn(TxnArgs),
    /// Watches keys and prints events.
    Watch {
        #[command(flatten)]
        range: Range,
        /// Start at this revision (history included).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Stop after this many events (0: run until interrupted).
        #[arg(long, default_value_t = 0)]
        max_events: u64,
        /// Include the previous key-value.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Cluster membership.
    Member {
        /// The operation.
        #[command(subcommand)]
        op: MemberOp,
    },
    /// Transfers leadership to the member with this hex ID.
    MoveLeader {
        /// Target member ID (hex).
        target: String,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Per-endpoint status, health and hash.
    Endpoint {
        /// The operation.
        #[command(subcommand)]
        op: EndpointOp,
    },
    /// Compacts the history up to REVISION, or keeping the last `--retain N` revisions.
    Compact {
        /// Revision to compact to.
        revision: Option<i64>,
        /// Keep this many revisions instead.
        #[arg(long, conflicts_with = "revision")]
        retain: Option<i64>,
        /// Wait until the compaction is physically applied.
        #[arg(long)]
        physical: bool,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Defragments the endpoints one by one (as etcdctl), or `--rolling`: safely, followers
    /// first and the leader last, refusing when the cluster is not healthy.
    Defrag(DefragArgs),
    /// Recovers from NOSPACE: compact, rolling defrag, disarm, prove a write.
    RecoverNospace {
        /// Revisions to keep when compacting.
        #[arg(long, default_value_t = 1000)]
        retain: i64,
        /// The backend quota (e.g. `2GiB`); default: `etcd_server_quota_backend_bytes` from
        /// the members' /metrics.
        #[arg(long, value_parser = safe::parse_size)]
        quota_bytes: Option<u64>,
        /// Move leadership away before defragmenting the leader.
        #[arg(long)]
        move_leader: bool,
        #[command(flatten)]
        safety: Safety,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Snapshots.
    Snapshot {
        /// The operation.
        #[command(subcommand)]
        op: SnapshotOp,
    },
    /// Alarms.
    Alarm {
        /// The operation.
        #[command(subcommand)]
        op: AlarmOp,
    },
    /// Leases (IDs in hex, as etcdctl prints them).
    Lease {
        /// The operation.
        #[command(subcommand)]
        op: LeaseOp,
    },
}

// The flags of `txn` (its help text is the `Command::Txn` variant's doc comment).
#[derive(Debug, Args)]
pub struct TxnArgs {
    /// Compare a key's value.
    #[arg(long = "if-value")]
    pub if_value: Vec<String>,
    /// Compare a key's version (number of puts since creation; 0 = absent).
    #[arg(long = "if-version")]
    pub if_version: Vec<String>,
    /// Compare a key's mod revision.
    #[arg(long = "if-mod-revision")]
    pub if_mod_revision: Vec<String>,
    /// Compare a key's create revision (0 = absent).
    #[arg(long = "if-create-revision")]
    pub if_create_revision: Vec<String>,
    /// On success: put KEY=VALUE.
    #[arg(long = "then-put")]
    pub then_put: Vec<String>,
    /// On success: delete KEY.
    #[arg(long = "then-del")]
    pub then_del: Vec<String>,
    /// On success: get KEY.
    #[arg(long = "then-get")]
    pub then_get: Vec<String>,
    /// On failure: put KEY=VALUE.
    #[arg(long = "else-put")]
    pub else_put: Vec<String>,
    /// On failure: delete KEY.
    #[arg(long = "else-del")]
    pub else_del: Vec<String>,
    /// On failure: get KEY.
    #[arg(long = "else-get")]
    pub else_get: Vec<String>,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

// The flags of `defrag` (its help text is the `Command::Defrag` variant's doc comment).
#[derive(Debug, Args)]
pub struct DefragArgs {
    /// The safe rolling defragmentation.
    #[arg(long)]
    pub rolling: bool,
    /// Move leadership to a caught-up follower before defragmenting the leader
    /// (implies --rolling).
    #[arg(long)]
    pub move_leader: bool,
    /// Only members with fragmentation >= RATIO and database >= SIZE
    /// (e.g. `45%,100MB`; implies --rolling).
    #[arg(long, value_parser = clap::value_parser!(Fragmentation))]
    pub if_fragmented: Option<Fragmentation>,
    #[command(flatten)]
    pub safety: Safety,
    /// Without --rolling: every member of the cluster, not only --endpoints.
    #[arg(long)]
    pub cluster: bool,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Guard-rail tuning of the safe operations.
#[derive(Debug, Args)]
pub struct Safety {
    /// Raft entries a member may trail the leader and count as caught up.
    #[arg(long, default_value_t = safe::DEFAULT_MAX_LAG)]
    pub max_lag: u64,
    /// How long to wait for a member to be healthy and caught up again.
    #[arg(long, default_value = duration_default!(safe::DEFAULT_CATCH_UP_TIMEOUT), value_parser = parse_duration)]
    pub catch_up_timeout: Duration,
    /// How long one member's Defragment call may take.
    #[arg(long, default_value = duration_default!(safe::DEFAULT_DEFRAG_TIMEOUT), value_parser = parse_duration)]
    pub defrag_timeout: Duration,
}

/// `member …`.
#[derive(Debug, Subcommand)]
pub enum MemberOp {
    /// Lists members.
    List,
    /// Adds a member (it must then be started with the printed settings).
    Add {
        /// Name of the new member.
        name: String,
        /// Its peer URLs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Add as a learner (promote it once caught up).
        #[arg(long)]
        learner: bool,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Removes a member.
    Remove {
        /// Member ID (hex).
        id: String,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Changes a member's peer URLs.
    Update {
        /// Member ID (hex).
        id: String,
        /// New peer URLs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Promotes a learner to a voting member.
    Promote {
        /// Member ID (hex).
        id: String,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `endpoint …`.
#[derive(Debug, Subcommand)]
pub enum EndpointOp {
    /// Status of each endpoint.
    Status {
        /// Every member of the cluster, not only --endpoints.
        #[arg(long)]
        cluster: bool,
    },
    /// Whether each endpoint serves a linearizable read.
    Health {
        /// Every member of the cluster, not only --endpoints.
        #[arg(long)]
        cluster: bool,
    },
    /// HashKV of each endpoint.
    Hashkv {
        /// At this revision (0: latest).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Every member of the cluster, not only --endpoints.
        #[arg(long)]
        cluster: bool,
    },
}

/// `snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotOp {
    /// Streams a snapshot into FILE, writes FILE.meta.json (revision, SHA-256) and verifies both.
    Save {
        /// Destination.
        file: PathBuf,
        /// How long the whole stream may stall.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Verifies FILE against its etcd SHA-256 trailer and FILE.meta.json.
    Verify {
        /// The snapshot.
        file: PathBuf,
    },
}

/// `alarm …`.
#[derive(Debug, Subcommand)]
pub enum AlarmOp {
    /// Lists active alarms.
    List,
    /// Disarms every active alarm.
    Disarm {
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `lease …`.
#[derive(Debug, Subcommand)]
pub enum LeaseOp {
    /// Grants a lease with a TTL in seconds.
    Grant {
        /// Seconds.
        ttl: i64,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Revokes a lease (its keys are deleted).
    Revoke {
        /// Lease ID (hex).
        id: String,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Keeps a lease alive (until interrupted, or once).
    KeepAlive {
        /// Lease ID (hex).
        id: String,
        /// One keep-alive, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Remaining and granted TTL of a lease.
    Timetolive {
        /// Lease ID (hex).
        id: String,
        /// Include the attached keys.
        #[arg(long)]
        keys: bool,
    },
    /// Lists leases.
    List,
}

/// A failure with its exit code.
#[derive(Debug)]
pub struct CtlError {
    /// One of [`exit`].
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl CtlError {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
        }
    }
    fn etcd(message: impl Into<String>) -> Self {
        Self {
            code: exit::ETCD_ERROR,
            message: message.into(),
        }
    }
}

impl From<OpError> for CtlError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Refused { reasons } => Self {
                code: exit::REFUSED,
                message: format!(
                    "refused, nothing changed by this step:\n  - {}",
                    reasons.join("\n  - ")
                ),
            },
            other => Self::etcd(other.to_string()),
        }
    }
}

type CtlResult = Result<u8, CtlError>;

/// Entry point: `args` are the process arguments with `ctl` removed (args\[0\] is the program).
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = match CtlCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(u8::try_from(code).unwrap_or(exit::USAGE));
        }
    };
    let config = match cluster_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("etcd-monitor ctl: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("etcd-monitor ctl: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ETCD_ERROR);
        }
    };
    match runtime.block_on(run(&cli, &config)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("etcd-monitor ctl: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// The collector's own validation of endpoints, TLS and auth.
pub fn cluster_config(cli: &CtlCli) -> Result<ClusterConfig, crate::model::config::ConfigError> {
    validate_cluster(RawCluster {
        field: String::new(),
        name: DEFAULT_CLUSTER.to_string(),
        endpoints: cli
            .endpoints
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_ENDPOINT.to_string()]),
        ca_file: cli.ca_file.as_deref(),
        cert_file: cli.cert_file.as_deref(),
        key_file: cli.key_file.as_deref(),
        insecure: cli.insecure_skip_tls,
        username: cli.username.clone(),
        password: cli.password.clone(),
        metrics_urls: &[],
        dial_timeout: cli.dial_timeout,
    })
}

fn print_json(v: &Value) {
    println!("{v}");
}

fn hex_id(s: &str, what: &str) -> Result<u64, CtlError> {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16)
        .map_err(|_| CtlError::usage(format!("{what} {s:?}: not a hex ID")))
}

fn lease_id(s: &str) -> Result<i64, CtlError> {
    hex_id(s, "lease").map(|v| v as i64)
}

fn range_options_get(r: &Range) -> Result<(Vec<u8>, GetOptions), CtlError> {
    let mut o = GetOptions::new();
    match r.extent()? {
        Extent::Key => {}
        Extent::End(end) => o = o.with_range(end.as_bytes()),
        Extent::Prefix => o = o.with_prefix(),
        Extent::FromKey => o = o.with_from_key(),
    }
    Ok((r.key.as_bytes().to_vec(), o))
}

fn range_options_del(r: &Range) -> Result<DeleteOptions, CtlError> {
    let mut o = DeleteOptions::new();
    match r.extent()? {
        Extent::Key => {}
        Extent::End(end) => o = o.with_range(end.as_bytes()),
        Extent::Prefix => o = o.with_prefix(),
        Extent::FromKey => o = o.with_from_key(),
    }
    Ok(o)
}

fn dry(output: Output, plan: Value, simple: &str) -> CtlResult {
    match output {
        Output::Json => print_json(&json!({ "dry_run": true, "plan": plan })),
        Output::Simple => println!("dry-run: would {simple}"),
    }
    Ok(exit::OK)
}

struct Ctx<'a> {
    config: &'a ClusterConfig,
    out: Output,
    timeout: Duration,
}

impl Ctx<'_> {
    async fn client(&self) -> Result<Client, CtlError> {
        any_client(self.config, self.timeout)
            .await
            .map(|(_, c)| c)
            .map_err(|e| CtlError::etcd(e.to_string()))
    }

    fn err(&self, e: etcd_client::Error) -> CtlError {
        CtlError::etcd(crate::sources::etcd::client::explain(
            &e,
            self.config.tls.as_ref(),
        ))
    }

    /// The endpoints to address one by one: `--endpoints`, or every member's client URL.
    async fn endpoints(&self, cluster: bool) -> Result<Vec<String>, CtlError> {
        if !cluster {
            return Ok(self.config.endpoints.clone());
        }
        let mut c = self.client().await?;
        let list = c.member_list().await.map_err(|e| self.err(e))?;
        Ok(list
            .members()
            .iter()
            .filter_map(|m| m.client_urls().first().cloned())
            .collect())
    }
}

/// Runs one parsed command; returns the exit code.
pub async fn run(cli: &CtlCli, config: &ClusterConfig) -> CtlResult {
    let ctx = Ctx {
        config,
        out: cli.write_out,
        timeout: cli.command_timeout,
    };
    match &cli.command {
        Command::Get {
            range,
            rev,
            limit,
            keys_only,
            count_only,
        } => get(&ctx, range, *rev, *limit, *keys_only, *count_only).await,
        Command::Put {
            key,
            value,
            lease,
            prev_kv,
            dry_run,
        } => put(&ctx, key, value, lease.as_deref(), *prev_kv, *dry_run).await,
        Command::Del {
            range,
            prev_kv,
            dry_run,
        } => del(&ctx, range, *prev_kv, *dry_run).await,
        Command::Txn(args) => txn(&ctx, args).await,
        Command::Watch {
            range,
            rev,
            max_events,
            prev_kv,
        } => watch(&ctx, range, *rev, *max_events, *prev_kv).await,
        Command::Member { op } => member(&ctx, op).await,
        Command::MoveLeader { target, dry_run } => move_leader(&ctx, target, *dry_run).await,
        Command::Endpoint { op } => endpoint(&ctx, op).await,
        Command::Compact {
            revision,
            retain,
            physical,
            dry_run,
        } => compact(&ctx, *revision, *retain, *physical, *dry_run).await,
        Command::Defrag(args) => defrag(&ctx, args).await,
        Command::RecoverNospace {
            retain,
            quota_bytes,
            move_leader,
            safety,
            dry_run,
        } => recover_nospace(&ctx, *retain, *quota_bytes, *move_leader, safety, *dry_run).await,
        Command::Snapshot { op } => snapshot_op(&ctx, op).await,
        Command::Alarm { op } => alarm(&ctx, op).await,
        Command::Lease { op } => lease(&ctx, op).await,
    }
}

/// `get`: reads a key or range, optionally at a revision, keys or count only.
async fn get(
    ctx: &Ctx<'_>,
    range: &Range,
    rev: i64,
    limit: i64,
    keys_only: bool,
    count_only: bool,
) -> CtlResult {
    let out = ctx.out;
    let (key, mut o) = range_options_get(range)?;
    if rev > 0 {
        o = o.with_revision(rev);
    }
    if limit > 0 {
        o = o.with_limit(limit);
    }
    if keys_only {
        o = o.with_keys_only();
    }
    if count_only {
        o = o.with_count_only();
    }
    let r = ctx
        .client()
        .await?
        .get(key, Some(o))
        .await
        .map_err(|e| ctx.err(e))?;
    match out {
        Output::Json => print_json(&get_json(&r)),
        Output::Simple if count_only => println!("{}", r.count()),
        Output::Simple => print_kvs_simple(r.kvs(), keys_only),
    }
    Ok(exit::OK)
}

/// `put`: writes one key (or prints the plan with `--dry-run`).
async fn put(
    ctx: &Ctx<'_>,
    key: &str,
    value: &str,
    lease: Option<&str>,
    prev_kv: bool,
    dry_run: bool,
) -> CtlResult {
    let out = ctx.out;
    let mut o = PutOptions::new();
    if let Some(l) = lease {
        o = o.with_lease(lease_id(l)?);
    }
    if prev_kv {
        o = o.with_prev_key();
    }
    if dry_run {
        return dry(
            out,
            json!({"op": "put", "key": key, "value": value, "lease": lease}),
            &format!("put {key:?} = {value:?}"),
        );
    }
    let r = ctx
        .client()
        .await?
        .put(key, value, Some(o))
        .await
        .map_err(|e| ctx.err(e))?;
    match out {
        Output::Json => {
            let mut m = Map::new();
            m.insert("header".into(), header(r.header()));
            if let Some(p) = r.prev_key() {
                m.insert("prev_kv".into(), kv_json(p));
            }
            print_json(&Value::Object(m));
        }
        Output::Simple => {
            println!("OK");
            if let Some(p) = r.prev_key() {
                print_kvs_simple(std::slice::from_ref(p), false);
            }
        }
    }
    Ok(exit::OK)
}

/// `del`: deletes a key or range; `--dry-run` counts the keys that would go.
async fn del(ctx: &Ctx<'_>, range: &Range, prev_kv: bool, dry_run: bool) -> CtlResult {
    let out = ctx.out;
    let mut o = range_options_del(range)?;
    if dry_run {
        let (key, g) = range_options_get(range)?;
        let n = ctx
            .client()
            .await?
            .get(key, Some(g.with_count_only()))
            .await
            .map_err(|e| ctx.err(e))?
            .count();
        return dry(
            out,
            json!({"op": "delete", "key": range.key, "range_end": range.range_end,
                   "prefix": range.prefix, "from_key": range.from_key, "matching_keys": n}),
            &format!("delete {n} key(s) from {:?}", range.key),
        );
    }
    if prev_kv {
        o = o.with_prev_key();
    }
    let r = ctx
        .client()
        .await?
        .delete(range.key.as_str(), Some(o))
        .await
        .map_err(|e| ctx.err(e))?;
    match out {
        Output::Json => {
            let mut m = Map::new();
            m.insert("header".into(), header(r.header()));
            super::json::put_nonzero(&mut m, "deleted", json!(r.deleted()));
            super::json::put_nonzero(
                &mut m,
                "prev_kvs",
                Value::Array(r.prev_kvs().iter().map(kv_json).collect()),
            );
            print_json(&Value::Object(m));
        }
        Output::Simple => {
            println!("{}", r.deleted());
            print_kvs_simple(r.prev_kvs(), false);
        }
    }
    Ok(exit::OK)
}

/// `txn`: builds the comparisons and both branches, runs them, prints etcdctl's answer; exit 3
/// when the comparisons failed.
async fn txn(ctx: &Ctx<'_>, args: &TxnArgs) -> CtlResult {
    let out = ctx.out;
    let mut compares = Vec::new();
    let mut plan = Vec::new();
    for (specs, kind) in [
        (&args.if_value, "value"),
        (&args.if_version, "version"),
        (&args.if_mod_revision, "mod-revision"),
        (&args.if_create_revision, "create-revision"),
    ] {
        for s in specs {
            compares.push(parse_compare(s, kind)?);
            plan.push(format!("if {kind} {s}"));
        }
    }
    let then_ops = txn_ops(
        [&args.then_put, &args.then_del, &args.then_get],
        "then",
        &mut plan,
    )?;
    let else_ops = txn_ops(
        [&args.else_put, &args.else_del, &args.else_get],
        "else",
        &mut plan,
    )?;
    if args.dry_run {
        return dry(out, json!({"op": "txn", "steps": plan}), &plan.join(", "));
    }
    let txn = Txn::new()
        .when(compares)
        .and_then(then_ops)
        .or_else(else_ops);
    let r = ctx.client().await?.txn(txn).await.map_err(|e| ctx.err(e))?;
    print_txn(out, &r);
    Ok(if r.succeeded() {
        exit::OK
    } else {
        exit::COMPARE_FAILED
    })
}

/// Prints a `txn` answer as etcdctl does: `SUCCESS`/`FAILURE` and each operation's result.
fn print_txn(out: Output, r: &etcd_client::TxnResponse) {
    match out {
        Output::Json => {
            let mut m = Map::new();
            m.insert("header".into(), header(r.header()));
            super::json::put_nonzero(&mut m, "succeeded", json!(r.succeeded()));
            let responses: Vec<Value> = r
                .op_responses()
                .iter()
                .map(|op| match op {
                    TxnOpResponse::Put(p) => {
                        json!({"Response": {"ResponsePut": {"header": header(p.header())}}})
                    }
                    TxnOpResponse::Delete(d) => {
                        let mut m = Map::new();
                        m.insert("header".into(), header(d.header()));
                        super::json::put_nonzero(&mut m, "deleted", json!(d.deleted()));
                        json!({"Response": {"ResponseDeleteRange": m}})
                    }
                    TxnOpResponse::Get(g) => {
                        json!({"Response": {"ResponseRange": get_json(g)}})
                    }
                    TxnOpResponse::Txn(t) => {
                        json!({"Response": {"ResponseTxn": {"header": header(t.header()), "succeeded": t.succeeded()}}})
                    }
                })
                .collect();
            super::json::put_nonzero(&mut m, "responses", Value::Array(responses));
            print_json(&Value::Object(m));
        }
        Output::Simple => {
            println!("{}", if r.succeeded() { "SUCCESS" } else { "FAILURE" });
            for op in r.op_responses() {
                println!();
                match op {
                    TxnOpResponse::Put(_) => println!("OK"),
                    TxnOpResponse::Delete(d) => println!("{}", d.deleted()),
                    TxnOpResponse::Get(g) => print_kvs_simple(g.kvs(), false),
                    TxnOpResponse::Txn(t) => println!("{}", t.succeeded()),
                }
            }
        }
    }
}

/// `move-leader`: hands leadership from the current leader to `target` (hex member ID).
async fn move_leader(ctx: &Ctx<'_>, target: &str, dry_run: bool) -> CtlResult {
    let out = ctx.out;
    let config = ctx.config;
    let target_id = hex_id(target, "member")?;
    let survey = safe::survey(config).await?;
    let leader = survey
        .members
        .iter()
        .find(|m| m.is_leader)
        .ok_or_else(|| CtlError::etcd("no leader"))?;
    if !survey
        .members
        .iter()
        .any(|m| m.id == format!("{target_id:x}"))
    {
        return Err(CtlError::usage(format!("{target}: no such member")));
    }
    if dry_run {
        return dry(
            out,
            json!({"op": "move-leader", "from": leader.id, "to": format!("{target_id:x}")}),
            &format!("move leadership from {} to {target_id:x}", leader.id),
        );
    }
    let mut c = member_client(config, &leader.endpoint, ctx.timeout)
        .await
        .map_err(|e| CtlError::etcd(e.to_string()))?;
    let r = c.move_leader(target_id).await.map_err(|e| ctx.err(e))?;
    match out {
        Output::Json => print_json(&json!({"header": header(r.header())})),
        Output::Simple => {
            println!("Leadership transferred from {} to {target_id:x}", leader.id)
        }
    }
    Ok(exit::OK)
}

/// `compact`: compacts up to a revision, or keeping the last `retain` revisions.
async fn compact(
    ctx: &Ctx<'_>,
    revision: Option<i64>,
    retain: Option<i64>,
    physical: bool,
    dry_run: bool,
) -> CtlResult {
    let out = ctx.out;
    let mut c = ctx.client().await?;
    let to = match (revision, retain) {
        (Some(r), None) => r,
        (None, Some(n)) if n >= 1 => {
            let current = c
                .get("\0", Some(GetOptions::new().with_count_only()))
                .await
                .map_err(|e| ctx.err(e))?
                .header()
                .map_or(0, |h| h.revision());
            let to = current - n;
            if to < 1 {
                println!("nothing to compact: revision {current}, retaining {n}");
                return Ok(exit::OK);
            }
            to
        }
        (None, Some(_)) => return Err(CtlError::usage("--retain must be at least 1")),
        _ => return Err(CtlError::usage("give REVISION or --retain N")),
    };
    if dry_run {
        return dry(
            out,
            json!({"op": "compact", "revision": to, "physical": physical}),
            &format!("compact up to revision {to}"),
        );
    }
    let o = physical.then(|| CompactionOptions::new().with_physical());
    let r = c.compact(to, o).await.map_err(|e| ctx.err(e))?;
    match out {
        Output::Json => print_json(&json!({"header": header(r.header()), "revision": to})),
        Output::Simple => println!("compacted revision {to}"),
    }
    Ok(exit::OK)
}

/// `recover-nospace`: compact, rolling defrag, disarm, prove a write; prints the report.
async fn recover_nospace(
    ctx: &Ctx<'_>,
    retain: i64,
    quota_bytes: Option<u64>,
    move_leader: bool,
    safety: &Safety,
    dry_run: bool,
) -> CtlResult {
    let out = ctx.out;
    let config = ctx.config;
    let options = RecoverOptions {
        retain,
        quota_bytes,
        defrag: DefragOptions {
            if_fragmented: None,
            move_leader,
            max_lag: safety.max_lag,
            catch_up_timeout: safety.catch_up_timeout,
            defrag_timeout: safety.defrag_timeout,
            dry_run,
        },
    };
    let report = safe::recover_nospace(config, &options, &progress_printer(out)).await?;
    match out {
        Output::Json => print_json(&json!(report)),
        Output::Simple => {
            let verb = if report.dry_run { "would " } else { "" };
            match report.compacted_to {
                Some(r) => println!(
                    "{verb}compact up to revision {r} (revision {})",
                    report.revision
                ),
                None => println!("no compaction: fewer than {retain} revisions"),
            }
            print_defrag_simple(&report.defrag);
            if let Some(q) = &report.quota {
                println!("quota {} B ({})", q.bytes, q.source);
            }
            for (m, a) in &report.disarmed {
                println!("{verb}disarm {a} on member {m}");
            }
            if let Some(r) = report.write_revision {
                println!("write succeeded at revision {r}");
            }
        }
    }
    Ok(exit::OK)
}

/// `snapshot save|verify`.
async fn snapshot_op(ctx: &Ctx<'_>, op: &SnapshotOp) -> CtlResult {
    let out = ctx.out;
    let config = ctx.config;
    match op {
        SnapshotOp::Save { file, timeout } => match snapshot::save(config, file, *timeout).await {
            Ok(meta) => {
                match out {
                    Output::Json => print_json(&json!(meta)),
                    Output::Simple => println!(
                        "Snapshot saved at {} (revision {}, sha256 {}, {} B; metadata in {})",
                        file.display(),
                        meta.revision,
                        meta.sha256,
                        meta.size,
                        snapshot::meta_path(file).display()
                    ),
                }
                Ok(exit::OK)
            }
            Err(e @ snapshot::SnapshotError::Verify { .. }) => Err(CtlError {
                code: exit::VERIFY_FAILED,
                message: e.to_string(),
            }),
            Err(e) => Err(CtlError::etcd(e.to_string())),
        },
        SnapshotOp::Verify { file } => match snapshot::verify(file) {
            Ok(meta) => {
                match out {
                    Output::Json => print_json(&json!(meta)),
                    Output::Simple => println!(
                        "{}: OK (revision {}, sha256 {})",
                        file.display(),
                        meta.revision,
                        meta.sha256
                    ),
                }
                Ok(exit::OK)
            }
            Err(e) => Err(CtlError {
                code: exit::VERIFY_FAILED,
                message: e.to_string(),
            }),
        },
    }
}

/// `alarm list|disarm`: lists the cluster's alarms, or deactivates every one of them.
async fn alarm(ctx: &Ctx<'_>, op: &AlarmOp) -> CtlResult {
    let out = ctx.out;
    let mut c = ctx.client().await?;
    let list = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .map_err(|e| ctx.err(e))?;
    let alarms: Vec<(u64, AlarmType)> = list
        .alarms()
        .iter()
        .map(|a| (a.member_id(), a.alarm()))
        .collect();
    let show = |alarms: &[(u64, AlarmType)], h: Option<&etcd_client::ResponseHeader>| match out {
        Output::Json => {
            let mut m = Map::new();
            m.insert("header".into(), header(h));
            super::json::put_nonzero(
                &mut m,
                "alarms",
                Value::Array(
                    alarms
                        .iter()
                        .map(|(id, t)| json!({"memberID": id, "alarm": *t as i32}))
                        .collect(),
                ),
            );
            print_json(&Value::Object(m));
        }
        Output::Simple => {
            for (id, t) in alarms {
                println!("memberID:{id} alarm:{}", alarm_str(*t));
            }
        }
    };
    match op {
        AlarmOp::List => show(&alarms, list.header()),
        AlarmOp::Disarm { dry_run } => {
            if *dry_run {
                let plan: Vec<Value> = alarms
                    .iter()
                    .map(|(id, t)| json!({"memberID": format!("{id:x}"), "alarm": alarm_str(*t)}))
                    .collect();
                return dry(
                    out,
                    json!({"op": "alarm-disarm", "alarms": plan}),
                    &format!("disarm {} alarm(s)", alarms.len()),
                );
            }
            let mut last_header = None;
            for (id, t) in &alarms {
                let mut o = etcd_client::AlarmOptions::new();
                o.with_member(*id);
                let r = c
                    .alarm(AlarmAction::Deactivate, *t, Some(o))
                    .await
                    .map_err(|e| ctx.err(e))?;
                last_header = r.header().cloned();
            }
            show(&alarms, last_header.as_ref().or(list.header()));
        }
    }
    Ok(exit::OK)
}

/// `defrag`: `--rolling` (or an option implying it) runs the safe rolling defragmentation;
/// otherwise each endpoint is defragmented one after another, as etcdctl does.
async fn defrag(ctx: &Ctx<'_>, d: &DefragArgs) -> CtlResult {
    let out = ctx.out;
    let config = ctx.config;
    let DefragArgs {
        rolling,
        move_leader,
        if_fragmented,
        ref safety,
        cluster,
        dry_run,
    } = *d;
    if rolling || move_leader || if_fragmented.is_some() {
        let options = DefragOptions {
            if_fragmented,
            move_leader,
            max_lag: safety.max_lag,
            catch_up_timeout: safety.catch_up_timeout,
            defrag_timeout: safety.defrag_timeout,
            dry_run,
        };
        let report = safe::rolling_defrag(config, &options, &progress_printer(out)).await?;
        match out {
            Output::Json => print_json(&json!(report)),
            Output::Simple => print_defrag_simple(&report),
        }
        return Ok(exit::OK);
    }
    let endpoints = ctx.endpoints(cluster).await?;
    if dry_run {
        return dry(
            out,
            json!({"op": "defrag", "endpoints": endpoints}),
            &format!("defragment {} one after another", endpoints.join(", ")),
        );
    }
    let mut failed = false;
    for ep in &endpoints {
        let result = async {
            let mut c = member_client(config, ep, safety.defrag_timeout)
                .await
                .map_err(|e| e.message)?;
            c.defragment()
                .await
                .map_err(|e| crate::sources::etcd::client::explain(&e, config.tls.as_ref()))
        }
        .await;
        match result {
            Ok(_) => println!("Finished defragmenting etcd member[{ep}]"),
            Err(e) => {
                eprintln!("Failed to defragment etcd member[{ep}] ({e})");
                failed = true;
            }
        }
    }
    Ok(if failed { exit::ETCD_ERROR } else { exit::OK })
}

fn alarm_str(t: AlarmType) -> &'static str {
    match t {
        AlarmType::Nospace => "NOSPACE",
        AlarmType::Corrupt => "CORRUPT",
        AlarmType::None => "NONE",
    }
}

fn print_kvs_simple(kvs: &[etcd_client::KeyValue], keys_only: bool) {
    for kv in kvs {
        println!("{}", String::from_utf8_lossy(kv.key()));
        if !keys_only {
            println!("{}", String::from_utf8_lossy(kv.value()));
        }
    }
}

/// Splits `KEY<op>VALUE` at the first operator (`!=`, `=`, `<`, `>`).
fn split_compare(s: &str) -> Option<(&str, CompareOp, &str)> {
    let pos = s.find(['=', '<', '>', '!'])?;
    let key = &s[..pos];
    let rest = &s[pos..];
    let (op, len) = if rest.starts_with("!=") {
        (CompareOp::NotEqual, 2)
    } else if rest.starts_with('=') {
        (CompareOp::Equal, 1)
    } else if rest.starts_with('<') {
        (CompareOp::Less, 1)
    } else if rest.starts_with('>') {
        (CompareOp::Greater, 1)
    } else {
        return None;
    };
    (!key.is_empty()).then_some((key, op, &rest[len..]))
}

fn parse_compare(s: &str, kind: &str) -> Result<Compare, CtlError> {
    let (key, op, value) = split_compare(s).ok_or_else(|| {
        CtlError::usage(format!(
            "--if-{kind} {s:?}: expected KEY=VALUE, KEY!=VALUE, KEY<VALUE or KEY>VALUE"
        ))
    })?;
    let number = || {
        value
            .parse::<i64>()
            .map_err(|_| CtlError::usage(format!("--if-{kind} {s:?}: {value:?} is not a number")))
    };
    Ok(match kind {
        "value" => Compare::value(key, op, value),
        "version" => Compare::version(key, op, number()?),
        "mod-revision" => Compare::mod_revision(key, op, number()?),
        _ => Compare::create_revision(key, op, number()?),
    })
}

/// One branch's operations (`[puts, deletes, gets]` of `--then-*` or `--else-*`) as `TxnOp`s,
/// each also written to `plan` for `--dry-run`.
fn txn_ops(
    [puts, dels, gets]: [&Vec<String>; 3],
    branch: &str,
    plan: &mut Vec<String>,
) -> Result<Vec<TxnOp>, CtlError> {
    let mut ops = Vec::new();
    for p in puts {
        let (k, v) = p
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| CtlError::usage(format!("--{branch}-put {p:?}: expected KEY=VALUE")))?;
        ops.push(TxnOp::put(k, v, None));
        plan.push(format!("{branch} put {k}={v}"));
    }
    for k in dels {
        ops.push(TxnOp::delete(k.as_str(), None));
        plan.push(format!("{branch} delete {k}"));
    }
    for k in gets {
        ops.push(TxnOp::get(k.as_str(), None));
        plan.push(format!("{branch} get {k}"));
    }
    Ok(ops)
}

async fn watch(ctx: &Ctx<'_>, range: &Range, rev: i64, max: u64, prev_kv: bool) -> CtlResult {
    let o = watch_options(range, rev, prev_kv)?;
    let mut c = any_client(ctx.config, ctx.timeout)
        .await
        .map(|(_, c)| c)
        .map_err(|e| CtlError::etcd(e.to_string()))?;
    let mut stream = c
        .watch(range.key.as_str(), Some(o))
        .await
        .map_err(|e| ctx.err(e))?;
    let mut seen = 0u64;
    while let Some(r) = stream.message().await.map_err(|e| ctx.err(e))? {
        if r.canceled() {
            let reason = if r.compact_revision() > 0 {
                format!(
                    "required revision {rev} has been compacted (compact revision {})",
                    r.compact_revision()
                )
            } else {
                r.cancel_reason().to_string()
            };
            return Err(CtlError::etcd(format!("watch canceled: {reason}")));
        }
        let events = r.events();
        if events.is_empty() {
            continue;
        }
        let take = if max > 0 {
            events.len().min((max - seen) as usize)
        } else {
            events.len()
        };
        let events = &events[..take];
        print_watch_events(ctx.out, &r, events);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        seen += take as u64;
        if max > 0 && seen >= max {
            return Ok(exit::OK);
        }
    }
    Err(CtlError::etcd("watch stream ended"))
}

/// `watch`'s options: the range, the start revision (history included) and `--prev-kv`.
fn watch_options(range: &Range, rev: i64, prev_kv: bool) -> Result<WatchOptions, CtlError> {
    let mut o = WatchOptions::new();
    match range.extent()? {
        Extent::Key => {}
        Extent::End(end) => o = o.with_range(end.as_bytes()),
        Extent::Prefix => o = o.with_prefix(),
        Extent::FromKey => o = o.with_from_key(),
    }
    if rev > 0 {
        o = o.with_start_revision(rev);
    }
    if prev_kv {
        o = o.with_prev_key();
    }
    Ok(o)
}

/// Prints one watch response's events as etcdctl does (`PUT`/`DELETE`, then the key-values).
fn print_watch_events(out: Output, r: &etcd_client::WatchResponse, events: &[etcd_client::Event]) {
    match out {
        Output::Json => {
            let evs: Vec<Value> = events
                .iter()
                .map(|e| {
                    let mut m = Map::new();
                    if e.event_type() == EventType::Delete {
                        m.insert("type".into(), json!(1));
                    }
                    if let Some(kv) = e.kv() {
                        m.insert("kv".into(), kv_json(kv));
                    }
                    if let Some(p) = e.prev_kv() {
                        m.insert("prev_kv".into(), kv_json(p));
                    }
                    Value::Object(m)
                })
                .collect();
            print_json(&json!({
                "Header": header(r.header()),
                "Events": evs,
                "CompactRevision": r.compact_revision(),
                "Canceled": r.canceled(),
                "Created": r.created(),
            }));
        }
        Output::Simple => {
            for e in events {
                println!(
                    "{}",
                    if e.event_type() == EventType::Delete {
                        "DELETE"
                    } else {
                        "PUT"
                    }
                );
                if let Some(p) = e.prev_kv() {
                    print_kvs_simple(std::slice::from_ref(p), false);
                }
                if let Some(kv) = e.kv() {
                    print_kvs_simple(std::slice::from_ref(kv), false);
                }
            }
        }
    }
}

async fn member(ctx: &Ctx<'_>, op: &MemberOp) -> CtlResult {
    let out = ctx.out;
    let mut c = ctx.client().await?;
    match op {
        MemberOp::List => {
            let r = c.member_list().await.map_err(|e| ctx.err(e))?;
            print_member_list(out, r.header(), r.members());
        }
        MemberOp::Add {
            name,
            peer_urls,
            learner,
            dry_run,
        } => return member_add(ctx, &mut c, name, peer_urls, *learner, *dry_run).await,
        MemberOp::Remove { id, dry_run } => {
            let n = hex_id(id, "member")?;
            if *dry_run {
                return dry(
                    out,
                    json!({"op": "member-remove", "ID": n}),
                    &format!("remove member {n:x}"),
                );
            }
            let r = c.member_remove(n).await.map_err(|e| ctx.err(e))?;
            print_member_change(out, r.header(), r.members(), n, "removed from");
        }
        MemberOp::Update {
            id,
            peer_urls,
            dry_run,
        } => {
            let n = hex_id(id, "member")?;
            if *dry_run {
                return dry(
                    out,
                    json!({"op": "member-update", "ID": n, "peerURLs": peer_urls}),
                    &format!("set member {n:x}'s peer URLs to {}", peer_urls.join(",")),
                );
            }
            let r = c
                .member_update(n, peer_urls.clone())
                .await
                .map_err(|e| ctx.err(e))?;
            print_member_change(out, r.header(), r.members(), n, "updated in");
        }
        MemberOp::Promote { id, dry_run } => {
            let n = hex_id(id, "member")?;
            if *dry_run {
                return dry(
                    out,
                    json!({"op": "member-promote", "ID": n}),
                    &format!("promote learner {n:x}"),
                );
            }
            let r = c.member_promote(n).await.map_err(|e| ctx.err(e))?;
            print_member_change(out, r.header(), r.members(), n, "promoted in");
        }
    }
    Ok(exit::OK)
}

/// `member list`'s answer: the members as JSON, or etcdctl's `ID, status, name, peer URLs,
/// client URLs, is-learner` lines.
fn print_member_list(
    out: Output,
    h: Option<&etcd_client::ResponseHeader>,
    members: &[etcd_client::Member],
) {
    match out {
        Output::Json => print_json(&json!({
            "header": header(h),
            "members": members.iter().map(member_json).collect::<Vec<_>>(),
        })),
        Output::Simple => {
            for m in members {
                println!(
                    "{:x}, {}, {}, {}, {}, {}",
                    m.id(),
                    if m.name().is_empty() {
                        "unstarted"
                    } else {
                        "started"
                    },
                    m.name(),
                    m.peer_urls().join(","),
                    m.client_urls().join(","),
                    m.is_learner()
                );
            }
        }
    }
}

/// etcdctl's answer to a member change: the member list (JSON) or one line (simple), e.g.
/// `Member 8e9e05c52164694d removed from cluster cdf818194e3a8c32`.
fn print_member_change(
    out: Output,
    h: Option<&etcd_client::ResponseHeader>,
    members: &[etcd_client::Member],
    id: u64,
    what: &str,
) {
    match out {
        Output::Json => print_member_list(out, h, members),
        Output::Simple => println!(
            "Member {id:x} {what} cluster {:x}",
            h.map_or(0, |h| h.cluster_id())
        ),
    }
}

/// `member add`: adds a member (or learner) and prints the `ETCD_*` settings it must start with.
async fn member_add(
    ctx: &Ctx<'_>,
    c: &mut Client,
    name: &str,
    peer_urls: &[String],
    learner: bool,
    dry_run: bool,
) -> CtlResult {
    let out = ctx.out;
    if dry_run {
        return dry(
            out,
            json!({"op": "member-add", "name": name, "peerURLs": peer_urls, "isLearner": learner}),
            &format!(
                "add member {name} ({}){}",
                peer_urls.join(","),
                if learner { " as a learner" } else { "" }
            ),
        );
    }
    let mut o = MemberAddOptions::new();
    if learner {
        o = o.with_is_learner();
    }
    let r = c
        .member_add(peer_urls.to_vec(), Some(o))
        .await
        .map_err(|e| ctx.err(e))?;
    let added = r.member().map_or(0, |m| m.id());
    match out {
        Output::Json => print_json(&json!({
            "header": header(r.header()),
            "member": r.member().map(member_json),
            "members": r.member_list().iter().map(member_json).collect::<Vec<_>>(),
        })),
        Output::Simple => {
            println!(
                "Member {added:x} added to cluster {:x}",
                r.header().map_or(0, |h| h.cluster_id())
            );
            let mut initial = Vec::new();
            for m in r.member_list() {
                let n = if m.id() == added { name } else { m.name() };
                for u in m.peer_urls() {
                    initial.push(format!("{n}={u}"));
                }
            }
            println!();
            println!("ETCD_NAME=\"{name}\"");
            println!("ETCD_INITIAL_CLUSTER=\"{}\"", initial.join(","));
            println!(
                "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"",
                peer_urls.join(",")
            );
            println!("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
        }
    }
    Ok(exit::OK)
}

/// The endpoint as etcdctl prints it: as given, which for us is the normalised URL.
async fn endpoint(ctx: &Ctx<'_>, op: &EndpointOp) -> CtlResult {
    let cluster = match op {
        EndpointOp::Status { cluster }
        | EndpointOp::Health { cluster }
        | EndpointOp::Hashkv { cluster, .. } => *cluster,
    };
    let endpoints = ctx.endpoints(cluster).await?;
    let mut rows = Vec::new();
    let mut failed = false;
    for ep in &endpoints {
        let client = member_client(ctx.config, ep, ctx.timeout).await;
        let mut c = match client {
            Ok(c) => c,
            Err(e) => {
                failed = true;
                eprintln!("{ep}: {}", e.message);
                if matches!(op, EndpointOp::Health { .. }) {
                    rows.push((
                        ep.clone(),
                        json!({"endpoint": ep, "health": false, "error": e.message}),
                    ));
                }
                continue;
            }
        };
        let row = match op {
            EndpointOp::Status { .. } => endpoint_status(ctx, ep, &mut c).await,
            EndpointOp::Health { .. } => {
                let (row, ok) = endpoint_health(ctx, ep, &mut c).await;
                failed |= !ok;
                Some(row)
            }
            EndpointOp::Hashkv { rev, .. } => endpoint_hashkv(ctx, ep, &mut c, *rev).await,
        };
        match row {
            Some(row) => rows.push(row),
            None => failed = true,
        }
    }
    match ctx.out {
        Output::Json => print_json(&Value::Array(rows.into_iter().map(|(_, j)| j).collect())),
        Output::Simple => {
            for (s, _) in rows {
                println!("{s}");
            }
        }
    }
    Ok(if failed { exit::ETCD_ERROR } else { exit::OK })
}

/// A request to one endpoint that failed or timed out: the reason on stderr.
fn answer_or_report<E>(
    ctx: &Ctx<'_>,
    ep: &str,
    r: Result<Result<E, etcd_client::Error>, tokio::time::error::Elapsed>,
) -> Option<E> {
    match r {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            eprintln!("{ep}: {}", ctx.err(e).message);
            None
        }
        Err(_) => {
            eprintln!("{ep}: no answer within {:?}", ctx.timeout);
            None
        }
    }
}

/// `endpoint status` of one endpoint: its (simple line, JSON) row, or `None` when it failed.
async fn endpoint_status(ctx: &Ctx<'_>, ep: &str, c: &mut Client) -> Option<(String, Value)> {
    let s = answer_or_report(ctx, ep, tokio::time::timeout(ctx.timeout, c.status()).await)?;
    let mut m = Map::new();
    m.insert("header".into(), header(s.header()));
    super::json::put_nonzero(&mut m, "version", json!(s.version()));
    super::json::put_nonzero(&mut m, "dbSize", json!(s.db_size()));
    super::json::put_nonzero(&mut m, "leader", json!(s.leader()));
    super::json::put_nonzero(&mut m, "raftIndex", json!(s.raft_index()));
    super::json::put_nonzero(&mut m, "raftTerm", json!(s.raft_term()));
    super::json::put_nonzero(&mut m, "raftAppliedIndex", json!(s.raft_applied_index()));
    super::json::put_nonzero(&mut m, "errors", json!(s.errors()));
    super::json::put_nonzero(&mut m, "dbSizeInUse", json!(s.raft_used_db_size()));
    super::json::put_nonzero(&mut m, "isLearner", json!(s.is_learner()));
    let id = s.header().map_or(0, |h| h.member_id());
    let simple = format!(
        "{ep}, {id:x}, {}, {} B, {}, {}, {}, {}, {}, {}",
        s.version(),
        s.db_size(),
        s.leader() == id,
        s.is_learner(),
        s.raft_term(),
        s.raft_index(),
        s.raft_applied_index(),
        s.errors().join(",")
    );
    Some((simple, json!({"Endpoint": ep, "Status": m})))
}

/// `endpoint health` of one endpoint, as etcdctl checks it (a linearizable read of `health`;
/// "permission denied" counts as healthy): its row and whether it is healthy.
async fn endpoint_health(ctx: &Ctx<'_>, ep: &str, c: &mut Client) -> ((String, Value), bool) {
    let started = Instant::now();
    let r = tokio::time::timeout(ctx.timeout, c.get("health", None)).await;
    let took = started.elapsed();
    let (ok, err) = match r {
        Ok(Ok(_)) => (true, None),
        Ok(Err(e)) if e.to_string().contains("permission denied") => (true, None),
        Ok(Err(e)) => (false, Some(ctx.err(e).message)),
        Err(_) => (false, Some(format!("no answer within {:?}", ctx.timeout))),
    };
    let simple = match &err {
        None => format!("{ep} is healthy: successfully committed proposal: took = {took:?}"),
        Some(e) => format!("{ep} is unhealthy: failed to commit proposal: {e}"),
    };
    let mut m = Map::new();
    m.insert("endpoint".into(), json!(ep));
    m.insert("health".into(), json!(ok));
    m.insert("took".into(), json!(format!("{took:?}")));
    if let Some(e) = err {
        m.insert("error".into(), json!(e));
    }
    ((simple, Value::Object(m)), ok)
}

/// `endpoint hashkv` of one endpoint at `rev` (0: latest): its row, or `None` when it failed.
async fn endpoint_hashkv(
    ctx: &Ctx<'_>,
    ep: &str,
    c: &mut Client,
    rev: i64,
) -> Option<(String, Value)> {
    let h = answer_or_report(
        ctx,
        ep,
        tokio::time::timeout(ctx.timeout, c.hash_kv(rev)).await,
    )?;
    let mut m = Map::new();
    m.insert("header".into(), header(h.header()));
    super::json::put_nonzero(&mut m, "hash", json!(h.hash()));
    super::json::put_nonzero(&mut m, "compact_revision", json!(h.compact_version()));
    Some((
        format!("{ep}, {}", h.hash()),
        json!({"Endpoint": ep, "HashKV": m}),
    ))
}

async fn lease(ctx: &Ctx<'_>, op: &LeaseOp) -> CtlResult {
    let out = ctx.out;
    let mut c = ctx.client().await?;
    match op {
        LeaseOp::Grant { ttl, dry_run } => {
            if *dry_run {
                return dry(
                    out,
                    json!({"op": "lease-grant", "TTL": ttl}),
                    &format!("grant a lease with TTL {ttl}s"),
                );
            }
            let r = c.lease_grant(*ttl, None).await.map_err(|e| ctx.err(e))?;
            match out {
                Output::Json => {
                    let mut m = flat_header(r.header());
                    m.insert("ID".into(), json!(r.id()));
                    m.insert("TTL".into(), json!(r.ttl()));
                    m.insert("Error".into(), json!(r.error()));
                    print_json(&Value::Object(m));
                }
                Output::Simple => println!("lease {:x} granted with TTL({}s)", r.id(), r.ttl()),
            }
        }
        LeaseOp::Revoke { id, dry_run } => {
            let n = lease_id(id)?;
            if *dry_run {
                return dry(
                    out,
                    json!({"op": "lease-revoke", "ID": n}),
                    &format!("revoke lease {n:x} and delete its keys"),
                );
            }
            let r = c.lease_revoke(n).await.map_err(|e| ctx.err(e))?;
            match out {
                Output::Json => print_json(&json!({"header": header(r.header())})),
                Output::Simple => println!("lease {n:x} revoked"),
            }
        }
        LeaseOp::KeepAlive { id, once } => return lease_keep_alive(ctx, &mut c, id, *once).await,
        LeaseOp::Timetolive { id, keys } => {
            return lease_time_to_live(ctx, &mut c, id, *keys).await;
        }
        LeaseOp::List => {
            let r = c.leases().await.map_err(|e| ctx.err(e))?;
            match out {
                Output::Json => {
                    let mut m = flat_header(r.header());
                    m.insert(
                        "leases".into(),
                        Value::Array(r.leases().iter().map(|l| json!({"id": l.id()})).collect()),
                    );
                    print_json(&Value::Object(m));
                }
                Output::Simple => {
                    println!("found {} leases", r.leases().len());
                    for l in r.leases() {
                        println!("{:x}", l.id());
                    }
                }
            }
        }
    }
    Ok(exit::OK)
}

/// `lease keep-alive`: refreshes the lease every third of its TTL (once with `--once`) and prints
/// each answer; an error once the lease has expired or was revoked.
async fn lease_keep_alive(ctx: &Ctx<'_>, c: &mut Client, id: &str, once: bool) -> CtlResult {
    let out = ctx.out;
    let n = lease_id(id)?;
    let (mut keeper, mut stream) = c.lease_keep_alive(n).await.map_err(|e| ctx.err(e))?;
    loop {
        keeper.keep_alive().await.map_err(|e| ctx.err(e))?;
        let Some(r) = stream.message().await.map_err(|e| ctx.err(e))? else {
            return Err(CtlError::etcd("keep-alive stream ended"));
        };
        if r.ttl() <= 0 {
            return Err(CtlError::etcd(format!("lease {n:x} expired or revoked")));
        }
        match out {
            Output::Json => {
                let mut m = flat_header(r.header());
                m.insert("ID".into(), json!(r.id()));
                m.insert("TTL".into(), json!(r.ttl()));
                print_json(&Value::Object(m));
            }
            Output::Simple => println!("lease {n:x} keepalived with TTL({})", r.ttl()),
        }
        if once {
            break;
        }
        tokio::time::sleep(Duration::from_secs((r.ttl() as u64 / 3).max(1))).await;
    }
    Ok(exit::OK)
}

/// `lease timetolive`: the lease's granted and remaining TTL, and with `--keys` its keys.
async fn lease_time_to_live(ctx: &Ctx<'_>, c: &mut Client, id: &str, keys: bool) -> CtlResult {
    let out = ctx.out;
    let n = lease_id(id)?;
    let o = keys.then(|| LeaseTimeToLiveOptions::new().with_keys());
    let r = c.lease_time_to_live(n, o).await.map_err(|e| ctx.err(e))?;
    match out {
        Output::Json => {
            let mut m = flat_header(r.header());
            m.insert("id".into(), json!(r.id()));
            m.insert("ttl".into(), json!(r.ttl()));
            m.insert("granted-ttl".into(), json!(r.granted_ttl()));
            m.insert(
                "keys".into(),
                if r.keys().is_empty() {
                    Value::Null
                } else {
                    Value::Array(r.keys().iter().map(|k| json!(base64(k))).collect())
                },
            );
            print_json(&Value::Object(m));
        }
        Output::Simple if r.ttl() == -1 => println!("lease {n:x} already expired"),
        Output::Simple => {
            let mut line = format!(
                "lease {n:x} granted with TTL({}s), remaining({}s)",
                r.granted_ttl(),
                r.ttl()
            );
            if keys {
                let ks: Vec<String> = r
                    .keys()
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                line.push_str(&format!(", attached keys({ks:?})"));
            }
            println!("{line}");
        }
    }
    Ok(exit::OK)
}

/// Progress lines go to stderr (stdout carries the result): text, or one JSON object a line.
fn progress_printer(out: Output) -> impl Fn(&Progress) + Send + Sync {
    move |p: &Progress| match out {
        Output::Json => eprintln!("{}", json!(p)),
        Output::Simple => match p {
            Progress::Planned { plan } => {
                eprintln!("plan:");
                for (i, s) in plan.iter().enumerate() {
                    eprintln!("  {}. {s}", i + 1);
                }
            }
            Progress::Defragmenting { name, endpoint } => {
                eprintln!("defragmenting {name} ({endpoint}) …")
            }
            Progress::MemberDone(m) => match &m.skipped {
                Some(r) => eprintln!("skipped {}: {r}", m.name),
                None => eprintln!(
                    "done {}: {} B -> {} B, blocked {} ms, caught up after {} ms",
                    m.name, m.db_size_before, m.db_size_after, m.blocked_ms, m.caught_up_ms
                ),
            },
            Progress::LeaderMoved(l) => eprintln!("leadership moved from {} to {}", l.from, l.to),
            Progress::Compacted { revision } => eprintln!("compacted up to revision {revision}"),
            Progress::Disarmed { member, alarm } => eprintln!("disarmed {alarm} on {member}"),
            Progress::WriteProven { revision } => {
                eprintln!("test write succeeded at revision {revision}")
            }
        },
    }
}

fn print_defrag_simple(report: &safe::DefragReport) {
    if report.dry_run {
        println!("dry-run: plan (nothing changed):");
        for (i, s) in report.plan.iter().enumerate() {
            println!("  {}. {s}", i + 1);
        }
        return;
    }
    for m in &report.members {
        match &m.skipped {
            Some(r) => println!("{} ({}): skipped: {r}", m.name, m.id),
            None => println!(
                "{} ({}): {} B -> {} B (in use {} B -> {} B), blocked {} ms",
                m.name,
                m.id,
                m.db_size_before,
                m.db_size_after,
                m.db_size_in_use_before,
                m.db_size_in_use_after,
                m.blocked_ms
            ),
        }
    }
    if let Some(l) = &report.leader_moved {
        println!("leadership moved from {} to {}", l.from, l.to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_specs_split_at_the_first_operator() {
        let (k, op, v) = split_compare("a=b=c").unwrap();
        assert_eq!((k, v), ("a", "b=c"));
        assert!(matches!(op, CompareOp::Equal));
        let (k, op, v) = split_compare("key!=x").unwrap();
        assert_eq!((k, v), ("key", "x"));
        assert!(matches!(op, CompareOp::NotEqual));
        assert!(matches!(split_compare("k<3").unwrap().1, CompareOp::Less));
        assert!(matches!(
            split_compare("k>3").unwrap().1,
            CompareOp::Greater
        ));
        assert!(split_compare("=v").is_none());
        assert!(split_compare("novalue").is_none());
        assert!(parse_compare("k=notnum", "version").is_err());
    }

    #[test]
    fn flags_parse_like_the_collector() {
        let cli = CtlCli::try_parse_from([
            "etcd-monitor ctl",
            "--endpoints=127.0.0.1:1,127.0.0.1:2",
            "defrag",
            "--rolling",
            "--if-fragmented=45%,100MB",
            "--dry-run",
        ])
        .unwrap();
        let config = cluster_config(&cli).unwrap();
        assert_eq!(
            config.endpoints,
            ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
        assert!(CtlCli::try_parse_from(["x", "defrag", "--if-fragmented=45%"]).is_err());
        let bad = CtlCli::try_parse_from(["x", "--username=u", "get", "k"]).unwrap();
        assert!(
            cluster_config(&bad)
                .unwrap_err()
                .to_string()
                .contains("--password")
        );
    }
}
