//! UCUM unit expressions (the Unified Code for Units of Measure, case-sensitive form "c/s").
//!
//! [`check`] parses an expression with UCUM's grammar and checks every unit symbol against
//! the specification's tables, which this module carries as data ([`PREFIXES`], [`ATOMS`]):
//!
//! ```text
//! main-term   = "/" term | term
//! term        = component { ("." | "/") component }
//! component   = annotatable [annotation] | annotation | factor | "(" term ")"
//! annotatable = simple-unit [exponent]
//! simple-unit = ATOM | PREFIX metric-ATOM
//! exponent    = ["+" | "-"] digits
//! factor      = digits
//! annotation  = "{" 1*(ASCII 33-126 except "{" "}") "}"
//! ```
//!
//! Square brackets belong to the symbol they appear in (`mm[Hg]`, `[in_i'H2O]`,
//! `B[10.nV]`): what is between them is not read as operators. `10*` and `10^` are the atoms
//! of "ten to a power" (`10*3/uL`). Only the syntax and the symbols are checked; units are
//! not converted or compared. Nothing here panics or recurses without bound on any input.

/// The longest expression accepted.
pub const MAX_LEN: usize = 256;
/// The deepest nesting of parentheses accepted.
const MAX_DEPTH: usize = 16;

/// The UCUM prefixes (c/s symbols): SI decimal prefixes, the binary ones of IEC 60027-2,
/// and ronna/quetta/ronto/quecto (UCUM 2.2).
pub const PREFIXES: &[&str] = &[
    "Q", "R", "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "da", "d", "c", "m", "u", "n", "p", "f",
    "a", "z", "y", "r", "q", "Ki", "Mi", "Gi", "Ti",
];

