//! The coordinator's `[energy]` section: which sites may report (each with its own token) and
//! the grid regions' emission factors.
//!
//! ```toml
//! [energy]
//! max_clock_skew_secs = 300        # an interval ending later than now + this is refused
//! max_interval_secs = 86400        # longest interval one report may cover
//!
//! [energy.grid_regions]            # gCO₂e/kWh of grid electricity, per region
//! "DE" = 380.0
//! "NO" = 30.0
//!
//! [[energy.sites]]
//! id = "site1"                     # the proxy's energy.site_id
//! token = "…"                      # the proxy's energy.report.token (≥ 16 characters)
//! ```

use blgv_config::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnergySection {
    /// Reports whose interval ends later than now + this are refused (clock skew allowance).
    pub max_clock_skew_secs: u64,
    /// The longest interval one report may cover.
    pub max_interval_secs: u64,
    /// Grid electricity factors in gCO₂e/kWh, by the region name sites use.
    pub grid_regions: BTreeMap<String, f64>,
    /// The sites allowed to report, each with its bearer token.
    pub sites: Vec<EnergySite>,
}

impl Default for EnergySection {
    fn default() -> Self {
        EnergySection {
            max_clock_skew_secs: 300,
            max_interval_secs: 86_400,
            grid_regions: BTreeMap::new(),
            sites: Vec::new(),
        }
    }
}

impl std::fmt::Debug for EnergySection {
    // Tokens never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnergySection")
            .field("max_clock_skew_secs", &self.max_clock_skew_secs)
            .field("max_interval_secs", &self.max_interval_secs)
            .field("grid_regions", &self.grid_regions)
            .field("sites", &self.sites)
            .finish()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergySite {
    pub id: String,
    pub token: String,
}

impl std::fmt::Debug for EnergySite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnergySite")
            .field("id", &self.id)
            .field("token", &"***")
            .finish()
    }
}

// One rule for site ids and factors at the proxy, here and in reports (blgv-energy).
pub use blgv_energy::{valid_site_id, MAX_FACTOR_G_PER_KWH};

impl EnergySection {
    /// What the shared report validator needs of this section.
    pub fn report_rules(&self) -> blgv_energy::Rules {
        blgv_energy::Rules {
            max_clock_skew_secs: self.max_clock_skew_secs,
            max_interval_secs: self.max_interval_secs,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_interval_secs == 0 || self.max_interval_secs > 7 * 86_400 {
            return Err(ConfigError::new(
                "energy.max_interval_secs",
                format!("{}", self.max_interval_secs),
                "use 1 to 604800 seconds (86400 is usual; sites report every 300 s)",
            ));
        }
        if self.max_clock_skew_secs > 86_400 {
            return Err(ConfigError::new(
                "energy.max_clock_skew_secs",
                format!("{}", self.max_clock_skew_secs),
                "use at most 86400 seconds (300 is usual); fix the sites' clocks (NTP) instead",
            ));
        }
        for (region, g) in &self.grid_regions {
            let key = format!("energy.grid_regions.{region}");
            if region.trim().is_empty() || region.len() > 64 {
                return Err(ConfigError::new(
                    key,
                    "empty or longer than 64 characters",
                    "name grid regions like the sites do, e.g. \"DE\" or \"US-TX-ERCOT\"",
                ));
            }
            if !(g.is_finite() && (0.0..=MAX_FACTOR_G_PER_KWH).contains(g)) {
                return Err(ConfigError::new(
                    key,
                    format!("{g} is not a factor from 0 to {MAX_FACTOR_G_PER_KWH} gCO2e/kWh"),
                    "use the region's grid emission factor in gCO2e/kWh, e.g. 380.0",
                ));
            }
        }
        for (i, s) in self.sites.iter().enumerate() {
            if !valid_site_id(&s.id) {
                return Err(ConfigError::new(
                    format!("energy.sites[{i}].id"),
                    format!("{:?} is not a site id", s.id),
                    "use 1 to 64 letters, digits, '-', '_' or '.' (the proxy's energy.site_id)",
                ));
            }
            if s.token.trim().len() < 16
                || s.token.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError::new(
                    format!("energy.sites[{i}].token"),
                    "shorter than 16 characters or contains spaces",
                    "use a long random string per site, e.g. the output of `openssl rand -hex 32`",
                ));
            }
            if let Some(j) = self.sites[..i].iter().position(|o| o.id == s.id) {
                return Err(ConfigError::new(
                    format!("energy.sites[{i}].id"),
                    format!("{:?} is already energy.sites[{j}]", s.id),
                    "list every site once",
                ));
            }
            if let Some(j) = self.sites[..i].iter().position(|o| o.token == s.token) {
                return Err(ConfigError::new(
                    format!("energy.sites[{i}].token"),
                    format!("the same token as energy.sites[{j}]"),
                    "give every site its own token: the token says which site is reporting",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> EnergySection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_a_full_section() {
        let d = EnergySection::default();
        assert_eq!((d.max_clock_skew_secs, d.max_interval_secs), (300, 86_400));
        d.validate().unwrap();
        let s = section(
            "[grid_regions]\nDE = 380.0\n\"US-TX\" = 400\n[[sites]]\nid = \"a\"\ntoken = \"0123456789abcdef\"\n",
        );
        s.validate().unwrap();
        assert_eq!(s.grid_regions["US-TX"], 400.0);
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn errors_name_the_key() {
        let tok = "0123456789abcdef";
        let cases = [
            ("[grid_regions]\nDE = -1.0\n", "energy.grid_regions.DE"),
            ("[grid_regions]\nDE = 99999.0\n", "energy.grid_regions.DE"),
            ("[[sites]]\nid = \"a b\"\ntoken = \"0123456789abcdef\"\n", "energy.sites[0].id"),
            ("[[sites]]\nid = \"a\"\ntoken = \"short\"\n", "energy.sites[0].token"),
            (
                &format!("[[sites]]\nid = \"a\"\ntoken = \"{tok}\"\n[[sites]]\nid = \"a\"\ntoken = \"{tok}x\"\n"),
                "energy.sites[1].id",
            ),
            (
                &format!("[[sites]]\nid = \"a\"\ntoken = \"{tok}\"\n[[sites]]\nid = \"b\"\ntoken = \"{tok}\"\n"),
                "energy.sites[1].token",
            ),
            ("max_interval_secs = 0\n", "energy.max_interval_secs"),
        ];
        for (text, key) in cases {
            let e = section(text).validate().unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(!e.fix.is_empty());
        }
    }
}
