//! The real Python clients (pip, uv, twine, build) in a venv made from
//! `tests/python/clients.txt`, and a real project built with them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use super::text;

const LOCK: &str = include_str!("../python/clients.txt");

/// The venv with the Python clients, made once per lock file and reused.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| super::venv::locked("e2e-venv", LOCK))
}

pub fn tool(name: &str) -> Command {
    let mut cmd = Command::new(venv().join("bin").join(name));
    cmd.env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .env_remove("TWINE_USERNAME")
        .env_remove("TWINE_PASSWORD")
        .env_remove("UV_INDEX_URL")
        .env_remove("PIP_INDEX_URL");
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"))
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let output = run(cmd);
    assert!(output.status.success(), "{cmd:?} failed\n{}", text(&output));
    output
}

pub fn run_fails(cmd: &mut Command) -> Output {
    let output = run(cmd);
    assert!(
        !output.status.success(),
        "{cmd:?} should have failed\n{}",
        text(&output)
    );
    output
}

/// A real project built by `python -m build`: its wheel and sdist.
pub struct Dists {
    pub wheel: PathBuf,
    pub sdist: PathBuf,
}

/// `requires_python` goes into `[project]` when given.
pub fn build_project(dir: &Path, version: &str, requires_python: Option<&str>) -> Dists {
    let src = dir.join(format!("src-{version}"));
    std::fs::create_dir_all(src.join("wh_demo")).unwrap();
    std::fs::write(
        src.join("pyproject.toml"),
        format!(
            "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n\n[project]\nname = \"wh-demo\"\nversion = \"{version}\"\n{python}description = \"wheelhouse end-to-end test package\"\n",
            python = requires_python
                .map(|spec| format!("requires-python = {spec:?}\n"))
                .unwrap_or_default()
        ),
    )
    .unwrap();
    std::fs::write(
        src.join("wh_demo/__init__.py"),
        format!("VERSION = {version:?}\n"),
    )
    .unwrap();
    let out = dir.join("dist");
    run_ok(
        tool("python")
            .args(["-m", "build", "--no-isolation", "--outdir"])
            .arg(&out)
            .arg(&src),
    );
    Dists {
        wheel: out.join(format!("wh_demo-{version}-py3-none-any.whl")),
        sdist: out.join(format!("wh_demo-{version}.tar.gz")),
    }
}

/// uv with its cache under `work`, no progress bars and no interpreter from the environment.
pub fn uv(work: &Path) -> Command {
    let mut cmd = tool("uv");
    cmd.env("UV_CACHE_DIR", work.join("uv-cache"))
        .env("UV_NO_PROGRESS", "1")
        .env_remove("UV_PYTHON");
    cmd
}
