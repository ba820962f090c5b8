//! `wheelhouse-deploy`: the AWS appliance as one CloudFormation stack. The stack is the state:
//! settings come from a file the user keeps, everything else is asked of CloudFormation.
//!
//! - [`account`]: what the account must hold that the stack cannot create (the ECS role).
//! - [`settings`]: the per-stack settings file, validated before any AWS call.
//! - [`sizing`]: tasks per instance and task sizes, the seed's formulas.
//! - [`instance_types`]: the size of an instance type outside the sizing table, from EC2.
//! - [`template`]: the stack's template from typed values.
//! - [`stack`]: CloudFormation operations (change sets, events, drift), nothing printed.
//! - [`preflight`]: the account and network checked before any change set.
//! - [`protection`]: termination and deletion protection, on and off.
//! - [`render`]: diffs, events, outputs and drift as text.
//! - [`verify`]: proof that a deployed appliance works.
//! - [`cli`]: the commands.

pub mod account;
pub mod aws;
pub mod cli;
pub mod instance_types;
pub mod network;
pub mod preflight;
pub mod protection;
pub mod render;
pub mod settings;
pub mod sizing;
pub mod stack;
pub mod template;
pub mod verify;