/// The UCUM atoms (c/s symbols) and whether each is metric (only metric units take a
/// prefix), table by table of the specification.
pub const ATOMS: &[(&str, bool)] = &[
    // Base units.
    ("m", true),
    ("s", true),
    ("g", true),
    ("rad", true),
    ("K", true),
    ("C", true),
    ("cd", true),
    // Dimensionless units.
    ("10*", false),
    ("10^", false),
    ("[pi]", false),
    ("%", false),
    ("[ppth]", false),
    ("[ppm]", false),
    ("[ppb]", false),
    ("[pptr]", false),
    // SI units.
    ("mol", true),
    ("sr", true),
    ("Hz", true),
    ("N", true),
    ("Pa", true),
    ("J", true),
    ("W", true),
    ("A", true),
    ("V", true),
    ("F", true),
    ("Ohm", true),
    ("S", true),
    ("Wb", true),
    ("Cel", true),
    ("T", true),
    ("H", true),
    ("lm", true),
    ("lx", true),
    ("Bq", true),
    ("Gy", true),
    ("Sv", true),
    // Other units from ISO 1000, ISO 2955 and ANSI X3.50.
    ("gon", false),
    ("deg", false),
    ("'", false),
    ("''", false),
    ("l", true),
    ("L", true),
    ("ar", true),
    ("min", false),
    ("h", false),
    ("d", false),
    ("a_t", false),
    ("a_j", false),
    ("a_g", false),
    ("a", false),
    ("wk", false),
    ("mo_s", false),
    ("mo_j", false),
    ("mo_g", false),
    ("mo", false),
    ("t", true),
    ("bar", true),
    ("u", true),
    ("eV", true),
    ("AU", false),
    ("pc", true),
    // Natural units.
    ("[c]", true),
    ("[h]", true),
    ("[k]", true),
    ("[eps_0]", true),
    ("[mu_0]", true),
    ("[e]", true),
    ("[m_e]", true),
    ("[m_p]", true),
    ("[G]", true),
    ("[g]", true),
    ("atm", false),
    ("[ly]", true),
    ("gf", true),
    // CGS units.
    ("Ky", true),
    ("Gal", true),
    ("dyn", true),
    ("erg", true),
    ("P", true),
    ("Bi", true),
    ("St", true),
    ("Mx", true),
    ("G", true),
    ("Oe", true),
    ("Gb", true),
    ("sb", true),
    ("Lmb", true),
    ("ph", true),
    ("Ci", true),
    ("R", true),
    ("RAD", true),
    ("REM", true),
    // International customary units.
    ("[in_i]", false),
    ("[ft_i]", false),
    ("[yd_i]", false),
    ("[mi_i]", false),
    ("[fth_i]", false),
    ("[nmi_i]", false),
    ("[kn_i]", false),
    ("[sin_i]", false),
    ("[sft_i]", false),
    ("[syd_i]", false),
    ("[cin_i]", false),
    ("[cft_i]", false),
    ("[cyd_i]", false),
    ("[bf_i]", false),
    ("[cr_i]", false),
    ("[mil_i]", false),
    ("[cml_i]", false),
    ("[hd_i]", false),
    // U.S. survey lengths.
    ("[ft_us]", false),
    ("[yd_us]", false),
    ("[in_us]", false),
    ("[rd_us]", false),
    ("[ch_us]", false),
    ("[lk_us]", false),
    ("[rch_us]", false),
    ("[rlk_us]", false),
    ("[fth_us]", false),
    ("[fur_us]", false),
    ("[mi_us]", false),
    ("[acr_us]", false),
    ("[srd_us]", false),
    ("[smi_us]", false),
    ("[sct]", false),
    ("[twp]", false),
    ("[mil_us]", false),
    // British Imperial lengths.
    ("[in_br]", false),
    ("[ft_br]", false),
    ("[rd_br]", false),
    ("[ch_br]", false),
    ("[lk_br]", false),
    ("[fth_br]", false),
    ("[pc_br]", false),
    ("[yd_br]", false),
    ("[mi_br]", false),
    ("[nmi_br]", false),
    ("[kn_br]", false),
    ("[acr_br]", false),
    // U.S. volumes.
    ("[gal_us]", false),
    ("[bbl_us]", false),
    ("[qt_us]", false),
    ("[pt_us]", false),
    ("[gil_us]", false),
    ("[foz_us]", false),
    ("[fdr_us]", false),
    ("[min_us]", false),
    ("[crd_us]", false),
    ("[bu_us]", false),
    ("[gal_wi]", false),
    ("[pk_us]", false),
    ("[dqt_us]", false),
    ("[dpt_us]", false),
    ("[tbs_us]", false),
    ("[tsp_us]", false),
    ("[cup_us]", false),
    ("[foz_m]", false),
    ("[cup_m]", false),
    ("[tsp_m]", false),
    ("[tbs_m]", false),
    // British Imperial volumes.
    ("[gal_br]", false),
    ("[pk_br]", false),
    ("[bu_br]", false),
    ("[qt_br]", false),
    ("[pt_br]", false),
    ("[gil_br]", false),
    ("[foz_br]", false),
    ("[fdr_br]", false),
    ("[min_br]", false),
    // Avoirdupois weights.
    ("[gr]", false),
    ("[lb_av]", false),
    ("[oz_av]", false),
    ("[dr_av]", false),
    ("[scwt_av]", false),
    ("[lcwt_av]", false),
    ("[ston_av]", false),
    ("[lton_av]", false),
    ("[stone_av]", false),
    ("[lbf_av]", false),
    // Troy weights.
    ("[pwt_tr]", false),
    ("[oz_tr]", false),
    ("[lb_tr]", false),
    // Apothecaries' weights.
    ("[sc_ap]", false),
    ("[dr_ap]", false),
    ("[oz_ap]", false),
    ("[lb_ap]", false),
    ("[oz_m]", false),
    // Typesetting.
    ("[lne]", false),
    ("[pnt]", false),
    ("[pca]", false),
    ("[pnt_pr]", false),
    ("[pca_pr]", false),
    ("[pied]", false),
    ("[pouce]", false),
    ("[ligne]", false),
    ("[didot]", false),
    ("[cicero]", false),
    // Heat and temperature.
    ("[degF]", false),
    ("[degR]", false),
    ("[degRe]", false),
    ("cal_[15]", true),
    ("cal_[20]", true),
    ("cal_m", true),
    ("cal_IT", true),
    ("cal_th", true),
    ("cal", true),
    ("[Cal]", false),
    ("[Btu_39]", false),
    ("[Btu_59]", false),
    ("[Btu_60]", false),
    ("[Btu_m]", false),
    ("[Btu_IT]", false),
    ("[Btu_th]", false),
    ("[Btu]", false),
    ("[HP]", false),
    ("tex", true),
    ("[den]", false),
    // Clinical medicine.
    ("m[H2O]", true),
    ("m[Hg]", true),
    ("[in_i'H2O]", false),
    ("[in_i'Hg]", false),
    ("[PRU]", false),
    ("[wood'U]", false),
    ("[diop]", false),
    ("[p'diop]", false),
    ("%[slope]", false),
    ("[mesh_i]", false),
    ("[Ch]", false),
    ("[drp]", false),
    ("[hnsf'U]", false),
    ("[MET]", false),
    ("[hp'_X]", false),
    ("[hp'_C]", false),
    ("[hp'_M]", false),
    ("[hp'_Q]", false),
    ("[hp_X]", false),
    ("[hp_C]", false),
    ("[hp_M]", false),
    ("[hp_Q]", false),
    ("[kp_X]", false),
    ("[kp_C]", false),
    ("[kp_M]", false),
    ("[kp_Q]", false),
    // Chemistry and biology.
    ("eq", true),
    ("osm", true),
    ("[pH]", false),
    ("g%", true),
    ("[S]", false),
    ("[HPF]", false),
    ("[LPF]", false),
    ("kat", true),
    ("U", true),
    ("[iU]", true),
    ("[IU]", true),
    ("[arb'U]", false),
    ("[USP'U]", false),
    ("[GPL'U]", false),
    ("[MPL'U]", false),
    ("[APL'U]", false),
    ("[beth'U]", false),
    ("[anti'Xa'U]", false),
    ("[todd'U]", false),
    ("[dye'U]", false),
    ("[smgy'U]", false),
    ("[bdsk'U]", false),
    ("[ka'U]", false),
    ("[knk'U]", false),
    ("[mclg'U]", false),
    ("[tb'U]", false),
    ("[CCID_50]", false),
    ("[TCID_50]", false),
    ("[EID_50]", false),
    ("[PFU]", false),
    ("[FFU]", false),
    ("[CFU]", false),
    ("[IR]", false),
    ("[BAU]", false),
    ("[AU]", false),
    ("[Amb'a'1'U]", false),
    ("[PNU]", false),
    ("[Lf]", false),
    ("[D'ag'U]", false),
    ("[FEU]", false),
    ("[ELU]", false),
    ("[EU]", false),
    // Levels.
    ("Np", true),
    ("B", true),
    ("B[SPL]", true),
    ("B[V]", true),
    ("B[mV]", true),
    ("B[uV]", true),
    ("B[10.nV]", true),
    ("B[W]", true),
    ("B[kW]", true),
    // Legacy and miscellaneous units.
    ("st", true),
    ("Ao", false),
    ("b", false),
    ("att", false),
    ("mho", true),
    ("[psi]", false),
    ("circ", false),
    ("sph", false),
    ("[car_m]", false),
    ("[car_Au]", false),
    ("[smoot]", false),
    ("[m/s2/Hz^(1/2)]", false),
    // Information technology.
    ("bit_s", false),
    ("bit", true),
    ("By", true),
    ("Bd", true),
];

