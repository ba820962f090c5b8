//! Per-stack settings: a TOML file the user keeps next to their other infrastructure
//! (`wheelhouse.<stack>.toml`, as Pulumi keeps `Pulumi.<stack>.yaml`), every key overridable
//! with `--set key=value`. Everything is checked before any AWS call; each error names the
//! setting and the bad value.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sizing::{
    self, InstanceSpec, Sizing, SizingInput, Unplaceable, AGENT_CPU_UNITS, AGENT_MIB,
    PAGE_CACHE_MIB,
};

/// EFS throughput modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ThroughputMode {
    #[default]
    Elastic,
    Bursting,
    Provisioned,
}

impl ThroughputMode {
    pub fn as_cfn(self) -> &'static str {
        match self {
            ThroughputMode::Elastic => "elastic",
            ThroughputMode::Bursting => "bursting",
            ThroughputMode::Provisioned => "provisioned",
        }
    }
}

/// When files move to EFS Infrequent Access: after a number of days, or never.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IaTransition {
    Days(u32),
    Word(String),
}

impl Default for IaTransition {
    fn default() -> Self {
        IaTransition::Days(30)
    }
}

impl fmt::Display for IaTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IaTransition::Days(days) => write!(f, "{days}"),
            IaTransition::Word(word) => write!(f, "{word:?}"),
        }
    }
}

impl IaTransition {
    /// The CloudFormation `TransitionToIA` value, or `None` for never.
    pub fn as_cfn(&self) -> Option<String> {
        match self {
            IaTransition::Days(days) => Some(format!("AFTER_{days}_DAYS")),
            IaTransition::Word(_) => None,
        }
    }
}

/// Bytes of `host_files` and `host_commands` the boot script can take: EC2 takes 16 KiB of
/// user data (before base64), and the appliance's own script needs about 2.5 KiB of it.
const HOST_EXTRAS_MAX_BYTES: usize = 12 * 1024;

/// A file the hosts write at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFile {
    /// Absolute path on the host.
    pub path: String,
    pub content: String,
    /// Octal permissions, e.g. "0644" (the default).
    #[serde(default = "HostFile::default_mode")]
    pub mode: String,
}

impl HostFile {
    fn default_mode() -> String {
        "0644".into()
    }
}

/// Everything a stack is made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// EC2 instance type of the ECS hosts.
    pub instance_type: String,
    /// vCPUs of an instance type the built-in table does not know (with `instance_memory_mib`).
    pub instance_vcpus: Option<u32>,
    /// Memory of an instance type the built-in table does not know.
    pub instance_memory_mib: Option<u32>,
    /// Auto scaling group bounds; min defaults to the number of `asg_subnets`, max to 2 × min.
    pub asg_min_size: Option<u32>,
    pub asg_max_size: Option<u32>,
    /// Private subnets of the ECS hosts (and the EFS mount targets).
    pub asg_subnets: Vec<String>,
    /// Public subnets of the load balancer (at least two, in different AZs).
    pub lb_subnets: Vec<String>,
    /// The VPC; looked up from the subnets when not given.
    pub vpc_id: Option<String>,
    /// The VPC's CIDR (NFS is allowed only from it); looked up when not given.
    pub vpc_cidr: Option<String>,
    /// Host names in the hosted zone that point at the load balancer.
    pub dns_names: Vec<String>,
    pub hosted_zone_id: String,
    /// The hosted zone's domain, e.g. `example.com`.
    pub hosted_zone_name: String,
    pub environment: String,
    /// Names the cluster, service and friends (at most 32 characters).
    pub service_name: String,
    /// Service task bounds; default from sizing (min = tasks per instance × ASG min, max = 2 × min).
    pub task_min_count: Option<u32>,
    pub task_max_count: Option<u32>,
    pub efs_throughput_mode: ThroughputMode,
    /// MiB/s, only with `efs_throughput_mode = "provisioned"` (1–3414).
    pub efs_provisioned_throughput_mibps: Option<u32>,
    /// Days until Infrequent Access (7, 14, 30, 60, 90) or "never".
    pub efs_transition_to_ia: IaTransition,
    pub backup: bool,
    pub backup_retention_days: u32,
    pub backup_schedule: String,
    pub dashboard: bool,
    pub alarm_emails: Vec<String>,
    /// More SNS topics that receive every alarm.
    pub alarm_topic_arns: Vec<String>,
    /// Alarm when EFS burst credits fall below this many bytes (bursting mode only).
    pub efs_burst_credit_threshold: u64,
    /// Hard memory limit of a task, MiB (128–30720).
    pub container_memory: u32,
    /// Soft memory limit, MiB; default floor(0.75 × container_memory).
    pub memory_reservation: Option<u32>,
    /// CPU units of a task; default workers × 150 + 40.
    pub container_cpu: Option<u32>,
    /// Request threads of the server (1–16); default max(2, min(8, memory / 128)).
    pub workers: Option<u32>,
    pub image_repository: String,
    pub image_tag: String,
    /// Roles that may read the generated credentials besides the tasks.
    pub secret_readers: Vec<String>,
    /// Users besides the stack's own ([`STACK_USER`]), each with a generated password in a
    /// Secrets Manager secret of its own.
    pub users: Vec<String>,
    /// Managed policies added to the instance role.
    pub instance_policy_arns: Vec<String>,
    /// Inline IAM statements added to the instance role (each with Effect, Action, Resource).
    pub instance_policy_statements: Vec<serde_json::Value>,
    /// An AMI for the hosts instead of the latest ECS-optimized Amazon Linux 2023 (which must
    /// still run the ECS agent and Docker).
    pub ami_id: Option<String>,
    /// Files the hosts write at boot, before `host_commands`.
    pub host_files: Vec<HostFile>,
    /// Shell commands the hosts run at boot, once the volume is mounted and before they join
    /// the cluster. One that fails stops the set-up: the host powers off and is replaced.
    pub host_commands: Vec<String>,
    /// The load balancer's access logs, to an S3 bucket of the stack's (kept when the stack
    /// goes: see the README).
    pub access_logs: bool,
    /// Days an access log is kept before the bucket's lifecycle rule deletes it.
    pub access_logs_days: u32,
    /// Who may reach the load balancer.
    pub allowed_cidrs: Vec<String>,
    /// CloudWatch Logs retention of the server's log group.
    pub log_retention_days: u32,
    /// Stack termination protection and load balancer deletion protection; default on when
    /// `environment = "production"`. `destroy` turns both off after its confirmation.
    pub protection: Option<bool>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            instance_type: "t3.small".into(),
            instance_vcpus: None,
            instance_memory_mib: None,
            asg_min_size: None,
            asg_max_size: None,
            asg_subnets: Vec::new(),
            lb_subnets: Vec::new(),
            vpc_id: None,
            vpc_cidr: None,
            dns_names: vec!["pypiserver".into()],
            hosted_zone_id: String::new(),
            hosted_zone_name: String::new(),
            environment: "production".into(),
            service_name: "wheelhouse".into(),
            task_min_count: None,
            task_max_count: None,
            efs_throughput_mode: ThroughputMode::Elastic,
            efs_provisioned_throughput_mibps: None,
            efs_transition_to_ia: IaTransition::default(),
            backup: true,
            backup_retention_days: 7,
            backup_schedule: "cron(0 2 * * ? *)".into(),
            dashboard: true,
            alarm_emails: Vec::new(),
            alarm_topic_arns: Vec::new(),
            efs_burst_credit_threshold: 1_000_000_000_000,
            container_memory: 512,
            memory_reservation: None,
            container_cpu: None,
            workers: None,
            image_repository: String::new(),
            image_tag: "latest".into(),
            secret_readers: Vec::new(),
            users: Vec::new(),
            instance_policy_arns: Vec::new(),
            instance_policy_statements: Vec::new(),
            ami_id: None,
            host_files: Vec::new(),
            host_commands: Vec::new(),
            protection: None,
            access_logs: true,
            access_logs_days: 90,
            allowed_cidrs: vec!["0.0.0.0/0".into()],
            log_retention_days: 30,
        }
    }
}

