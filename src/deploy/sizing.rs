//! How many server tasks fit on one instance, and how each task is sized: the seed
//! deployment's formulas, exactly.
//!
//! Per task: `workers = max(2, min(8, memory / 128))`, `cpu = workers × 150 + 40`,
//! `reservation = floor(0.75 × memory)`. Per instance, 300 MiB stay with the ECS agent and the
//! OS and 500 MiB with the page cache (EFS reads go through it), and 128 CPU units with the
//! agent. Tasks per instance is the smaller of what memory and CPU allow.
//!
//! Unlike the seed, no instance is assumed to take at least one task: ECS places a task only
//! where the agent registered room for it, and a service whose tasks fit nowhere stays in
//! PROVISIONING while CloudFormation waits for hours. The agent registers the memory the kernel
//! reports (less than the type's nominal size, see [`kernel_margin_mib`]) minus
//! `ECS_RESERVED_MEMORY`, and `vCPUs × 1024` CPU units; the sizing never counts on more.

use std::fmt;

/// vCPUs and memory of an instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceSpec {
    pub vcpus: u32,
    pub memory_mib: u32,
}

/// Memory an instance keeps for the ECS agent and the OS.
pub const AGENT_MIB: u32 = 300;
/// Memory an instance keeps for the page cache.
pub const PAGE_CACHE_MIB: u32 = 500;
/// CPU units an instance keeps for the ECS agent.
pub const AGENT_CPU_UNITS: u32 = 128;

/// Memory of the nominal size that the kernel never reports as total, assumed: 5% plus 64 MiB.
/// AWS documents an m4.large (8,192 MiB) reporting 7,985 MiB, 2.5% less; small types lose a
/// larger share to the kernel's fixed reservations (a t3.micro reports about 950 of 1,024).
/// The assumption is above both, so a task the sizing places is a task ECS can place.
pub const fn kernel_margin_mib(memory_mib: u32) -> u32 {
    memory_mib / 20 + 64
}

/// The memory the ECS agent registers for tasks: what the kernel reports, less
/// `ECS_RESERVED_MEMORY` (the page cache's share, set by the hosts' boot script).
pub const fn registered_memory_mib(spec: InstanceSpec) -> u32 {
    spec.memory_mib
        .saturating_sub(kernel_margin_mib(spec.memory_mib))
        .saturating_sub(PAGE_CACHE_MIB)
}

/// The CPU units the ECS agent registers.
pub const fn registered_cpu_units(spec: InstanceSpec) -> u32 {
    spec.vcpus.saturating_mul(1024)
}

const fn spec(vcpus: u32, memory_mib: u32) -> InstanceSpec {
    InstanceSpec { vcpus, memory_mib }
}

/// Sizes shared by the general purpose families (m*): 4 GiB per vCPU.
const GENERAL: &[(&str, InstanceSpec)] = &[
    ("large", spec(2, 8192)),
    ("xlarge", spec(4, 16384)),
    ("2xlarge", spec(8, 32768)),
    ("4xlarge", spec(16, 65536)),
    ("8xlarge", spec(32, 131_072)),
    ("12xlarge", spec(48, 196_608)),
    ("16xlarge", spec(64, 262_144)),
];
/// Compute optimized (c6*/c7*): 2 GiB per vCPU.
const COMPUTE: &[(&str, InstanceSpec)] = &[
    ("large", spec(2, 4096)),
    ("xlarge", spec(4, 8192)),
    ("2xlarge", spec(8, 16384)),
    ("4xlarge", spec(16, 32768)),
    ("8xlarge", spec(32, 65536)),
    ("12xlarge", spec(48, 98304)),
    ("16xlarge", spec(64, 131_072)),
];
/// c5 has its own larger sizes.
const C5: &[(&str, InstanceSpec)] = &[
    ("large", spec(2, 4096)),
    ("xlarge", spec(4, 8192)),
    ("2xlarge", spec(8, 16384)),
    ("4xlarge", spec(16, 32768)),
    ("9xlarge", spec(36, 73728)),
    ("12xlarge", spec(48, 98304)),
    ("18xlarge", spec(72, 147_456)),
    ("24xlarge", spec(96, 196_608)),
];
/// Memory optimized (r*): 8 GiB per vCPU.
const MEMORY: &[(&str, InstanceSpec)] = &[
    ("large", spec(2, 16384)),
    ("xlarge", spec(4, 32768)),
    ("2xlarge", spec(8, 65536)),
    ("4xlarge", spec(16, 131_072)),
    ("8xlarge", spec(32, 262_144)),
    ("12xlarge", spec(48, 393_216)),
    ("16xlarge", spec(64, 524_288)),
];
/// Burstable (t*).
const BURSTABLE: &[(&str, InstanceSpec)] = &[
    ("nano", spec(2, 512)),
    ("micro", spec(2, 1024)),
    ("small", spec(2, 2048)),
    ("medium", spec(2, 4096)),
    ("large", spec(2, 8192)),
    ("xlarge", spec(4, 16384)),
    ("2xlarge", spec(8, 32768)),
];

