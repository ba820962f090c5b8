//! The appliance in miniature: `wheelhouse-deploy up` against LocalStack, three replicas that
//! share one package store and get the stack's credentials the way ECS injects them, and the
//! real pip, uv, twine and build driving them, step by step.
//!
//! Two ways to bring the cluster up: `containers` (LocalStack and three `wheelhouse` containers
//! from locally built images, sharing one Docker volume) and `processes` (LocalStack and three
//! `wheelhouse` processes on loopback sharing one temp directory). `WHEELHOUSE_INTEGRATION`
//! chooses: `containers`, `processes`, or `both`; unset, both run when a Docker engine answers
//! and `processes` alone otherwise. `aws` runs the release checklist against a real account
//! instead (see `acceptance`).
//!
//! Run with `cargo test --workspace` (which builds the binaries this suite starts) or, after a
//! `cargo build --workspace`, `cargo test -p wheelhouse-integration`.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/localstack/mod.rs"]
mod localstack;

mod acceptance;
mod cluster;
mod steps;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use libtest_mimic::{Arguments, Failed, Trial};

use cluster::{docker_available, Mode};
use steps::{Scenario, STEPS};

fn modes() -> Result<Vec<Mode>, String> {
    match std::env::var("WHEELHOUSE_INTEGRATION").as_deref() {
        Ok("containers") => Ok(vec![Mode::Containers]),
        Ok("processes") => Ok(vec![Mode::Processes]),
        Ok("both") => Ok(vec![Mode::Containers, Mode::Processes]),
        Ok("") | Err(std::env::VarError::NotPresent) => Ok(if docker_available() {
            vec![Mode::Containers, Mode::Processes]
        } else {
            vec![Mode::Processes]
        }),
        Ok(other) => Err(format!(
            "WHEELHOUSE_INTEGRATION={other:?}: expected containers, processes, both or aws"
        )),
        Err(err) => Err(format!("WHEELHOUSE_INTEGRATION: {err}")),
    }
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // The steps build on each other: one at a time, in order.
    args.test_threads = Some(1);
    if std::env::var("WHEELHOUSE_INTEGRATION").as_deref() == Ok("aws") {
        return acceptance_run(&args);
    }
    let modes = match modes() {
        Ok(modes) => modes,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let scenarios: Vec<Arc<Mutex<Scenario>>> = modes
        .iter()
        .map(|mode| Arc::new(Mutex::new(Scenario::new(*mode))))
        .collect();
    let mut trials = Vec::new();
    for (mode, scenario) in modes.iter().zip(&scenarios) {
        for (number, (name, step)) in STEPS.iter().enumerate() {
            let scenario = scenario.clone();
            let step = *step;
            trials.push(Trial::test(
                format!("{}::step{}_{name}", mode.name(), number + 1),
                move || run_step(&scenario, step),
            ));
        }
    }
    if modes.contains(&Mode::Containers) {
        trials.insert(
            0,
            Trial::test("containers::image_smoke_test", || {
                catch(steps::image_smoke_test)
            }),
        );
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // Stops every container and process, whatever happened above.
    for scenario in &scenarios {
        scenario
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shut_down();
    }
    conclusion.exit_code()
}

fn acceptance_run(args: &Arguments) -> ExitCode {
    let acceptance = match acceptance::Acceptance::from_env() {
        Ok(acceptance) => Arc::new(Mutex::new(acceptance)),
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let trials = acceptance::STEPS
        .iter()
        .enumerate()
        .map(|(number, (name, step))| {
            let acceptance = acceptance.clone();
            let step = *step;
            Trial::test(format!("aws::step{}_{name}", number + 1), move || {
                run_step(&acceptance, step)
            })
        })
        .collect();
    libtest_mimic::run(args, trials).exit_code()
}

/// One step over the state the steps share; a step that failed leaves it usable for the next.
fn run_step<S>(state: &Mutex<S>, step: fn(&mut S)) -> Result<(), Failed> {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    catch(|| step(&mut state))
}

/// A failed assertion becomes the trial's failure message instead of tearing the run down.
fn catch(work: impl FnOnce()) -> Result<(), Failed> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    outcome.map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "the step panicked".to_owned());
        Failed::from(message)
    })
}
