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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release<M = &'static str> {
    pub minor: M,
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

/// The releases EKS supports and their dates: EKS's own answer, or the dated table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// Oldest first.
    pub releases: Vec<Release<String>>,
    /// Where the dates come from, as notes name it.
    pub source: String,
}

impl Calendar {
    /// [`RELEASES`], as of [`TABLE_AS_OF`].
    pub fn table() -> Self {
        let releases = RELEASES
            .iter()
            .map(|r| Release {
                minor: r.minor.to_string(),
                released: r.released,
                end_of_standard: r.end_of_standard,
                end_of_extended: r.end_of_extended,
            })
            .collect();
        Calendar { releases, source: format!("the table of {TABLE_AS_OF}") }
    }

    /// From EKS's `DescribeClusterVersions` answer; `None` when it lists no version with dates.
    pub fn from_eks(versions: &[aws_sdk_eks::types::ClusterVersionInformation]) -> Option<Self> {
        let day = |t: Option<&aws_smithy_types::DateTime>| time::OffsetDateTime::from_unix_timestamp(t?.secs()).ok().map(|t| t.date());
        let mut releases: Vec<Release<String>> = versions
            .iter()
            .filter_map(|v| {
                Some(Release {
                    minor: v.cluster_version()?.to_string(),
                    released: day(v.release_date())?,
                    end_of_standard: day(v.end_of_standard_support_date())?,
                    end_of_extended: day(v.end_of_extended_support_date())?,
                })
            })
            .collect();
        releases.sort_by_key(|r| minor_number(&r.minor));
        (!releases.is_empty()).then(|| Calendar { releases, source: "EKS".to_string() })
    }

    pub fn support(&self, minor: &str, today: Date) -> Support {
        match self.releases.iter().find(|r| r.minor == minor) {
            None => Support::Unknown,
            Some(r) if today < r.end_of_standard => Support::Standard { until: r.end_of_standard },
            Some(r) if today < r.end_of_extended => Support::Extended { until: r.end_of_extended },
            Some(_) => Support::Ended,
        }
    }

    /// The newest version in standard support on `today`.
    pub fn newest_in_standard(&self, today: Date) -> &str {
        let newest = self.releases.iter().rev().find(|r| r.released <= today && today < r.end_of_standard);
        newest.or(self.releases.last()).map_or("", |r| r.minor.as_str())
    }

    /// What running `minor` costs or risks on `today`, when it is worth saying: in extended
    /// support (with the price per hour and month), or within [`WARN_BEFORE`] of it.
    pub fn warning(&self, minor: &str, today: Date, standard_per_hour: f64, extended_per_hour: f64) -> Option<String> {
        let month = |per_hour: f64| per_hour * crate::phases::infra::spec::HOURS_PER_MONTH;
        match self.support(minor, today) {
            Support::Extended { until } => Some(format!(
                "Kubernetes {minor} is in EKS extended support until {until}: its control plane costs ${extended_per_hour:.2}/hour \
                 (${:.0}/month) instead of ${standard_per_hour:.2} (${:.0}/month); set cluster.kubernetes_version to {} (one minor \
                 version at a time)",
                month(extended_per_hour),
                month(standard_per_hour),
                self.newest_in_standard(today)
            )),
            Support::Standard { until } if until - today <= WARN_BEFORE => Some(format!(
                "Kubernetes {minor} leaves EKS standard support on {until}, in {} days: then its control plane costs \
                 ${extended_per_hour:.2}/hour instead of ${standard_per_hour:.2} (clusters made with support type STANDARD are \
                 upgraded by EKS instead); plan an upgrade",
                (until - today).whole_days()
            )),
            Support::Ended => Some(format!(
                "Kubernetes {minor} is past EKS extended support: EKS upgrades such clusters itself; set cluster.kubernetes_version to {}",
                self.newest_in_standard(today)
            )),
            Support::Standard { .. } | Support::Unknown => None,
        }
    }
}