const FAMILIES: &[(&str, &[(&str, InstanceSpec)])] = &[
    ("t3", BURSTABLE),
    ("t3a", BURSTABLE),
    ("t4g", BURSTABLE),
    ("m5", GENERAL),
    ("m6i", GENERAL),
    ("m6a", GENERAL),
    ("m7i", GENERAL),
    ("m7g", GENERAL),
    ("c5", C5),
    ("c6i", COMPUTE),
    ("c6a", COMPUTE),
    ("c7i", COMPUTE),
    ("c7g", COMPUTE),
    ("r5", MEMORY),
    ("r6i", MEMORY),
    ("r7g", MEMORY),
];

/// Looks an instance type up in the built-in table.
pub fn instance_spec(instance_type: &str) -> Option<InstanceSpec> {
    let (family, size) = instance_type.split_once('.')?;
    FAMILIES
        .iter()
        .find(|(name, _)| *name == family)?
        .1
        .iter()
        .find(|(name, _)| *name == size)
        .map(|(_, spec)| *spec)
}

/// Every instance type the table knows, for listings and exhaustive tests.
pub fn known_instance_types() -> impl Iterator<Item = (String, InstanceSpec)> {
    FAMILIES.iter().flat_map(|(family, sizes)| {
        sizes
            .iter()
            .map(move |(size, spec)| (format!("{family}.{size}"), *spec))
    })
}

/// What decides how many tasks fit on an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Memory,
    Cpu,
    /// Memory and CPU allow the same number.
    Both,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Memory => "memory",
            Limit::Cpu => "cpu",
            Limit::Both => "memory and cpu",
        })
    }
}

/// What the sizing starts from; `None` means "compute it".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizingInput {
    pub spec: InstanceSpec,
    pub container_memory: u32,
    pub memory_reservation: Option<u32>,
    pub container_cpu: Option<u32>,
    pub workers: Option<u32>,
    pub asg_min_size: u32,
    pub task_min_count: Option<u32>,
    pub task_max_count: Option<u32>,
}

/// Every figure of the sizing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizing {
    pub spec: InstanceSpec,
    pub workers: u32,
    pub container_cpu: u32,
    pub container_memory: u32,
    pub memory_reservation: u32,
    pub available_ram: u32,
    pub available_cpu: u32,
    pub tasks_by_ram: u32,
    pub tasks_by_cpu: u32,
    pub tasks_per_instance: u32,
    pub limit: Limit,
    pub task_min: u32,
    pub task_max: u32,
}

pub fn auto_workers(container_memory: u32) -> u32 {
    (container_memory / 128).clamp(2, 8)
}

pub fn compute(input: &SizingInput) -> Sizing {
    let workers = input
        .workers
        .unwrap_or_else(|| auto_workers(input.container_memory));
    let container_cpu = input.container_cpu.unwrap_or(workers * 150 + 40);
    let memory_reservation = input
        .memory_reservation
        .unwrap_or(input.container_memory * 3 / 4);
    // The agent's share, or what the kernel keeps if that is more: never more than registered.
    let os_mib = AGENT_MIB.max(kernel_margin_mib(input.spec.memory_mib));
    let available_ram = input
        .spec
        .memory_mib
        .saturating_sub(os_mib + PAGE_CACHE_MIB);
    let available_cpu = registered_cpu_units(input.spec).saturating_sub(AGENT_CPU_UNITS);
    // As in the seed, one task goes on an instance whose margins leave less than its
    // reservation, but only where the agent registers room for it.
    let tasks_by_ram = if memory_reservation <= registered_memory_mib(input.spec) {
        (available_ram / memory_reservation.max(1)).max(1)
    } else {
        0
    };
    let tasks_by_cpu = available_cpu / container_cpu.max(1);
    let tasks_per_instance = tasks_by_ram.min(tasks_by_cpu);
    let limit = match tasks_by_ram.cmp(&tasks_by_cpu) {
        std::cmp::Ordering::Less => Limit::Memory,
        std::cmp::Ordering::Greater => Limit::Cpu,
        std::cmp::Ordering::Equal => Limit::Both,
    };
    let task_min = input
        .task_min_count
        .unwrap_or(tasks_per_instance * input.asg_min_size);
    let task_max = input.task_max_count.unwrap_or(2 * task_min);
    Sizing {
        spec: input.spec,
        workers,
        container_cpu,
        container_memory: input.container_memory,
        memory_reservation,
        available_ram,
        available_cpu,
        tasks_by_ram,
        tasks_by_cpu,
        tasks_per_instance,
        limit,
        task_min,
        task_max,
    }
}