/// The user every stack generates; its secret is the output `CredentialsSecretArn`.
pub const STACK_USER: &str = "wheelhouse";

/// Most users the `users` setting takes. Each adds a secret, its resource policy, two
/// environment variables of the task and an output: about 1.45 KB of the 51,200 bytes
/// CloudFormation takes inline, of which the rest of the template takes about 27 KB. Ten
/// leave about 9 KB for host extras; with the largest extras fewer fit, and `preview` and `up`
/// refuse a template too large before any change.
const USERS_MAX: usize = 10;

/// A user's name as the template spells it, in logical ids, outputs and environment variables:
/// its letters and digits, each run after a '.', '_' or '-' capitalised ("ci-bot" is "CiBot").
/// Two names that differ only in those separators or in case are refused by
/// [`Settings::validate`], so this names one user.
pub fn user_key(name: &str) -> String {
    name.split(['.', '_', '-'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} = {value}: {reason}")]
pub struct SettingError {
    pub setting: &'static str,
    pub value: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("settings file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("--set {raw:?}: {reason}")]
    Override { raw: String, reason: String },
    #[error("invalid settings:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<SettingError>),
}

/// The settings file of a stack, by convention.
pub fn default_path(stack: &str) -> PathBuf {
    PathBuf::from(format!("wheelhouse.{stack}.toml"))
}

impl Settings {
    /// Reads the file (if it exists), applies `--set key=value` overrides, and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, LoadError> {
        let settings = Self::read(path, overrides)?;
        settings.validate().map_err(LoadError::Invalid)?;
        Ok(settings)
    }

    /// Reads the file and overrides without the full validation, for commands that need only
    /// a few settings (`sizing`).
    pub fn read(path: &Path, overrides: &[String]) -> Result<Self, LoadError> {
        let mut table = match std::fs::read_to_string(path) {
            Ok(text) => text
                .parse::<toml::Table>()
                .map_err(|err| LoadError::Parse {
                    path: path.display().to_string(),
                    message: err.to_string(),
                })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(source) => {
                return Err(LoadError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        for raw in overrides {
            apply_override(&mut table, raw)?;
        }
        let settings: Settings =
            toml::Value::Table(table)
                .try_into()
                .map_err(|err: toml::de::Error| LoadError::Parse {
                    path: path.display().to_string(),
                    message: err.message().to_owned(),
                })?;
        Ok(settings)
    }

    /// The instance's vCPUs and memory: from the override, else from the table.
    pub fn instance_spec(&self) -> Option<InstanceSpec> {
        match (self.instance_vcpus, self.instance_memory_mib) {
            (Some(vcpus), Some(memory_mib)) => Some(InstanceSpec { vcpus, memory_mib }),
            _ => sizing::instance_spec(&self.instance_type),
        }
    }

    /// Whether the stack and its load balancer are protected from deletion.
    pub fn protected(&self) -> bool {
        self.protection.unwrap_or(self.environment == "production")
    }

    pub fn asg_min(&self) -> u32 {
        self.asg_min_size.unwrap_or(
            u32::try_from(self.asg_subnets.len())
                .unwrap_or(u32::MAX)
                .max(1),
        )
    }

    pub fn asg_max(&self) -> u32 {
        self.asg_max_size.unwrap_or(2 * self.asg_min())
    }

    /// The sizing of this stack. Only call on validated settings.
    pub fn sizing(&self) -> Sizing {
        let spec = self.instance_spec().unwrap_or(InstanceSpec {
            vcpus: 2,
            memory_mib: 2048,
        });
        sizing::compute(&SizingInput {
            spec,
            container_memory: self.container_memory,
            memory_reservation: self.memory_reservation,
            container_cpu: self.container_cpu,
            workers: self.workers,
            asg_min_size: self.asg_min(),
            task_min_count: self.task_min_count,
            task_max_count: self.task_max_count,
        })
    }

    /// The setting to blame when not one task fits on an instance, with its value and why.
    /// ECS would leave every task in PROVISIONING, and CloudFormation would wait for hours.
    fn unplaceable(&self) -> Option<(&'static str, String, String)> {
        let spec = self.instance_spec()?;
        let sizing = self.sizing();
        let host = format!(
            "a {} ({} vCPU, {} MiB)",
            self.instance_type, spec.vcpus, spec.memory_mib
        );
        Some(match sizing.unplaceable()? {
            Unplaceable::Instance => (
                if self.instance_memory_mib.is_some() { "instance_memory_mib" } else { "instance_type" },
                if self.instance_memory_mib.is_some() { spec.memory_mib.to_string() } else { format!("{:?}", self.instance_type) },
                format!(
                    "{host} registers about {} MiB for tasks (after the kernel's share and the {PAGE_CACHE_MIB} MiB kept for the page cache): not one task fits; use a type with at least 1 GiB",
                    sizing::registered_memory_mib(spec)
                ),
            ),
            Unplaceable::Memory => (
                if self.memory_reservation.is_some() { "memory_reservation" } else { "container_memory" },
                if self.memory_reservation.is_some() { sizing.memory_reservation.to_string() } else { self.container_memory.to_string() },
                format!(
                    "a task reserving {} MiB fits nowhere: {host} registers about {} MiB for tasks (after the kernel's share and the {PAGE_CACHE_MIB} MiB kept for the page cache)",
                    sizing.memory_reservation,
                    sizing::registered_memory_mib(spec)
                ),
            ),
            Unplaceable::Cpu => {
                let (setting, value) = match (self.container_cpu, self.workers) {
                    (Some(cpu), _) => ("container_cpu", cpu.to_string()),
                    (None, Some(workers)) => ("workers", workers.to_string()),
                    (None, None) => ("container_memory", self.container_memory.to_string()),
                };
                let why = if self.container_cpu.is_some() { String::new() } else { format!(" ({} workers × 150 + 40)", sizing.workers) };
                (
                    setting,
                    value,
                    format!(
                        "a task of {} CPU units{why} fits nowhere: {host} offers tasks {} (vCPUs × 1024 - {AGENT_CPU_UNITS} for the agent)",
                        sizing.container_cpu, sizing.available_cpu
                    ),
                )
            }
        })
    }

    /// Every rule, all reported at once, checked by concern.
    pub fn validate(&self) -> Result<(), Vec<SettingError>> {
        let mut found = Findings::default();
        self.check_instance(&mut found);
        self.check_network(&mut found);
        self.check_scaling(&mut found);
        self.check_names(&mut found);
        self.check_storage(&mut found);
        self.check_alarms(&mut found);
        self.check_task(&mut found);
        self.check_image(&mut found);
        self.check_access(&mut found);
        self.check_hosts(&mut found);
        self.check_logs(&mut found);
        if found.0.is_empty() {
            Ok(())
        } else {
            Err(found.0)
        }
    }

    /// The instance type, or the size given for one the table does not know.
    fn check_instance(&self, found: &mut Findings) {
        match (self.instance_vcpus, self.instance_memory_mib) {
            (Some(0), _) => found.fail("instance_vcpus", "0".into(), "must be at least 1"),
            (_, Some(m)) if m <= AGENT_MIB => found.fail(
                "instance_memory_mib",
                m.to_string(),
                "must be more than the 300 MiB the ECS agent keeps",
            ),
            (Some(_), None) | (None, Some(_)) => found.fail(
                "instance_vcpus",
                format!("{:?}/{:?}", self.instance_vcpus, self.instance_memory_mib),
                "instance_vcpus and instance_memory_mib go together",
            ),
            (Some(_), Some(_)) => {}
            (None, None) => {
                if sizing::instance_spec(&self.instance_type).is_none() {
                    found.fail(
                        "instance_type",
                        quoted(&self.instance_type),
                        "not in the built-in table (t3/t3a/t4g, m5/m6i/m6a/m7i/m7g, c5/c6i/c6a/c7i/c7g, r5/r6i/r7g) and not known to EC2 in the region: check the name, or give instance_vcpus and instance_memory_mib",
                    )
                }
            }
        }
        if !is_instance_type(&self.instance_type) {
            found.fail(
                "instance_type",
                quoted(&self.instance_type),
                "expected FAMILY.SIZE, e.g. t3.small",
            );
        }
    }

    /// Subnets, VPC and who may reach the load balancer.
    fn check_network(&self, found: &mut Findings) {
        if self.asg_subnets.is_empty() {
            found.fail(
                "asg_subnets",
                list(&self.asg_subnets),
                "at least one private subnet is needed",
            );
        }
        for subnet in &self.asg_subnets {
            if !is_aws_id(subnet, "subnet-") {
                found.fail(
                    "asg_subnets",
                    quoted(subnet),
                    "not a subnet id (subnet-...)",
                );
            }
        }
        if self.lb_subnets.len() < 2 {
            found.fail(
                "lb_subnets",
                list(&self.lb_subnets),
                "an application load balancer needs at least two public subnets",
            );
        }
        for subnet in &self.lb_subnets {
            if !is_aws_id(subnet, "subnet-") {
                found.fail("lb_subnets", quoted(subnet), "not a subnet id (subnet-...)");
            }
        }
        if has_duplicates(&self.asg_subnets) {
            found.fail(
                "asg_subnets",
                list(&self.asg_subnets),
                "lists a subnet twice",
            );
        }
        if has_duplicates(&self.lb_subnets) {
            found.fail("lb_subnets", list(&self.lb_subnets), "lists a subnet twice");
        }
        if let Some(vpc) = &self.vpc_id {
            if !is_aws_id(vpc, "vpc-") {
                found.fail("vpc_id", quoted(vpc), "not a VPC id (vpc-...)");
            }
        }
        if let Some(cidr) = &self.vpc_cidr {
            if !is_cidr(cidr) {
                found.fail(
                    "vpc_cidr",
                    quoted(cidr),
                    "not a CIDR block, e.g. 10.0.0.0/16",
                );
            }
        }
        if self.allowed_cidrs.is_empty() {
            found.fail(
                "allowed_cidrs",
                list(&self.allowed_cidrs),
                "at least one CIDR must reach the load balancer",
            );
        }
        for cidr in &self.allowed_cidrs {
            if !is_cidr(cidr) {
                found.fail(
                    "allowed_cidrs",
                    quoted(cidr),
                    "not a CIDR block, e.g. 0.0.0.0/0 or 10.0.0.0/8",
                );
            }
        }
    }

    /// How many hosts and tasks.
    fn check_scaling(&self, found: &mut Findings) {
        if self.asg_min_size == Some(0) {
            found.fail("asg_min_size", "0".into(), "must be at least 1");
        }
        if self.asg_max() < self.asg_min() {
            found.fail(
                "asg_max_size",
                self.asg_max().to_string(),
                &format!("must be at least asg_min_size ({})", self.asg_min()),
            );
        }
        if self.task_min_count == Some(0) {
            found.fail("task_min_count", "0".into(), "must be at least 1");
        }
        if let (Some(min), Some(max)) = (self.task_min_count, self.task_max_count) {
            if max < min {
                found.fail(
                    "task_max_count",
                    max.to_string(),
                    &format!("must be at least task_min_count ({min})"),
                );
            }
        }
    }

    /// DNS names, the hosted zone, and the names resources are given.
    fn check_names(&self, found: &mut Findings) {
        if self.dns_names.is_empty() {
            found.fail(
                "dns_names",
                list(&self.dns_names),
                "at least one name is needed",
            );
        }
        for name in &self.dns_names {
            if !is_dns_name(name) {
                found.fail(
                    "dns_names",
                    quoted(name),
                    "not a DNS name (letters, digits, '-' and '.')",
                );
            }
        }
        // Route53 ids are up to 32 upper-case letters and digits (commonly starting with Z,
        // but the API does not promise that).
        if self.hosted_zone_id.is_empty()
            || self.hosted_zone_id.len() > 32
            || !self
                .hosted_zone_id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            found.fail(
                "hosted_zone_id",
                quoted(&self.hosted_zone_id),
                "not a Route53 hosted zone id (up to 32 upper-case letters and digits, e.g. Z0123456789ABCDEFGHIJ)",
            );
        }
        if !is_dns_name(self.hosted_zone_name.trim_end_matches('.'))
            || !self.hosted_zone_name.contains('.')
        {
            found.fail(
                "hosted_zone_name",
                quoted(&self.hosted_zone_name),
                "not a domain name, e.g. example.com",
            );
        }
        if self.environment.is_empty()
            || self.environment.len() > 32
            || !self
                .environment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            found.fail(
                "environment",
                quoted(&self.environment),
                "1-32 letters, digits or '-'",
            );
        }
        if self.service_name.is_empty() || self.service_name.len() > 32 {
            found.fail(
                "service_name",
                quoted(&self.service_name),
                "must be 1-32 characters",
            );
        } else if !self
            .service_name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            || !self
                .service_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            found.fail(
                "service_name",
                quoted(&self.service_name),
                "letters, digits and '-', starting with a letter",
            );
        }
    }

    /// The file system and its backups.
    fn check_storage(&self, found: &mut Findings) {
        match (
            self.efs_throughput_mode,
            self.efs_provisioned_throughput_mibps,
        ) {
            (ThroughputMode::Provisioned, None) => found.fail(
                "efs_provisioned_throughput_mibps",
                "unset".into(),
                "required with efs_throughput_mode = \"provisioned\" (1-3414)",
            ),
            (ThroughputMode::Provisioned, Some(mibps)) if !(1..=3414).contains(&mibps) => found
                .fail(
                    "efs_provisioned_throughput_mibps",
                    mibps.to_string(),
                    "must be 1-3414 MiB/s",
                ),
            (ThroughputMode::Elastic | ThroughputMode::Bursting, Some(mibps)) => found.fail(
                "efs_provisioned_throughput_mibps",
                mibps.to_string(),
                "only applies with efs_throughput_mode = \"provisioned\"",
            ),
            _ => {}
        }
        match &self.efs_transition_to_ia {
            IaTransition::Days(7 | 14 | 30 | 60 | 90) => {}
            IaTransition::Word(word) if word == "never" => {}
            other => found.fail(
                "efs_transition_to_ia",
                other.to_string(),
                "must be 7, 14, 30, 60, 90 or \"never\"",
            ),
        }
        if !(1..=35).contains(&self.backup_retention_days) {
            found.fail(
                "backup_retention_days",
                self.backup_retention_days.to_string(),
                "must be 1-35",
            );
        }
        if let Some(reason) = backup_schedule_error(&self.backup_schedule) {
            found.fail("backup_schedule", quoted(&self.backup_schedule), &reason);
        }
    }

    /// Where alarms go, and what raises them.
    fn check_alarms(&self, found: &mut Findings) {
        if self.alarm_emails.is_empty() {
            found.fail(
                "alarm_emails",
                list(&self.alarm_emails),
                "at least one address must receive the alarms",
            );
        }
        for email in &self.alarm_emails {
            let valid = email.split_once('@').is_some_and(|(user, domain)| {
                !user.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !email.contains(char::is_whitespace)
            });
            if !valid {
                found.fail("alarm_emails", quoted(email), "not an e-mail address");
            }
        }
        for arn in &self.alarm_topic_arns {
            if !is_arn(arn, "sns", "") {
                found.fail(
                    "alarm_topic_arns",
                    quoted(arn),
                    "not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)",
                );
            }
        }
        if self.efs_burst_credit_threshold == 0 {
            found.fail(
                "efs_burst_credit_threshold",
                "0".into(),
                "must be more than 0 bytes",
            );
        }
    }

    /// The task's memory and CPU, and whether it can be placed at all.
    fn check_task(&self, found: &mut Findings) {
        if !(128..=30720).contains(&self.container_memory) {
            found.fail(
                "container_memory",
                self.container_memory.to_string(),
                "must be 128-30720 MiB",
            );
        } else if let Some(spec) = self.instance_spec() {
            if self.container_memory > spec.memory_mib.saturating_sub(AGENT_MIB) {
                found.fail(
                    "container_memory",
                    self.container_memory.to_string(),
                    &format!(
                        "does not fit on {} ({} MiB, of which {AGENT_MIB} stay with the ECS agent)",
                        self.instance_type, spec.memory_mib
                    ),
                );
            }
        }
        if let Some(reservation) = self.memory_reservation {
            if reservation == 0 || reservation > self.container_memory {
                found.fail(
                    "memory_reservation",
                    reservation.to_string(),
                    &format!("must be 1 to container_memory ({})", self.container_memory),
                );
            }
        }
        if let Some(cpu) = self.container_cpu {
            if !(128..=10240).contains(&cpu) {
                found.fail(
                    "container_cpu",
                    cpu.to_string(),
                    "must be 128-10240 CPU units",
                );
            }
        }
        if let Some(workers) = self.workers {
            if !(1..=16).contains(&workers) {
                found.fail("workers", workers.to_string(), "must be 1-16");
            }
        }
        // Placement is judged only on settings that passed their own checks above.
        let sizing_inputs_valid = (128..=30720).contains(&self.container_memory)
            && self.instance_spec().is_some_and(|spec| {
                self.container_memory <= spec.memory_mib.saturating_sub(AGENT_MIB)
            })
            && self
                .memory_reservation
                .is_none_or(|r| (1..=self.container_memory).contains(&r))
            && self
                .container_cpu
                .is_none_or(|c| (128..=10240).contains(&c))
            && self.workers.is_none_or(|w| (1..=16).contains(&w));
        if let Some((setting, value, reason)) = self.unplaceable().filter(|_| sizing_inputs_valid) {
            found.fail(setting, value, &reason);
        }
    }

    /// The server image.
    fn check_image(&self, found: &mut Findings) {
        if self.image_repository.is_empty()
            || self.image_repository.contains(char::is_whitespace)
            || self.image_repository.contains('@')
        {
            found.fail(
                "image_repository",
                quoted(&self.image_repository),
                "the server image's repository is required, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/wheelhouse",
            );
        }
        if self.image_tag.is_empty()
            || self.image_tag.len() > 128
            || !self
                .image_tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            found.fail(
                "image_tag",
                quoted(&self.image_tag),
                "1-128 letters, digits, '.', '_' or '-'",
            );
        }
    }

    /// Who may read the credentials, and the users.
    fn check_access(&self, found: &mut Findings) {
        for role in &self.secret_readers {
            if !is_arn(role, "iam", "role/") {
                found.fail(
                    "secret_readers",
                    quoted(role),
                    "not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
                );
            }
        }
        for (setting, value, reason) in users_errors(&self.users) {
            found.fail(setting, value, &reason);
        }
    }

    /// What the hosts get besides the appliance: policies, AMI, files, commands.
    fn check_hosts(&self, found: &mut Findings) {
        for policy in &self.instance_policy_arns {
            if !is_arn(policy, "iam", "policy/") {
                found.fail(
                    "instance_policy_arns",
                    quoted(policy),
                    "not an IAM policy ARN (arn:aws:iam::aws:policy/NAME)",
                );
            }
        }
        for statement in &self.instance_policy_statements {
            if let Some(reason) = policy_statement_error(statement) {
                found.fail("instance_policy_statements", statement.to_string(), reason);
            }
        }
        if let Some(ami) = &self.ami_id {
            if !is_ami_id(ami) {
                found.fail(
                    "ami_id",
                    quoted(ami),
                    "not an AMI id (ami- and 8 or 17 hexadecimal digits)",
                );
            }
        }
        for file in &self.host_files {
            if let Some(reason) = host_file_error(file) {
                found.fail("host_files", quoted(&file.path), &reason);
            }
        }
        let extra_bytes: usize = self
            .host_files
            .iter()
            .map(|f| f.content.len().div_ceil(3) * 4 + 2 * f.path.len() + 64)
            .chain(self.host_commands.iter().map(|c| c.len() + 1))
            .sum();
        if extra_bytes > HOST_EXTRAS_MAX_BYTES {
            found.fail(
                "host_files",
                format!("{} file(s) and {} command(s)", self.host_files.len(), self.host_commands.len()),
                &format!(
                    "take about {extra_bytes} bytes of the hosts' boot script, more than the {HOST_EXTRAS_MAX_BYTES} that fit beside the appliance's own in the 16 KiB of user data EC2 takes (file contents count a third more, base64-encoded): fetch large files from S3 in a command instead"
                ),
            );
        }
        for command in &self.host_commands {
            if command.trim().is_empty() || command.contains('\0') {
                found.fail(
                    "host_commands",
                    quoted(command),
                    "a command must be non-empty text",
                );
            }
        }
    }

    /// How long logs are kept.
    fn check_logs(&self, found: &mut Findings) {
        if !(1..=3653).contains(&self.access_logs_days) {
            found.fail(
                "access_logs_days",
                self.access_logs_days.to_string(),
                "must be 1-3653 days",
            );
        }
        const RETENTIONS: &[u32] = &[
            1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
            2922, 3288, 3653,
        ];
        if !RETENTIONS.contains(&self.log_retention_days) {
            found.fail(
                "log_retention_days",
                self.log_retention_days.to_string(),
                "not a CloudWatch Logs retention (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)",
            );
        }
    }

    /// Full DNS names of the service.
    pub fn fqdns(&self) -> Vec<String> {
        let zone = self.hosted_zone_name.trim_end_matches('.');
        self.dns_names
            .iter()
            .map(|name| {
                let name = name.trim_end_matches('.');
                if name == zone || name.ends_with(&format!(".{zone}")) {
                    name.to_owned()
                } else {
                    format!("{name}.{zone}")
                }
            })
            .collect()
    }
}

/// The errors of one validation, gathered so that every rule is reported at once.
#[derive(Default)]
struct Findings(Vec<SettingError>);

impl Findings {
    fn fail(&mut self, setting: &'static str, value: String, reason: &str) {
        self.0.push(SettingError {
            setting,
            value,
            reason: reason.to_owned(),
        });
    }
}

/// A setting's text value as the errors quote it.
fn quoted(value: &str) -> String {
    format!("{value:?}")
}

/// A setting's list value as the errors quote it.
fn list(values: &[String]) -> String {
    format!("{values:?}")
}

/// `key=value`, where the value is read as TOML when it parses (numbers, booleans, arrays)
/// and as a plain string otherwise.
fn apply_override(table: &mut toml::Table, raw: &str) -> Result<(), LoadError> {
    let Some((key, value)) = raw.split_once('=') else {
        return Err(LoadError::Override {
            raw: raw.to_owned(),
            reason: "expected key=value".into(),
        });
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(LoadError::Override {
            raw: raw.to_owned(),
            reason: "the key is empty".into(),
        });
    }
    let value = value.trim();
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    table.insert(key.to_owned(), parsed);
    Ok(())
}

fn is_instance_type(raw: &str) -> bool {
    raw.split_once('.').is_some_and(|(family, size)| {
        !family.is_empty()
            && !size.is_empty()
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    })
}

fn is_aws_id(raw: &str, prefix: &str) -> bool {
    raw.strip_prefix(prefix)
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_cidr(raw: &str) -> bool {
    let Some((ip, bits)) = raw.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

fn is_dns_name(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= 253
        && raw.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What AWS Backup would refuse in a schedule, if anything. It takes only
/// `cron(MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR)` (UTC), with one of the two day fields
/// `?`, and runs a plan's rule at most once an hour: the minute must be one fixed number.
fn backup_schedule_error(raw: &str) -> Option<String> {
    let Some(body) = raw.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) else {
        return Some(
            "AWS Backup takes only cron(MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR), in UTC, e.g. cron(0 2 * * ? *)"
                .into(),
        );
    };
    let fields: Vec<&str> = body.split_whitespace().collect();
    let [minute, hour, day_of_month, month, day_of_week, year] = fields[..] else {
        return Some(format!(
            "a cron expression has 6 fields (MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR), this one {}",
            fields.len()
        ));
    };
    if !minute.parse::<u8>().is_ok_and(|m| m < 60) {
        return Some(format!(
            "the minute {minute:?} must be one number 0-59: AWS Backup runs a plan at most once an hour"
        ));
    }
    let plain = |field: &str| {
        !field.is_empty()
            && field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"*,-/#".contains(&b))
    };
    for (name, field) in [
        ("hour", hour),
        ("day-of-month", day_of_month),
        ("month", month),
        ("day-of-week", day_of_week),
        ("year", year),
    ] {
        if field != "?" && !plain(field) {
            return Some(format!("the {name} field {field:?} is not a cron field"));
        }
    }
    if (day_of_month == "?") == (day_of_week == "?") {
        return Some(format!(
            "exactly one of day-of-month ({day_of_month:?}) and day-of-week ({day_of_week:?}) must be ?"
        ));
    }
    None
}

/// What is wrong with the `users` list: each name must be one htpasswd and HTTP Basic take
/// whole (no ':', no spaces), and one that makes names of its own in the template.
fn users_errors(users: &[String]) -> Vec<(&'static str, String, String)> {
    let mut errors = Vec::new();
    let mut fail = |value: String, reason: String| errors.push(("users", value, reason));
    if users.len() > USERS_MAX {
        fail(
            format!("{} users", users.len()),
            format!("at most {USERS_MAX}: each adds a secret, its policy and an output to the template, which CloudFormation takes up to 51,200 bytes"),
        );
    }
    let mut seen: Vec<(&str, String)> = Vec::new();
    for name in users {
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(plain)
            || !name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
        {
            fail(
                format!("{name:?}"),
                "a user name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit".into(),
            );
            continue;
        }
        if name == STACK_USER {
            fail(
                format!("{name:?}"),
                "the stack generates this user already (its secret is the output CredentialsSecretArn)".into(),
            );
            continue;
        }
        let key = user_key(name).to_ascii_lowercase();
        match seen.iter().find(|(_, other)| *other == key) {
            Some((other, _)) if *other == name.as_str() => {
                fail(format!("{name:?}"), "listed twice".into());
            }
            Some((other, _)) => fail(
                format!("{name:?}"),
                format!(
                    "too like {other:?}: the template would name both users' secrets UserSecret{}; rename one",
                    user_key(name)
                ),
            ),
            None => seen.push((name, key)),
        }
    }
    errors
}

/// What IAM would refuse in an inline statement, roughly: it must be an object with an
/// `Effect` of Allow or Deny, an `Action` (or `NotAction`) and a `Resource` (or `NotResource`).
fn policy_statement_error(statement: &serde_json::Value) -> Option<&'static str> {
    let Some(fields) = statement.as_object() else {
        return Some("a statement is a table with Effect, Action and Resource");
    };
    if !matches!(
        fields.get("Effect").and_then(|e| e.as_str()),
        Some("Allow" | "Deny")
    ) {
        return Some("Effect must be \"Allow\" or \"Deny\"");
    }
    if !fields.contains_key("Action") && !fields.contains_key("NotAction") {
        return Some("a statement needs Action (or NotAction)");
    }
    if !fields.contains_key("Resource") && !fields.contains_key("NotResource") {
        return Some("a statement needs Resource (or NotResource)");
    }
    None
}

fn is_ami_id(raw: &str) -> bool {
    raw.strip_prefix("ami-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// What is wrong with a host file, if anything. The path goes into the boot script quoted,
/// so it is kept to characters that need no quoting at all.
fn host_file_error(file: &HostFile) -> Option<String> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"/._-+@".contains(&b);
    if !file.path.starts_with('/') || file.path.ends_with('/') || !file.path.bytes().all(plain) {
        return Some(
            "the path must be absolute and made of letters, digits and / . _ - + @".into(),
        );
    }
    if file.path.split('/').any(|part| part == "..") {
        return Some("the path may not contain ..".into());
    }
    let mode_ok =
        matches!(file.mode.len(), 3 | 4) && file.mode.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if !mode_ok {
        return Some(format!(
            "mode {:?} is not octal permissions like \"0644\"",
            file.mode
        ));
    }
    None
}

/// `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE` with the resource starting with `resource`.
fn is_arn(raw: &str, service: &str, resource: &str) -> bool {
    let parts: Vec<&str> = raw.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == service
        && (parts[4] == "aws"
            || (parts[4].len() == 12 && parts[4].bytes().all(|b| b.is_ascii_digit())))
        && parts[5].starts_with(resource)
        && parts[5].len() > resource.len()
}

fn has_duplicates(items: &[String]) -> bool {
    let mut seen = std::collections::HashSet::new();
    items.iter().any(|i| !seen.insert(i))
}

/// A complete, valid example, used by the README and the tests.
pub fn example() -> Settings {
    Settings {
        asg_subnets: vec!["subnet-0a1b2c3d".into(), "subnet-1a2b3c4d".into()],
        lb_subnets: vec!["subnet-2a3b4c5d".into(), "subnet-3a4b5c6d".into()],
        vpc_id: Some("vpc-0f1e2d3c".into()),
        vpc_cidr: Some("10.20.0.0/16".into()),
        hosted_zone_id: "Z0123456789ABCDEFGHIJ".into(),
        hosted_zone_name: "example.com".into(),
        alarm_emails: vec!["ops@example.com".into()],
        image_repository: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/wheelhouse".into(),
        image_tag: "0.1.0".into(),
        ..Settings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one error `change` makes on the valid example, as text.
    fn error_of(change: impl FnOnce(&mut Settings)) -> String {
        let mut settings = example();
        change(&mut settings);
        let errors = settings
            .validate()
            .expect_err("the change should be refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].to_string()
    }

    #[test]
    fn the_example_is_valid_and_sized_like_the_seed() {
        let settings = example();
        settings.validate().unwrap();
        assert_eq!(settings.asg_min(), 2);
        assert_eq!(settings.asg_max(), 4);
        let sizing = settings.sizing();
        assert_eq!(
            (sizing.tasks_per_instance, sizing.task_min, sizing.task_max),
            (3, 6, 12)
        );
        assert_eq!(settings.fqdns(), vec!["pypiserver.example.com"]);
    }

    #[test]
    fn err_unknown_instance_type() {
        let e = error_of(|s| s.instance_type = "z9.mega".into());
        assert!(
            e.starts_with("instance_type = \"z9.mega\": not in the built-in table"),
            "{e}"
        );
    }

    #[test]
    fn unknown_instance_type_with_override_is_fine() {
        let mut s = example();
        s.instance_type = "x2iedn.xlarge".into();
        s.instance_vcpus = Some(4);
        s.instance_memory_mib = Some(131_072);
        s.validate().unwrap();
    }

    #[test]
    fn err_instance_override_half_given() {
        let e = error_of(|s| s.instance_vcpus = Some(4));
        assert!(
            e.contains("instance_vcpus and instance_memory_mib go together"),
            "{e}"
        );
    }

    #[test]
    fn err_instance_type_shape() {
        let e = error_of(|s| {
            s.instance_type = "T3 small".into();
            s.instance_vcpus = Some(2);
            s.instance_memory_mib = Some(2048);
        });
        assert_eq!(
            e,
            "instance_type = \"T3 small\": expected FAMILY.SIZE, e.g. t3.small"
        );
    }

    #[test]
    fn err_asg_subnets() {
        assert_eq!(
            error_of(|s| s.asg_subnets.clear()),
            "asg_subnets = []: at least one private subnet is needed"
        );
        assert_eq!(
            error_of(|s| s.asg_subnets[0] = "sn-1".into()),
            "asg_subnets = \"sn-1\": not a subnet id (subnet-...)"
        );
        assert!(error_of(|s| s.asg_subnets[1] = s.asg_subnets[0].clone())
            .contains("lists a subnet twice"));
    }

    #[test]
    fn err_lb_subnets() {
        assert_eq!(
            error_of(|s| {
                s.lb_subnets.pop();
            }),
            "lb_subnets = [\"subnet-2a3b4c5d\"]: an application load balancer needs at least two public subnets"
        );
        assert!(error_of(|s| s.lb_subnets[0] = "x".into()).contains("not a subnet id"));
    }

    #[test]
    fn err_asg_sizes() {
        assert_eq!(
            error_of(|s| s.asg_min_size = Some(0))
                .split(':')
                .next()
                .unwrap(),
            "asg_min_size = 0"
        );
        assert_eq!(
            error_of(|s| {
                s.asg_min_size = Some(3);
                s.asg_max_size = Some(2);
            }),
            "asg_max_size = 2: must be at least asg_min_size (3)"
        );
    }

    #[test]
    fn err_vpc() {
        assert_eq!(
            error_of(|s| s.vpc_id = Some("vpc_1".into())),
            "vpc_id = \"vpc_1\": not a VPC id (vpc-...)"
        );
        assert_eq!(
            error_of(|s| s.vpc_cidr = Some("10.0.0.0/33".into())),
            "vpc_cidr = \"10.0.0.0/33\": not a CIDR block, e.g. 10.0.0.0/16"
        );
    }

    #[test]
    fn err_dns() {
        assert_eq!(
            error_of(|s| s.dns_names.clear()),
            "dns_names = []: at least one name is needed"
        );
        assert!(error_of(|s| s.dns_names = vec!["bad_name".into()])
            .starts_with("dns_names = \"bad_name\""));
        assert!(
            error_of(|s| s.hosted_zone_id = "abc".into()).starts_with("hosted_zone_id = \"abc\"")
        );
        assert!(error_of(|s| s.hosted_zone_name = "localhost".into())
            .starts_with("hosted_zone_name = \"localhost\""));
    }

    #[test]
    fn err_names() {
        assert!(error_of(|s| s.environment = "prod env".into())
            .starts_with("environment = \"prod env\""));
        let long = "w".repeat(33);
        assert_eq!(
            error_of(|s| s.service_name = long.clone()),
            format!("service_name = \"{long}\": must be 1-32 characters")
        );
        assert!(error_of(|s| s.service_name = "1wheel".into()).contains("starting with a letter"));
    }

    #[test]
    fn err_task_counts() {
        assert!(error_of(|s| s.task_min_count = Some(0)).starts_with("task_min_count = 0"));
        assert_eq!(
            error_of(|s| {
                s.task_min_count = Some(4);
                s.task_max_count = Some(3);
            }),
            "task_max_count = 3: must be at least task_min_count (4)"
        );
    }

    #[test]
    fn err_efs_throughput() {
        assert!(
            error_of(|s| s.efs_throughput_mode = ThroughputMode::Provisioned)
                .starts_with("efs_provisioned_throughput_mibps = unset: required")
        );
        assert_eq!(
            error_of(|s| {
                s.efs_throughput_mode = ThroughputMode::Provisioned;
                s.efs_provisioned_throughput_mibps = Some(3415);
            }),
            "efs_provisioned_throughput_mibps = 3415: must be 1-3414 MiB/s"
        );
        assert!(
            error_of(|s| s.efs_provisioned_throughput_mibps = Some(10)).contains("only applies")
        );
    }

    #[test]
    fn err_efs_lifecycle() {
        assert_eq!(
            error_of(|s| s.efs_transition_to_ia = IaTransition::Days(45)),
            "efs_transition_to_ia = 45: must be 7, 14, 30, 60, 90 or \"never\""
        );
        assert!(
            error_of(|s| s.efs_transition_to_ia = IaTransition::Word("sometimes".into()))
                .starts_with("efs_transition_to_ia = \"sometimes\"")
        );
    }

    #[test]
    fn err_backup() {
        assert_eq!(
            error_of(|s| s.backup_retention_days = 36),
            "backup_retention_days = 36: must be 1-35"
        );
        assert_eq!(
            error_of(|s| s.backup_schedule = "cron(0 2 * *)".into()),
            "backup_schedule = \"cron(0 2 * *)\": a cron expression has 6 fields (MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR), this one 4"
        );
    }

    #[test]
    fn only_what_aws_backup_takes_is_a_backup_schedule() {
        assert_eq!(
            error_of(|s| s.backup_schedule = "rate(1 hour)".into()),
            "backup_schedule = \"rate(1 hour)\": AWS Backup takes only cron(MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR), in UTC, e.g. cron(0 2 * * ? *)"
        );
        assert_eq!(
            error_of(|s| s.backup_schedule = "cron(*/5 * * * ? *)".into()),
            "backup_schedule = \"cron(*/5 * * * ? *)\": the minute \"*/5\" must be one number 0-59: AWS Backup runs a plan at most once an hour"
        );
        assert_eq!(
            error_of(|s| s.backup_schedule = "cron(0,30 2 * * ? *)".into()),
            "backup_schedule = \"cron(0,30 2 * * ? *)\": the minute \"0,30\" must be one number 0-59: AWS Backup runs a plan at most once an hour"
        );
        assert_eq!(
            error_of(|s| s.backup_schedule = "cron(0 2 * * * *)".into()),
            "backup_schedule = \"cron(0 2 * * * *)\": exactly one of day-of-month (\"*\") and day-of-week (\"*\") must be ?"
        );
        assert_eq!(
            error_of(|s| s.backup_schedule = "cron(0 2;rm * * ? *)".into()),
            "backup_schedule = \"cron(0 2;rm * * ? *)\": the hour field \"2;rm\" is not a cron field"
        );
        for good in [
            "cron(0 * * * ? *)",
            "cron(15 2 ? * MON-FRI *)",
            "cron(0 */6 * * ? *)",
            "cron(5 3 1 * ? 2027)",
        ] {
            let mut settings = example();
            settings.backup_schedule = good.into();
            assert!(settings.validate().is_ok(), "{good}");
        }
    }

    #[test]
    fn settings_that_place_no_task_are_refused_naming_the_setting() {
        assert_eq!(
            error_of(|s| s.workers = Some(14)),
            "workers = 14: a task of 2140 CPU units (14 workers × 150 + 40) fits nowhere: a t3.small (2 vCPU, 2048 MiB) offers tasks 1920 (vCPUs × 1024 - 128 for the agent)"
        );
        assert_eq!(
            error_of(|s| s.container_cpu = Some(1921)),
            "container_cpu = 1921: a task of 1921 CPU units fits nowhere: a t3.small (2 vCPU, 2048 MiB) offers tasks 1920 (vCPUs × 1024 - 128 for the agent)"
        );
        assert_eq!(
            error_of(|s| {
                s.container_memory = 1700;
                s.memory_reservation = Some(1400);
            }),
            "memory_reservation = 1400: a task reserving 1400 MiB fits nowhere: a t3.small (2 vCPU, 2048 MiB) registers about 1382 MiB for tasks (after the kernel's share and the 500 MiB kept for the page cache)"
        );
        assert_eq!(
            error_of(|s| {
                s.instance_type = "t3.nano".into();
                s.container_memory = 128;
            }),
            "instance_type = \"t3.nano\": a t3.nano (2 vCPU, 512 MiB) registers about 0 MiB for tasks (after the kernel's share and the 500 MiB kept for the page cache): not one task fits; use a type with at least 1 GiB"
        );
    }

    /// Over every known type and every container size in 128 MiB steps: settings that pass
    /// place at least one task in what ECS registers; the rest are refused.
    #[test]
    fn settings_that_pass_place_a_task_on_every_type() {
        for (instance, spec) in sizing::known_instance_types() {
            for memory in (128..=30720).step_by(128) {
                let mut settings = example();
                settings.instance_type = instance.clone();
                settings.container_memory = memory;
                let valid = settings.validate().is_ok();
                let sizing = settings.sizing();
                if valid {
                    assert!(sizing.tasks_per_instance >= 1, "{instance} {memory}");
                    assert!(
                        sizing.memory_reservation <= sizing::registered_memory_mib(spec)
                            && sizing.container_cpu <= sizing::registered_cpu_units(spec),
                        "{instance} {memory}"
                    );
                } else {
                    assert!(
                        sizing.tasks_per_instance == 0
                            || memory > spec.memory_mib.saturating_sub(AGENT_MIB),
                        "{instance} {memory}: refused, yet a task fits"
                    );
                }
            }
        }
    }

    #[test]
    fn err_alarms() {
        assert!(error_of(|s| s.alarm_emails.clear()).starts_with("alarm_emails = []"));
        assert_eq!(
            error_of(|s| s.alarm_emails = vec!["ops".into()]),
            "alarm_emails = \"ops\": not an e-mail address"
        );
        assert!(error_of(
            |s| s.alarm_topic_arns = vec!["arn:aws:sqs:eu-west-1:123456789012:q".into()]
        )
        .starts_with("alarm_topic_arns = \"arn:aws:sqs"));
        assert!(error_of(|s| s.efs_burst_credit_threshold = 0)
            .starts_with("efs_burst_credit_threshold = 0"));
    }

    #[test]
    fn err_container_sizes() {
        assert_eq!(
            error_of(|s| s.container_memory = 64),
            "container_memory = 64: must be 128-30720 MiB"
        );
        assert!(error_of(|s| s.container_memory = 4096).contains("does not fit on t3.small"));
        assert!(
            error_of(|s| s.memory_reservation = Some(600)).starts_with("memory_reservation = 600")
        );
        assert!(error_of(|s| s.container_cpu = Some(64)).starts_with("container_cpu = 64"));
        assert_eq!(
            error_of(|s| s.workers = Some(17)),
            "workers = 17: must be 1-16"
        );
    }

    #[test]
    fn err_image() {
        assert!(
            error_of(|s| s.image_repository = String::new()).starts_with("image_repository = \"\"")
        );
        assert!(error_of(|s| s.image_tag = "v 1".into()).starts_with("image_tag = \"v 1\""));
    }

    #[test]
    fn err_iam_arns() {
        assert!(
            error_of(|s| s.secret_readers = vec!["arn:aws:iam::123:role/x".into()])
                .starts_with("secret_readers = ")
        );
        assert!(
            error_of(|s| s.instance_policy_arns = vec!["AmazonSSMManagedInstanceCore".into()])
                .starts_with("instance_policy_arns = \"AmazonSSMManagedInstanceCore\"")
        );
    }

    #[test]
    fn users_are_named_in_the_template_by_their_key() {
        assert_eq!(user_key("alice"), "Alice");
        assert_eq!(user_key("ci-bot"), "CiBot");
        assert_eq!(user_key("a.b_c-9"), "ABC9");
        assert_eq!(user_key("2fa"), "2fa");
        let mut settings = example();
        settings.users = vec!["alice".into(), "ci-bot".into(), "Bob.Smith".into()];
        settings.validate().unwrap();
    }

    #[test]
    fn err_users() {
        assert_eq!(
            error_of(|s| s.users = vec![String::new()]),
            "users = \"\": a user name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        );
        assert_eq!(
            error_of(|s| s.users = vec!["ci:bot".into()]),
            "users = \"ci:bot\": a user name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        );
        assert!(error_of(|s| s.users = vec!["two words".into()])
            .starts_with("users = \"two words\": a user name"));
        assert!(error_of(|s| s.users = vec!["-dash".into()])
            .starts_with("users = \"-dash\": a user name"));
        assert!(error_of(|s| s.users = vec!["x".repeat(65)]).contains(": a user name is 1-64"));
        assert_eq!(
            error_of(|s| s.users = vec!["alice".into(), "bob".into(), "alice".into()]),
            "users = \"alice\": listed twice"
        );
        assert_eq!(
            error_of(|s| s.users = vec!["ci-bot".into(), "ci_bot".into()]),
            "users = \"ci_bot\": too like \"ci-bot\": the template would name both users' secrets UserSecretCiBot; rename one"
        );
        assert!(error_of(|s| s.users = vec!["Alice".into(), "alice".into()])
            .starts_with("users = \"alice\": too like \"Alice\""));
        assert_eq!(
            error_of(|s| s.users = vec![STACK_USER.into()]),
            "users = \"wheelhouse\": the stack generates this user already (its secret is the output CredentialsSecretArn)"
        );
        let many: Vec<String> = (0..=USERS_MAX).map(|i| format!("user{i}")).collect();
        assert!(error_of(|s| s.users = many).starts_with("users = 11 users: at most 10"));
    }

    #[test]
    fn err_access_logs_days() {
        assert_eq!(
            error_of(|s| s.access_logs_days = 0),
            "access_logs_days = 0: must be 1-3653 days"
        );
        assert_eq!(
            error_of(|s| s.access_logs_days = 3654),
            "access_logs_days = 3654: must be 1-3653 days"
        );
        let mut settings = example();
        settings.access_logs_days = 1;
        settings.validate().unwrap();
        assert!(example().access_logs);
        assert_eq!(example().access_logs_days, 90);
    }

    #[test]
    fn err_allowed_cidrs() {
        assert!(error_of(|s| s.allowed_cidrs.clear()).starts_with("allowed_cidrs = []"));
        assert!(error_of(|s| s.allowed_cidrs = vec!["everyone".into()])
            .starts_with("allowed_cidrs = \"everyone\""));
    }

    #[test]
    fn err_log_retention() {
        assert!(error_of(|s| s.log_retention_days = 10).starts_with("log_retention_days = 10"));
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let errors = Settings::default().validate().unwrap_err();
        let settings: Vec<&str> = errors.iter().map(|e| e.setting).collect();
        for expected in [
            "asg_subnets",
            "lb_subnets",
            "hosted_zone_id",
            "alarm_emails",
            "image_repository",
        ] {
            assert!(settings.contains(&expected), "{settings:?}");
        }
    }

    #[test]
    fn file_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wheelhouse.test.toml");
        std::fs::write(&path, toml::to_string(&example()).unwrap()).unwrap();
        let loaded = Settings::load(
            &path,
            &[
                "instance_type=c6a.xlarge".into(),
                "backup=false".into(),
                "dns_names=[\"pypi\", \"packages\"]".into(),
            ],
        )
        .unwrap();
        assert_eq!(loaded.instance_type, "c6a.xlarge");
        assert!(!loaded.backup);
        assert_eq!(
            loaded.fqdns(),
            vec!["pypi.example.com", "packages.example.com"]
        );

        let err = Settings::load(&path, &["instance_typo=t3.small".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("instance_typo"), "{err}");
        let err = Settings::load(&path, &["workers=99".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("workers = 99: must be 1-16"), "{err}");
        let err = Settings::load(&path, &["noequals".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "--set \"noequals\": expected key=value");
        std::fs::write(&path, "instance_type = [").unwrap();
        assert!(Settings::load(&path, &[])
            .unwrap_err()
            .to_string()
            .contains("wheelhouse.test.toml"));
    }

    #[test]
    fn host_extras_are_read_from_the_file_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wheelhouse.test.toml");
        let keys = r#"
ami_id = "ami-0123456789abcdef0"
host_commands = ["systemctl enable --now amazon-ssm-agent"]
"#;
        let tables = r#"
[[host_files]]
path = "/etc/acme/agent.conf"
content = "key = 1\n"

[[instance_policy_statements]]
Effect = "Allow"
Action = ["s3:GetObject"]
Resource = "arn:aws:s3:::acme/*"
"#;
        // The example's own (empty) values of these keys make way for the ones above.
        let base: String = toml::to_string(&example())
            .unwrap()
            .lines()
            .filter(|line| {
                !["ami_id", "host_", "instance_policy_statements"]
                    .iter()
                    .any(|key| line.starts_with(key))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(&path, format!("{keys}\n{base}\n{tables}")).unwrap();
        let loaded = Settings::load(&path, &[]).unwrap();
        assert_eq!(loaded.ami_id.as_deref(), Some("ami-0123456789abcdef0"));
        assert_eq!(loaded.host_files[0].mode, "0644");
        assert_eq!(
            loaded.instance_policy_statements[0]["Action"][0],
            "s3:GetObject"
        );

        assert_eq!(
            error_of(|s| s.ami_id = Some("ami-xyz".into())),
            "ami_id = \"ami-xyz\": not an AMI id (ami- and 8 or 17 hexadecimal digits)"
        );
        let file = |path: &str, mode: &str| HostFile {
            path: path.into(),
            content: String::new(),
            mode: mode.into(),
        };
        assert_eq!(
            error_of(|s| s.host_files = vec![file("etc/x", "0644")]),
            "host_files = \"etc/x\": the path must be absolute and made of letters, digits and / . _ - + @"
        );
        assert_eq!(
            error_of(|s| s.host_files = vec![file("/etc/x'; rm -rf /", "0644")]),
            "host_files = \"/etc/x'; rm -rf /\": the path must be absolute and made of letters, digits and / . _ - + @"
        );
        assert_eq!(
            error_of(|s| s.host_files = vec![file("/etc/../root/x", "0644")]),
            "host_files = \"/etc/../root/x\": the path may not contain .."
        );
        assert_eq!(
            error_of(|s| s.host_files = vec![file("/etc/x", "0999")]),
            "host_files = \"/etc/x\": mode \"0999\" is not octal permissions like \"0644\""
        );
        assert_eq!(
            error_of(|s| s.host_commands = vec!["  ".into()]),
            "host_commands = \"  \": a command must be non-empty text"
        );
        assert_eq!(
            error_of(|s| s.instance_policy_statements = vec![serde_json::json!({"Effect": "Allow", "Action": "s3:*"})]),
            "instance_policy_statements = {\"Action\":\"s3:*\",\"Effect\":\"Allow\"}: a statement needs Resource (or NotResource)"
        );
        assert_eq!(
            error_of(|s| s.instance_policy_statements = vec![serde_json::json!({"Effect": "Permit", "Action": "s3:*", "Resource": "*"})]),
            "instance_policy_statements = {\"Action\":\"s3:*\",\"Effect\":\"Permit\",\"Resource\":\"*\"}: Effect must be \"Allow\" or \"Deny\""
        );
    }

    #[test]
    fn host_extras_that_overflow_the_user_data_are_refused() {
        let big = HostFile {
            path: "/etc/big".into(),
            content: "x".repeat(10_000),
            mode: "0644".into(),
        };
        assert!(error_of(|s| s.host_files = vec![big.clone()]).starts_with(
            "host_files = 1 file(s) and 0 command(s): take about 13416 bytes of the hosts' boot script"
        ));
        let mut fits = example();
        fits.host_files = vec![HostFile {
            content: "x".repeat(8_000),
            ..big
        }];
        assert!(fits.validate().is_ok());
    }
}
