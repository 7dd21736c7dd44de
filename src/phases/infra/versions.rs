//! EKS Kubernetes versions and what they cost. A minor version is in standard support for 14
//! months after EKS releases it, then in extended support for 12 more, at six times the
//! control plane's price (EKS user guide, "Understand the Kubernetes version lifecycle on EKS").
//! EKS's `DescribeClusterVersions` is the truth when it answers; [`RELEASES`] is the dated
//! table used when it does not (no network, `--plan` without credentials, the emulator).

use time::{Date, Duration, macros::date};

/// When [`RELEASES`] was read (endoflife.date/amazon-eks, which follows EKS's release calendar);
/// versions EKS released since are not in it.
pub const TABLE_AS_OF: &str = "2026-02-14";

/// The environment variable that fixes "today" (`YYYY-MM-DD`) for the support dates of
/// Kubernetes versions: plans that stay the same from one day to the next (tests, reviews).
pub const TODAY_ENV: &str = "NEONCTL_AWS_TODAY";

/// Today (UTC), or the day `$NEONCTL_AWS_TODAY` names.
pub fn today() -> time::Date {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    std::env::var(TODAY_ENV)
        .ok()
        .and_then(|day| time::Date::parse(&day, &format).ok())
        .unwrap_or_else(|| time::OffsetDateTime::now_utc().date())
}

/// A warning this long before standard support ends.
pub const WARN_BEFORE: Duration = Duration::days(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub minor: &'static str,
    pub released: Date,
    pub end_of_standard: Date,
    pub end_of_extended: Date,
}

/// EKS's releases still supported in some way, oldest first.
pub const RELEASES: [Release; 6] = [
    Release {
        minor: "1.30",
        released: date!(2024 - 05 - 23),
        end_of_standard: date!(2025 - 07 - 23),
        end_of_extended: date!(2026 - 07 - 23),
    },
    Release {
        minor: "1.31",
        released: date!(2024 - 09 - 26),
        end_of_standard: date!(2025 - 11 - 26),
        end_of_extended: date!(2026 - 11 - 26),
    },
    Release {
        minor: "1.32",
        released: date!(2025 - 01 - 25),
        end_of_standard: date!(2026 - 03 - 23),
        end_of_extended: date!(2027 - 03 - 23),
    },
    Release {
        minor: "1.33",
        released: date!(2025 - 05 - 28),
        end_of_standard: date!(2026 - 07 - 29),
        end_of_extended: date!(2027 - 07 - 29),
    },
    Release {
        minor: "1.34",
        released: date!(2025 - 10 - 06),
        end_of_standard: date!(2026 - 12 - 02),
        end_of_extended: date!(2027 - 12 - 02),
    },
    Release {
        minor: "1.35",
        released: date!(2026 - 01 - 28),
        end_of_standard: date!(2027 - 03 - 27),
        end_of_extended: date!(2028 - 03 - 27),
    },
];

/// Where a version stands on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Standard {
        until: Date,
    },
    Extended {
        until: Date,
    },
    /// Past extended support: EKS upgrades such clusters itself.
    Ended,
    /// Not in the table: newer than it, or unknown.
    Unknown,
}

pub fn support(minor: &str, today: Date) -> Support {
    match RELEASES.iter().find(|r| r.minor == minor) {
        None => Support::Unknown,
        Some(r) if today < r.end_of_standard => Support::Standard { until: r.end_of_standard },
        Some(r) if today < r.end_of_extended => Support::Extended { until: r.end_of_extended },
        Some(_) => Support::Ended,
    }
}

/// The newest version in standard support on `today` according to the table.
pub fn newest_in_standard(today: Date) -> &'static str {
    RELEASES.iter().rev().find(|r| r.released <= today && today < r.end_of_standard).map_or(RELEASES[RELEASES.len() - 1].minor, |r| r.minor)
}

/// Compares `1.NN` versions by their minor number.
pub fn minor_number(version: &str) -> Option<u32> {
    version.strip_prefix("1.")?.parse().ok()
}

/// What running `minor` costs or risks on `today`, when it is worth saying: in extended support
/// (with the price per hour and month), or within [`WARN_BEFORE`] of it.
pub fn warning(minor: &str, today: Date, standard_per_hour: f64, extended_per_hour: f64) -> Option<String> {
    let month = |per_hour: f64| per_hour * crate::phases::infra::spec::HOURS_PER_MONTH;
    match support(minor, today) {
        Support::Extended { until } => Some(format!(
            "Kubernetes {minor} is in EKS extended support until {until}: its control plane costs ${extended_per_hour:.2}/hour \
             (${:.0}/month) instead of ${standard_per_hour:.2} (${:.0}/month); set cluster.kubernetes_version to {} (one minor \
             version at a time)",
            month(extended_per_hour),
            month(standard_per_hour),
            newest_in_standard(today)
        )),
        Support::Standard { until } if until - today <= WARN_BEFORE => Some(format!(
            "Kubernetes {minor} leaves EKS standard support on {until}, in {} days: then its control plane costs \
             ${extended_per_hour:.2}/hour instead of ${standard_per_hour:.2} (clusters made with support type STANDARD are \
             upgraded by EKS instead); plan an upgrade",
            (until - today).whole_days()
        )),
        Support::Ended => Some(format!(
            "Kubernetes {minor} is past EKS extended support: EKS upgrades such clusters itself; set cluster.kubernetes_version to {}",
            newest_in_standard(today)
        )),
        Support::Standard { .. } | Support::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_follows_the_calendar() {
        let today = date!(2026 - 11 - 26);
        assert_eq!(support("1.35", today), Support::Standard { until: date!(2027 - 03 - 27) });
        assert_eq!(support("1.33", today), Support::Extended { until: date!(2027 - 07 - 29) });
        assert_eq!(support("1.30", today), Support::Ended);
        assert_eq!(support("1.36", today), Support::Unknown);
        assert_eq!(newest_in_standard(today), "1.35");
        assert_eq!(newest_in_standard(date!(2025 - 12 - 01)), "1.34");
        for window in RELEASES.windows(2) {
            assert!(minor_number(window[0].minor) < minor_number(window[1].minor), "oldest first");
        }
        for r in RELEASES {
            assert_eq!(r.end_of_extended.year() - r.end_of_standard.year(), 1, "{}: 12 months of extended support", r.minor);
        }
    }

    #[test]
    fn warnings_name_the_price_and_the_way_out() {
        let today = date!(2026 - 11 - 26);
        let extended = warning("1.33", today, 0.10, 0.60).unwrap();
        assert!(extended.contains("extended support until 2027-07-29") && extended.contains("$0.60/hour ($438/month)"), "{extended}");
        assert!(extended.contains("set cluster.kubernetes_version to 1.35"), "{extended}");
        let soon = warning("1.34", today, 0.10, 0.60).unwrap();
        assert!(soon.contains("leaves EKS standard support on 2026-12-02, in 6 days"), "{soon}");
        assert_eq!(warning("1.35", today, 0.10, 0.60), None);
        assert!(warning("1.30", today, 0.10, 0.60).unwrap().contains("past EKS extended support"));
    }
}