fn atom(symbol: &str) -> Option<bool> {
    ATOMS
        .iter()
        .find(|(code, _)| *code == symbol)
        .map(|(_, metric)| *metric)
}

/// Why a unit symbol is not one of UCUM's.
fn check_symbol(symbol: &str) -> Result<(), String> {
    if atom(symbol).is_some() {
        return Ok(());
    }
    let mut non_metric = None;
    for prefix in PREFIXES {
        if let Some(rest) = symbol.strip_prefix(prefix) {
            match atom(rest) {
                Some(true) => return Ok(()),
                Some(false) => non_metric = Some((*prefix, rest)),
                None => {}
            }
        }
    }
    if let Some((prefix, rest)) = non_metric {
        return Err(format!(
            "'{rest}' is not a metric unit, so it takes no prefix ('{prefix}')"
        ));
    }
    // UCUM is case-sensitive: point at the symbol the client probably meant.
    let folded = |code: &str| code.eq_ignore_ascii_case(symbol);
    // Lower-case prefixes first: "MMOL" more likely means mmol than Mmol.
    let mut prefixes: Vec<&str> = PREFIXES.to_vec();
    prefixes.sort_by_key(|p| !p.starts_with(|c: char| c.is_ascii_lowercase()));
    let hint = ATOMS
        .iter()
        .map(|(c, _)| (*c).to_owned())
        .find(|c| folded(c))
        .or_else(|| {
            prefixes.iter().find_map(|p| {
                ATOMS
                    .iter()
                    .filter(|(_, metric)| *metric)
                    .map(|(c, _)| format!("{p}{c}"))
                    .find(|c| folded(c))
            })
        });
    Err(match hint {
        Some(h) => format!("unknown unit '{symbol}' (UCUM is case-sensitive: '{h}'?)"),
        None => format!("unknown unit '{symbol}'"),
    })
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn error<T>(&self, reason: impl Into<String>) -> Result<T, String> {
        Err(format!("{} (at character {})", reason.into(), self.at + 1))
    }

    fn main_term(&mut self) -> Result<(), String> {
        if self.peek() == Some(b'/') {
            self.at += 1;
        }
        self.term()?;
        match self.peek() {
            None => Ok(()),
            Some(b')') => self.error("')' without a matching '('"),
            Some(c) => self.error(format!("unexpected '{}'", c as char)),
        }
    }

    fn term(&mut self) -> Result<(), String> {
        self.component()?;
        while let Some(op @ (b'.' | b'/')) = self.peek() {
            self.at += 1;
            if matches!(self.peek(), None | Some(b'.' | b'/' | b')')) {
                return self.error(format!("'{}' needs a unit after it", op as char));
            }
            self.component()?;
        }
        Ok(())
    }

    fn component(&mut self) -> Result<(), String> {
        match self.peek() {
            None => self.error("a unit is missing"),
            Some(b'(') => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return self.error("parentheses are nested too deeply");
                }
                self.at += 1;
                self.term()?;
                if self.peek() != Some(b')') {
                    return self.error("'(' without a matching ')'");
                }
                self.at += 1;
                self.depth -= 1;
                Ok(())
            }
            Some(b'{') => self.annotation(),
            Some(b'.' | b'/' | b')') => self.error("a unit is missing"),
            Some(b'}') => self.error("'}' without a matching '{'"),
            Some(c) if c.is_ascii_digit() => self.number(),
            Some(_) => {
                self.simple_unit()?;
                if self.peek() == Some(b'{') {
                    self.annotation()?;
                }
                Ok(())
            }
        }
    }

    /// A factor (`1000`), or `10*`/`10^` with its exponent.
    fn number(&mut self) -> Result<(), String> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        if matches!(self.peek(), Some(b'*' | b'^')) {
            if &self.text[start..self.at] != b"10" {
                return self.error("only 10 can be raised to a power ('10*3', '10^6')");
            }
            self.at += 1;
            self.exponent();
            if self.peek() == Some(b'{') {
                self.annotation()?;
            }
            return Ok(());
        }
        match self.peek() {
            None | Some(b'.' | b'/' | b')') => Ok(()),
            Some(_) => self.error("a number stands alone as a factor; join it to a unit with '.'"),
        }
    }

    /// An optional signed exponent.
    fn exponent(&mut self) {
        let start = self.at;
        if matches!(self.peek(), Some(b'+' | b'-')) {
            self.at += 1;
        }
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at = start;
            return;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
    }

    /// A unit symbol (square-bracketed parts included) and its exponent.
    fn simple_unit(&mut self) -> Result<(), String> {
        let start = self.at;
        let mut after_bracket = start;
        while let Some(c) = self.peek() {
            match c {
                b'.' | b'/' | b'(' | b')' | b'{' | b'}' => break,
                b'[' => {
                    self.at += 1;
                    loop {
                        match self.peek() {
                            None => return self.error("'[' without a matching ']'"),
                            Some(b']') => break,
                            Some(b'[') => return self.error("'[' inside square brackets"),
                            Some(_) => self.at += 1,
                        }
                    }
                    self.at += 1;
                    after_bracket = self.at;
                }
                b']' => return self.error("']' without a matching '['"),
                _ => self.at += 1,
            }
        }
        // The exponent: trailing digits outside brackets, with an optional sign.
        let word = &self.text[after_bracket..self.at];
        let digits = word.iter().rev().take_while(|c| c.is_ascii_digit()).count();
        let mut end = self.at - digits;
        if digits > 0 && end > after_bracket && matches!(self.text[end - 1], b'+' | b'-') {
            end -= 1;
        }
        if end == start {
            return self.error("an exponent needs a unit before it");
        }
        let symbol = std::str::from_utf8(&self.text[start..end])
            .map_err(|_| "the unit is not ASCII".to_owned())?;
        check_symbol(symbol).or_else(|reason| {
            self.at = start;
            self.error(reason)
        })
    }

    fn annotation(&mut self) -> Result<(), String> {
        let open = self.at;
        self.at += 1;
        loop {
            match self.peek() {
                None => {
                    self.at = open;
                    return self.error("'{' without a matching '}'");
                }
                Some(b'}') => break,
                Some(b'{') => return self.error("'{' inside an annotation"),
                Some(_) => self.at += 1,
            }
        }
        if self.at == open + 1 {
            return self.error("an annotation {...} needs text");
        }
        self.at += 1;
        Ok(())
    }
}

