//! The `wheelhouse-deploy` command line and what each command does.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use super::account;
use super::aws::{sdk_config, AwsOptions};
use super::instance_types;
use super::preflight::{self, Problem};
use super::protection;
use super::render;
use super::settings::{self, Settings};
use super::sizing;
use super::stack::{is_success, DeployError, StackClient, StackEvent};
use super::template::{appliance, user_secret_output, TEMPLATE_BODY_MAX};
use super::verify;

#[derive(Debug, Parser)]
#[command(
    name = "wheelhouse-deploy",
    version,
    about = "Put the wheelhouse appliance up on AWS as one CloudFormation stack",
    after_help = "Settings come from wheelhouse.<stack>.toml in the current directory (or --config); \
                  any setting can be overridden with --set key=value. The stack itself is the state: \
                  nothing else is kept locally."
)]
pub struct DeployCli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: DeployCommand,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The CloudFormation stack.
    #[arg(
        long,
        global = true,
        env = "WHEELHOUSE_STACK",
        default_value = "wheelhouse"
    )]
    pub stack: String,
    /// Settings file (default: wheelhouse.<stack>.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override a setting, e.g. --set instance_type=t3.medium or --set 'alarm_emails=["a@b.c"]'.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// AWS region (default: from the environment or profile).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// AWS profile.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Another AWS endpoint for every service, e.g. LocalStack's http://localhost:4566.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Check the settings, the account and the network (read-only), as `preview` and `up`
    /// do first; exit 2 naming every problem.
    Check,
    /// Show what `up` would change, as a diff of resources.
    Preview,
    /// Preview, confirm, apply, and follow the stack until it settles.
    Up {
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Print the stack's outputs.
    Outputs {
        #[arg(long)]
        json: bool,
    },
    /// Compare the stack's resources with what AWS really has (drift detection).
    Refresh,
    /// Delete the stack (the EFS file system with the packages is kept).
    Destroy {
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Write the stack's CloudFormation template.
    Template {
        /// File to write (default: standard output).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the capacity table: workers, task sizes and tasks per instance.
    Sizing {
        /// Size for this instance type instead of the configured one.
        #[arg(long)]
        instance_type: Option<String>,
        /// Size for this container memory (MiB) instead of the configured one.
        #[arg(long)]
        container_memory: Option<u32>,
    },
    /// Prove the deployed index works, as a table: DNS, certificate, redirect to HTTPS,
    /// credentials asked for, a probe wheel uploaded, listed, read (`.metadata`), downloaded
    /// from every replica and removed; ECS tasks, load balancer targets, EFS mount targets,
    /// backup plan and alarms. Exit 1 naming the failed checks.
    Verify {
        /// Check this address instead of the stack's `Url` output.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// A task's own address: the probe is downloaded from each one given, instead of
        /// through the load balancer until every healthy target has answered. Repeat it for
        /// every task.
        #[arg(long = "target", value_name = "URL")]
        targets: Vec<String>,
    },
    /// Print the generated upload/download credentials from Secrets Manager.
    Credentials {
        #[arg(long)]
        json: bool,
        /// One of the settings' `users` (default: the stack's own user, wheelhouse).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
}

/// The stack output that holds the credentials secret's ARN.
pub const SECRET_OUTPUT: &str = "CredentialsSecretArn";

/// Why a command stopped without doing its job.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Settings(#[from] settings::LoadError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("{0}")]
    Other(String),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Preflight(Vec<Problem>),
}

impl GlobalArgs {
    fn settings_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| settings::default_path(&self.stack))
    }

    fn aws(&self) -> AwsOptions {
        AwsOptions {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}

/// Runs a command; the exit code says how it went (0 done, 1 failed or declined, 2 bad
/// settings, 130 interrupted).
pub async fn run(cli: DeployCli) -> ExitCode {
    match dispatch(&cli).await {
        Ok(code) => code,
        Err(Failure::Settings(err)) => {
            eprintln!("wheelhouse-deploy: {err}");
            ExitCode::from(2)
        }
        Err(Failure::Preflight(problems)) => {
            for problem in &problems {
                eprintln!("wheelhouse-deploy: {problem}");
            }
            eprintln!(
                "wheelhouse-deploy: {} problem(s) found before any change: nothing was changed",
                problems.len()
            );
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("wheelhouse-deploy: error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: &DeployCli) -> Result<ExitCode, Failure> {
    let global = &cli.global;
    match &cli.command {
        DeployCommand::Sizing {
            instance_type,
            container_memory,
        } => sizing_table(global, instance_type.clone(), *container_memory).await,
        DeployCommand::Template { output } => {
            let template = build_template(global).await?;
            match output {
                Some(path) => std::fs::write(path, template).map_err(|err| {
                    Failure::Other(format!("cannot write {}: {err}", path.display()))
                })?,
                None => print!("{template}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Check => {
            let settings = load_settings(global).await?;
            preflight(global, &settings).await?;
            println!(
                "Stack {}: settings, account and network are ready for `up`.",
                global.stack
            );
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Preview => {
            let settings = load_settings(global).await?;
            preflight(global, &settings).await?;
            let template = template_body(global, &settings).await?;
            ecs_role(global, false).await?;
            let stack = stack_client(global).await;
            let preview = stack.preview(&template).await?;
            print!("{}", render::diff(stack.name(), &preview));
            // A preview changes nothing: its change set (and a new stack's empty shell) go.
            stack.discard(&preview).await?;
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Up { yes } => up(global, *yes).await,
        DeployCommand::Outputs { json } => {
            let stack = stack_client(global).await;
            let state = stack.require_state().await?;
            if *json {
                println!("{}", render::outputs_json(&state));
            } else {
                print!("{}", render::outputs_table(&state));
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Refresh => {
            let stack = stack_client(global).await;
            stack.require_state().await?;
            let report = stack.detect_drift().await?;
            print!("{}", render::drift(stack.name(), &report));
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Destroy { yes } => destroy(global, *yes).await,
        DeployCommand::Credentials { json, user } => {
            credentials(global, *json, user.as_deref()).await
        }
        DeployCommand::Verify { url, targets } => verify(global, url.as_deref(), targets).await,
    }
}

async fn sizing_table(
    global: &GlobalArgs,
    instance_type: Option<String>,
    container_memory: Option<u32>,
) -> Result<ExitCode, Failure> {
    // Only the sizing inputs matter here, so an incomplete settings file is fine.
    let mut settings = Settings::read(&global.settings_path(), &global.overrides)?;
    if let Some(instance_type) = instance_type {
        settings.instance_type = instance_type;
        settings.instance_vcpus = None;
        settings.instance_memory_mib = None;
    }
    if let Some(memory) = container_memory {
        settings.container_memory = memory;
    }
    size_from_ec2(global, &mut settings).await;
    if settings.instance_spec().is_none() {
        let known: Vec<String> = sizing::known_instance_types().map(|(t, _)| t).collect();
        return Err(Failure::Other(format!(
            "instance type {:?} is neither in the built-in table nor known to EC2 in this region; set instance_vcpus and instance_memory_mib, or use one of: {}",
            settings.instance_type,
            known.join(", ")
        )));
    }
    let sizing = settings.sizing();
    print!(
        "{}",
        sizing.table(&settings.instance_type, settings.asg_min())
    );
    Ok(ExitCode::SUCCESS)
}

/// Asks EC2 for the size of an instance type the built-in table does not know. When EC2 cannot
/// be asked (no credentials, access denied), validation names the setting, and this says why.
async fn size_from_ec2(global: &GlobalArgs, settings: &mut Settings) {
    if settings.instance_spec().is_some() {
        return;
    }
    let config = sdk_config(&global.aws()).await;
    if let Err(err) = instance_types::resolve(settings, &aws_sdk_ec2::Client::new(&config)).await {
        eprintln!(
            "warning: the size of instance type {:?} could not be asked of EC2: {err}",
            settings.instance_type
        );
    }
}

/// The settings, with the size of an instance type the built-in table does not know asked of
/// EC2 before they are validated.
async fn load_settings(global: &GlobalArgs) -> Result<Settings, Failure> {
    let mut settings = Settings::read(&global.settings_path(), &global.overrides)?;
    size_from_ec2(global, &mut settings).await;
    settings
        .validate()
        .map_err(|errors| Failure::Settings(settings::LoadError::Invalid(errors)))?;
    Ok(settings)
}

async fn build_template(global: &GlobalArgs) -> Result<String, Failure> {
    let settings = load_settings(global).await?;
    Ok(template_of(global, &settings).await?.to_json())
}

/// The template as it is sent to CloudFormation, refused here if too large to be sent.
async fn template_body(global: &GlobalArgs, settings: &Settings) -> Result<String, Failure> {
    let body = template_of(global, settings).await?.to_compact_json();
    if body.len() > TEMPLATE_BODY_MAX {
        return Err(Failure::Other(format!(
            "the template is {} bytes, more than the {TEMPLATE_BODY_MAX} CloudFormation takes inline: shorten host_files, host_commands or instance_policy_statements, or list fewer users",
            body.len()
        )));
    }
    Ok(body)
}

/// The checks of the account and network that must pass before any change set.
async fn preflight(global: &GlobalArgs, settings: &Settings) -> Result<(), Failure> {
    let mut problems: Vec<Problem> = preflight::stack_name_problem(&global.stack)
        .into_iter()
        .collect();
    let config = sdk_config(&global.aws()).await;
    problems.extend(preflight::check(settings, &aws_sdk_ec2::Client::new(&config)).await?);
    problems.extend(
        preflight::check_hosted_zone(settings, &aws_sdk_route53::Client::new(&config)).await?,
    );
    problems.extend(preflight::check_image(settings, &config).await?);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Preflight(problems))
    }
}

async fn template_of(
    global: &GlobalArgs,
    settings: &Settings,
) -> Result<super::template::Template, Failure> {
    // The region counts even when the settings give the VPC: the template depends on it.
    let config = sdk_config(&global.aws()).await;
    let network = super::network::resolve(settings, &aws_sdk_ec2::Client::new(&config)).await?;
    Ok(appliance(settings, &settings.sizing(), &network))
}

/// Says whether the account lacks the ECS service-linked role, and with `create`, creates it
/// and waits until ECS can use it. A deployer who may not read roles is warned, not stopped.
async fn ecs_role(global: &GlobalArgs, create: bool) -> Result<(), Failure> {
    let iam = aws_sdk_iam::Client::new(&sdk_config(&global.aws()).await);
    match account::has_ecs_role(&iam).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            println!("{}", render::ecs_role_to_create());
            if create {
                account::create_ecs_role(&iam).await?;
                println!(
                    "Created the IAM role {}; waiting for IAM to make it usable.",
                    account::ECS_ROLE
                );
                account::await_ecs_role(&iam).await?;
            }
            Ok(())
        }
        Err(DeployError::Aws { code, .. }) if code == "AccessDenied" => {
            eprintln!(
                "warning: iam:GetRole is denied, so whether this account has the role {} cannot be told; if the account has never used ECS, the first create fails without it: create it with `aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com`",
                account::ECS_ROLE
            );
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

async fn stack_client(global: &GlobalArgs) -> StackClient {
    let config = sdk_config(&global.aws()).await;
    StackClient::new(aws_sdk_cloudformation::Client::new(&config), &global.stack)
}

/// Asks a yes/no question on the terminal. Without a terminal there is nobody to ask: that
/// is a refusal, and the message says to pass --yes.
fn confirm(question: &str) -> Result<bool, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Other(format!(
            "{question} needs confirmation, but there is no terminal to ask: pass --yes"
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|err| Failure::Other(format!("reading the answer: {err}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Follows the stack with a spinner until it settles; Ctrl-C stops following, not the stack.
async fn follow(
    stack: &StackClient,
    since: aws_smithy_types::DateTime,
) -> Result<Result<(Option<super::stack::StackState>, Vec<StackEvent>), ExitCode>, Failure> {
    let progress = indicatif::ProgressBar::new_spinner();
    progress.enable_steady_tick(std::time::Duration::from_millis(120));
    progress.set_message(format!("waiting for stack {}", stack.name()));
    let mut events = Vec::new();
    let followed = stack.follow(since, |event| {
        progress.println(render::event(event));
        progress.set_message(format!("{} {}", event.logical_id, event.status));
        events.push(event.clone());
    });
    let outcome = tokio::select! {
        result = followed => result,
        _ = tokio::signal::ctrl_c() => {
            progress.finish_and_clear();
            eprintln!(
                "Interrupted. The stack operation goes on in CloudFormation; follow it with\n  aws cloudformation describe-stack-events --stack-name {}\nor run `wheelhouse-deploy --stack {} outputs` once it settles.",
                stack.name(),
                stack.name()
            );
            return Ok(Err(ExitCode::from(130)));
        }
    };
    progress.finish_and_clear();
    Ok(Ok((outcome?, events)))
}

async fn up(global: &GlobalArgs, yes: bool) -> Result<ExitCode, Failure> {
    let settings = load_settings(global).await?;
    preflight(global, &settings).await?;
    let template = template_body(global, &settings).await?;
    let stack = stack_client(global).await;
    if let Some(state) = stack.state().await? {
        // ROLLBACK_FAILED: the first create failed and its rollback could not delete
        // everything (a load balancer with deletion protection, say).
        if state.status == "ROLLBACK_COMPLETE" || state.status == "ROLLBACK_FAILED" {
            eprintln!(
                "Stack {} is in {}: its first deploy failed and it can only be deleted.",
                stack.name(),
                state.status
            );
            if !yes && !confirm("Delete it and create it again?")? {
                return Ok(ExitCode::FAILURE);
            }
            let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk_config(&global.aws()).await);
            protection::release(&stack, &state, &elb).await?;
            let since = stack.latest_event_time().await?;
            stack.delete().await?;
            match follow(&stack, since).await? {
                Err(code) => return Ok(code),
                Ok((Some(state), events)) if state.status != "DELETE_COMPLETE" => {
                    eprint!("{}", render::failures(&events));
                    return Err(Failure::Other(format!(
                        "deleting the failed stack ended in {}",
                        state.status
                    )));
                }
                Ok(_) => {}
            }
        }
    }
    // Before the change set: the cluster and capacity provider cannot be created without it.
    ecs_role(global, true).await?;
    let preview = stack.preview(&template).await?;
    print!("{}", render::diff(stack.name(), &preview));
    if preview.change_set_id.is_none() {
        if let Some(state) = stack.state().await? {
            protect_as_set(&stack, &state, settings.protected()).await?;
            print!("\nOutputs:\n{}", render::outputs_table(&state));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !yes && !confirm(&format!("\nApply these changes to stack {}?", stack.name()))? {
        stack.discard(&preview).await?;
        eprintln!("Cancelled: nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }
    let since = stack.latest_event_time().await?;
    stack.execute(&preview).await?;
    let (state, events) = match follow(&stack, since).await? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    let state = state.ok_or_else(|| DeployError::NoStack {
        stack: stack.name().to_owned(),
    })?;
    if is_success(&state.status) {
        println!("\nStack {}: {}", stack.name(), state.status);
        protect_as_set(&stack, &state, settings.protected()).await?;
        print!("\nOutputs:\n{}", render::outputs_table(&state));
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("\nStack {} ended in {}.", stack.name(), state.status);
        if let Some(reason) = &state.reason {
            eprintln!("Reason: {reason}");
        }
        eprint!("Failed resources:\n{}", render::failures(&events));
        if state.status == "ROLLBACK_COMPLETE" {
            eprintln!(
                "The stack was never created; the next `up` offers to delete and recreate it."
            );
        } else if state.status.contains("ROLLBACK") {
            eprintln!("Changes were rolled back: the stack is as it was before this update.");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Makes the stack's termination protection what the settings say, and says so if it moved.
async fn protect_as_set(
    stack: &StackClient,
    state: &super::stack::StackState,
    wanted: bool,
) -> Result<(), Failure> {
    if protection::sync_termination_protection(stack, state, wanted).await? {
        let now = if wanted { "on" } else { "off" };
        println!("Termination protection of stack {}: {now}.", stack.name());
    }
    Ok(())
}

async fn destroy(global: &GlobalArgs, yes: bool) -> Result<ExitCode, Failure> {
    let stack = stack_client(global).await;
    let Some(state) = stack.state().await? else {
        println!("Stack {} does not exist: nothing to destroy.", stack.name());
        return Ok(ExitCode::SUCCESS);
    };
    if !yes
        && !confirm(&format!(
            "Destroy stack {}? (the EFS file system holding the packages is kept)",
            stack.name()
        ))?
    {
        eprintln!("Cancelled: nothing was deleted.");
        return Ok(ExitCode::FAILURE);
    }
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk_config(&global.aws()).await);
    let released = protection::release(&stack, &state, &elb).await?;
    if released.termination_protection {
        println!(
            "Turned off the termination protection of stack {}.",
            stack.name()
        );
    }
    if released.load_balancer {
        println!("Turned off the deletion protection of its load balancer.");
    }
    let since = stack.latest_event_time().await?;
    stack.delete().await?;
    match follow(&stack, since).await? {
        Err(code) => Ok(code),
        Ok((None, _)) => {
            println!("Stack {} destroyed.", stack.name());
            Ok(ExitCode::SUCCESS)
        }
        Ok((Some(state), _)) if state.status == "DELETE_COMPLETE" => {
            println!("Stack {} destroyed.", stack.name());
            Ok(ExitCode::SUCCESS)
        }
        Ok((Some(state), events)) => {
            eprintln!("Stack {} ended in {}.", stack.name(), state.status);
            eprint!("Failed resources:\n{}", render::failures(&events));
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn credentials(
    global: &GlobalArgs,
    json: bool,
    user: Option<&str>,
) -> Result<ExitCode, Failure> {
    let config = sdk_config(&global.aws()).await;
    let stack = StackClient::new(aws_sdk_cloudformation::Client::new(&config), &global.stack);
    let state = stack.require_state().await?;
    let (username, password) = generated_credentials(&config, &state, &global.stack, user).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"username": username, "password": password})
        );
    } else {
        println!("username: {username}\npassword: {password}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The user name and password the stack generated for `user` (its own when `None`), from
/// the user's secret.
async fn generated_credentials(
    config: &aws_config::SdkConfig,
    state: &super::stack::StackState,
    stack_name: &str,
    user: Option<&str>,
) -> Result<(String, String), Failure> {
    let output = user.map_or_else(|| SECRET_OUTPUT.to_owned(), user_secret_output);
    let Some(arn) = state.output(&output) else {
        return Err(match user {
            Some(name) if output != SECRET_OUTPUT => Failure::Other(format!(
                "stack {stack_name} has no user {name:?} (no output {output}): add it to `users` and run `up`"
            )),
            _ => DeployError::MissingOutput {
                stack: stack_name.to_owned(),
                output,
            }
            .into(),
        });
    };
    let value = aws_sdk_secretsmanager::Client::new(config)
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(super::stack::aws_error("GetSecretValue"))?;
    let text = value.secret_string().unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_str(text)
        .map_err(|err| Failure::Other(format!("secret {arn} is not the expected JSON: {err}")))?;
    let field = |name: &str| {
        parsed
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Ok((field("username"), field("password")))
}

async fn verify(
    global: &GlobalArgs,
    url: Option<&str>,
    targets: &[String],
) -> Result<ExitCode, Failure> {
    let parse = |what: &str, text: &str| {
        reqwest::Url::parse(text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                Failure::Other(format!(
                    "{what} {text:?} is not an http(s) address like https://pypi.example.com/"
                ))
            })
    };
    let targets = targets
        .iter()
        .map(|t| parse("--target", t))
        .collect::<Result<Vec<_>, _>>()?;
    let config = sdk_config(&global.aws()).await;
    let stack = StackClient::new(aws_sdk_cloudformation::Client::new(&config), &global.stack);
    let state = stack.require_state().await?;
    let (username, password) = generated_credentials(&config, &state, &global.stack, None).await?;
    let (base, names) = match url {
        Some(url) => {
            let base = parse("--url", url)?;
            let names = vec![base.host_str().unwrap_or_default().to_owned()];
            (base, names)
        }
        None => {
            let first = state
                .output("Url")
                .ok_or_else(|| DeployError::MissingOutput {
                    stack: global.stack.clone(),
                    output: "Url".to_owned(),
                })?;
            let base = parse("the stack's Url output", first)?;
            let all = state.output("AllUrls").unwrap_or(first);
            let names = all
                .split_whitespace()
                .filter_map(|u| reqwest::Url::parse(u).ok())
                .filter_map(|u| u.host_str().map(str::to_owned))
                .collect();
            (base, names)
        }
    };
    let parts = verify::services::Parts {
        cluster: state.output("ClusterName").map(str::to_owned),
        service: state.output("ServiceName").map(str::to_owned),
        target_group: stack.physical_id("TargetGroup").await?,
        file_system: state.output("FileSystemId").map(str::to_owned),
        backup_plan: stack.physical_id("BackupPlan").await?,
        alarms: state
            .outputs
            .iter()
            .filter(|(key, _, _)| key.ends_with("AlarmArn"))
            .filter_map(|(_, arn, _)| verify::services::alarm_name(arn).map(str::to_owned))
            .collect(),
    };
    let (mut rows, healthy) = verify::services::check(&config, &parts).await;
    let endpoint = verify::endpoint::Endpoint {
        base,
        names,
        username,
        password,
        replicas: if targets.is_empty() {
            verify::endpoint::Replicas::Through(healthy)
        } else {
            verify::endpoint::Replicas::Each(targets)
        },
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        // Nanoseconds: two runs (CI and an operator, say) never share a probe.
        .map_or(0, |d| d.as_nanos());
    let probe = verify::probe::Probe::new(stamp);
    rows.extend(verify::endpoint::check(&endpoint, &probe).await);
    print!("{}", verify::table(&rows));
    Ok(if rows.iter().all(|r| r.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
