//! The machine the figures came from: they mean little without it.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Online CPUs (what the scheduler can use).
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// `GLIBC_TUNABLES` as set for the run ("" when unset): glibc's memcpy
    /// strategy changes the 4–64 KiB figures on some CPUs.
    pub glibc_tunables: String,
    pub glibc: String,
    pub rustc: String,
    /// Load average (1 min) when the run started and when it ended.
    pub load_before: f64,
    pub load_after: Option<f64>,
    /// The highest 1-minute load average seen between measurements.
    #[serde(default)]
    pub load_max: Option<f64>,
    /// UTC, `2026-04-30 12:00`.
    pub date: String,
    /// The workspace commit (`git describe --always --dirty`).
    pub commit: String,
    /// RLIMIT_NOFILE (hard) the generator and the servers ran with.
    pub nofile: u64,
}

impl Machine {
    pub fn probe(root: &std::path::Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            glibc_tunables: std::env::var("GLIBC_TUNABLES").unwrap_or_default(),
            glibc: glibc_version(),
            rustc: first_line("rustc", &["--version"]),
            load_before: load_average(),
            load_after: None,
            load_max: None,
            date: utc_now(),
            commit: first_line_in(root, "git", &["describe", "--always", "--dirty"]),
            nofile: crate::loadgen::nofile_hard_limit(),
        }
    }

    /// One line for the top of every generated page.
    pub fn stamp(&self) -> String {
        format!(
            "{} × {}, Linux {}, {}; GLIBC_TUNABLES {}; load average {:.2} before{}; {} UTC, commit {}",
            self.cores,
            self.cpu_model,
            self.kernel,
            self.glibc,
            if self.glibc_tunables.is_empty() {
                "unset".to_string()
            } else {
                format!("`{}`", self.glibc_tunables)
            },
            self.load_before,
            match (self.load_after, self.load_max) {
                (Some(after), Some(max)) => format!(", {after:.2} after, {max:.2} at most"),
                (Some(after), None) => format!(", {after:.2} after"),
                _ => String::new(),
            },
            self.date,
            self.commit
        )
    }
}

/// The highest load average [`sample_load`] saw (f64 bits; 0 = none yet).
static LOAD_MAX: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Note the load average now; the highest one goes on the record.
pub fn sample_load() {
    use std::sync::atomic::Ordering;
    let now = load_average();
    if now.is_finite() && now > f64::from_bits(LOAD_MAX.load(Ordering::Relaxed)) {
        LOAD_MAX.store(now.to_bits(), Ordering::Relaxed);
    }
}

/// The highest load average sampled so far.
pub fn load_max() -> Option<f64> {
    let bits = LOAD_MAX.load(std::sync::atomic::Ordering::Relaxed);
    (bits != 0).then(|| f64::from_bits(bits))
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn glibc_version() -> String {
    // SAFETY: gnu_get_libc_version returns a pointer to a static string.
    let ptr = unsafe { gnu_get_libc_version() };
    if ptr.is_null() {
        return "glibc ?".into();
    }
    // SAFETY: the pointer is non-null and points at a NUL-terminated static string.
    let version = unsafe { std::ffi::CStr::from_ptr(ptr) };
    format!("glibc {}", version.to_string_lossy())
}

unsafe extern "C" {
    fn gnu_get_libc_version() -> *const libc::c_char;
}

fn first_line(program: &str, args: &[&str]) -> String {
    first_line_in(std::path::Path::new("."), program, args)
}

fn first_line_in(dir: &std::path::Path, program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `YYYY-MM-DD HH:MM` in UTC, without a date library.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00");
        assert_eq!(format_utc(951_782_400 + 3_660), "2000-02-29 01:01");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31 23:59");
    }

    #[test]
    fn probes_this_machine() {
        let m = Machine::probe(std::path::Path::new("."));
        assert!(m.cores >= 1);
        assert!(!m.kernel.is_empty());
        assert!(m.glibc.starts_with("glibc "));
    }
}