/// Check a UCUM expression (c/s); the error says what is wrong and where.
pub fn check(expr: &str) -> Result<(), String> {
    if expr.is_empty() {
        return Err("the unit is empty (use 1 for a unitless value)".into());
    }
    if expr.len() > MAX_LEN {
        return Err(format!("the unit is longer than {MAX_LEN} characters"));
    }
    if let Some((i, c)) = expr
        .char_indices()
        .find(|(_, c)| !c.is_ascii() || !(0x21..=0x7e).contains(&(*c as u32)))
    {
        return Err(format!(
            "{} at character {} is not allowed: UCUM units are printable ASCII without spaces",
            if c == ' ' {
                "a space".to_owned()
            } else {
                format!("'{}'", c.escape_default())
            },
            expr[..i].chars().count() + 1
        ));
    }
    Parser {
        text: expr.as_bytes(),
        at: 0,
        depth: 0,
    }
    .main_term()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every atom of the UCUM tables (base units, derived and customary units, in the
    /// case-sensitive form), and which of them are metric (take a prefix): the tables are
    /// checked against this list, written down from the specification's unit tables.
    const SPEC_ATOMS: &[&str] = &[
        "10*",
        "10^",
        "[pi]",
        "%",
        "[ppth]",
        "[ppm]",
        "[ppb]",
        "[pptr]",
        "mol",
        "sr",
        "Hz",
        "N",
        "Pa",
        "J",
        "W",
        "A",
        "V",
        "F",
        "Ohm",
        "S",
        "Wb",
        "Cel",
        "T",
        "H",
        "lm",
        "lx",
        "Bq",
        "Gy",
        "Sv",
        "gon",
        "deg",
        "'",
        "''",
        "l",
        "L",
        "ar",
        "min",
        "h",
        "d",
        "a_t",
        "a_j",
        "a_g",
        "a",
        "wk",
        "mo_s",
        "mo_j",
        "mo_g",
        "mo",
        "t",
        "bar",
        "u",
        "eV",
        "AU",
        "pc",
        "[c]",
        "[h]",
        "[k]",
        "[eps_0]",
        "[mu_0]",
        "[e]",
        "[m_e]",
        "[m_p]",
        "[G]",
        "[g]",
        "atm",
        "[ly]",
        "gf",
        "[lbf_av]",
        "Ky",
        "Gal",
        "dyn",
        "erg",
        "P",
        "Bi",
        "St",
        "Mx",
        "G",
        "Oe",
        "Gb",
        "sb",
        "Lmb",
        "ph",
        "Ci",
        "R",
        "RAD",
        "REM",
        "[in_i]",
        "[ft_i]",
        "[yd_i]",
        "[mi_i]",
        "[fth_i]",
        "[nmi_i]",
        "[kn_i]",
        "[sin_i]",
        "[sft_i]",
        "[syd_i]",
        "[cin_i]",
        "[cft_i]",
        "[cyd_i]",
        "[bf_i]",
        "[cr_i]",
        "[mil_i]",
        "[cml_i]",
        "[hd_i]",
        "[ft_us]",
        "[yd_us]",
        "[in_us]",
        "[rd_us]",
        "[ch_us]",
        "[lk_us]",
        "[rch_us]",
        "[rlk_us]",
        "[fth_us]",
        "[fur_us]",
        "[mi_us]",
        "[acr_us]",
        "[srd_us]",
        "[smi_us]",
        "[sct]",
        "[twp]",
        "[mil_us]",
        "[in_br]",
        "[ft_br]",
        "[rd_br]",
        "[ch_br]",
        "[lk_br]",
        "[fth_br]",
        "[pc_br]",
        "[yd_br]",
        "[mi_br]",
        "[nmi_br]",
        "[kn_br]",
        "[acr_br]",
        "[gal_us]",
        "[bbl_us]",
        "[qt_us]",
        "[pt_us]",
        "[gil_us]",
        "[foz_us]",
        "[fdr_us]",
        "[min_us]",
        "[crd_us]",
        "[bu_us]",
        "[gal_wi]",
        "[pk_us]",
        "[dqt_us]",
        "[dpt_us]",
        "[tbs_us]",
        "[tsp_us]",
        "[cup_us]",
        "[foz_m]",
        "[cup_m]",
        "[tsp_m]",
        "[tbs_m]",
        "[gal_br]",
        "[pk_br]",
        "[bu_br]",
        "[qt_br]",
        "[pt_br]",
        "[gil_br]",
        "[foz_br]",
        "[fdr_br]",
        "[min_br]",
        "[gr]",
        "[lb_av]",
        "[oz_av]",
        "[dr_av]",
        "[scwt_av]",
        "[lcwt_av]",
        "[ston_av]",
        "[lton_av]",
        "[stone_av]",
        "[pwt_tr]",
        "[oz_tr]",
        "[lb_tr]",
        "[sc_ap]",
        "[dr_ap]",
        "[oz_ap]",
        "[lb_ap]",
        "[oz_m]",
        "[lne]",
        "[pnt]",
        "[pca]",
        "[pnt_pr]",
        "[pca_pr]",
        "[pied]",
        "[pouce]",
        "[ligne]",
        "[didot]",
        "[cicero]",
        "[degF]",
        "[degR]",
        "cal_[15]",
        "cal_[20]",
        "cal_m",
        "cal_IT",
        "cal_th",
        "cal",
        "[Cal]",
        "[Btu_39]",
        "[Btu_59]",
        "[Btu_60]",
        "[Btu_m]",
        "[Btu_IT]",
        "[Btu_th]",
        "[Btu]",
        "[HP]",
        "tex",
        "[den]",
        "m[H2O]",
        "m[Hg]",
        "[in_i'H2O]",
        "[in_i'Hg]",
        "[PRU]",
        "[wood'U]",
        "[diop]",
        "[p'diop]",
        "%[slope]",
        "[mesh_i]",
        "[Ch]",
        "[drp]",
        "[hnsf'U]",
        "[MET]",
        "[hp'_X]",
        "[hp'_C]",
        "[hp'_M]",
        "[hp'_Q]",
        "[hp_X]",
        "[hp_C]",
        "[hp_M]",
        "[hp_Q]",
        "[kp_X]",
        "[kp_C]",
        "[kp_M]",
        "[kp_Q]",
        "eq",
        "osm",
        "[pH]",
        "g%",
        "[S]",
        "[HPF]",
        "[LPF]",
        "kat",
        "U",
        "[iU]",
        "[IU]",
        "[arb'U]",
        "[USP'U]",
        "[GPL'U]",
        "[MPL'U]",
        "[APL'U]",
        "[beth'U]",
        "[anti'Xa'U]",
        "[todd'U]",
        "[dye'U]",
        "[smgy'U]",
        "[bdsk'U]",
        "[ka'U]",
        "[knk'U]",
        "[mclg'U]",
        "[tb'U]",
        "[CCID_50]",
        "[TCID_50]",
        "[EID_50]",
        "[PFU]",
        "[FFU]",
        "[CFU]",
        "[BAU]",
        "[AU]",
        "[Amb'a'1'U]",
        "[PNU]",
        "[Lf]",
        "[D'ag'U]",
        "[FEU]",
        "[ELU]",
        "[EU]",
        "Np",
        "B",
        "B[SPL]",
        "B[V]",
        "B[mV]",
        "B[uV]",
        "B[10.nV]",
        "B[W]",
        "B[kW]",
        "st",
        "Ao",
        "b",
        "att",
        "mho",
        "[psi]",
        "circ",
        "sph",
        "[car_m]",
        "[car_Au]",
        "[smoot]",
        "bit_s",
        "bit",
        "By",
        "Bd",
        "m",
        "s",
        "g",
        "rad",
        "K",
        "C",
        "cd",
    ];
    const SPEC_METRIC_ATOMS: &[&str] = &[
        "mol", "sr", "Hz", "N", "Pa", "J", "W", "A", "V", "F", "Ohm", "S", "Wb", "Cel", "T", "H",
        "lm", "lx", "Bq", "Gy", "Sv", "l", "L", "ar", "t", "bar", "u", "eV", "pc", "[c]", "[h]",
        "[k]", "[eps_0]", "[mu_0]", "[e]", "[m_e]", "[m_p]", "[G]", "[g]", "[ly]", "gf", "Ky",
        "Gal", "dyn", "erg", "P", "Bi", "St", "Mx", "G", "Oe", "Gb", "sb", "Lmb", "ph", "Ci", "R",
        "RAD", "REM", "cal_[15]", "cal_[20]", "cal_m", "cal_IT", "cal_th", "cal", "tex", "m[H2O]",
        "m[Hg]", "eq", "osm", "g%", "kat", "U", "[iU]", "[IU]", "Np", "B", "B[SPL]", "B[V]",
        "B[mV]", "B[uV]", "B[10.nV]", "B[W]", "B[kW]", "st", "mho", "bit", "By", "Bd", "m", "s",
        "g", "rad", "K", "C", "cd",
    ];

    #[test]
    fn every_atom_of_the_specification_is_known_with_its_metric_flag() {
        let mut wrong = Vec::new();
        for a in SPEC_ATOMS {
            if check(a).is_err() {
                wrong.push(format!("{a} refused"));
            }
            // 10* and 10^ are special: a prefix in front makes no sense and no atom.
            if a.starts_with("10") {
                continue;
            }
            let metric = SPEC_METRIC_ATOMS.contains(a);
            if check(&format!("k{a}")).is_ok() != metric {
                wrong.push(format!("k{a}: metric is {metric}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:?}");
        // And nothing else: each atom of the table is in that list or one of the atoms
        // later versions (2.x) added.
        let later = ["[degRe]", "[IR]", "[m/s2/Hz^(1/2)]"];
        let unknown: Vec<&str> = ATOMS
            .iter()
            .map(|(a, _)| *a)
            .filter(|a| !SPEC_ATOMS.contains(a) && !later.contains(a))
            .collect();
        assert!(unknown.is_empty(), "not UCUM atoms: {unknown:?}");
    }

    #[test]
    fn units_in_clinical_use_are_accepted() {
        for ok in [
            "mg/dL",
            "mm[Hg]",
            "MG",
            "cm[H2O]",
            "10*3/uL",
            "10*9/L",
            "10^6",
            "10*-3",
            "/min",
            "1/min",
            "{beats}/min",
            "%",
            "kg/m2",
            "m.s-2",
            "mL/min/{1.73_m2}",
            "ug/(kg.min)",
            "[IU]/L",
            "m[IU]/mL",
            "mmol/mol",
            "Cel",
            "[degF]",
            "fL",
            "pg",
            "mosm/kg",
            "[pH]",
            "meq/L",
            "U/L",
            "[in_i]",
            "[lb_av]",
            "kcal/d",
            "dB",
            "B[10.nV]",
            "Kibit",
            "kPa",
            "ng/mL",
            "{cells}/[HPF]",
            "10*6/mm3",
            "km/h",
            "g{total}",
            "mm[Hg]{diastolic}",
            "1",
            "1000",
            "%{vol}",
            "s+2",
            "[m/s2/Hz^(1/2)]",
            "((m))",
            "dl",
            "[in_i'H2O]",
            // More from LOINC's example units (every bare atom of the tables is checked by
            // every_atom_of_the_specification_is_known_with_its_metric_flag).
            "/[HPF]",
            "mm/h",
            "umol/L",
            "nmol/L",
            "mU/L",
            "{ratio}",
            "mg/(24.h)",
            "g/(kg.d)",
            "10*12/L",
            "[iU]/mL",
            "mL/(min.{1.73_m2})",
            "mmol/(kg.h)",
            "[CFU]/mL",
            "{copies}/mL",
            "ukat/L",
            "[degRe]",
            "[IR]",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn bad_units_are_refused_with_the_reason() {
        for (bad, why) in [
            ("mm Hg", "a space"),
            ("mg/", "needs a unit after it"),
            ("/", "a unit is missing"),
            ("", "empty"),
            ("mg//dL", "needs a unit after it"),
            ("(mg", "without a matching ')'"),
            ("mg)", "without a matching '('"),
            ("kh", "not a metric unit"),
            ("k[in_i]", "not a metric unit"),
            ("mcg", "unknown unit 'mcg'"),
            ("cc", "unknown unit 'cc'"),
            ("sec", "unknown unit 'sec'"),
            ("hr", "unknown unit 'hr'"),
            ("MMHG", "unknown unit"),
            ("[foo]", "unknown unit '[foo]'"),
            ("mg{", "without a matching '}'"),
            ("mg{}", "needs text"),
            ("{a{b}}", "inside an annotation"),
            ("2m", "stands alone"),
            ("3*2", "only 10"),
            ("m2.", "needs a unit after it"),
            ("-1", "exponent needs a unit"),
            ("m[Hg", "without a matching ']'"),
            ("m]", "without a matching '['"),
            ("µg", "is not allowed"),
            ("KG", "case-sensitive: 'kg'"),
            ("MMOL", "case-sensitive: 'mmol'"),
            ("MOL", "case-sensitive: 'mol'"),
            ("mmhg", "unknown unit"),
        ] {
            match check(bad) {
                Ok(()) => panic!("{bad:?} was accepted"),
                Err(e) => assert!(e.contains(why), "{bad:?}: {e}"),
            }
        }
        assert!(check(&"(".repeat(40)).is_err());
        assert!(check(&"m.".repeat(200)).is_err(), "too long");
    }

    #[test]
    fn the_tables_are_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for (code, _) in ATOMS {
            assert!(seen.insert(*code), "{code} twice");
            assert!(!code.is_empty() && code.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            assert!(
                !code.contains(['{', '}', '(', ')']) || code.starts_with('['),
                "{code}"
            );
        }
        let mut prefixes = std::collections::HashSet::new();
        assert!(PREFIXES.iter().all(|p| prefixes.insert(*p)));
    }

    /// A simple unit from the tables: an atom, a metric one perhaps prefixed, perhaps with
    /// an exponent and an annotation.
    fn simple_unit() -> impl Strategy<Value = String> {
        (
            0..ATOMS.len(),
            proptest::option::of(0..PREFIXES.len()),
            proptest::option::of(-4i32..6),
            proptest::option::of("[a-z0-9_.#%]{1,6}"),
        )
            .prop_map(|(a, p, e, note)| {
                let (code, metric) = ATOMS[a];
                let mut s = String::new();
                if metric && let Some(p) = p {
                    s.push_str(PREFIXES[p]);
                }
                s.push_str(code);
                if let Some(e) = e {
                    s.push_str(&e.to_string());
                }
                if let Some(n) = note {
                    s.push_str(&format!("{{{n}}}"));
                }
                s
            })
    }

    /// A term: one to four components joined by `.` or `/`, some of them parenthesised
    /// terms, factors or bare annotations.
    fn term() -> impl Strategy<Value = String> {
        let component = prop_oneof![
            6 => simple_unit(),
            1 => (1u32..10_000).prop_map(|n| n.to_string()),
            1 => "[A-Za-z0-9_]{1,6}".prop_map(|n| format!("{{{n}}}")),
        ];
        let inner = proptest::collection::vec((component.clone(), any::<bool>()), 1..4)
            .prop_map(|parts| join(&parts));
        let component = prop_oneof![4 => component, 1 => inner.prop_map(|t| format!("({t})"))];
        proptest::collection::vec((component, any::<bool>()), 1..4).prop_map(|parts| join(&parts))
    }

    fn join(parts: &[(String, bool)]) -> String {
        let mut out = String::new();
        for (i, (p, divide)) in parts.iter().enumerate() {
            if i > 0 {
                out.push(if *divide { '/' } else { '.' });
            }
            out.push_str(p);
        }
        out
    }

    proptest! {
        /// Every composition of table units the grammar allows is accepted.
        #[test]
        fn valid_compositions_are_accepted(t in term(), leading_slash in any::<bool>()) {
            let expr = if leading_slash { format!("/{t}") } else { t };
            prop_assert_eq!(check(&expr), Ok(()), "{}", expr);
        }

        /// A space or an unknown symbol anywhere in a valid expression makes it invalid.
        #[test]
        fn a_space_or_an_unknown_unit_is_refused(t in term(), at in any::<prop::sample::Index>()) {
            let i = at.index(t.len() + 1);
            let spaced = format!("{} {}", &t[..i], &t[i..]);
            prop_assert!(check(&spaced).is_err(), "{}", spaced);
            let unknown = format!("{t}.[zz_q]");
            prop_assert!(check(&unknown).is_err(), "{}", unknown);
        }

        /// The checker takes any text without panicking.
        #[test]
        fn any_text_is_checked_without_panic(s in ".{0,64}") {
            let _ = check(&s);
        }

        /// ...including text made of UCUM's own characters, which finds every branch.
        #[test]
        fn unit_like_junk_is_checked_without_panic(s in "[-+./(){}\\[\\]0-9*^%'a-zA-Z_]{0,48}") {
            let _ = check(&s);
        }
    }
}
