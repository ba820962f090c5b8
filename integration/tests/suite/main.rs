//! The appliance in miniature: `wheelhouse-deploy up` against LocalStack, three replicas that
//! share one package store and get the stack's credentials the way ECS injects them, and the
//! real pip, uv, twine and build driving them, step by step.
//!
//! Two ways to bring the cluster up: `containers` (LocalStack and three `wheelhouse` containers
//! from locally built images, sharing one Docker volume) and `processes` (LocalStack and three
//! `wheelhouse` processes on loopback sharing one temp directory). `WHEELHOUSE_INTEGRATION`
//! chooses: `containers`, `processes`, or `both` (the default). Containers need a Docker engine
//! and root, so they run only with `WHEELHOUSE_PRIVILEGED_TESTS=1` (see
//! `tests/common/privileged.rs`); without it they are listed as ignored and named on stderr.
//! `aws` runs the release checklist against a real account instead (see `acceptance`).
//!
//! Run with `cargo test --workspace`, or alone with `cargo test --workspace --test suite`
//! (`--workspace` builds the binaries this suite starts, with the features the rest uses).

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

use cluster::Mode;
use common::privileged;
use steps::{Scenario, STEPS};

/// The modes to run, and the ones left out for want of the privileged switch.
struct Modes {
    run: Vec<Mode>,
    not_run: Vec<Mode>,
}

/// Containers need a Docker engine and root (the LocalStack image is built with debootstrap),
/// so they run only with the privileged switch; processes need neither and always run.
fn modes() -> Result<Modes, String> {
    let privileged = privileged::enabled();
    let asked = match std::env::var("WHEELHOUSE_INTEGRATION").as_deref() {
        Ok("containers") => vec![Mode::Containers],
        Ok("processes") => vec![Mode::Processes],
        Ok("both") | Ok("") | Err(std::env::VarError::NotPresent) => {
            vec![Mode::Containers, Mode::Processes]
        }
        Ok(other) => {
            return Err(format!(
                "WHEELHOUSE_INTEGRATION={other:?}: expected containers, processes, both or aws"
            ))
        }
        Err(err) => return Err(format!("WHEELHOUSE_INTEGRATION: {err}")),
    };
    let (run, not_run) = asked
        .into_iter()
        .partition(|mode| privileged || *mode != Mode::Containers);
    Ok(Modes { run, not_run })
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // The steps build on each other: one at a time, in order.
    args.test_threads = Some(1);
    if std::env::var("WHEELHOUSE_INTEGRATION").as_deref() == Ok("aws") {
        return acceptance_run(&args);
    }
    let Modes { run, not_run } = match modes() {
        Ok(modes) => modes,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let scenarios: Vec<Arc<Mutex<Scenario>>> = run
        .iter()
        .chain(&not_run)
        .map(|mode| Arc::new(Mutex::new(Scenario::new(*mode))))
        .collect();
    let mut trials = Vec::new();
    for (mode, scenario) in run.iter().chain(&not_run).zip(&scenarios) {
        // Listed as ignored rather than left out, so the summary counts them.
        let ignored = not_run.contains(mode);
        if *mode == Mode::Containers {
            trials.push(
                reported(*mode, "containers::image_smoke_test".into(), || {
                    catch(steps::image_smoke_test)
                })
                .with_ignored_flag(ignored),
            );
        }
        for (number, (name, step)) in STEPS.iter().enumerate() {
            let scenario = scenario.clone();
            let step = *step;
            trials.push(
                reported(
                    *mode,
                    format!("{}::step{}_{name}", mode.name(), number + 1),
                    move || run_step(&scenario, step),
                )
                .with_ignored_flag(ignored),
            );
        }
    }
    for mode in &not_run {
        privileged::report_not_run(
            &format!("the {} half of the integration suite", mode.name()),
            "a Docker engine and root",
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

/// A trial; one of the containers mode, which needs the privileged switch, reports itself
/// once it has passed, for CI's count.
fn reported(
    mode: Mode,
    name: String,
    run: impl FnOnce() -> Result<(), Failed> + Send + 'static,
) -> Trial {
    Trial::test(name.clone(), move || {
        run()?;
        if mode == Mode::Containers {
            privileged::report_ran(&name);
        }
        Ok(())
    })
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