/// The reservation of the smallest task the settings allow (128 MiB of container memory).
const SMALLEST_RESERVATION_MIB: u32 = 96;

/// Why not one task fits on an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unplaceable {
    /// The instance leaves no memory for tasks at all.
    Instance,
    /// A task's memory reservation is more than the instance offers tasks.
    Memory,
    /// A task's CPU units are more than the instance offers tasks.
    Cpu,
}

impl Sizing {
    /// Why no task fits on an instance, if none does.
    pub fn unplaceable(&self) -> Option<Unplaceable> {
        if self.tasks_per_instance > 0 {
            None
        } else if registered_memory_mib(self.spec) < SMALLEST_RESERVATION_MIB {
            Some(Unplaceable::Instance)
        } else if self.tasks_by_ram == 0 {
            Some(Unplaceable::Memory)
        } else {
            Some(Unplaceable::Cpu)
        }
    }

    /// The capacity table, as `sizing` prints it.
    pub fn table(&self, instance_type: &str, asg_min_size: u32) -> String {
        let rows = [
            ("instance type", instance_type.to_owned()),
            (
                "instance vCPU / memory",
                format!("{} / {} MiB", self.spec.vcpus, self.spec.memory_mib),
            ),
            ("workers per task", self.workers.to_string()),
            ("container CPU units", self.container_cpu.to_string()),
            (
                "container memory (hard)",
                format!("{} MiB", self.container_memory),
            ),
            (
                "memory reservation (soft)",
                format!("{} MiB", self.memory_reservation),
            ),
            (
                "available RAM per instance",
                format!(
                    "{} MiB (minus {} agent/OS, {PAGE_CACHE_MIB} page cache)",
                    self.available_ram,
                    AGENT_MIB.max(kernel_margin_mib(self.spec.memory_mib))
                ),
            ),
            (
                "available CPU per instance",
                format!(
                    "{} units (minus {AGENT_CPU_UNITS} agent)",
                    self.available_cpu
                ),
            ),
            ("tasks by RAM", self.tasks_by_ram.to_string()),
            ("tasks by CPU", self.tasks_by_cpu.to_string()),
            (
                "tasks per instance",
                format!("{} (limited by {})", self.tasks_per_instance, self.limit),
            ),
            ("instances (ASG min)", asg_min_size.to_string()),
            (
                "tasks min / max",
                format!("{} / {}", self.task_min, self.task_max),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(instance: &str, memory: u32, asg_min: u32) -> Sizing {
        compute(&SizingInput {
            spec: instance_spec(instance).unwrap(),
            container_memory: memory,
            memory_reservation: None,
            container_cpu: None,
            workers: None,
            asg_min_size: asg_min,
            task_min_count: None,
            task_max_count: None,
        })
    }

    #[test]
    fn t3_small_with_512_mb_matches_the_seed_table() {
        let s = sized("t3.small", 512, 2);
        assert_eq!(s.workers, 4);
        assert_eq!(s.container_cpu, 640);
        assert_eq!(s.memory_reservation, 384);
        assert_eq!(s.available_ram, 1248);
        assert_eq!(s.available_cpu, 1920);
        assert_eq!(s.tasks_by_ram, 3);
        assert_eq!(s.tasks_by_cpu, 3);
        assert_eq!(s.tasks_per_instance, 3);
        assert_eq!(s.limit, Limit::Both);
        assert_eq!(s.task_min, 6);
        assert_eq!(s.task_max, 12);
    }

    #[test]
    fn the_seeds_other_rows() {
        assert_eq!(sized("t3.micro", 512, 1).tasks_per_instance, 1);
        let c6a = sized("c6a.xlarge", 512, 1);
        assert_eq!(c6a.tasks_per_instance, 6);
        assert_eq!(c6a.limit, Limit::Cpu);
        let big = sized("c6a.2xlarge", 1024, 1);
        assert_eq!(big.workers, 8);
        assert_eq!(big.tasks_per_instance, 6);
    }

    #[test]
    fn unknown_types_are_not_guessed() {
        assert_eq!(instance_spec("t3.huge"), None);
        assert_eq!(instance_spec("x9z.large"), None);
        assert_eq!(instance_spec("t3small"), None);
    }

    /// The invariants, over every instance type and every container size in 128 MiB steps.
    #[test]
    fn invariants_hold_everywhere() {
        let mut placeable = 0;
        for (instance, spec) in known_instance_types() {
            for memory in (128..=30720).step_by(128) {
                for asg_min in [1, 2, 3] {
                    let s = compute(&SizingInput {
                        spec,
                        container_memory: memory,
                        memory_reservation: None,
                        container_cpu: None,
                        workers: None,
                        asg_min_size: asg_min,
                        task_min_count: None,
                        task_max_count: None,
                    });
                    let ctx = format!("{instance} {memory} MiB x{asg_min}");
                    assert!((2..=8).contains(&s.workers), "{ctx}");
                    assert_eq!(s.container_cpu, s.workers * 150 + 40, "{ctx}");
                    assert!(s.memory_reservation <= memory, "{ctx}");
                    assert_eq!(
                        s.tasks_per_instance,
                        s.tasks_by_ram.min(s.tasks_by_cpu),
                        "{ctx}"
                    );
                    assert_eq!(s.unplaceable().is_none(), s.tasks_per_instance > 0, "{ctx}");
                    // The tasks placed fit in what the agent registers, not only in the
                    // nominal size.
                    assert!(
                        s.tasks_per_instance * s.memory_reservation <= registered_memory_mib(spec),
                        "{ctx}"
                    );
                    assert!(
                        s.tasks_per_instance * s.container_cpu <= registered_cpu_units(spec),
                        "{ctx}"
                    );
                    assert_eq!(s.task_min, s.tasks_per_instance * asg_min, "{ctx}");
                    assert_eq!(s.task_max, 2 * s.task_min, "{ctx}");
                    // Monotone: a bigger instance of the same family never fits fewer tasks.
                    let more = compute(&SizingInput {
                        spec: InstanceSpec {
                            vcpus: spec.vcpus * 2,
                            memory_mib: spec.memory_mib * 2,
                        },
                        container_memory: memory,
                        memory_reservation: None,
                        container_cpu: None,
                        workers: None,
                        asg_min_size: asg_min,
                        task_min_count: None,
                        task_max_count: None,
                    });
                    assert!(more.tasks_per_instance >= s.tasks_per_instance, "{ctx}");
                    placeable += u32::from(s.tasks_per_instance > 0);
                }
            }
        }
        assert!(placeable > 10_000, "{placeable}");
    }

    #[test]
    fn every_type_but_the_nano_takes_the_smallest_task() {
        for (instance, spec) in known_instance_types() {
            let s = compute(&SizingInput {
                spec,
                container_memory: 128,
                memory_reservation: None,
                container_cpu: None,
                workers: None,
                asg_min_size: 1,
                task_min_count: None,
                task_max_count: None,
            });
            if instance.ends_with(".nano") {
                assert_eq!(s.unplaceable(), Some(Unplaceable::Instance), "{instance}");
            } else {
                assert!(s.tasks_per_instance >= 1, "{instance}");
            }
        }
    }

    #[test]
    fn a_task_bigger_than_the_instance_is_not_placed() {
        let mut input = SizingInput {
            spec: instance_spec("t3.small").unwrap(),
            container_memory: 512,
            memory_reservation: None,
            container_cpu: None,
            workers: Some(14),
            asg_min_size: 1,
            task_min_count: None,
            task_max_count: None,
        };
        assert_eq!(compute(&input).unplaceable(), Some(Unplaceable::Cpu));
        input.workers = None;
        input.container_cpu = Some(2048 - 127);
        assert_eq!(compute(&input).unplaceable(), Some(Unplaceable::Cpu));
        input.container_cpu = Some(2048 - 128);
        assert_eq!(compute(&input).unplaceable(), None);
        // A t3.small registers about 2,048 - 166 - 500 = 1,382 MiB.
        input.container_memory = 1700;
        input.memory_reservation = Some(1382);
        assert_eq!(compute(&input).unplaceable(), None);
        input.memory_reservation = Some(1383);
        assert_eq!(compute(&input).unplaceable(), Some(Unplaceable::Memory));
    }
}