/// EKS's calendar when `DescribeClusterVersions` answers (every version it supports in some
/// way), else the table; the second value says why the table was used.
pub async fn calendar(aws: &crate::aws::Aws) -> (Calendar, Option<String>) {
    match aws.eks.describe_cluster_versions().include_all(true).send().await {
        Ok(out) => match Calendar::from_eks(out.cluster_versions()) {
            Some(calendar) => (calendar, None),
            None => (Calendar::table(), Some("EKS listed no version".to_string())),
        },
        Err(e) => {
            let e = crate::aws::call::call("DescribeClusterVersions", "")(e);
            (Calendar::table(), Some(format!("DescribeClusterVersions failed: {e}")))
        }
    }
}

/// Compares `1.NN` versions by their minor number.
pub fn minor_number(version: &str) -> Option<u32> {
    version.strip_prefix("1.")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_follows_the_calendar() {
        let today = date!(2026 - 11 - 26);
        let table = Calendar::table();
        assert_eq!(table.support("1.35", today), Support::Standard { until: date!(2027 - 03 - 27) });
        assert_eq!(table.support("1.33", today), Support::Extended { until: date!(2027 - 07 - 29) });
        assert_eq!(table.support("1.30", today), Support::Ended);
        assert_eq!(table.support("1.36", today), Support::Unknown);
        assert_eq!(table.newest_in_standard(today), "1.35");
        assert_eq!(table.newest_in_standard(date!(2025 - 12 - 01)), "1.34");
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
        let warning = |minor: &str, today, standard, extended| Calendar::table().warning(minor, today, standard, extended);
        let extended = warning("1.33", today, 0.10, 0.60).unwrap();
        assert!(extended.contains("extended support until 2027-07-29") && extended.contains("$0.60/hour ($438/month)"), "{extended}");
        assert!(extended.contains("set cluster.kubernetes_version to 1.35"), "{extended}");
        let soon = warning("1.34", today, 0.10, 0.60).unwrap();
        assert!(soon.contains("leaves EKS standard support on 2026-12-02, in 6 days"), "{soon}");
        assert_eq!(warning("1.35", today, 0.10, 0.60), None);
        assert!(warning("1.30", today, 0.10, 0.60).unwrap().contains("past EKS extended support"));
    }

    /// A recorded `DescribeClusterVersions` answer: EKS's dates win over the table's, and a
    /// version newer than the table is known.
    #[test]
    fn eks_answers_are_the_calendar() {
        use aws_sdk_eks::types::ClusterVersionInformation;
        let at = |d: Date| aws_smithy_types::DateTime::from_secs(d.midnight().assume_utc().unix_timestamp());
        let version = |minor: &str, released: Date, standard: Date, extended: Date| {
            ClusterVersionInformation::builder()
                .cluster_version(minor)
                .release_date(at(released))
                .end_of_standard_support_date(at(standard))
                .end_of_extended_support_date(at(extended))
                .build()
        };
        let answer = [
            version("1.36", date!(2026 - 06 - 10), date!(2027 - 08 - 10), date!(2028 - 08 - 10)),
            version("1.34", date!(2025 - 10 - 06), date!(2026 - 12 - 02), date!(2027 - 12 - 02)),
            version("1.33", date!(2025 - 05 - 28), date!(2026 - 07 - 29), date!(2027 - 07 - 29)),
            ClusterVersionInformation::builder().cluster_version("1.37").build(),
        ];
        let eks = Calendar::from_eks(&answer).unwrap();
        assert_eq!(eks.releases.iter().map(|r| r.minor.as_str()).collect::<Vec<_>>(), ["1.33", "1.34", "1.36"], "undated left out");
        let today = date!(2026 - 11 - 26);
        assert_eq!(eks.newest_in_standard(today), "1.36");
        assert_eq!(eks.support("1.36", today), Support::Standard { until: date!(2027 - 08 - 10) });
        let extended = eks.warning("1.33", today, 0.10, 0.60).unwrap();
        assert!(extended.contains("$0.60/hour") && extended.contains("set cluster.kubernetes_version to 1.36"), "{extended}");
        assert_eq!(Calendar::from_eks(&[]), None);
    }
}
